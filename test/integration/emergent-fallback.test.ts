import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ClientError, Status, TrailerCapture, connectService, proto, type ServiceClient } from '@elexirion/kit';
import { FALLBACK_CLASSES, failureClassSlug, generateFallback } from '@elexirion/agent';
import {
  TEST_KEYS,
  collectEvents,
  repoRoot,
  shippedPipelines,
  startFakeAnthropic,
  startFakeGemini,
  startFakeOpenAI,
  startNats,
  startStack,
  stopAll,
  testProviderConfig,
  type FakeUpstream,
  type NatsServer,
  type Stack,
  waitFor,
} from '@elexirion/testing';

const { FailureClass } = proto;

// Pipelines whose one step fails in a known way; the fakes decide how.
const TEST_PIPELINES: Record<string, string> = {
  // On the "claude" alias: anthropic only, so a failing anthropic fails the step.
  plain: `
workflow:
  name: plain
  inputs:
    message: { type: string, required: true }
  steps:
    - name: answer
      type: claude
      prompt: "{{inputs.message}}"
`,
  slow: `
workflow:
  name: slow
  inputs:
    message: { type: string, required: true }
  steps:
    - name: think
      type: claude
      timeout: 2s
      prompt: "Think hard: {{inputs.message}}"
`,
  structured: `
workflow:
  name: structured
  inputs:
    message: { type: string, required: true }
  steps:
    - name: extract
      type: gemini_structured
      format: json
      repair: false
      schema:
        type: object
        required: [answer]
        properties:
          answer: { type: string }
      prompt: "Extract: {{inputs.message}}"
`,
  'needs-topic': `
workflow:
  name: needs-topic
  inputs:
    message: { type: string, required: true }
    topic: { type: string, required: true }
  steps:
    - name: answer
      type: claude
      prompt: "{{inputs.topic}}: {{inputs.message}}"
`,
};

async function chatError(stack: Stack, request: { message: string; pipeline: string }): Promise<ClientError> {
  const error = await stack.gateway.chat(request).then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(ClientError);
  return error as ClientError;
}

// Both shapes: between processes the trailers go over gRPC; in one process, through the in-process clients.
describe.each(['one-process-per-service', 'all-in-one'] as const)('emergent fallback (%s): a failed run is classified and a generated pipeline answers', (shape) => {
  let nats: NatsServer;
  let fakes: { anthropic: FakeUpstream; gemini: FakeUpstream; openai: FakeUpstream };
  let stack: Stack;
  let dir: string;
  let executor: { client: ServiceClient<'executor'>; close(): void };

  beforeAll(async () => {
    nats = await startNats();
    fakes = {
      anthropic: await startFakeAnthropic({ apiKey: TEST_KEYS.anthropic }),
      gemini: await startFakeGemini({ apiKey: TEST_KEYS.gemini }),
      openai: await startFakeOpenAI({ apiKey: TEST_KEYS.openai }),
    };
    dir = mkdtempSync(join(tmpdir(), 'elexirion-fallback-'));
    // The shipped pipelines (for the validation of every generated fallback) and the test's own.
    const pipelines = join(dir, 'pipelines');
    cpSync(join(repoRoot, 'pipelines'), pipelines, { recursive: true });
    for (const [name, text] of Object.entries(TEST_PIPELINES)) writeFileSync(join(pipelines, `${name}.yaml`), text);
    const config = join(dir, 'providers.yaml');
    writeFileSync(config, JSON.stringify(testProviderConfig()));
    stack = await startStack(shape, nats.url, {
      PIPELINES_DIR: pipelines,
      PROVIDER_CONFIG: config,
      ANTHROPIC_API_KEY: TEST_KEYS.anthropic,
      ANTHROPIC_BASE_URL: fakes.anthropic.url,
      GEMINI_API_KEY: TEST_KEYS.gemini,
      GEMINI_BASE_URL: fakes.gemini.url,
      OPENAI_API_KEY: TEST_KEYS.openai,
      OPENAI_BASE_URL: fakes.openai.url,
    });
    executor = connectService('executor', `127.0.0.1:${stack.ports.executor}`, { caller: 'test' });
  });

  afterEach(() => {
    for (const fake of Object.values(fakes)) fake.reset();
  });

  afterAll(async () => {
    executor?.close();
    await stack?.stop();
    await Promise.all(Object.values(fakes ?? {}).map((fake) => fake.close()));
    await nats?.stop();
    await stopAll();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('overloaded: every target 529 -> the same steps on another vendor\'s chain, and the answer says so', async () => {
    fakes.anthropic.setDefault({ status: 529, errorMessage: 'Overloaded' });
    fakes.gemini.script({ text: 'Gemini answered the fallback.' }, { text: 'Over HTTP too.' });
    const listener = await collectEvents(nats.url);
    const answer = await stack.gateway.chat({ message: 'Hello there', pipeline: 'plain' });
    expect(answer.response).toBe('Gemini answered the fallback.');
    expect(answer.fallbackUsed).toBe(true);
    expect(answer.fallback).toMatchObject({ failureClass: FailureClass.FAILURE_CLASS_OVERLOADED, pipeline: 'plain--fallback-overloaded', succeeded: true });
    expect(answer.fallback!.originalError).toMatch(/^answer: UNAVAILABLE: plain: step "answer": every target of "claude" failed/);
    expect(answer.fallback!.yaml).toContain('model: gemini');
    expect(answer.pipelineUsed).toBe('plain--fallback-overloaded');
    expect(fakes.gemini.requests).toHaveLength(1);
    try {
      // The agent's job event says a fallback was used.
      const job = await waitFor('the agent\'s job event', () => listener.events.find((item) => item.event.agentJob?.jobId === answer.jobId));
      expect(job.event.agentJob).toMatchObject({ pipeline: 'plain--fallback-overloaded', fallbackUsed: true });
    } finally {
      await listener.close();
    }
    // And the HTTP chat's JSON.
    const reply = await fetch(`http://127.0.0.1:${stack.ports.gatewayHttp}/v1/chat`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ message: 'Hello there', pipeline: 'plain' }),
    });
    expect(reply.status).toBe(200);
    expect(await reply.json()).toMatchObject({ response: 'Over HTTP too.', fallbackUsed: true, fallback: { failureClass: 'FAILURE_CLASS_OVERLOADED', pipeline: 'plain--fallback-overloaded', succeeded: true } });
  });

  it('provider_error: a vendor\'s 500s -> the alternative chain too, classed as a provider error', async () => {
    fakes.anthropic.setDefault({ status: 500, errorMessage: 'internal' });
    fakes.gemini.script({ text: 'Gemini again.' });
    const answer = await stack.gateway.chat({ message: 'Hello there', pipeline: 'plain' });
    expect(answer).toMatchObject({ response: 'Gemini again.', fallbackUsed: true });
    expect(answer.fallback).toMatchObject({ failureClass: FailureClass.FAILURE_CLASS_PROVIDER_ERROR, pipeline: 'plain--fallback-provider_error' });
  });

  it('timeout: a step over its timeout -> one short step under twice its time', async () => {
    fakes.anthropic.script({ hang: true }, { text: 'A short answer in time.' });
    const answer = await stack.gateway.chat({ message: 'Ponder this', pipeline: 'slow' });
    expect(answer).toMatchObject({ response: 'A short answer in time.', fallbackUsed: true });
    expect(answer.fallback).toMatchObject({ failureClass: FailureClass.FAILURE_CLASS_TIMEOUT, pipeline: 'slow--fallback-timeout' });
    expect(answer.fallback!.originalError).toMatch(/^think: DEADLINE_EXCEEDED: slow: step "think" went over its timeout of 2000 ms/);
    expect(answer.fallback!.yaml).toContain('timeout: 4000');
    // The hung request was given up, and the fallback's prompt is the inputs only.
    await fakes.anthropic.waitForAbort(0);
    expect(fakes.anthropic.requests[1]!.body.messages).toEqual([{ role: 'user', content: 'Ponder this' }]);
  });

  it('invalid_output: structured output that does not match its schema -> a single simple step', async () => {
    fakes.gemini.script({ text: 'this is not JSON at all' }, { text: 'A plain answer.' });
    const answer = await stack.gateway.chat({ message: 'the answer is 42', pipeline: 'structured' });
    expect(answer).toMatchObject({ response: 'A plain answer.', fallbackUsed: true });
    expect(answer.fallback).toMatchObject({ failureClass: FailureClass.FAILURE_CLASS_INVALID_OUTPUT, pipeline: 'structured--fallback-invalid_output' });
    expect(answer.fallback!.yaml).toContain('type: llm');
    expect(answer.fallback!.yaml).not.toContain('schema');
  });

  it('when the fallback fails too, the error has the fallback\'s status and names both failures', async () => {
    fakes.anthropic.setDefault({ status: 529, errorMessage: 'Overloaded' });
    fakes.gemini.setDefault({ status: 401, errorMessage: 'bad key' });
    const error = await chatError(stack, { message: 'Hello there', pipeline: 'plain' });
    expect(error.code).toBe(Status.FAILED_PRECONDITION);
    expect(error.details).toMatch(/^answer: UNAVAILABLE: plain: step "answer": every target of "claude" failed: anthropic\/claude-sonnet-5: .*; then the fallback plain--fallback-overloaded failed too: FAILED_PRECONDITION: plain--fallback-overloaded: step "answer": every target of "gemini" failed/);
  });

  it('the caller\'s errors get no fallback: an unknown pipeline, inputs the pipeline refuses', async () => {
    const missing = await chatError(stack, { message: 'Hello', pipeline: 'no-such-pipeline' });
    expect(missing.code).toBe(Status.NOT_FOUND);
    expect(missing.details).not.toContain('fallback');
    const refused = await chatError(stack, { message: 'Hello', pipeline: 'needs-topic' });
    expect(refused.code).toBe(Status.INVALID_ARGUMENT);
    expect(refused.details).not.toContain('fallback');
    for (const fake of Object.values(fakes)) expect(fake.requests).toHaveLength(0);
  });

  it.runIf(shape === 'one-process-per-service')('the provider says overloaded in its trailer only when every target of the chain was', async () => {
    const provider = connectService('provider', `127.0.0.1:${stack.ports.provider}`, { caller: 'test' });
    const complete = async () => {
      const capture = new TrailerCapture();
      const error = await provider.client.complete(proto.CompleteRequest.fromPartial({ model: 'claude_smart', messages: [{ role: proto.Role.ROLE_USER, content: 'hi' }] }), { onTrailer: capture.onTrailer }).catch((caught: unknown) => caught);
      return { code: (error as ClientError).code, overloaded: capture.providerOverloaded() };
    };
    try {
      fakes.anthropic.setDefault({ status: 529, errorMessage: 'Overloaded' });
      fakes.gemini.setDefault({ status: 529, errorMessage: 'Overloaded' });
      expect(await complete()).toEqual({ code: Status.UNAVAILABLE, overloaded: true });
      fakes.gemini.setDefault({ status: 429, errorMessage: 'slow down' });
      expect(await complete()).toEqual({ code: Status.RESOURCE_EXHAUSTED, overloaded: true });
      // One target broken rather than busy, even the first: not overloaded.
      fakes.gemini.setDefault({ status: 500, errorMessage: 'internal' });
      expect(await complete()).toEqual({ code: Status.UNAVAILABLE, overloaded: false });
      fakes.anthropic.setDefault({ status: 500, errorMessage: 'internal' });
      fakes.gemini.setDefault({ status: 529, errorMessage: 'Overloaded' });
      expect(await complete()).toEqual({ code: Status.UNAVAILABLE, overloaded: false });
    } finally {
      provider.close();
    }
  });

  // The executor listens on a port of its own only when it is a process of its own.
  it.runIf(shape === 'one-process-per-service')('the executor sends the RunFailure trailer on Execute and the class on ExecuteStream\'s StepFailed', async () => {
    fakes.anthropic.setDefault({ status: 529, errorMessage: 'Overloaded' });
    const capture = new TrailerCapture();
    const failed = await executor.client.execute({ pipeline: 'plain', inputs: { message: 'Hi' } }, { onTrailer: capture.onTrailer }).catch((error: unknown) => error);
    expect(failed).toBeInstanceOf(ClientError);
    expect(capture.runFailure()).toMatchObject({ pipeline: 'plain', step: 'answer', failureClass: FailureClass.FAILURE_CLASS_OVERLOADED, code: 'UNAVAILABLE' });

    const events: proto.ExecuteStreamResponse[] = [];
    const streamCapture = new TrailerCapture();
    await expect(
      (async () => {
        for await (const event of executor.client.executeStream({ request: proto.ExecuteRequest.fromPartial({ pipeline: 'plain', inputs: { message: 'Hi' } }) }, { onTrailer: streamCapture.onTrailer })) events.push(event);
      })(),
    ).rejects.toBeInstanceOf(ClientError);
    expect(events.find((event) => event.stepFailed)?.stepFailed).toMatchObject({ step: 'answer', failureClass: FailureClass.FAILURE_CLASS_OVERLOADED });
    expect(streamCapture.runFailure()?.failureClass).toBe(FailureClass.FAILURE_CLASS_OVERLOADED);

    // A caller's error carries none.
    const notFound = new TrailerCapture();
    await executor.client.execute({ pipeline: 'no-such-pipeline', inputs: {} }, { onTrailer: notFound.onTrailer }).catch(() => undefined);
    expect(notFound.runFailure()).toBeUndefined();
  });

  it.runIf(shape === 'one-process-per-service')('every class\'s fallback of every shipped pipeline passes the executor\'s validation', async () => {
    const problems: string[] = [];
    for (const file of shippedPipelines()) {
      const definition = await executor.client.getPipeline({ pipeline: file.slice(0, -'.yaml'.length), inlineYaml: '' });
      expect(definition.stepModels.length).toBeGreaterThan(0);
      for (const failureClass of FALLBACK_CLASSES) {
        const generated = generateFallback(definition, { failureClass, step: definition.stepModels[0]!.step });
        const validation = await executor.client.validate({ pipeline: '', inlineYaml: generated.yaml });
        if (!validation.valid) problems.push(`${generated.name}: ${validation.problems.map((problem) => `${problem.line}:${problem.column} ${problem.message}`).join('; ')}`);
        expect(generated.name).toBe(`${definition.summary!.name}--fallback-${failureClassSlug(failureClass)}`);
      }
    }
    expect(problems).toEqual([]);
  });
});
