// A run whose caller goes away (an agent replica killed with kill -9 cancels its ExecuteStream)
// right after a step's result reached the executor: that step is in the run's checkpoint, so the
// replica that takes the job over resumes after it and the vendor is not called for it again.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Kvm } from '@nats-io/kv';
import { connect } from '@nats-io/transport-node';
import { proto } from '@elexirion/kit';
import { eventually, gate, startExecutor, startNats, startProvider, stopAll, waitFor, waitForState, type ExecutorUnderTest, type NatsServer, type ProviderUnderTest } from '@elexirion/testing';

let provider: ProviderUnderTest;
let nats: NatsServer;
let executor: ExecutorUnderTest;
const gates: { open(): void }[] = [];

beforeAll(async () => {
  provider = await startProvider();
  nats = await startNats();
  executor = await startExecutor({ providerPort: provider.grpcPort, natsUrl: nats.url, env: { TELEMETRY_EVENTS: 'false' } });
  await waitForState(executor);
});

afterEach(() => {
  for (const held of gates.splice(0)) held.open();
  provider.fakes.anthropic.reset();
});

afterAll(async () => {
  await executor?.stop();
  await nats?.stop();
  await provider?.stop();
  await stopAll();
});

const threeSteps = `
workflow:
  name: three-steps
  steps:
    - { name: first, type: claude, prompt: "one" }
    - { name: second, type: claude, prompt: "two after {{steps.first.output}}" }
    - { name: third, type: claude, prompt: "three after {{steps.second.output}}" }
`;

/** The run's checkpoint once the cancelled run has ended (its final state, failed, is written). */
async function endedCheckpoint(runId: string): Promise<{ status: string; steps: { name: string; output: string }[] }> {
  const connection = await connect({ servers: nats.url });
  try {
    const bucket = await new Kvm(connection).open('elexirion_checkpoints');
    return await eventually(`the checkpoint of ${runId} to say how the run ended`, async () => {
      const entry = await bucket.get(runId);
      const value = entry?.json<{ status: string; steps: { name: string; output: string }[] }>();
      return value && value.status !== 'running' ? value : undefined;
    });
  } finally {
    await connection.close();
  }
}

function promptsSeen(): string[] {
  return provider.fakes.anthropic.requests.map((request) => {
    const content: unknown = request.body?.messages?.at(-1)?.content;
    return typeof content === 'string' ? content : Array.isArray(content) ? content.map((part: { text?: string }) => part.text ?? '').join('') : '';
  });
}

/**
 * Starts the three-step run as a stream (the vendor holds "second"), cancels the call at `cancelAt`,
 * and checks that the run's checkpoint holds "first" and that the resume calls the vendor for
 * "second" and "third" only.
 */
async function cancelAndResume(runId: string, cancelAt: 'first finished' | 'second at the vendor'): Promise<void> {
  const secondHeld = gate();
  gates.push(secondHeld);
  provider.fakes.anthropic.script({ text: 'one' }, { text: 'two', until: secondHeld.promise }, { text: 'two again' }, { text: 'three' });
  const caller = new AbortController();
  const events: proto.ExecuteStreamResponse[] = [];
  const streaming = (async () => {
    for await (const event of executor.client.executeStream({ request: proto.ExecuteRequest.fromPartial({ inlineYaml: threeSteps, runId }) }, { signal: caller.signal })) {
      events.push(event);
      if (cancelAt === 'first finished' && event.stepFinished?.name === 'first') caller.abort();
    }
  })().catch((error: unknown) => error);
  if (cancelAt === 'second at the vendor') {
    // No event comes while "second" waits at the vendor: the cancel comes from outside the stream.
    await waitFor('the second step to reach the vendor', () => provider.fakes.anthropic.requests.length >= 2);
    caller.abort();
  }
  await streaming;
  expect(caller.signal.aborted).toBe(true);
  expect(events.some((event) => event.runFinished)).toBe(false);

  const saved = await endedCheckpoint(runId);
  expect(saved).toMatchObject({ status: 'failed', steps: [{ name: 'first', output: 'one' }] });
  expect(saved.steps).toHaveLength(1);

  const resumed = await executor.client.execute({ resumeRunId: runId });
  expect(resumed).toMatchObject({ resumedSteps: 1, output: 'three' });
  expect(resumed.steps.map((step) => [step.name, step.output])).toEqual([
    ['first', 'one'],
    ['second', 'two again'],
    ['third', 'three'],
  ]);
  // The vendor answered "first" once; "second" was cut off by the cancel and asked again.
  expect(promptsSeen().filter((prompt) => prompt === 'one')).toHaveLength(1);
  expect(promptsSeen().filter((prompt) => prompt.startsWith('two after'))).toHaveLength(2);
}

describe('a run cancelled right after a step finished', () => {
  it('keeps the step in its checkpoint when the caller cancels as the step result reaches it', async () => {
    await cancelAndResume(`cancel-finished-${Date.now()}`, 'first finished');
  });

  it('keeps the step in its checkpoint when the caller cancels while the next step is at the vendor', async () => {
    await cancelAndResume(`cancel-next-${Date.now()}`, 'second at the vendor');
  });
});
