import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientError, Status } from 'nice-grpc';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { PromptRegistry } from '@elexirion/executor';
import { collectEvents, eventually, startNats, waitFor, type NatsServer, stopAll, startStack, type Stack, type StackShape } from '@elexirion/testing';

const shapes: StackShape[] = ['one-process-per-service', 'all-in-one'];

describe.each(shapes)('a chat through gateway -> agent -> executor -> provider (%s)', (shape) => {
  let nats: NatsServer;
  let stack: Stack;

  beforeAll(async () => {
    nats = await startNats();
    stack = await startStack(shape, nats.url);
  });

  afterAll(async () => {
    await stack?.stop();
    await nats?.stop();
    await stopAll();
  });

  it('answers over gRPC with the pipeline used, and every service reports it on NATS under one trace id', async () => {
    const listener = await collectEvents(nats.url);
    try {
      const response = await stack.gateway.chat({ message: 'hello from the integration test' });
      expect(response.pipelineUsed).toBe('general');
      expect(response.response).toContain('mock provider');
      expect(response.jobId).toMatch(/^[0-9a-f-]{36}$/);
      expect(response.executionTimeMs).toBeGreaterThanOrEqual(0);
      expect(response.usage?.outputTokens).toBeGreaterThan(0);

      const kinds = ['gateway.request', 'agent.job', 'executor.run', 'provider.completion'];
      const received = await waitFor('an event from every service', () => {
        const found = kinds.map((kind) => listener.events.find((item) => item.subject === `elexirion.events.${kind}`));
        return found.every(Boolean) ? found.map((item) => item!) : undefined;
      });
      const traceIds = new Set(received.map((item) => item.event.traceId));
      expect(traceIds.size).toBe(1);
      const [traceId] = [...traceIds];
      expect(traceId).toMatch(/^[0-9a-f]{32}$/);
      for (const item of received) {
        expect(item.event.status).toBe('OK');
        expect(item.traceparent).toContain(traceId);
      }
      const run = received[2]!.event.executorRun!;
      expect(run.pipeline).toBe('general');
      expect(run.inputs).toEqual({ message: 'hello from the integration test' });
      expect(run.output).toBe(response.response);
      expect(received[1]!.event.agentJob!.jobId).toBe(response.jobId);
    } finally {
      await listener.close();
    }
  });

  it('keeps the events in the JetStream stream', async () => {
    const connection = await connect({ servers: nats.url });
    try {
      const manager = await jetstreamManager(connection);
      const info = await eventually('the stream to hold the events', async () => {
        const current = await manager.streams.info('ELEXIRION_EVENTS');
        return current.state.messages >= 4 ? current : undefined;
      });
      expect(info.config.subjects).toEqual(['elexirion.events.>']);
    } finally {
      await connection.close();
    }
  });

  it('answers the same call over HTTP/JSON', async () => {
    const reply = await fetch(`http://127.0.0.1:${stack.ports.gatewayHttp}/v1/chat`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ message: 'ping' }),
    });
    expect(reply.status).toBe(200);
    const body = (await reply.json()) as { response: string; pipelineUsed: string };
    expect(body).toMatchObject({ response: 'pong', pipelineUsed: 'general' });
  });

  it('runs a named pipeline with ExecutePipeline', async () => {
    const result = await stack.gateway.executePipeline({ pipeline: 'general', inputs: { message: 'what is Elexirion?' } });
    expect(result.pipeline).toBe('general');
    expect(result.result).toContain('YAML');
    expect(result.steps).toHaveLength(1);
    expect(result.steps[0]).toMatchObject({ name: 'answer', type: 'claude_smart', provider: 'mock' });
  });

  it('passes a downstream status back to the caller with its message', async () => {
    const missing = await stack.gateway.executePipeline({ pipeline: 'no_such_pipeline', inputs: {} }).catch((error) => error);
    expect(missing).toBeInstanceOf(ClientError);
    expect(missing.code).toBe(Status.NOT_FOUND);
    expect(missing.details).toBe('pipeline "no_such_pipeline" does not exist');

    const empty = await stack.gateway.chat({ message: '   ' }).catch((error) => error);
    expect(empty.code).toBe(Status.INVALID_ARGUMENT);
    expect(empty.details).toBe('message: must not be empty');

    const escape = await stack.gateway.executePipeline({ pipeline: '../etc/passwd', inputs: {} }).catch((error) => error);
    expect(escape.code).toBe(Status.INVALID_ARGUMENT);
  });

  it('maps statuses to HTTP codes with a JSON error body', async () => {
    const reply = await fetch(`http://127.0.0.1:${stack.ports.gatewayHttp}/v1/pipelines/nope/execute`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ inputs: { message: 'x' } }),
    });
    expect(reply.status).toBe(404);
    expect(await reply.json()).toEqual({ error: { code: 'NOT_FOUND', message: 'pipeline "nope" does not exist' } });

    const broken = await fetch(`http://127.0.0.1:${stack.ports.gatewayHttp}/v1/chat`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"message": ',
    });
    expect(broken.status).toBe(400);
    expect(((await broken.json()) as { error: { code: string } }).error.code).toBe('INVALID_ARGUMENT');
  });

  it('exposes Prometheus metrics on the gateway HTTP port', async () => {
    const text = await (await fetch(`http://127.0.0.1:${stack.ports.gatewayHttp}/metrics`)).text();
    expect(text).toMatch(/grpc_server_handled_total\{service="gateway",grpc_type="unary",grpc_service="elexirion\.v1\.Gateway",grpc_method="Chat",grpc_code="OK"\} [1-9]/);
  });

  it("keeps a chat's prompt versions per session_id: the agent passes it on as the executor's session key", async () => {
    const connection = await connect({ servers: nats.url });
    const registry = new PromptRegistry({ logger: { info() {}, warn() {}, debug() {} } });
    await registry.attach(connection);
    const listener = await collectEvents(nats.url);
    // The chat's answer does not carry its steps; the executor's run event does.
    const versionOf = async (sessionId: string) => {
      const { jobId } = await stack.gateway.chat({ message: 'hello', sessionId });
      const run = await waitFor(`the run event of job ${jobId}`, () => listener.events.find((item) => item.event.executorRun?.jobId === jobId)?.event.executorRun);
      return run.steps[0]!.promptVersion;
    };
    try {
      await registry.publish({
        pipeline: 'general',
        step: 'answer',
        versions: [
          { id: 'v-a', weight: 1, prompt: 'Version A: {{inputs.message}}' },
          { id: 'v-b', weight: 1, prompt: 'Version B: {{inputs.message}}' },
        ],
      });
      await eventually('the executor to see the versions', async () => ((await versionOf('any')) !== 'yaml' ? true : undefined));
      // Without the session key each chat draws a version by weight: ten alike would be a 1-in-512 chance.
      const sticky = new Set<string>();
      for (let i = 0; i < 10; i += 1) sticky.add(await versionOf('session-42'));
      expect(sticky.size).toBe(1);
      // Different sessions still spread over both versions.
      const spread = new Set<string>();
      for (let i = 0; i < 16; i += 1) spread.add(await versionOf(`session-${i}`));
      expect([...spread].sort()).toEqual(['v-a', 'v-b']);
    } finally {
      await registry.remove('general', 'answer').catch(() => {});
      // The tests after this one expect the YAML prompt again.
      await eventually('the executor to drop the versions', async () => ((await versionOf('any')) === 'yaml' ? true : undefined));
      await listener.close();
      await registry.close();
      await connection.close();
    }
  });
});
