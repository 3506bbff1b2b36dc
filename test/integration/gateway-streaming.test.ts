// Token streaming end to end: fake vendor -> provider -> executor -> agent -> gateway -> client,
// over gRPC (ChatStream, ExecutePipelineStream) and Server-Sent Events (/api/agent/chat/stream),
// each service its own process. Deltas arrive while the vendor still holds the rest; a client
// that goes away aborts the vendor's request; a vendor failure after the first token reaches the
// client as an error, never as a clean end. And the design's /api/agent/chat JSON.
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '@nats-io/transport-node';
import { ClientError, Status, connectService, proto, type ServiceClient } from '@elexirion/kit';
import { PromptRegistry } from '@elexirion/executor';
import {
  TEST_KEYS,
  collectEvents,
  eventually,
  repoRoot,
  startFakeAnthropic,
  startFakeGemini,
  startNats,
  startStack,
  stopAll,
  testProviderConfig,
  waitFor,
  type FakeUpstream,
  type NatsServer,
  type Stack,
} from '@elexirion/testing';

// On the "claude" alias (anthropic only): a failing anthropic fails the step, and the agent's
// emergent fallback moves it to gemini.
const PLAIN = `
workflow:
  name: plain
  inputs:
    message: { type: string, required: true }
  steps:
    - name: answer
      type: claude
      prompt: "{{inputs.message}}"
`;

const INLINE = `
workflow:
  name: inline-echo
  inputs:
    message: { type: string, required: true }
  steps:
    - name: reply
      type: claude
      prompt: "Inline: {{inputs.message}}"
`;

// Both shapes: between processes the cancel and the trailers go over gRPC; in one process, through
// the in-process clients.
describe.each(['one-process-per-service', 'all-in-one'] as const)('streaming (%s)', (shape) => {
  let nats: NatsServer;
  let anthropic: FakeUpstream;
  let gemini: FakeUpstream;
  let stack: Stack;
  let dir: string;
  let agent: { client: ServiceClient<'agent'>; close(): void };

  beforeAll(async () => {
    nats = await startNats();
    anthropic = await startFakeAnthropic({ apiKey: TEST_KEYS.anthropic });
    gemini = await startFakeGemini({ apiKey: TEST_KEYS.gemini });
    dir = mkdtempSync(join(tmpdir(), 'elexirion-streaming-'));
    const pipelines = join(dir, 'pipelines');
    cpSync(join(repoRoot, 'pipelines'), pipelines, { recursive: true });
    writeFileSync(join(pipelines, 'plain.yaml'), PLAIN);
    const config = join(dir, 'providers.yaml');
    writeFileSync(config, JSON.stringify(testProviderConfig()));
    stack = await startStack(shape, nats.url, {
      PIPELINES_DIR: pipelines,
      PROVIDER_CONFIG: config,
      ANTHROPIC_API_KEY: TEST_KEYS.anthropic,
      ANTHROPIC_BASE_URL: anthropic.url,
      GEMINI_API_KEY: TEST_KEYS.gemini,
      GEMINI_BASE_URL: gemini.url,
    });
    agent = connectService('agent', `127.0.0.1:${stack.ports.agent}`, { caller: 'test' });
  });

  afterEach(() => {
    anthropic.reset();
    gemini.reset();
  });

  afterAll(async () => {
    agent?.close();
    await stack?.stop();
    await anthropic?.close();
    await gemini?.close();
    await nats?.stop();
    await stopAll();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const url = (path: string) => `http://127.0.0.1:${stack.ports.gatewayHttp}${path}`;

  /** The agent's record of an inline run, once its batch is written. */
  function jobRecord(jobId: string): Promise<proto.Job> {
    return eventually(`the record of job ${jobId}`, async () => (await agent.client.getJob({ jobId })).job);
  }

  /** A promise the test settles: the fake holds the stream's rest until then. */
  function gate(): { until: Promise<void>; open(): void } {
    let open!: () => void;
    const until = new Promise<void>((resolve) => (open = resolve));
    return { until, open };
  }

  function kindOf(message: proto.ChatStreamResponse | proto.ExecutePipelineStreamResponse): string {
    return Object.entries(message).find(([, value]) => value !== undefined)![0];
  }

  interface SseEvent {
    event: string;
    data: any;
  }

  /** Reads a Server-Sent Events body event by event, as it arrives. */
  async function* readEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<SseEvent> {
    const decoder = new TextDecoder();
    let buffered = '';
    for await (const chunk of body) {
      buffered += decoder.decode(chunk, { stream: true });
      let end: number;
      while ((end = buffered.indexOf('\n\n')) !== -1) {
        const block = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        const lines = block.split('\n').filter((line) => !line.startsWith(':'));
        if (lines.length === 0) continue;
        const event = lines.find((line) => line.startsWith('event: '))?.slice(7) ?? 'message';
        const data = lines.find((line) => line.startsWith('data: '))?.slice(6);
        yield { event, data: data === undefined ? undefined : JSON.parse(data) };
      }
    }
  }

  function postJson(path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
    return fetch(url(path), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), ...(signal ? { signal } : {}) });
  }

  describe('ChatStream over gRPC', () => {
    it('sends the route, then text deltas while the vendor still holds the rest, then done with usage and cost', async () => {
      const held = gate();
      anthropic.script({ chunks: ['Hello', ', wor', 'ld.'], holdAfterChunks: { afterChunks: 1, until: held.until }, usage: { inputTokens: 100, outputTokens: 50 } });
      const listener = await collectEvents(nats.url);
      try {
        const kinds: string[] = [];
        const deltas: string[] = [];
        let done: proto.ChatResponse | undefined;
        let runStarted: proto.RunStarted | undefined;
        for await (const message of stack.gateway.chatStream({ message: 'Say hello', sessionId: '', pipeline: '' })) {
          kinds.push(kindOf(message));
          runStarted ??= message.runStarted;
          if (message.textDelta) {
            deltas.push(message.textDelta.text);
            if (deltas.length === 1) {
              // The first token is here while the vendor has not sent the rest.
              expect(message.textDelta).toEqual({ step: 'answer', text: 'Hello' });
              expect(anthropic.requests[0]!.finishedAt).toBeUndefined();
              held.open();
            }
          }
          if (message.done) done = message.done;
        }
        expect(deltas.join('')).toBe('Hello, world.');
        // Each kind in its place: the route first, done last.
        expect([...new Set(kinds)]).toEqual(['route', 'runStarted', 'stepStarted', 'textDelta', 'stepFinished', 'done']);
        expect(kinds.at(-1)).toBe('done');
        expect(done).toMatchObject({ response: 'Hello, world.', pipelineUsed: 'general', fallbackUsed: false, degraded: false, usage: { inputTokens: 100, outputTokens: 50 } });
        expect(done!.usage!.costUsd).toBeCloseTo((100 * 3 + 50 * 15) / 1_000_000, 12);
        expect(done!.route).toMatchObject({ pipeline: 'general' });
        // run_started names the chat's job, which is recorded like a unary chat's.
        expect(runStarted?.runId).toBe(done!.jobId);
        // (The all-in-one process serves only the gateway's port; the split shape reads the agent's.)
        if (shape === 'one-process-per-service') expect(await jobRecord(done!.jobId)).toMatchObject({ status: proto.JobStatus.JOB_STATUS_SUCCEEDED, origin: 'chat', output: 'Hello, world.', message: 'Say hello' });
        // The request event at the stream's end names the job.
        const event = await waitFor('the gateway\'s ChatStream request event', () => listener.events.find((item) => item.event.gatewayRequest?.method === 'ChatStream'));
        expect(event.event.gatewayRequest).toMatchObject({ method: 'ChatStream', jobId: done!.jobId });
        expect(event.event.status).toBe('OK');
      } finally {
        await listener.close();
      }
    });

    it('refuses a bad request before any event, naming the field', async () => {
      const error = await (async () => {
        for await (const _ of stack.gateway.chatStream({ message: '  ', sessionId: '', pipeline: '' })) expect.unreachable('no event for a refused call');
      })().catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(ClientError);
      expect(error).toMatchObject({ code: Status.INVALID_ARGUMENT, details: 'message: must not be empty' });
    });

    it('a client that cancels mid-stream aborts the vendor request', async () => {
      anthropic.script({ chunks: ['One ', 'two ', 'three'], holdAfterChunks: { afterChunks: 1, until: new Promise(() => {}) } });
      const controller = new AbortController();
      const seen: string[] = [];
      let jobId = '';
      const ended = await (async () => {
        for await (const message of stack.gateway.chatStream({ message: 'Count', sessionId: '', pipeline: '' }, { signal: controller.signal })) {
          jobId ||= message.runStarted?.runId ?? '';
          if (message.textDelta) {
            seen.push(message.textDelta.text);
            controller.abort();
          }
        }
      })().catch((caught: unknown) => caught);
      expect(seen).toEqual(['One ']);
      expect((ended as Error).name).toBe('AbortError');
      // Down the chain: gateway -> agent -> executor -> provider -> the vendor's HTTP request.
      await anthropic.waitForAbort(0);
      expect(anthropic.requests[0]!.abortedByClient).toBe(true);
      if (shape === 'one-process-per-service') expect(await jobRecord(jobId)).toMatchObject({ status: proto.JobStatus.JOB_STATUS_CANCELLED, errorCode: 'CANCELLED' });
    });

    it('a vendor failure after the first token ends the stream with an error status, never done', async () => {
      anthropic.script({ chunks: ['Partial ', 'answer'], streamError: { afterChunks: 1, status: 500, message: 'upstream broke' } });
      const kinds: string[] = [];
      const error = await (async () => {
        for await (const message of stack.gateway.chatStream({ message: 'Break please', sessionId: '', pipeline: 'plain' })) kinds.push(kindOf(message));
      })().catch((caught: unknown) => caught);
      expect(kinds).toContain('textDelta');
      expect(kinds).not.toContain('done');
      expect(error).toBeInstanceOf(ClientError);
      expect((error as ClientError).code).toBe(Status.UNAVAILABLE);
      // No emergent fallback once text was sent: gemini never asked.
      expect(gemini.requests).toHaveLength(0);
    });

    it('a run failing before any text gets the emergent fallback, whose answer is done', async () => {
      anthropic.setDefault({ status: 529, errorMessage: 'Overloaded' });
      gemini.script({ text: 'Gemini answered instead.' });
      const kinds: string[] = [];
      let done: proto.ChatResponse | undefined;
      for await (const message of stack.gateway.chatStream({ message: 'Hello there', sessionId: '', pipeline: 'plain' })) {
        kinds.push(kindOf(message));
        if (message.done) done = message.done;
      }
      expect(kinds).toContain('stepFailed');
      expect(kinds).not.toContain('textDelta');
      expect(done).toMatchObject({ response: 'Gemini answered instead.', fallbackUsed: true, pipelineUsed: 'plain--fallback-overloaded' });
      expect(done!.fallback).toMatchObject({ pipeline: 'plain--fallback-overloaded', succeeded: true });
    });
  });

  describe('ExecutePipelineStream and ExecutePipeline', () => {
    it('stream a named pipeline with a prompt override and a session', async () => {
      anthropic.script({ chunks: ['Over', 'ridden.'] });
      const kinds: string[] = [];
      let done: proto.ExecutePipelineResponse | undefined;
      const request = { pipeline: 'plain', inputs: { message: 'hi' }, promptOverrides: { answer: 'Overridden: {{inputs.message}}' }, inlineYaml: '', sessionId: 'session-7' };
      for await (const message of stack.gateway.executePipelineStream(request)) {
        kinds.push(kindOf(message));
        if (message.done) done = message.done;
      }
      expect([...new Set(kinds)]).toEqual(['runStarted', 'stepStarted', 'textDelta', 'stepFinished', 'done']);
      expect(done).toMatchObject({ result: 'Overridden.', pipeline: 'plain' });
      expect(done!.steps[0]).toMatchObject({ name: 'answer', promptVersion: 'override' });
      expect(anthropic.requests[0]!.body.messages).toEqual([{ role: 'user', content: 'Overridden: hi' }]);
    });

    it('keep a session\'s prompt versions: the session goes on as the executor\'s session key', async () => {
      const connection = await connect({ servers: nats.url });
      const registry = new PromptRegistry({ logger: { info() {}, warn() {}, debug() {} } });
      await registry.attach(connection);
      // The version each streamed run used, from its step_finished event.
      const versionOf = async (sessionId: string) => {
        for await (const message of stack.gateway.executePipelineStream({ pipeline: 'plain', inputs: { message: 'hi' }, promptOverrides: {}, inlineYaml: '', sessionId })) {
          if (message.stepFinished) return message.stepFinished.promptVersion;
        }
        throw new Error('no step_finished');
      };
      try {
        await registry.publish({
          pipeline: 'plain',
          step: 'answer',
          versions: [
            { id: 'v-a', weight: 1, prompt: 'Version A: {{inputs.message}}' },
            { id: 'v-b', weight: 1, prompt: 'Version B: {{inputs.message}}' },
          ],
        });
        await eventually('the executor to see the versions', async () => ((await versionOf('any')) !== 'yaml' ? true : undefined));
        // Without the session key each run draws a version by weight: ten alike would be a 1-in-512 chance.
        const sticky = new Set<string>();
        for (let i = 0; i < 10; i += 1) sticky.add(await versionOf('session-42'));
        expect(sticky.size).toBe(1);
        const spread = new Set<string>();
        for (let i = 0; i < 16; i += 1) spread.add(await versionOf(`session-${i}`));
        expect([...spread].sort()).toEqual(['v-a', 'v-b']);
      } finally {
        await registry.remove('plain', 'answer').catch(() => {});
        // The tests after this one expect the YAML prompt again.
        await eventually('the executor to drop the versions', async () => ((await versionOf('any')) === 'yaml' ? true : undefined));
        await registry.close();
        await connection.close();
      }
    });

    it('run inline YAML, unary and streamed', async () => {
      anthropic.script({ text: 'inline unary' }, { text: 'inline streamed' });
      const unary = await stack.gateway.executePipeline({ pipeline: '', inputs: { message: 'one' }, promptOverrides: {}, inlineYaml: INLINE, sessionId: '' });
      expect(unary).toMatchObject({ result: 'inline unary', pipeline: 'inline-echo' });
      let done: proto.ExecutePipelineResponse | undefined;
      for await (const message of stack.gateway.executePipelineStream({ pipeline: '', inputs: { message: 'two' }, promptOverrides: {}, inlineYaml: INLINE, sessionId: '' })) {
        if (message.done) done = message.done;
      }
      expect(done).toMatchObject({ result: 'inline streamed', pipeline: 'inline-echo' });
      expect(anthropic.requests.map((request) => request.body.messages[0].content)).toEqual(['Inline: one', 'Inline: two']);
    });
  });

  describe('POST /api/agent/chat/stream (Server-Sent Events)', () => {
    it('sends events named by kind, deltas while the vendor holds the rest, and done with usage', async () => {
      const held = gate();
      anthropic.script({ chunks: ['Streamed ', 'over ', 'SSE.'], holdAfterChunks: { afterChunks: 1, until: held.until }, usage: { inputTokens: 10, outputTokens: 20 } });
      const reply = await postJson('/api/agent/chat/stream', { message: 'Stream it' });
      expect(reply.status).toBe(200);
      expect(reply.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
      const names: string[] = [];
      let text = '';
      let done: any;
      for await (const { event, data } of readEvents(reply.body!)) {
        names.push(event);
        if (event === 'delta') {
          if (text === '') {
            expect(data).toEqual({ step: 'answer', text: 'Streamed ' });
            expect(anthropic.requests[0]!.finishedAt).toBeUndefined();
            held.open();
          }
          text += data.text;
        }
        if (event === 'route') expect(data).toMatchObject({ pipeline: 'general', matched_by: expect.any(String) });
        if (event === 'done') done = data;
      }
      expect(text).toBe('Streamed over SSE.');
      expect([...new Set(names)]).toEqual(['route', 'run_started', 'step_started', 'delta', 'step_finished', 'done']);
      expect(done).toEqual({
        status: 'success',
        response: 'Streamed over SSE.',
        execution_time: expect.any(Number),
        pipeline_used: 'general',
        fallback_used: false,
        job_id: expect.any(String),
        usage: { input_tokens: 10, output_tokens: 20, cost_usd: expect.closeTo((10 * 3 + 20 * 15) / 1_000_000, 12) },
      });
    });

    it('a client that closes the socket mid-stream aborts the vendor request', async () => {
      anthropic.script({ chunks: ['First ', 'second'], holdAfterChunks: { afterChunks: 1, until: new Promise(() => {}) } });
      const controller = new AbortController();
      const reply = await postJson('/api/agent/chat/stream', { message: 'Then leave' }, controller.signal);
      const ended = await (async () => {
        for await (const { event } of readEvents(reply.body!)) if (event === 'delta') controller.abort();
      })().catch((caught: unknown) => caught);
      expect((ended as Error).name).toBe('AbortError');
      await anthropic.waitForAbort(0);
      expect(anthropic.requests[0]!.abortedByClient).toBe(true);
    });

    it('a vendor failure after the first token ends with event: error, never done', async () => {
      anthropic.script({ chunks: ['Half ', 'way'], streamError: { afterChunks: 1, status: 500, message: 'upstream broke' } });
      const reply = await postJson('/api/agent/chat/stream', { message: 'Break please', pipeline: 'plain' });
      expect(reply.status).toBe(200);
      const events: SseEvent[] = [];
      for await (const event of readEvents(reply.body!)) events.push(event);
      const names = events.map((event) => event.event);
      expect(names).toContain('delta');
      expect(names).not.toContain('done');
      expect(events.at(-1)).toEqual({ event: 'error', data: { error: { code: 'UNAVAILABLE', message: expect.any(String) } } });
    });

    it('refuses a bad body before streaming, in the design\'s error shape', async () => {
      const reply = await postJson('/api/agent/chat/stream', { message: 42 });
      expect(reply.status).toBe(400);
      expect(await reply.json()).toEqual({ status: 'error', error: 'body.message: Invalid input: expected string, received number', code: 'INVALID_ARGUMENT', fallback_used: false });
    });
  });

  describe('POST /api/agent/chat (the design\'s JSON)', () => {
    it('answers success with the response, seconds taken, the pipeline and whether a fallback served', async () => {
      anthropic.script({ text: 'A JSON answer.', usage: { inputTokens: 4, outputTokens: 8 } });
      const reply = await postJson('/api/agent/chat', { message: 'Answer in JSON', session_id: 'design-session' });
      expect(reply.status).toBe(200);
      const body = (await reply.json()) as { execution_time: number };
      expect(body).toEqual({
        status: 'success',
        response: 'A JSON answer.',
        execution_time: expect.any(Number),
        pipeline_used: 'general',
        fallback_used: false,
        job_id: expect.any(String),
        usage: { input_tokens: 4, output_tokens: 8, cost_usd: expect.closeTo((4 * 3 + 8 * 15) / 1_000_000, 12) },
      });
      // Seconds, not milliseconds: a sub-minute chat is well under 60.
      expect(body.execution_time).toBeGreaterThan(0);
      expect(body.execution_time).toBeLessThan(60);
    });

    it('answers errors as {"status":"error"} with the HTTP status and the gRPC status name', async () => {
      for (const [body, status, expected] of [
        [{ message: '' }, 400, { code: 'INVALID_ARGUMENT', error: 'message: must not be empty' }],
        [{}, 400, { code: 'INVALID_ARGUMENT', error: 'body.message: Invalid input: expected string, received undefined' }],
        [{ message: 'hi', pipeline: 'Not A Name' }, 400, { code: 'INVALID_ARGUMENT', error: expect.stringMatching(/^pipeline: "Not A Name" is not a pipeline name/) }],
        [{ message: 'hi', pipeline: 'no-such-pipeline' }, 404, { code: 'NOT_FOUND', error: expect.stringContaining('no-such-pipeline') }],
      ] as const) {
        const reply = await postJson('/api/agent/chat', body);
        expect(reply.status).toBe(status);
        expect(await reply.json()).toEqual({ status: 'error', fallback_used: false, ...expected });
      }
    });

    it('says fallback_used on an error when the emergent fallback was tried and failed too', async () => {
      anthropic.setDefault({ status: 529, errorMessage: 'Overloaded' });
      gemini.setDefault({ status: 401, errorMessage: 'bad key' });
      const reply = await postJson('/api/agent/chat', { message: 'Hello there', pipeline: 'plain' });
      expect(reply.status).toBe(400);
      expect(await reply.json()).toEqual({ status: 'error', code: 'FAILED_PRECONDITION', error: expect.stringContaining('then the fallback'), fallback_used: true });
      expect(gemini.requests.length).toBeGreaterThan(0);
    });
  });
});
