// The agent-down bypass with real processes: the agent killed with SIGKILL, Chat still answers
// (degraded, routed by the gateway's copy of routes.yaml, run on the executor), /readyz and the
// request event say so; the agent started again, chats go through it and /readyz is serving.
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientError, Status } from 'nice-grpc';
import {
  collectEvents,
  eventually,
  spawnNode,
  startNats,
  startStack,
  stopAll,
  waitFor,
  repoRoot,
  waitServing,
  type NatsServer,
  type Stack,
} from '@elexirion/testing';

let nats: NatsServer;
let stack: Stack;
// The gateway's routes.yaml: a copy of the shipped one, edited while the agent is down.
const routesDir = mkdtempSync(join(tmpdir(), 'elexirion-gateway-routes-'));
const routesFile = join(routesDir, 'routes.yaml');

beforeAll(async () => {
  copyFileSync(join(repoRoot, 'pipelines/routes.yaml'), routesFile);
  nats = await startNats();
  // A short window, so the test sees the gateway try the agent again soon after it returns.
  stack = await startStack('one-process-per-service', nats.url, { GATEWAY_AGENT_DOWN_WINDOW_MS: '300', GATEWAY_ROUTES_FILE: routesFile, GATEWAY_ROUTES_POLL_MS: '200' });
});

afterAll(async () => {
  await stack?.stop();
  await nats?.stop();
  await stopAll();
  rmSync(routesDir, { recursive: true, force: true });
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

  it('routes with an edit of its routes.yaml while the agent is down, without a restart', async () => {
    const before = await stack.gateway.chat({ message: 'scaffold a service' });
    expect(before).toMatchObject({ degraded: true, pipelineUsed: 'general' });
    writeFileSync(routesFile, readFileSync(routesFile, 'utf8').replace('keywords: [generate, generating, generates]', 'keywords: [generate, generating, generates, scaffold]'));
    const after = await eventually('the edited table in use', async () => {
      const reply = await stack.gateway.chat({ message: 'scaffold a service' });
      return reply.pipelineUsed === 'generate' ? reply : undefined;
    });
    expect(after).toMatchObject({ degraded: true, route: { matchedBy: 'rule', rule: 'generate', reason: expect.stringMatching(/^keyword "scaffold" \(the gateway's route table /) } });
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

describe('Chat with the bypass off (GATEWAY_AGENT_BYPASS=false)', () => {
  let offStack: Stack;

  beforeAll(async () => {
    offStack = await startStack('one-process-per-service', nats.url, { GATEWAY_AGENT_BYPASS: 'false' });
  });

  afterAll(async () => {
    await offStack?.stop();
  });

  it('answers UNAVAILABLE while the agent is down, and /readyz stays serving', async () => {
    const agent = offStack.processes.agent!;
    agent.child.kill('SIGKILL');
    await agent.exited;
    const error = await offStack.gateway.chat({ message: 'please analyze this function' }).then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(ClientError);
    expect((error as ClientError).code).toBe(Status.UNAVAILABLE);
    expect((error as ClientError).details).toBe('the agent service is unavailable');
    const ready = (await (await fetch(`http://127.0.0.1:${offStack.ports.gatewayHttp}/readyz`)).json()) as { status: string };
    expect(ready.status).toBe('serving');
  });
});
