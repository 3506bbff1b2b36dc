// The agent-down bypass with real processes: the agent killed with SIGKILL, Chat still answers
// (degraded, routed by the gateway's copy of routes.yaml, run on the executor), /readyz and the
// request event say so; the agent started again, chats go through it and /readyz is serving.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  collectEvents,
  eventually,
  spawnNode,
  startNats,
  startStack,
  stopAll,
  waitFor,
  waitServing,
  type NatsServer,
  type Stack,
} from '@elexirion/testing';

let nats: NatsServer;
let stack: Stack;

beforeAll(async () => {
  nats = await startNats();
  // A short window, so the test sees the gateway try the agent again soon after it returns.
  stack = await startStack('one-process-per-service', nats.url, { GATEWAY_AGENT_DOWN_WINDOW_MS: '300' });
});

afterAll(async () => {
  await stack?.stop();
  await nats?.stop();
  await stopAll();
});

async function readiness(): Promise<{ status: string; degraded?: { service: string; cause: string }[] }> {
  const reply = await fetch(`http://127.0.0.1:${stack.ports.gatewayHttp}/readyz`);
  expect(reply.status).toBe(200);
  return (await reply.json()) as { status: string; degraded?: { service: string; cause: string }[] };
}

describe('Chat while the agent is down', () => {
  it('answers through the agent while it is up, and /readyz is serving', async () => {
    const answer = await stack.gateway.chat({ message: 'please analyze this function' });
    expect(answer).toMatchObject({ degraded: false, pipelineUsed: 'analysis' });
    expect(answer.jobId).not.toBe('');
    expect(answer.route?.reason).not.toContain('gateway');
    expect((await readiness()).status).toBe('serving');
  });

  it('answers degraded through the executor after the agent is killed, and says so in /readyz and telemetry', async () => {
    const agent = stack.processes.agent!;
    agent.child.kill('SIGKILL');
    expect(await agent.exited).toBe('SIGKILL');

    const listener = await collectEvents(nats.url);
    try {
      const answer = await stack.gateway.chat({ message: 'please analyze this function' });
      expect(answer).toMatchObject({ degraded: true, pipelineUsed: 'analysis', jobId: '', fallbackUsed: false });
      expect(answer.response).toContain('mock provider');
      expect(answer.route).toMatchObject({ pipeline: 'analysis', matchedBy: 'rule', rule: 'analyze' });
      expect(answer.route!.reason).toMatch(/^keyword "analyze" \(the gateway's route table [0-9a-f]{12}, agent unavailable\)$/);
      expect(answer.usage?.outputTokens).toBeGreaterThan(0);

      // The default route and an explicit pipeline, while the agent stays down.
      const general = await stack.gateway.chat({ message: 'what is the weather like' });
      expect(general).toMatchObject({ degraded: true, pipelineUsed: 'general', route: { matchedBy: 'default', rule: 'general' } });
      const explicit = await stack.gateway.chat({ message: 'make a function', pipeline: 'generate' });
      expect(explicit).toMatchObject({ degraded: true, pipelineUsed: 'generate', route: { matchedBy: 'explicit' } });

      const ready = await readiness();
      expect(ready.status).toBe('degraded');
      expect(ready.degraded).toEqual([{ service: 'gateway', cause: expect.stringContaining('agent unavailable') }]);

      const requests = await waitFor('three degraded request events', () => {
        const found = listener.events.filter((item) => item.subject === 'elexirion.events.gateway.request' && item.event.gatewayRequest?.degraded);
        return found.length >= 3 ? found : undefined;
      });
      expect(requests.map((item) => item.event.gatewayRequest!.pipeline).sort()).toEqual(['analysis', 'general', 'generate']);
      for (const item of requests) expect(item.event.status).toBe('OK');
      // No agent events: nothing went through it.
      expect(listener.events.some((item) => item.subject.startsWith('elexirion.events.agent.'))).toBe(false);
    } finally {
      await listener.close();
    }
  });

  it('goes back through the agent once it is started again, and /readyz is serving', async () => {
    const agent = spawnNode('agent', 'services/agent/dist/main.js', stack.env);
    stack.processes.agent = agent;
    await waitServing(stack.ports.agent, 'elexirion.v1.Agent', agent);

    await eventually('/readyz serving again', async () => ((await readiness()).status === 'serving' ? true : undefined));
    const answer = await eventually('a chat through the agent', async () => {
      const reply = await stack.gateway.chat({ message: 'please analyze this function' });
      return reply.degraded ? undefined : reply;
    });
    expect(answer).toMatchObject({ degraded: false, pipelineUsed: 'analysis' });
    expect(answer.jobId).not.toBe('');
    expect(answer.route?.reason).toBe('keyword "analyze"');
    expect((await readiness()).status).toBe('serving');
  });
});
