// The health monitor with real processes: a provider (its SDKs pointed at fake upstreams) and a
// process hosting the gateway and the monitor, over one nats-server. A fake upstream fails until
// its provider's breaker opens: health goes degraded and the provider is routed around (a chain
// skips it); a second one fails too: health goes critical and the gateway sheds `x-priority: low`
// requests; both recover: health returns to healthy and every action is reversed, each change with
// its recovery event (one per change, though two monitor replicas run), and WatchSystemHealth
// sees the transitions.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientError, Metadata, Status, createChannel, createClient, type Channel } from 'nice-grpc';
import { proto } from '@elexirion/kit';
import {
  collectEvents,
  eventually,
  freePort,
  spawnNode,
  startMonitorProcess,
  startNats,
  startProvider,
  stopAll,
  testProviderConfig,
  userMessage,
  waitServing,
  type NatsServer,
  type ProviderUnderTest,
  type ReceivedEvent,
  type Spawned,
} from '@elexirion/testing';

const { HealthStatus } = proto;
// Opens after two failures and stays open long enough for the test to see chains skip it before
// its half-open probe (the way its recovery is seen) is let through.
const BREAKER = { window_ms: 60_000, min_requests: 2, failure_rate: 0.5, cooldown_ms: 6_000 };
const FAIL = { status: 500, errorMessage: 'fake upstream failure' };

let nats: NatsServer;
let provider: ProviderUnderTest;
let host: Spawned;
let replica: Spawned;
let channel: Channel;
let monitor: ReturnType<typeof createClient<typeof proto.MonitorDefinition>>;
let gateway: ReturnType<typeof createClient<typeof proto.GatewayDefinition>>;
let gatewayHttp: number;
let replicaChannel: Channel;
let replicaMonitor: ReturnType<typeof createClient<typeof proto.MonitorDefinition>>;
let telemetry: Awaited<ReturnType<typeof collectEvents>>;
const watched: proto.SystemHealth[] = [];
const watchStop = new AbortController();
let watching: Promise<void>;

beforeAll(async () => {
  nats = await startNats();
  telemetry = await collectEvents(nats.url);
  const config = testProviderConfig({
    anthropic: { max_attempts: 1, breaker: BREAKER },
    gemini: { max_attempts: 1, breaker: BREAKER },
  });
  provider = await startProvider({ config, env: { NATS_URL: nats.url, TELEMETRY_EVENTS: 'true', TELEMETRY_FLUSH_MS: '5' } });
  const grpcPort = await freePort();
  gatewayHttp = await freePort();
  host = spawnNode('gateway+monitor', 'server/dist/main.js', {
    BIND_HOST: '127.0.0.1',
    NATS_URL: nats.url,
    GATEWAY_GRPC_PORT: String(grpcPort),
    GATEWAY_HTTP_PORT: String(gatewayHttp),
    GATEWAY_AUTH: 'off',
    PROVIDER_ADDRESS: `127.0.0.1:${provider.grpcPort}`,
    TELEMETRY_FLUSH_MS: '5',
    MONITOR_HEALTH_SERVICES: 'gateway,provider',
    MONITOR_HEALTH_INTERVAL_MS: '200',
    MONITOR_ROUTE_AROUND_AFTER_MS: '500',
    MONITOR_CRITICAL_OPEN_BREAKERS: '2',
    GATEWAY_EMERGENCY_RETRY_AFTER_S: '7',
  }, ['--services', 'gateway,monitor']);
  await waitServing(grpcPort, 'elexirion.v1.Monitor', host);
  // A second monitor replica, alone in its process: both evaluate, one applies each change.
  const started = await startMonitorProcess(nats.url, {
    GATEWAY_ADDRESS: `127.0.0.1:${grpcPort}`,
    PROVIDER_ADDRESS: `127.0.0.1:${provider.grpcPort}`,
    TELEMETRY_FLUSH_MS: '5',
    MONITOR_HEALTH_SERVICES: 'gateway,provider',
    MONITOR_HEALTH_INTERVAL_MS: '200',
    MONITOR_ROUTE_AROUND_AFTER_MS: '500',
    MONITOR_CRITICAL_OPEN_BREAKERS: '2',
  }, 'monitor replica');
  replica = started.process;
  replicaChannel = createChannel(`127.0.0.1:${started.grpcPort}`);
  replicaMonitor = createClient(proto.MonitorDefinition, replicaChannel);
  channel = createChannel(`127.0.0.1:${grpcPort}`);
  monitor = createClient(proto.MonitorDefinition, channel);
  gateway = createClient(proto.GatewayDefinition, channel);
}, 90_000);

afterAll(async () => {
  watchStop.abort();
  await watching?.catch(() => {});
  channel?.close();
  replicaChannel?.close();
  await telemetry?.close();
  await replica?.stop();
  await host?.stop();
  await provider?.stop();
  await nats?.stop();
  await stopAll();
});

function recoveryEvents(): { action: string; target: string; applied: boolean }[] {
  return telemetry.events
    .filter((received: ReceivedEvent) => received.subject === 'elexirion.events.monitor.recovery')
    .map(({ event }) => ({ action: event.monitorRecovery!.action, target: event.monitorRecovery!.target, applied: event.monitorRecovery!.applied }));
}

async function healthWhere(what: string, check: (health: proto.SystemHealth) => boolean, timeoutMs = 20_000): Promise<proto.SystemHealth> {
  return eventually(
    what,
    async () => {
      const { health } = await monitor.getSystemHealth({}).catch(() => ({ health: undefined }));
      return health && check(health) ? health : undefined;
    },
    timeoutMs,
  );
}

/** Fails calls to the alias until the provider's breaker for it has opened. */
async function openBreaker(alias: string, name: string): Promise<void> {
  await eventually(`${name}'s breaker open`, async () => {
    const answer = await provider.client.complete({ messages: [userMessage('hi')], model: alias }).catch((error: unknown) => error);
    expect(answer).toBeInstanceOf(ClientError);
    const { providers } = await provider.client.listModels({});
    return providers.find((entry) => entry.name === name)?.breakerState === 'open' ? true : undefined;
  });
}

const hasAction = (health: proto.SystemHealth, action: string, target = '') => health.actions.some((entry) => entry.action === action && entry.target === target);

/** ListModels through the gateway with `x-priority: low`: its error (or undefined) and the trailer's retry-after. */
async function lowPriorityListModels(): Promise<{ error: ClientError | undefined; retryAfter: string | undefined }> {
  let retryAfter: string | undefined;
  const error = await gateway
    .listModels({}, { metadata: Metadata({ 'x-priority': 'low' }), onTrailer: (trailer: Metadata) => (retryAfter = trailer.get('retry-after')) })
    .then(() => undefined, (caught: unknown) => caught as ClientError);
  return { error, retryAfter };
}

describe('system health and recovery actions', () => {
  it('starts healthy, with every checked service serving, and a watch gets it at once', async () => {
    // Every service answered: one started after the monitor is UNKNOWN (healthy) until it does.
    const health = await healthWhere('healthy, every service heard from', (current) => current.status === HealthStatus.HEALTH_STATUS_HEALTHY && Object.values(current.services).every((check) => check !== 'UNKNOWN'));
    expect(health).toMatchObject({ causes: [], actions: [], services: { gateway: 'SERVING', provider: 'SERVING' } });
    watching = (async () => {
      for await (const message of monitor.watchSystemHealth({}, { signal: watchStop.signal })) watched.push(message.health!);
    })().catch((error: unknown) => {
      if (!watchStop.signal.aborted) throw error;
    });
    await eventually('the watch\'s first message', async () => (watched.length > 0 ? true : undefined));
    expect(watched[0]!.status).toBe(HealthStatus.HEALTH_STATUS_HEALTHY);
  });

  it('goes degraded when a provider\'s breaker opens, and routes its chains around it', async () => {
    provider.fakes.anthropic.setDefault(FAIL);
    await openBreaker('claude', 'anthropic');
    const degraded = await healthWhere('degraded, anthropic routed around', (current) => current.status === HealthStatus.HEALTH_STATUS_DEGRADED && hasAction(current, 'route_around_provider', 'anthropic'));
    expect(degraded.causes).toEqual([expect.stringMatching(/^provider anthropic: breaker open since /)]);
    await eventually('the route-around event', async () => (recoveryEvents().some((event) => event.action === 'route_around_provider' && event.target === 'anthropic' && event.applied) ? true : undefined));

    // claude_smart is anthropic then gemini: anthropic is skipped (not tried and failed over).
    const before = provider.fakes.anthropic.requests.length;
    const answer = await provider.client.complete({ messages: [userMessage('hi')], model: 'claude_smart' });
    expect(answer).toMatchObject({ provider: 'gemini', fallbackUsed: false, failedTargets: [] });
    expect(provider.fakes.anthropic.requests.length).toBe(before);
    // A chain of anthropic alone is never left empty: it is still tried (and fails fast on the open breaker).
    const alone = await provider.client.complete({ messages: [userMessage('hi')], model: 'claude' }).catch((error: unknown) => error as ClientError);
    expect(alone).toBeInstanceOf(ClientError);
    expect((alone as ClientError).details).toContain('anthropic');
  });

  it('goes critical when a second breaker opens: emergency mode refuses x-priority: low and lets the rest through', async () => {
    provider.fakes.gemini.setDefault(FAIL);
    await openBreaker('gemini', 'gemini');
    const critical = await healthWhere('critical, in emergency mode', (current) => current.status === HealthStatus.HEALTH_STATUS_CRITICAL && hasAction(current, 'emergency_mode'));
    expect(critical.causes[0]).toMatch(/^2 provider breakers open \(anthropic, gemini\)/);
    await eventually('the gateway in emergency mode', async () => ((await lowPriorityListModels()).error ? true : undefined));

    const refused = await lowPriorityListModels();
    expect(refused.error?.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(refused.error?.details).toContain('emergency mode');
    expect(refused.retryAfter).toBe('7');
    // Normal requests pass.
    await expect(gateway.listModels({})).resolves.toMatchObject({ aliases: expect.any(Array) });
    // Over HTTP too: 429 with retry-after for low priority, 200 for the rest.
    const low = await fetch(`http://127.0.0.1:${gatewayHttp}/v1/model-aliases`, { headers: { 'x-priority': 'low' } });
    expect(low.status).toBe(429);
    expect(low.headers.get('retry-after')).toBe('7');
    const normal = await fetch(`http://127.0.0.1:${gatewayHttp}/v1/model-aliases`);
    expect(normal.status).toBe(200);
    expect(recoveryEvents()).toContainEqual({ action: 'emergency_mode', target: '', applied: true });
    // The other replica answers the same health from the same buckets.
    const { health: fromReplica } = await replicaMonitor.getSystemHealth({});
    expect(fromReplica).toMatchObject({ status: HealthStatus.HEALTH_STATUS_CRITICAL, actions: expect.arrayContaining([expect.objectContaining({ action: 'emergency_mode' })]) });
  });

  it('returns to healthy when the upstreams recover, reversing every action with its event', async () => {
    provider.fakes.anthropic.setDefault({});
    provider.fakes.gemini.setDefault({});
    // Traffic lets each breaker's half-open probe through once its cooldown is over; the probe succeeds and closes it.
    const healthy = await healthWhere(
      'healthy with no action in force',
      (current) => {
        void provider.client.complete({ messages: [userMessage('hi')], model: 'claude' }).catch(() => {});
        void provider.client.complete({ messages: [userMessage('hi')], model: 'gemini' }).catch(() => {});
        return current.status === HealthStatus.HEALTH_STATUS_HEALTHY && current.actions.length === 0;
      },
      40_000,
    );
    expect(healthy.causes).toEqual([]);
    await eventually('every reversal event', async () => {
      const events = recoveryEvents();
      const reversed = (action: string, target = '') => events.some((event) => event.action === action && event.target === target && !event.applied);
      return reversed('route_around_provider', 'anthropic') && reversed('emergency_mode') ? true : undefined;
    });
    // Each change applied once and reversed once, though two monitor replicas decided each.
    const events = recoveryEvents();
    for (const action of ['emergency_mode', 'route_around_provider']) {
      const mine = events.filter((event) => event.action === action && event.target === (action === 'emergency_mode' ? '' : 'anthropic'));
      expect(mine.map((event) => event.applied)).toEqual([true, false]);
    }
    // Low priority passes again once the gateway has seen the reversal.
    await eventually('low priority served again', async () => ((await lowPriorityListModels()).error ? undefined : true));
    // The chain goes through anthropic again.
    const answer = await provider.client.complete({ messages: [userMessage('hi')], model: 'claude_smart' });
    expect(answer.provider).toBe('anthropic');
  }, 60_000);

  it('the watch saw healthy, degraded, critical and healthy again, in that order', async () => {
    await eventually('the watch back at healthy', async () => (watched.at(-1)?.status === HealthStatus.HEALTH_STATUS_HEALTHY && watched.length > 1 ? true : undefined));
    const statuses = watched.map((health) => health.status).filter((status, index, all) => index === 0 || all[index - 1] !== status);
    expect(statuses.slice(0, 3)).toEqual([HealthStatus.HEALTH_STATUS_HEALTHY, HealthStatus.HEALTH_STATUS_DEGRADED, HealthStatus.HEALTH_STATUS_CRITICAL]);
    expect(statuses.at(-1)).toBe(HealthStatus.HEALTH_STATUS_HEALTHY);
  });

  it('ends a watch when its monitor replica drains (SIGTERM), without an error', async () => {
    const received: proto.SystemHealth[] = [];
    const ended = (async () => {
      for await (const message of replicaMonitor.watchSystemHealth({})) received.push(message.health!);
    })();
    await eventually('the replica\'s watch started', async () => (received.length > 0 ? true : undefined));
    expect(received[0]!.status).toBe(HealthStatus.HEALTH_STATUS_HEALTHY);
    const exited = replica.stop();
    await expect(ended).resolves.toBeUndefined();
    expect(await exited).toBe(0);
  });
});
