// The bypass_agent recovery action with real processes: the four services and a monitor over one
// nats-server. The agent is frozen (SIGSTOP: it holds its connections and answers nothing, as an
// overloaded process does); the monitor's health check finds it unreachable, health goes degraded
// and the gateway, told through the recovery actions bucket, answers chats without waiting on the
// agent. Thawed, health returns to healthy, the action is reversed and chats go through the agent.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createChannel, createClient, type Channel } from 'nice-grpc';
import { proto } from '@elexirion/kit';
import { collectEvents, eventually, startNats, startStack, stopAll, type NatsServer, type Stack } from '@elexirion/testing';

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
  stack = await startStack('one-process-per-service', nats.url, { MONITOR_HEALTH_INTERVAL_MS: '200', MONITOR_HEALTH_CHECK_TIMEOUT_MS: '500' });
  channel = createChannel(`127.0.0.1:${stack.ports.monitor}`);
  monitor = createClient(proto.MonitorDefinition, channel);
}, 90_000);

afterAll(async () => {
  // A frozen process would not see its SIGTERM.
  stack?.processes.agent?.child.kill('SIGCONT');
  channel?.close();
  await telemetry?.close();
  await stack?.stop();
  await nats?.stop();
  await stopAll();
});

async function healthWhere(what: string, check: (health: proto.SystemHealth) => boolean): Promise<proto.SystemHealth> {
  return eventually(
    what,
    async () => {
      const { health } = await monitor.getSystemHealth({}).catch(() => ({ health: undefined }));
      return health && check(health) ? health : undefined;
    },
    20_000,
  );
}

const bypassEvents = () =>
  telemetry.events.filter((received) => received.subject === 'elexirion.events.monitor.recovery' && received.event.monitorRecovery?.action === 'bypass_agent').map((received) => received.event.monitorRecovery!.applied);

describe('the bypass_agent recovery action', () => {
  it('is healthy with all four services serving', async () => {
    // Every service answered: one started after the monitor is UNKNOWN (healthy) until it does.
    const health = await healthWhere('healthy, every service heard from', (current) => current.status === HealthStatus.HEALTH_STATUS_HEALTHY && Object.values(current.services).every((check) => check !== 'UNKNOWN'));
    expect(health.services).toEqual({ gateway: 'SERVING', agent: 'SERVING', executor: 'SERVING', provider: 'SERVING' });
  });

  it('bypasses a frozen agent: degraded health, and chats answered through the executor without waiting on it', async () => {
    stack.processes.agent!.child.kill('SIGSTOP');
    const health = await healthWhere('degraded with the agent bypassed', (current) => current.status === HealthStatus.HEALTH_STATUS_DEGRADED && current.actions.some((action) => action.action === 'bypass_agent'));
    expect(health.causes).toEqual(['service agent: unreachable']);
    expect(health.services.agent).toBe('UNREACHABLE');
    await eventually('the bypass event', async () => (bypassEvents().includes(true) ? true : undefined));

    // The gateway learns of it from the bucket; once it has, a chat never reaches the frozen agent
    // (which would hold it until the signal aborts).
    await eventually('/readyz says the agent is bypassed', async () => {
      const ready = (await (await fetch(`http://127.0.0.1:${stack.ports.gatewayHttp}/readyz`)).json()) as { degraded?: { cause: string }[] };
      return ready.degraded?.some((entry) => entry.cause.includes('bypass_agent')) ? true : undefined;
    });
    const answer = await stack.gateway.chat({ message: 'please analyze this function' }, { signal: AbortSignal.timeout(10_000) });
    expect(answer).toMatchObject({ degraded: true, pipelineUsed: 'analysis', jobId: '' });
  });

  it('reverses the action once the agent serves again, and chats go through it', async () => {
    stack.processes.agent!.child.kill('SIGCONT');
    await healthWhere('healthy, no action', (current) => current.status === HealthStatus.HEALTH_STATUS_HEALTHY && current.actions.length === 0);
    await eventually('the reversal event', async () => (bypassEvents().includes(false) ? true : undefined));
    expect(bypassEvents()).toEqual([true, false]);
    const answer = await eventually('a chat through the agent', async () => {
      const reply = await stack.gateway.chat({ message: 'please analyze this function' }, { signal: AbortSignal.timeout(10_000) });
      return reply.degraded ? undefined : reply;
    });
    expect(answer.jobId).not.toBe('');
  });
});
