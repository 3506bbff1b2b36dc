// A breaker's report going stale, with real processes: the provider repeats an open breaker's
// state while it stays open, so health stays degraded for longer than the monitor's stale time;
// killed (SIGKILL) with the breaker open, nothing will ever report it closed, and the monitor
// forgets it once the reports stop, reversing the route-around it caused.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientError, createChannel, createClient, type Channel } from 'nice-grpc';
import { proto } from '@elexirion/kit';
import {
  collectEvents,
  eventually,
  startMonitorProcess,
  startNats,
  startProvider,
  stopAll,
  testProviderConfig,
  userMessage,
  type NatsServer,
  type ProviderUnderTest,
  type Spawned,
} from '@elexirion/testing';

const STALE_MS = 1_500;

let nats: NatsServer;
let provider: ProviderUnderTest;
let monitorProcess: Spawned;
let channel: Channel;
let monitor: ReturnType<typeof createClient<typeof proto.MonitorDefinition>>;
let telemetry: Awaited<ReturnType<typeof collectEvents>>;

beforeAll(async () => {
  nats = await startNats();
  telemetry = await collectEvents(nats.url);
  // The cooldown outlasts the test: the breaker stays open (no half-open probe) until the provider dies.
  const breaker = { window_ms: 60_000, min_requests: 2, failure_rate: 0.5, cooldown_ms: 120_000 };
  provider = await startProvider({
    config: testProviderConfig({ anthropic: { max_attempts: 1, breaker } }),
    env: { NATS_URL: nats.url, TELEMETRY_EVENTS: 'true', TELEMETRY_FLUSH_MS: '5', PROVIDER_BREAKER_REPORT_MS: '200' },
  });
  const started = await startMonitorProcess(nats.url, {
    PROVIDER_ADDRESS: `127.0.0.1:${provider.grpcPort}`,
    MONITOR_HEALTH_SERVICES: 'provider',
    MONITOR_HEALTH_INTERVAL_MS: '200',
    MONITOR_ROUTE_AROUND_AFTER_MS: '300',
    MONITOR_BREAKER_STALE_MS: String(STALE_MS),
  });
  monitorProcess = started.process;
  channel = createChannel(`127.0.0.1:${started.grpcPort}`);
  monitor = createClient(proto.MonitorDefinition, channel);
}, 90_000);

afterAll(async () => {
  channel?.close();
  await telemetry?.close();
  await monitorProcess?.stop();
  await provider?.stop();
  await nats?.stop();
  await stopAll();
});

const health = async () => (await monitor.getSystemHealth({}).catch(() => ({ health: undefined }))).health;
const anthropicCause = (current: proto.SystemHealth | undefined) => current?.causes.some((cause) => cause.startsWith('provider anthropic: breaker open')) ?? false;
const routeAroundEvents = () =>
  telemetry.events.filter((received) => received.subject === 'elexirion.events.monitor.recovery' && received.event.monitorRecovery?.action === 'route_around_provider').map((received) => received.event.monitorRecovery!.applied);

describe('a breaker whose provider replica is gone', () => {
  it('stays in the health while its provider keeps reporting it, longer than the stale time', async () => {
    provider.fakes.anthropic.setDefault({ status: 500 });
    await eventually('anthropic\'s breaker open', async () => {
      await expect(provider.client.complete({ messages: [userMessage('hi')], model: 'claude' })).rejects.toBeInstanceOf(ClientError);
      const { providers } = await provider.client.listModels({});
      return providers.find((entry) => entry.name === 'anthropic')?.breakerState === 'open' ? true : undefined;
    });
    const openedAt = Date.now();
    await eventually('degraded, anthropic routed around', async () => {
      const current = await health();
      return anthropicCause(current) && current!.actions.some((action) => action.target === 'anthropic') ? true : undefined;
    });
    // Still there well after a report would have gone stale: the repeats keep it.
    await eventually(
      'degraded for three stale times',
      async () => (Date.now() - openedAt > 3 * STALE_MS && anthropicCause(await health()) ? true : undefined),
      15_000,
    );
    const reports = telemetry.events.filter((received) => received.subject === 'elexirion.events.provider.breaker' && received.event.providerBreaker?.provider === 'anthropic');
    expect(reports.length).toBeGreaterThanOrEqual(3);
    expect(reports.every((received) => received.event.providerBreaker!.state === 'open')).toBe(true);
  });

  it('is forgotten once the provider is killed, and its route-around reversed', async () => {
    provider.process.child.kill('SIGKILL');
    await provider.process.exited;
    const after = await eventually('the anthropic breaker forgotten', async () => {
      const current = await health();
      return current && !anthropicCause(current) && !current.actions.some((action) => action.action === 'route_around_provider') ? current : undefined;
    });
    // The provider itself is gone: that is what health says now.
    expect(after.services).toEqual({ provider: 'UNREACHABLE' });
    expect(after.causes).toEqual(['service provider: unreachable']);
    await eventually('the reversal event', async () => (routeAroundEvents().includes(false) ? true : undefined));
    expect(routeAroundEvents()).toEqual([true, false]);
  });
});
