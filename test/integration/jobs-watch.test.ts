// WatchJob end to end through a real agent process: a job whose upstream streams its answer
// slowly, watched, the stream dropped after a few events and resumed from the last sequence seen.
// Real nats-server, provider (fake Anthropic upstream streaming with delays and a gate), executor
// and agent processes.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import { ClientError, Status } from 'nice-grpc';
import { proto } from '@elexirion/kit';
import {
  connectNats,
  eventually,
  gate,
  jobEventShape,
  startJobsStack,
  stopAll,
  watchJobEvents,
  type AgentUnderTest,
  type JobsStack,
  type NatsServer,
  type ProviderUnderTest,
} from '@elexirion/testing';

const { JobStatus } = proto;

const TWO_STEP = `
workflow:
  name: two-step
  inputs:
    message: { type: string, required: true }
  steps:
    - { name: draft, type: claude, prompt: "draft {{inputs.message}}" }
    - { name: polish, type: claude, prompt: "polish {{steps.draft.output}}" }
`;

let stack: JobsStack;
let nats: NatsServer;
let provider: ProviderUnderTest;
let agent: AgentUnderTest;

beforeAll(async () => {
  stack = await startJobsStack({ pipelines: { 'two-step': TWO_STEP }, agents: ['agent-watch'], agentEnv: { AGENT_ROUTES_FILE: 'none', AGENT_DEFAULT_PIPELINE: 'two-step' } });
  ({ nats, provider } = stack);
  agent = stack.agents[0]!;
});

afterAll(async () => {
  await stack?.stop();
  await stopAll();
});

/** The job's events through the agent's WatchJob. */
function watch(jobId: string, afterSequence: number, stopAfter?: (seen: proto.JobEvent[]) => boolean): Promise<{ events: proto.JobEvent[]; ended: boolean }> {
  return watchJobEvents(agent.client, jobId, afterSequence, stopAfter);
}

async function failure(call: Promise<unknown>): Promise<ClientError> {
  const error = await call.then(
    () => undefined,
    (thrown: unknown) => thrown,
  );
  expect(error).toBeInstanceOf(ClientError);
  return error as ClientError;
}

describe('WatchJob through the agent', () => {
  it('resumed from the last sequence seen after a dropped stream gets every event once, in order, to the job\'s end', async () => {
    const fake = provider.fakes.anthropic;
    fake.reset();
    const polishMay = gate();
    // The draft streams in eight pieces a while apart; the polish waits for the test.
    fake.script({ chunks: ['The ', 'draft ', 'comes ', 'in ', 'eight ', 'slow ', 'pieces', '.'], chunkDelayMs: 120 }, { until: polishMay.promise, chunks: ['Polished ', 'at ', 'last.'], chunkDelayMs: 60 });
    const { job } = await agent.client.submitJob({ pipeline: 'two-step', message: 'hello' });
    const jobId = job!.jobId;

    // Dropped after the first text delta.
    const first = await watch(jobId, 0, (seen) => seen.some((event) => event.textDelta));
    expect(first.ended).toBe(false);
    expect(jobEventShape(first.events)).toEqual(['status:JOB_STATUS_RUNNING', 'started:draft', 'delta:draft']);
    // The dropped watch's consumer goes away with it.
    const connection = await connectNats(nats.url);
    try {
      const manager = await jetstreamManager(connection);
      await eventually('the dropped watch\'s consumer to be deleted', async () => ((await manager.streams.info('ELEXIRION_JOB_EVENTS')).state.consumer_count === 0 ? true : undefined));
    } finally {
      await connection.close();
    }
    // Meanwhile the draft ended and the polish started; it ends once the test lets it.
    await eventually('the polish step to start', async () => ((await agent.client.getJob({ jobId })).job!.currentStep === 'polish' ? true : undefined), 20_000);
    const resumed = watch(jobId, first.events.at(-1)!.sequence);
    polishMay.open();
    const second = await resumed;
    expect(second.ended).toBe(true);

    const all = [...first.events, ...second.events];
    const sequences = all.map((event) => event.sequence);
    // Strictly increasing: none twice, none out of order.
    expect(sequences.every((sequence, index) => index === 0 || sequence > sequences[index - 1]!)).toBe(true);
    expect(all.every((event) => event.jobId === jobId)).toBe(true);
    expect(jobEventShape(all)).toEqual(['status:JOB_STATUS_RUNNING', 'started:draft', 'delta:draft', 'finished:draft', 'started:polish', 'delta:polish', 'finished:polish', 'status:JOB_STATUS_SUCCEEDED']);
    const text = (step: string) => all.filter((event) => event.textDelta?.step === step).map((event) => event.textDelta!.text).join('');
    expect(text('draft')).toBe('The draft comes in eight slow pieces.');
    expect(text('polish')).toBe('Polished at last.');
    const last = all.at(-1)!.statusChanged!;
    expect(last.job).toMatchObject({ jobId, status: JobStatus.JOB_STATUS_SUCCEEDED, output: 'Polished at last.' });

    // Nothing was missed: a watch from the start, after the end, replays the very same events and ends.
    const replay = await watch(jobId, 0);
    expect(replay.ended).toBe(true);
    expect(replay.events).toEqual(all);
    // From the last event: nothing more, and it ends at once.
    expect(await watch(jobId, all.at(-1)!.sequence)).toEqual({ events: [], ended: true });
    // From the middle: the rest.
    const middle = all.findIndex((event) => event.stepStarted?.step === 'polish');
    expect((await watch(jobId, all[middle - 1]!.sequence)).events).toEqual(all.slice(middle));
    expect((await agent.client.getJob({ jobId })).job!.lastSequence).toBe(all.at(-1)!.sequence);
  });

  it('answers NOT_FOUND for a job never stored, INVALID_ARGUMENT for a malformed id, OUT_OF_RANGE past the last event', async () => {
    const unknown = await failure(watch('3f0a1b6e-0000-4000-8000-000000000000', 0));
    expect(unknown.code).toBe(Status.NOT_FOUND);
    expect(unknown.details).toContain('3f0a1b6e-0000-4000-8000-000000000000');
    const malformed = await failure(watch('not a job id!', 0));
    expect(malformed.code).toBe(Status.INVALID_ARGUMENT);
    expect(malformed.details).toContain('job_id');
    const { job } = await agent.client.submitJob({ pipeline: 'two-step', message: 'range' });
    const past = await failure(watch(job!.jobId, Number.MAX_SAFE_INTEGER));
    expect(past.code).toBe(Status.OUT_OF_RANGE);
    expect(past.details).toContain('after_sequence');
  });
});
