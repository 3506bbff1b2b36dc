import { describe, expect, it } from 'vitest';
import { Metadata } from 'nice-grpc-common';
import { ClientError, PROVIDER_OVERLOADED_TRAILER, ServerError, Status, proto, type ServiceClient } from '@elexirion/kit';
import { LlmCaller, type LlmStep } from '../src/engine/llm-call.js';
import {
  MaxTurnsExceededError,
  ProviderOverloadedError,
  StepFailure,
  ToolRestrictionViolatedError,
  describeRunFailure,
} from '../src/engine/failure-class.js';
import type { Pipeline } from '../src/pipeline/schema.js';
import { answer, providerError, testEngine, type Answer } from './engine-support.js';

const { FailureClass } = proto;

const ONE_STEP = `
workflow:
  name: one
  steps:
    - name: ask
      type: claude
      prompt: hello
`;

/** Runs `yaml` with a provider answering `respond`; the error it fails with and the StepFailed events it streamed. */
async function failedRun(yaml: string, respond: Answer) {
  const engine = testEngine(respond);
  const events: proto.ExecuteStreamResponse[] = [];
  const error = await engine.run(yaml, { emit: (event) => events.push(event) }).then(
    () => undefined,
    (caught: unknown) => caught,
  );
  return { error, failed: events.flatMap((event) => (event.stepFailed ? [event.stepFailed] : [])) };
}

describe('a failed step\'s class, from statuses and typed errors', () => {
  const cases: [string, () => unknown, proto.FailureClass, Status][] = [
    ['a provider failure (every target 5xx)', () => providerError(Status.UNAVAILABLE), FailureClass.FAILURE_CLASS_PROVIDER_ERROR, Status.UNAVAILABLE],
    ['a vendor refusing the request', () => providerError(Status.INVALID_ARGUMENT), FailureClass.FAILURE_CLASS_PROVIDER_ERROR, Status.INVALID_ARGUMENT],
    ['rate limited everywhere (RESOURCE_EXHAUSTED)', () => providerError(Status.RESOURCE_EXHAUSTED), FailureClass.FAILURE_CLASS_OVERLOADED, Status.RESOURCE_EXHAUSTED],
    ['the provider overloaded, as its trailer said', () => new ProviderOverloadedError(providerError(Status.UNAVAILABLE)), FailureClass.FAILURE_CLASS_OVERLOADED, Status.UNAVAILABLE],
    ['the provider\'s DEADLINE_EXCEEDED', () => providerError(Status.DEADLINE_EXCEEDED), FailureClass.FAILURE_CLASS_TIMEOUT, Status.DEADLINE_EXCEEDED],
    ['an agentic step out of turns', () => new MaxTurnsExceededError('used 10 of 10 turns'), FailureClass.FAILURE_CLASS_MAX_TURNS_EXCEEDED, Status.RESOURCE_EXHAUSTED],
    ['an agentic step asking for a forbidden tool', () => new ToolRestrictionViolatedError('tool "shell" is not allowed'), FailureClass.FAILURE_CLASS_TOOL_RESTRICTION_VIOLATED, Status.PERMISSION_DENIED],
  ];
  it.each(cases)('%s', async (_what, thrown, failureClass, code) => {
    const { error, failed } = await failedRun(ONE_STEP, () => {
      throw thrown();
    });
    expect(error).toBeInstanceOf(StepFailure);
    expect(error).toMatchObject({ code, step: 'ask', failureClass });
    expect(failed).toEqual([expect.objectContaining({ step: 'ask', code: Status[code], failureClass })]);
    expect(describeRunFailure(error as StepFailure, 'run-1', 'one')).toMatchObject({ runId: 'run-1', pipeline: 'one', step: 'ask', failureClass, code: Status[code] });
  });

  it('a step over its timeout is a timeout', async () => {
    const yaml = ONE_STEP.replace('type: claude', 'type: claude\n      timeout: 50ms');
    const { error, failed } = await failedRun(yaml, ({ signal }) => new Promise((_resolve, reject) => signal!.addEventListener('abort', () => reject(new Error('aborted')))));
    expect(error).toMatchObject({ code: Status.DEADLINE_EXCEEDED, failureClass: FailureClass.FAILURE_CLASS_TIMEOUT });
    expect(failed[0]!.failureClass).toBe(FailureClass.FAILURE_CLASS_TIMEOUT);
  });

  it('structured output that does not match its schema is invalid_output', async () => {
    const yaml = `
workflow:
  name: structured
  steps:
    - name: plan
      type: gemini_structured
      format: json
      repair: false
      schema: { type: object, required: [summary] }
      prompt: plan it
`;
    const { error, failed } = await failedRun(yaml, () => answer('nope', { json: '', jsonError: 'the answer is not JSON' }));
    expect(error).toMatchObject({ code: Status.FAILED_PRECONDITION, step: 'plan', failureClass: FailureClass.FAILURE_CLASS_INVALID_OUTPUT });
    expect(failed[0]!.failureClass).toBe(FailureClass.FAILURE_CLASS_INVALID_OUTPUT);
  });

  it('a child\'s failure keeps its class and names the child; its parent\'s StepFailed says the same class', async () => {
    const yaml = `
workflow:
  name: fan
  steps:
    - name: both
      type: parallel
      steps:
        - name: left
          type: claude
          prompt: left
`;
    const { error, failed } = await failedRun(yaml, () => {
      throw providerError(Status.RESOURCE_EXHAUSTED);
    });
    expect(error).toMatchObject({ step: 'left', failureClass: FailureClass.FAILURE_CLASS_OVERLOADED });
    expect(failed.map((event) => [event.step, event.failureClass])).toEqual([
      ['left', FailureClass.FAILURE_CLASS_OVERLOADED],
      ['both', FailureClass.FAILURE_CLASS_OVERLOADED],
    ]);
  });

  it('the pipeline\'s own fault (a transform that fails) has no class, and a cancelled run is no run failure', async () => {
    const yaml = `
workflow:
  name: own
  steps:
    - name: parse
      type: transform
      input: "not json"
      operations: [{ op: json_parse }]
`;
    const { error, failed } = await failedRun(yaml, () => answer('unused'));
    expect(error).toMatchObject({ failureClass: FailureClass.FAILURE_CLASS_UNSPECIFIED });
    expect(failed[0]!.failureClass).toBe(FailureClass.FAILURE_CLASS_UNSPECIFIED);
    expect(describeRunFailure(new ServerError(Status.CANCELLED, 'one: the run was cancelled'), 'run-1', 'one')).toBeUndefined();
    expect(describeRunFailure(new ServerError(Status.INVALID_ARGUMENT, 'one: inputs.topic: required'), 'run-1', 'one')).toBeUndefined();
    // The run's own timeout, outside any step.
    expect(describeRunFailure(new ServerError(Status.DEADLINE_EXCEEDED, 'one: the run went over its run_timeout'), 'run-1', 'one')).toMatchObject({ step: '', failureClass: FailureClass.FAILURE_CLASS_TIMEOUT });
  });
});

describe('the provider\'s overloaded trailer', () => {
  const step: LlmStep = { type: 'claude', name: 'ask', prompt: 'hello' };
  const pipeline: Pipeline = { name: 'one', description: '', inputs: {}, defaults: {}, steps: [step] };
  const callWith = (trailer: Record<string, string>) => {
    const provider = {
      async complete(_request: proto.CompleteRequest, options: { onTrailer?: (trailer: Metadata) => void }) {
        const metadata = Metadata();
        for (const [key, value] of Object.entries(trailer)) metadata.set(key, value);
        options.onTrailer?.(metadata);
        throw providerError(Status.UNAVAILABLE, 'every target of "claude" failed');
      },
    } as unknown as ServiceClient<'provider'>;
    const caller = new LlmCaller({ provider, prompts: () => undefined, loader: { readPromptFile: async () => '' } });
    return caller.call({ pipeline, step, scope: { inputs: {}, steps: new Map(), vars: {} }, runId: 'run-1', signal: new AbortController().signal, deadline: undefined }).catch((error: unknown) => error);
  };

  it('makes the provider\'s failure a ProviderOverloadedError, still its ClientError with its code', async () => {
    const error = await callWith({ [PROVIDER_OVERLOADED_TRAILER]: '1' });
    expect(error).toBeInstanceOf(ProviderOverloadedError);
    expect(error).toBeInstanceOf(ClientError);
    expect(error).toMatchObject({ code: Status.UNAVAILABLE, details: 'every target of "claude" failed' });
  });

  it('without it, the failure is the provider\'s as it came', async () => {
    const error = await callWith({});
    expect(error).toBeInstanceOf(ClientError);
    expect(error).not.toBeInstanceOf(ProviderOverloadedError);
  });
});
