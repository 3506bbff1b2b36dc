// A streamed step whose final answer reached the executor is completed even when the run's caller
// cancels before the provider's stream has ended (an agent replica killed with kill -9 at a step
// boundary): the step is in the run's checkpoint (a real JetStream KV bucket) and the resume
// starts after it, so the provider is not asked for it again.
import { fileURLToPath } from 'node:url';
import { AbortError } from 'abort-controller-x';
import { describe, expect, it } from 'vitest';
import { ServerError, Status, proto, type Logger, type ServiceClient, type ServiceEvents } from '@elexirion/kit';
import { temporaryBucket } from '@elexirion/testing';
import { cleanupAfterEach, natsForFile } from '@elexirion/testing/fixtures';
import { RunEngine, type RunRequest } from '../src/engine/run-engine.js';
import { PipelineLoader } from '../src/pipeline/loader.js';
import { CheckpointStore } from '../src/state/checkpoint-store.js';
import { CheckpointWriter } from '../src/state/checkpoint-writer.js';
import { answer } from './engine-support.js';

const nats = natsForFile({ connect: true });
const later = cleanupAfterEach();

const threeSteps = `
workflow:
  name: three-steps
  steps:
    - { name: first, type: claude, prompt: "one" }
    - { name: second, type: claude, prompt: "two after {{steps.first.output}}" }
    - { name: third, type: claude, prompt: "three after {{steps.second.output}}" }
`;

const quiet = { debug() {}, info() {}, warn() {}, error() {} } as unknown as Logger;
const noEvents = { publish() {} } as unknown as ServiceEvents;

describe('a run cancelled after a streamed step answer arrived, before the stream ended', () => {
  it('checkpoints the step, and the resume does not call the provider for it again', async () => {
    const caller = new AbortController();
    const prompts: string[] = [];
    // The provider's stream as nice-grpc gives it: the delta, the final answer, then (for "first")
    // the caller's cancel before the stream's end, which the client reports as an AbortError.
    const provider = {
      async *streamComplete({ request }: proto.StreamCompleteRequest, options: { signal?: AbortSignal } = {}) {
        // A call made under a cancelled signal fails at once, as nice-grpc's does.
        if (options.signal?.aborted) throw new AbortError();
        const prompt = String(request!.messages.at(-1)!.content);
        prompts.push(prompt);
        const text = prompt === 'one' ? 'one' : prompt.startsWith('two') ? 'two' : 'three';
        yield { delta: text };
        yield { done: answer(text) };
        if (prompt === 'one' && !caller.signal.aborted) {
          caller.abort();
          throw new AbortError();
        }
      },
    } as unknown as ServiceClient<'provider'>;
    const store = await CheckpointStore.open(nats.connection, { bucket: temporaryBucket(nats.connection, 'checkpoints', later) });
    const writer = new CheckpointWriter({ store: () => store, nats: { connected: true, onStatus: () => () => {} }, skipped: { inc() {} }, logger: quiet, timeoutMs: 5_000 });
    const loader = new PipelineLoader(fileURLToPath(new URL('../../../pipelines/', import.meta.url)));
    const engine = new RunEngine({ provider, loader, prompts: () => undefined, checkpoints: writer, events: noEvents, logger: quiet });
    const loaded = await loader.loadInline(threeSteps);
    const events: proto.ExecuteStreamResponse[] = [];
    const request: RunRequest = {
      runId: `cancelled-${Date.now()}`,
      jobId: '',
      source: { kind: 'inline', yaml: threeSteps },
      inputs: {},
      promptOverrides: {},
      sessionKey: '',
      signal: caller.signal,
      deadline: undefined,
      emit: (event) => events.push(event),
    };

    const failure = await engine.run(loaded, request).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(ServerError);
    expect((failure as ServerError).code).toBe(Status.CANCELLED);
    expect(events.filter((event) => event.stepFinished).map((event) => event.stepFinished!.name)).toEqual(['first']);
    const saved = await store.load(request.runId);
    expect(saved).toMatchObject({ status: 'failed', steps: [{ name: 'first', output: 'one' }] });
    expect(saved!.steps).toHaveLength(1);

    const resumed = await engine.run(loaded, { ...request, signal: new AbortController().signal, emit: () => {}, resume: saved! });
    expect(resumed.resumedSteps).toBe(1);
    expect(resumed.steps.map((step) => [step.name, step.output])).toEqual([
      ['first', 'one'],
      ['second', 'two'],
      ['third', 'three'],
    ]);
    // "first" was asked once; "second" only by the resume (its call met the cancel at once).
    expect(prompts).toEqual(['one', 'two after one', 'three after two']);
    writer.close();
  });
});
