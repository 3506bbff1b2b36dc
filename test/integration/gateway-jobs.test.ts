// The gateway's job calls end to end: SubmitJob, GetJob, WatchJob, CancelJob and ListJobs over
// gRPC, and the design's HTTP routes (pipeline_status and its Server-Sent Events, resumed with
// Last-Event-ID), through the gateway hosted in the test process to real nats-server, provider
// (fake Anthropic upstream), executor and agent processes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import { ClientError, Status } from 'nice-grpc';
import { proto } from '@elexirion/kit';
import { connectNats, eventually, gate, jobEventShape, startJobsStack, stopAll, watchJobEvents, type JobsStack, type ProviderUnderTest } from '@elexirion/testing';
import { readEventStream, startGateway, type GatewayUnderTest, type SseEvent } from './gateway-jobs-support.js';

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
let provider: ProviderUnderTest;
let gateway: GatewayUnderTest;

beforeAll(async () => {
  stack = await startJobsStack({ pipelines: { 'two-step': TWO_STEP }, agents: ['agent-gateway-jobs'], agentEnv: { AGENT_ROUTES_FILE: 'none', AGENT_DEFAULT_PIPELINE: 'two-step' } });
  ({ provider } = stack);
  gateway = await startGateway(stack);
});

afterAll(async () => {
  await gateway?.stop();
  await stack?.stop();
  await stopAll();
});

async function failure(call: Promise<unknown>): Promise<ClientError> {
  const error = await call.then(
    () => undefined,
    (thrown: unknown) => thrown,
  );
  expect(error).toBeInstanceOf(ClientError);
  return error as ClientError;
}

function jobSettled(jobId: string, until: (job: proto.Job) => boolean): Promise<proto.Job> {
  return eventually(`job ${jobId} to reach the state the test waits for`, async () => {
    const { job } = await gateway.client.getJob({ jobId });
    return job && until(job) ? job : undefined;
  }, 30_000);
}

const ended = (job: proto.Job) => job.status !== JobStatus.JOB_STATUS_QUEUED && job.status !== JobStatus.JOB_STATUS_RUNNING;

/** The job's events through the gateway's WatchJob. */
function watch(jobId: string, afterSequence: number, stopAfter?: (seen: proto.JobEvent[]) => boolean): Promise<{ events: proto.JobEvent[]; ended: boolean }> {
  return watchJobEvents(gateway.client, jobId, afterSequence, stopAfter);
}

/** Consumers on the job events stream: one per watch in progress. */
async function jobEventConsumers(): Promise<number> {
  const connection = await connectNats(stack.nats.url);
  try {
    return (await (await jetstreamManager(connection)).streams.info('ELEXIRION_JOB_EVENTS')).state.consumer_count;
  } finally {
    await connection.close();
  }
}

function increasing(sequences: number[]): boolean {
  return sequences.every((sequence, index) => index === 0 || sequence > sequences[index - 1]!);
}

/** A job whose draft streams in slow pieces and whose polish waits for `polishMay`. */
async function slowJob(message: string): Promise<{ jobId: string; polishMay: ReturnType<typeof gate> }> {
  const polishMay = gate();
  provider.fakes.anthropic.script({ chunks: ['The ', 'draft ', 'comes ', 'in ', 'slow ', 'pieces.'], chunkDelayMs: 100 }, { until: polishMay.promise, chunks: ['Polished ', 'at ', 'last.'], chunkDelayMs: 30 });
  const { job } = await gateway.client.submitJob({ pipeline: 'two-step', message });
  return { jobId: job!.jobId, polishMay };
}

describe('the job calls over gRPC', () => {
  it('submits, gets, lists and cancels a job; the client\'s owner and requested_by are replaced', async () => {
    const fake = provider.fakes.anthropic;
    fake.reset();
    const never = gate();
    fake.script({ until: never.promise, text: 'never sent' });
    const { job: submitted, deduplicated } = await gateway.client.submitJob({ pipeline: 'two-step', message: 'hold on', owner: 'someone-else' });
    expect(deduplicated).toBe(false);
    // Keys are off: the job belongs to nobody, whatever the client said.
    expect(submitted).toMatchObject({ status: JobStatus.JOB_STATUS_QUEUED, origin: 'submitted', pipeline: 'two-step', message: 'hold on', owner: '' });
    const jobId = submitted!.jobId;

    const running = await jobSettled(jobId, (job) => job.status === JobStatus.JOB_STATUS_RUNNING && job.currentStep === 'draft');
    expect(running.owner).toBe('');
    const listed = await gateway.client.listJobs({ statuses: [JobStatus.JOB_STATUS_RUNNING], pipeline: 'two-step' });
    expect(listed.jobs.map((job) => job.jobId)).toContain(jobId);
    expect((await gateway.client.listJobs({ statuses: [JobStatus.JOB_STATUS_SUCCEEDED] })).jobs.map((job) => job.jobId)).not.toContain(jobId);

    const { job: cancelled } = await gateway.client.cancelJob({ jobId, requestedBy: 'mallory', reason: 'changed my mind' });
    expect(cancelled).toMatchObject({ jobId, status: JobStatus.JOB_STATUS_CANCELLED, cancelledBy: 'api', cancelledAtStep: 'draft', errorCode: 'CANCELLED', error: 'cancelled by api: changed my mind' });
    // The cancel reached the vendor request.
    await fake.waitForAbort(0);
    expect((await gateway.client.getJob({ jobId })).job).toMatchObject({ status: JobStatus.JOB_STATUS_CANCELLED, cancelledBy: 'api' });
    never.open();

    // A job that runs to its end.
    fake.reset();
    const { job: next } = await gateway.client.submitJob({ pipeline: 'two-step', message: 'hello' });
    const done = await jobSettled(next!.jobId, ended);
    expect(done).toMatchObject({ status: JobStatus.JOB_STATUS_SUCCEEDED, output: 'fake anthropic reply to: polish fake anthropic reply to: draft hello' });
    expect(done.steps.map((step) => step.name)).toEqual(['draft', 'polish']);
    const page = await gateway.client.listJobs({ pageSize: 1 });
    expect(page.jobs.map((job) => job.jobId)).toEqual([next!.jobId]);
    expect(page.nextPageToken).not.toBe('');
    // Cancelling a finished job leaves it as it ended.
    expect((await gateway.client.cancelJob({ jobId: next!.jobId })).job).toMatchObject({ status: JobStatus.JOB_STATUS_SUCCEEDED, cancelledBy: '' });
  });

  it('refuses what it cannot do with the field named, and answers NOT_FOUND for an unknown job', async () => {
    const unknown = '3f0a1b6e-0000-4000-8000-000000000000';
    for (const call of [gateway.client.getJob({ jobId: unknown }), gateway.client.cancelJob({ jobId: unknown }), watch(unknown, 0)]) {
      const error = await failure(call);
      expect(error.code).toBe(Status.NOT_FOUND);
      expect(error.details).toContain(unknown);
    }
    const malformed = await failure(gateway.client.getJob({ jobId: 'not a job id!' }));
    expect(malformed.code).toBe(Status.INVALID_ARGUMENT);
    expect(malformed.details).toMatch(/^job_id: /);
    const pipeline = await failure(gateway.client.submitJob({ pipeline: 'Not A Name', message: 'x' }));
    expect(pipeline.code).toBe(Status.INVALID_ARGUMENT);
    expect(pipeline.details).toMatch(/^pipeline: /);
    const pageSize = await failure(gateway.client.listJobs({ pageSize: -1 }));
    expect(pageSize.code).toBe(Status.INVALID_ARGUMENT);
    expect(pageSize.details).toMatch(/^page_size: /);
    // Webhooks reach public receivers only (the agent runs inside the cluster's network).
    const webhook = await failure(gateway.client.submitJob({ pipeline: 'two-step', message: 'x', webhook: { url: 'http://169.254.169.254/latest/meta-data', secret: 'whsec_test' } }));
    expect(webhook.code).toBe(Status.INVALID_ARGUMENT);
    expect(webhook.details).toMatch(/^webhook\.url: 169\.254\.169\.254 is a loopback, private or link-local address/);
  });

  it('WatchJob resumed after the last sequence seen gets every event once, in order, to the job\'s end', async () => {
    provider.fakes.anthropic.reset();
    const { jobId, polishMay } = await slowJob('watch me');
    const first = await watch(jobId, 0, (seen) => seen.some((event) => event.textDelta));
    expect(first.ended).toBe(false);
    expect(jobEventShape(first.events)).toEqual(['status:JOB_STATUS_RUNNING', 'started:draft', 'delta:draft']);
    await jobSettled(jobId, (job) => job.currentStep === 'polish');
    const resumed = watch(jobId, first.events.at(-1)!.sequence);
    polishMay.open();
    const second = await resumed;
    expect(second.ended).toBe(true);

    const all = [...first.events, ...second.events];
    expect(increasing(all.map((event) => event.sequence))).toBe(true);
    expect(jobEventShape(all)).toEqual(['status:JOB_STATUS_RUNNING', 'started:draft', 'delta:draft', 'finished:draft', 'started:polish', 'delta:polish', 'finished:polish', 'status:JOB_STATUS_SUCCEEDED']);
    expect(all.filter((event) => event.textDelta?.step === 'draft').map((event) => event.textDelta!.text).join('')).toBe('The draft comes in slow pieces.');
    // A replay from the start is the same events; from the middle, exactly the rest; from the end, nothing.
    expect((await watch(jobId, 0)).events).toEqual(all);
    const middle = all.findIndex((event) => event.stepStarted?.step === 'polish');
    expect((await watch(jobId, all[middle - 1]!.sequence)).events).toEqual(all.slice(middle));
    expect(await watch(jobId, all.at(-1)!.sequence)).toEqual({ events: [], ended: true });
  });
});

describe('the design\'s job routes over HTTP', () => {
  /** Parses an SSE event's data as the JobEvent it carries. */
  const jobEvent = (event: SseEvent) => proto.JobEvent.fromJSON(JSON.parse(event.data));

  it('streams a job\'s events with their sequence as id; Last-Event-ID (or ?after=) resumes after it, without loss or duplicates', async () => {
    provider.fakes.anthropic.reset();
    const { jobId, polishMay } = await slowJob('stream me');
    const path = gateway.url(`/api/agent/jobs/${jobId}/events`);
    // A browser's EventSource: connected, dropped after the first text delta.
    const first = await readEventStream(path, {}, (events) => events.some((event) => event.event === 'text_delta'));
    expect(first.status).toBe(200);
    expect(first.headers['content-type']).toBe('text/event-stream; charset=utf-8');
    expect(first.ended).toBe(false);
    expect(first.events.map((event) => event.event)).toEqual(['status_changed', 'step_started', 'text_delta']);
    // The client went away: the watch behind it ends, down to its JetStream consumer.
    await eventually('the dropped stream\'s consumer to be deleted', async () => ((await jobEventConsumers()) === 0 ? true : undefined));
    await jobSettled(jobId, (job) => job.currentStep === 'polish');
    // It reconnects sending the id of the last event it saw.
    const resumed = readEventStream(path, { 'last-event-id': first.events.at(-1)!.id! });
    polishMay.open();
    const second = await resumed;
    expect(second.status).toBe(200);
    expect(second.ended).toBe(true);

    const all = [...first.events, ...second.events];
    // Each event's id is its sequence, and the data is the JobEvent: the same events WatchJob answers.
    for (const event of all) expect(event.id).toBe(String(jobEvent(event).sequence));
    const grpc = (await watch(jobId, 0)).events;
    expect(all.map(jobEvent)).toEqual(grpc);
    expect(increasing(all.map((event) => Number(event.id)))).toBe(true);
    expect(all.at(-1)).toMatchObject({ event: 'status_changed' });
    expect(JSON.parse(all.at(-1)!.data)).toMatchObject({ jobId, statusChanged: { status: 'JOB_STATUS_SUCCEEDED', job: { jobId, output: 'Polished at last.' } } });

    // From the middle: exactly the events after it, by header or by query; the header wins.
    const middle = all.findIndex((event) => event.event === 'step_started' && jobEvent(event).stepStarted?.step === 'polish');
    const afterMiddle = all.slice(middle);
    expect((await readEventStream(path, { 'last-event-id': all[middle - 1]!.id! })).events).toEqual(afterMiddle);
    expect((await readEventStream(`${path}?after=${all[middle - 1]!.id}`)).events).toEqual(afterMiddle);
    expect((await readEventStream(`${path}?after=0`, { 'last-event-id': all[middle - 1]!.id! })).events).toEqual(afterMiddle);
    // After the last event of an ended job: 204, which tells an EventSource not to reconnect.
    const over = await readEventStream(path, { 'last-event-id': all.at(-1)!.id! });
    expect(over).toMatchObject({ status: 204, events: [], body: '' });
  });

  it('answers pipeline_status for a job: running with its progress, then its result', async () => {
    provider.fakes.anthropic.reset();
    const { jobId, polishMay } = await slowJob('status please');
    await jobSettled(jobId, (job) => job.currentStep === 'polish');
    const running = await fetch(gateway.url(`/api/agent/jobs/${jobId}`));
    expect(running.status).toBe(200);
    expect(await running.json()).toEqual({
      job_id: jobId,
      status: 'running',
      pipeline: 'two-step',
      origin: 'submitted',
      current_step: 'polish',
      progress: { steps_completed: 1, resumed_steps: 0 },
      fallback_used: false,
      created_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      started_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      last_sequence: expect.any(Number),
    });
    polishMay.open();
    const done = await jobSettled(jobId, ended);
    const reply = await fetch(gateway.url(`/api/agent/jobs/${jobId}`));
    const status = (await reply.json()) as Record<string, unknown>;
    expect(status).toMatchObject({
      job_id: jobId,
      status: 'succeeded',
      pipeline: 'two-step',
      current_step: '',
      result: 'Polished at last.',
      outputs: done.outputs,
      fallback_used: false,
      finished_at: done.finishedAt!.toISOString(),
      execution_time_ms: done.finishedAt!.getTime() - done.startedAt!.getTime(),
      last_sequence: done.lastSequence,
    });
    expect(status).not.toHaveProperty('error');
    expect(status).not.toHaveProperty('progress');

    // A cancelled one says who cancelled it and why, as its error.
    const never = gate();
    provider.fakes.anthropic.script({ until: never.promise, text: 'never sent' });
    const { job } = await gateway.client.submitJob({ pipeline: 'two-step', message: 'cancel me' });
    await jobSettled(job!.jobId, (found) => found.status === JobStatus.JOB_STATUS_RUNNING);
    await gateway.client.cancelJob({ jobId: job!.jobId, reason: 'enough' });
    never.open();
    expect(await (await fetch(gateway.url(`/api/agent/jobs/${job!.jobId}`))).json()).toMatchObject({
      status: 'cancelled',
      error: { code: 'CANCELLED', message: 'cancelled by api: enough' },
      cancelled_by: 'api',
    });
  });

  it('answers a chat\'s job too: pipeline_status from its record, and no events to stream (204)', async () => {
    provider.fakes.anthropic.reset();
    const chat = await gateway.client.chat({ message: 'a quick one' });
    // Its record is written a moment after the answer.
    const job = await jobSettled(chat.jobId, ended);
    expect(job).toMatchObject({ origin: 'chat', status: JobStatus.JOB_STATUS_SUCCEEDED, output: chat.response });
    expect(await (await fetch(gateway.url(`/api/agent/jobs/${chat.jobId}`))).json()).toMatchObject({ job_id: chat.jobId, origin: 'chat', status: 'succeeded', result: chat.response });
    expect(await readEventStream(gateway.url(`/api/agent/jobs/${chat.jobId}/events`))).toMatchObject({ status: 204, events: [] });
    expect(await watch(chat.jobId, 0)).toEqual({ events: [], ended: true });
  });

  it('answers 404 with NOT_FOUND for an unknown job, and 400 naming the field for a bad id or sequence', async () => {
    const unknown = '3f0a1b6e-0000-4000-8000-000000000000';
    for (const path of [`/api/agent/jobs/${unknown}`, `/api/agent/jobs/${unknown}/events`]) {
      const reply = await fetch(gateway.url(path));
      expect(reply.status, path).toBe(404);
      expect(reply.headers.get('content-type')).toMatch(/^application\/json/);
      expect(await reply.json()).toEqual({ error: { code: 'NOT_FOUND', message: `job "${unknown}" not found (never submitted, or older than the retention period)` } });
    }
    const malformed = await fetch(gateway.url('/api/agent/jobs/not%20a%20job%20id'));
    expect(malformed.status).toBe(400);
    expect(await malformed.json()).toEqual({ error: { code: 'INVALID_ARGUMENT', message: 'params.job_id: expected 1-128 characters of A-Z a-z 0-9 _ - (a UUID)' } });
    const { job } = await gateway.client.submitJob({ pipeline: 'two-step', message: 'sequence checks' });
    const events = gateway.url(`/api/agent/jobs/${job!.jobId}/events`);
    const badHeader = await fetch(events, { headers: { 'last-event-id': 'yesterday' } });
    expect(badHeader.status).toBe(400);
    expect(await badHeader.json()).toEqual({ error: { code: 'INVALID_ARGUMENT', message: expect.stringMatching(/^headers\.last-event-id: expected the sequence number of an event/) } });
    const badQuery = await fetch(`${events}?after=-3`);
    expect(badQuery.status).toBe(400);
    expect(await badQuery.json()).toEqual({ error: { code: 'INVALID_ARGUMENT', message: expect.stringMatching(/^querystring\.after: expected the sequence number of an event/) } });
    const past = await fetch(events, { headers: { 'last-event-id': '999999999999999' } });
    expect(past.status).toBe(400);
    expect(await past.json()).toEqual({ error: { code: 'OUT_OF_RANGE', message: expect.stringContaining('after_sequence') } });
    await jobSettled(job!.jobId, ended);
  });

  it('describes both routes in /openapi.json', async () => {
    const document = (await (await fetch(gateway.url('/openapi.json'))).json()) as { paths: Record<string, Record<string, { parameters?: { name: string; in: string }[]; responses: Record<string, unknown> }>> };
    const status = document.paths['/api/agent/jobs/{job_id}']?.get;
    expect(status?.parameters).toEqual(expect.arrayContaining([expect.objectContaining({ name: 'job_id', in: 'path' })]));
    expect(JSON.stringify(status?.responses['200'])).toContain('current_step');
    const events = document.paths['/api/agent/jobs/{job_id}/events']?.get;
    expect(events?.parameters).toEqual(expect.arrayContaining([expect.objectContaining({ name: 'last-event-id', in: 'header' }), expect.objectContaining({ name: 'after', in: 'query' })]));
  });
});
