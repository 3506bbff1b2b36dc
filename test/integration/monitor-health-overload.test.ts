// An overloaded agent bypassed, with real processes: the four services (the agent allowed one
// inline call at a time and no queue, the mock provider slow) and a monitor. A burst of chats
// gets RESOURCE_EXHAUSTED answers from the agent; the monitor reads them from the gateway's
// request events, health goes degraded and the gateway bypasses the agent (chats answered
// through the executor); with no refusal for the rules' window the action is reversed and chats
// go through the agent again. Services starting after the monitor trigger no action at all.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientError, Status, createChannel, createClient, type Channel } from 'nice-grpc';
import { proto } from '@elexirion/kit';
import { jetstreamManager } from '@nats-io/jetstream';
import { collectEvents, connectNats, eventually, startNats, startStack, stopAll, type NatsServer, type Stack } from '@elexirion/testing';

const { HealthStatus } = proto;

let nats: NatsServer;
let stack: Stack;
let channel: Channel;
let monitor: ReturnType<typeof createClient<typeof proto.MonitorDefinition>>;
let telemetry: Awaited<ReturnType<typeof collectEvents>>;

beforeAll(async () => {
  nats = await startNats();
  telemetry = await collectEvents(nats.url);
  // The stack's own monitor process, with the health settings of this test.
  stack = await startStack('one-process-per-service', nats.url, {
    AGENT_MAX_CONCURRENT_CALLS: '1',
    AGENT_MAX_QUEUED_CALLS: '0',
    PROVIDER_MOCK_LATENCY_MS: '300',
    MONITOR_HEALTH_INTERVAL_MS: '200',
    MONITOR_AGENT_REFUSALS: '3',
    MONITOR_AGENT_REFUSALS_WINDOW_MS: '4000',
  });
  channel = createChannel(`127.0.0.1:${stack.ports.monitor}`);
  monitor = createClient(proto.MonitorDefinition, channel);
  await eventually('health computed', async () => ((await monitor.getSystemHealth({}).catch(() => undefined))?.health?.status === HealthStatus.HEALTH_STATUS_HEALTHY ? true : undefined));
  // The monitor's consumer of request events starts from when it is made: it must exist before the burst.
  const connection = await connectNats(nats.url);
  try {
    const manager = await jetstreamManager(connection);
    await eventually('the request events consumer', async () => (await manager.consumers.info('ELEXIRION_EVENTS', 'monitor-health-requests').catch(() => undefined)) ?? undefined);
  } finally {
    await connection.close();
  }
}, 90_000);

afterAll(async () => {
  channel?.close();
  await telemetry?.close();
  await stack?.stop();
  await nats?.stop();
  await stopAll();
});

const chat = () => stack.gateway.chat({ message: 'please analyze this function' }, { signal: AbortSignal.timeout(20_000) });
const recoveryEvents = () => telemetry.events.filter((received) => received.subject === 'elexirion.events.monitor.recovery').map((received) => received.event.monitorRecovery!);
const bypassEvents = () =>
  telemetry.events.filter((received) => received.subject === 'elexirion.events.monitor.recovery' && received.event.monitorRecovery?.action === 'bypass_agent').map((received) => received.event.monitorRecovery!.applied);

describe('an agent refusing chats (RESOURCE_EXHAUSTED)', () => {
  it('is bypassed once it has refused enough of them, and chats are answered through the executor', async () => {
    // The monitor started before the gateway (and maybe others) answered: not an outage, no action.
    expect(recoveryEvents()).toEqual([]);
    const outcomes = await Promise.all(Array.from({ length: 6 }, () => chat().then(() => 'answered', (error: unknown) => (error instanceof ClientError ? Status[error.code] : String(error)))));
    expect(outcomes.filter((outcome) => outcome === 'RESOURCE_EXHAUSTED').length).toBeGreaterThanOrEqual(3);

    const health = await eventually('degraded with the agent bypassed', async () => {
      const { health: current } = await monitor.getSystemHealth({});
      return current?.status === HealthStatus.HEALTH_STATUS_DEGRADED && current.actions.some((action) => action.action === 'bypass_agent') ? current : undefined;
    });
    expect(health.causes).toEqual(['agent: overloaded (3 or more chats refused with RESOURCE_EXHAUSTED within 4 s)']);
    expect(health.services.agent).toBe('SERVING');
    await eventually('the bypass event', async () => (bypassEvents().includes(true) ? true : undefined));

    // Once the gateway has read the action, the same burst is answered, every chat degraded.
    await eventually('chats bypass the agent', async () => ((await chat()).degraded ? true : undefined));
    const burst = await Promise.all(Array.from({ length: 4 }, () => chat()));
    expect(burst.every((answer) => answer.degraded && answer.jobId === '')).toBe(true);
  });

  it('reverses the bypass once the window passes without a refusal, and chats go through the agent', async () => {
    await eventually(
      'healthy, the bypass reversed',
      async () => {
        const { health } = await monitor.getSystemHealth({});
        return health?.status === HealthStatus.HEALTH_STATUS_HEALTHY && health.actions.length === 0 ? true : undefined;
      },
      20_000,
    );
    await eventually('the reversal event', async () => (bypassEvents().includes(false) ? true : undefined));
    expect(bypassEvents()).toEqual([true, false]);
    const answer = await eventually('a chat through the agent', async () => {
      const reply = await chat();
      return reply.degraded ? undefined : reply;
    });
    expect(answer.jobId).not.toBe('');
  });
});
