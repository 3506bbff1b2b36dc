// A RunEngine over a provider client that answers from a function, for unit tests of the engine
// and its step handlers (the integration tests run it against the real provider).
import { fileURLToPath } from 'node:url';
import { ClientError, Status, proto, type Logger, type ServiceClient, type ServiceEvents } from '@elexirion/kit';
import { RunEngine, type RunRequest, type RunResult } from '../src/engine/run-engine.js';
import { PipelineLoader } from '../src/pipeline/loader.js';

const PIPELINES_DIR = fileURLToPath(new URL('../../../pipelines/', import.meta.url));

export interface ProviderCall {
  request: proto.CompleteRequest;
  signal: AbortSignal | undefined;
  deadline: Date | undefined;
}

export type Answer = (call: ProviderCall, index: number) => Promise<Partial<proto.CompleteResponse>> | Partial<proto.CompleteResponse>;

export function answer(text: string, more: Partial<proto.CompleteResponse> = {}): proto.CompleteResponse {
  return proto.CompleteResponse.create({ text, finishReason: 'stop', usage: { inputTokens: 1, outputTokens: 1, costUsd: 0 }, provider: 'fake', model: 'fake-model', attempts: 1, ...more });
}

export function providerError(code: Status, message = 'the provider failed'): ClientError {
  return new ClientError('/elexirion.v1.ProviderService/Complete', code, message);
}

export interface TestEngine {
  calls: ProviderCall[];
  debug: Record<string, unknown>[];
  /** Every step result the engine published in a step event, in order. */
  steps: proto.StepResult[];
  run(yaml: string, request?: Partial<RunRequest>): Promise<RunResult>;
}

export function testEngine(respond: Answer): TestEngine {
  const calls: ProviderCall[] = [];
  const debug: Record<string, unknown>[] = [];
  const provider = {
    async complete(request: proto.CompleteRequest, options: { signal?: AbortSignal; deadline?: Date } = {}) {
      const call = { request, signal: options.signal, deadline: options.deadline };
      calls.push(call);
      return answer('', await respond(call, calls.length - 1));
    },
    // A run that streams (`emit`) calls the provider's stream: the same answer, as its final message.
    async *streamComplete({ request }: proto.StreamCompleteRequest, options: { signal?: AbortSignal; deadline?: Date } = {}) {
      yield { done: await (this as unknown as ServiceClient<'provider'>).complete(request!, options) };
    },
  } as unknown as ServiceClient<'provider'>;
  const logger = { debug: (fields: Record<string, unknown>) => debug.push(fields), info() {}, warn() {}, error() {} } as unknown as Logger;
  const steps: proto.StepResult[] = [];
  const events = {
    publish(kind: string, fields: { executorStep?: { step?: proto.StepResult } }) {
      if (kind === 'step' && fields.executorStep?.step) steps.push(fields.executorStep.step);
    },
  } as unknown as ServiceEvents;
  const loader = new PipelineLoader(PIPELINES_DIR);
  const engine = new RunEngine({ provider, loader, prompts: () => undefined, checkpoints: undefined, events, logger });
  return {
    calls,
    debug,
    steps,
    async run(yaml, request = {}) {
      const loaded = await loader.loadInline(yaml);
      return engine.run(loaded, {
        runId: 'run-1',
        jobId: '',
        source: { kind: 'inline', yaml },
        inputs: {},
        promptOverrides: {},
        sessionKey: '',
        signal: new AbortController().signal,
        deadline: undefined,
        ...request,
      });
    },
  };
}
