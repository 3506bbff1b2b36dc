// The agent's jobs over real processes: nats-server, provider (fake Anthropic upstream), executor
// and two agent replicas. SubmitJob, GetJob, ListJobs, CancelJob, idempotency keys, inline calls
// recorded as jobs, the inline limit, and a job that keeps failing.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ClientError, Status } from 'nice-grpc';
import { proto } from '@elexirion/kit';
import {
  eventually,
  freePort,
  gate,
  jobEnded,
  startAgent,
  startJobsStack,
  stopAll,
  testProviderConfig,
  waitFor,
  type AgentUnderTest,
  type ExecutorUnderTest,
  type JobsStack,
  type NatsServer,
  type ProviderUnderTest,
} from '@elexirion/testing';

const { JobStatus } = proto;

const PIPELINES = {
  'one-step': `
workflow:
  name: one-step
  inputs:
    message: { type: string, required: true }
  steps:
    - { name: answer, type: claude, prompt: "{{inputs.message}}" }
`,
  'two-step': `
workflow:
  name: two-step
  inputs:
    message: { type: string, required: true }
  steps:
    - { name: draft, type: claude, prompt: "draft {{inputs.message}}" }
    - { name: polish, type: claude, prompt: "polish {{steps.draft.output}}" }
`,
};

let stack: JobsStack;
let nats: NatsServer;
let provider: ProviderUnderTest;
let executor: ExecutorUnderTest;
let agents: AgentUnderTest[] = [];

beforeAll(async () => {
  stack = await startJobsStack({
    pipelines: PIPELINES,
    // One job at a time per replica: two hanging jobs fill both, and a third stays queued.
    agents: ['agent-a', 'agent-b'],
    agentEnv: { AGENT_MAX_CONCURRENT_JOBS: '1', AGENT_ROUTES_FILE: 'none', AGENT_DEFAULT_PIPELINE: 'one-step' },
    // Upstream calls time out only after a minute: an aborted call was aborted by a cancel.
    provider: { config: testProviderConfig({ anthropic: { timeout_ms: 60_000 } }) },
  });
  ({ nats, provider, executor, agents } = stack);
});

beforeEach(() => {
  provider.fakes.anthropic.reset();
});

afterAll(async () => {
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

describe('SubmitJob and GetJob', () => {
  it('store the job, run it on a replica and answer its record', async () => {
    const [a, b] = agents as [AgentUnderTest, AgentUnderTest];
    const { job, deduplicated } = await a.client.submitJob({ pipeline: 'two-step', message: 'hello' });
    expect(deduplicated).toBe(false);
    expect(job).toMatchObject({ status: JobStatus.JOB_STATUS_QUEUED, origin: 'submitted', pipeline: 'two-step', inputs: { message: 'hello' } });
    // Any replica answers for any job.
    const done = await jobEnded(b, job!.jobId);
    expect(done).toMatchObject({ status: JobStatus.JOB_STATUS_SUCCEEDED, deliveries: 1, output: 'fake anthropic reply to: polish fake anthropic reply to: draft hello' });
    expect(done.steps.map((step) => step.name)).toEqual(['draft', 'polish']);
    expect(done.finishedAt!.getTime()).toBeGreaterThanOrEqual(done.createdAt!.getTime());
  });

  it('answer NOT_FOUND for an unknown job id and INVALID_ARGUMENT for a malformed one or a bad request', async () => {
    const client = agents[0]!.client;
    const unknown = await failure(client.getJob({ jobId: '3f0a1b6e-0000-4000-8000-000000000000' }));
    expect(unknown.code).toBe(Status.NOT_FOUND);
    expect(unknown.details).toContain('3f0a1b6e-0000-4000-8000-000000000000');
    const malformed = await failure(client.getJob({ jobId: 'not a job id!' }));
    expect(malformed.code).toBe(Status.INVALID_ARGUMENT);
    // Named as the request names it, nothing of where it is kept.
    expect(malformed.details).toMatch(/^job_id: expected 1-128 characters/);
    expect(malformed.details).not.toContain('bucket');
    expect((await failure(client.submitJob({ pipeline: '../etc/passwd' }))).code).toBe(Status.INVALID_ARGUMENT);
    const webhook = await failure(client.submitJob({ pipeline: 'one-step', message: 'x', webhook: { url: 'ftp://example.com', secret: 's' } }));
    expect(webhook).toMatchObject({ code: Status.INVALID_ARGUMENT });
    expect(webhook.details).toContain('webhook.url');
  });

  it('route an empty pipeline to the default one', async () => {
    const { job } = await agents[1]!.client.submitJob({ message: 'routed' });
    expect(job!.pipeline).toBe('one-step');
    expect(job!.route).toMatchObject({ pipeline: 'one-step', matchedBy: 'default' });
    expect(await jobEnded(agents[1]!, job!.jobId)).toMatchObject({ status: JobStatus.JOB_STATUS_SUCCEEDED, output: 'fake anthropic reply to: routed' });
  });
});

describe('idempotency keys', () => {
  it('give the same job to every submit with the key, concurrent ones included, and run it once', async () => {
    const key = `order-${Date.now()}`;
    const answers = await Promise.all([
      agents[0]!.client.submitJob({ pipeline: 'one-step', message: 'once', idempotencyKey: key }),
      agents[1]!.client.submitJob({ pipeline: 'one-step', message: 'once', idempotencyKey: key }),
      agents[0]!.client.submitJob({ pipeline: 'one-step', message: 'once', idempotencyKey: key }),
    ]);
    const ids = new Set(answers.map((answer) => answer.job!.jobId));
    expect(ids.size).toBe(1);
    expect(answers.filter((answer) => !answer.deduplicated)).toHaveLength(1);
    const jobId = [...ids][0]!;
    await jobEnded(agents[0]!, jobId);
    const later = await agents[1]!.client.submitJob({ pipeline: 'one-step', message: 'once', idempotencyKey: key });
    expect(later).toMatchObject({ deduplicated: true, job: { jobId, status: JobStatus.JOB_STATUS_SUCCEEDED } });
    expect(provider.fakes.anthropic.requests).toHaveLength(1);
    // Another key is another job.
    const other = await agents[1]!.client.submitJob({ pipeline: 'one-step', message: 'once', idempotencyKey: `${key}-2` });
    expect(other.deduplicated).toBe(false);
    expect(other.job!.jobId).not.toBe(jobId);
    expect((await jobEnded(agents[1]!, other.job!.jobId)).status).toBe(JobStatus.JOB_STATUS_SUCCEEDED);
  });
});

describe('CancelJob', () => {
  it('from another replica aborts the running job at the upstream, says who and at which step; a queued job never runs', async () => {
    const fake = provider.fakes.anthropic;
    fake.setDefault({ hang: true });
    // Both replicas take one hanging job each; the third waits in the queue.
    const first = (await agents[0]!.client.submitJob({ pipeline: 'two-step', message: 'slow-1' })).job!;
    const second = (await agents[0]!.client.submitJob({ pipeline: 'two-step', message: 'slow-2' })).job!;
    await waitFor('both jobs at the upstream', () => fake.requests.length >= 2, 20_000);
    const queued = (await agents[0]!.client.submitJob({ pipeline: 'one-step', message: 'never' })).job!;

    // Cancelled while queued (both slots busy): it never runs.
    const { job: dropped } = await agents[1]!.client.cancelJob({ jobId: queued.jobId });
    expect(dropped).toMatchObject({ status: JobStatus.JOB_STATUS_CANCELLED, cancelledBy: 'api', cancelledAtStep: '' });

    const running = (await agents[0]!.client.getJob({ jobId: first.jobId })).job!;
    const other = agents.find((agent) => agent.name !== running.replica)!;
    const index = fake.requests.findIndex((request) => JSON.stringify(request.body).includes('draft slow-1'));
    const { job: cancelled } = await other.client.cancelJob({ jobId: first.jobId, requestedBy: 'alice', reason: 'changed my mind' });
    expect(cancelled).toMatchObject({ status: JobStatus.JOB_STATUS_CANCELLED, cancelledBy: 'alice', cancelledAtStep: 'draft' });
    await fake.waitForAbort(index);
    expect(fake.requests[index]!.abortedByClient).toBe(true);

    await agents[0]!.client.cancelJob({ jobId: second.jobId });
    fake.setDefault({});
    // The freed replicas took the queued job and dropped it unrun: a new job runs, and the upstream
    // never saw the cancelled one.
    const after = (await agents[0]!.client.submitJob({ pipeline: 'one-step', message: 'after' })).job!;
    expect((await jobEnded(agents[0]!, after.jobId)).status).toBe(JobStatus.JOB_STATUS_SUCCEEDED);
    await eventually('the queued job to leave the queue', async () => {
      const list = await agents[0]!.client.listJobs({ statuses: [JobStatus.JOB_STATUS_QUEUED, JobStatus.JOB_STATUS_RUNNING] });
      return list.jobs.length === 0 ? true : undefined;
    });
    expect(fake.requests.some((request) => JSON.stringify(request.body).includes('never'))).toBe(false);
    expect((await agents[0]!.client.getJob({ jobId: queued.jobId })).job!.status).toBe(JobStatus.JOB_STATUS_CANCELLED);

    // A finished job is answered unchanged.
    const { job: unchanged } = await agents[1]!.client.cancelJob({ jobId: after.jobId });
    expect(unchanged).toMatchObject({ status: JobStatus.JOB_STATUS_SUCCEEDED, cancelledBy: '' });
    expect((await failure(agents[1]!.client.cancelJob({ jobId: 'no such job' }))).code).toBe(Status.INVALID_ARGUMENT);
  });
});

describe('ListJobs', () => {
  it('filters by status, pipeline and creation time, newest first, in pages', async () => {
    const client = agents[0]!.client;
    const since = new Date();
    const ids: string[] = [];
    for (let index = 0; index < 5; index += 1) ids.push((await client.submitJob({ pipeline: index % 2 ? 'two-step' : 'one-step', message: `list-${index}` })).job!.jobId);
    for (const jobId of ids) await jobEnded(agents[0]!, jobId);

    const pages: string[][] = [];
    let pageToken = '';
    do {
      const page = await client.listJobs({ createdAfter: since, pageSize: 2, pageToken });
      pages.push(page.jobs.map((job) => job.jobId));
      pageToken = page.nextPageToken;
    } while (pageToken);
    expect(pages.map((page) => page.length)).toEqual([2, 2, 1]);
    expect(pages.flat()).toEqual([...ids].reverse());

    const twoStep = await client.listJobs({ createdAfter: since, pipeline: 'two-step' });
    expect(twoStep.jobs.map((job) => job.jobId)).toEqual([ids[3], ids[1]]);
    expect((await client.listJobs({ createdAfter: since, statuses: [JobStatus.JOB_STATUS_FAILED] })).jobs).toEqual([]);
    expect((await client.listJobs({ createdBefore: since, createdAfter: since })).jobs).toEqual([]);
    const all = await client.listJobs({ pageSize: 500 });
    expect(new Set(all.jobs.map((job) => job.jobId)).size).toBe(all.jobs.length);

    const bad = await failure(client.listJobs({ pageToken: 'not-a-token' }));
    expect(bad.code).toBe(Status.INVALID_ARGUMENT);
    expect(bad.details).toContain('page_token');
    expect((await failure(client.listJobs({ statuses: [JobStatus.JOB_STATUS_UNSPECIFIED] }))).code).toBe(Status.INVALID_ARGUMENT);
  });
});

describe('inline calls', () => {
  it('HandleChat and RunPipeline answer inline and are recorded as jobs afterwards', async () => {
    const client = agents[1]!.client;
    const chat = await client.handleChat({ message: 'inline hello', sessionId: 'session-1' });
    expect(chat.response).toBe('fake anthropic reply to: inline hello');
    const recorded = await eventually('the chat to be recorded', async () => (await client.getJob({ jobId: chat.jobId })).job);
    expect(recorded).toMatchObject({ status: JobStatus.JOB_STATUS_SUCCEEDED, origin: 'chat', pipeline: 'one-step', sessionId: 'session-1', output: chat.response, replica: 'agent-b' });

    const failed = await failure(client.runPipeline({ pipeline: 'no-such-pipeline', inputs: {} }));
    expect(failed.code).toBe(Status.NOT_FOUND);
    const listed = await eventually('the failed run to be recorded', async () => {
      const { jobs } = await client.listJobs({ statuses: [JobStatus.JOB_STATUS_FAILED], pipeline: 'no-such-pipeline' });
      return jobs[0];
    });
    expect(listed).toMatchObject({ origin: 'pipeline', errorCode: 'NOT_FOUND' });
  });
});

describe('inline calls recorded in batches', () => {
  it('records each of many concurrent chats, the quick ones while a slow one of their batch still runs', async () => {
    // A wide window: the slow chat and the quick ones share a batch, written twice.
    const agent = await startAgent({ name: 'agent-batch', executorPort: executor.grpcPort, natsUrl: nats.url, env: { AGENT_INLINE_RECORD_WINDOW_MS: '1500', AGENT_RUN_JOBS: 'false', AGENT_ROUTES_FILE: 'none', AGENT_DEFAULT_PIPELINE: 'one-step' } });
    try {
      const client = agent.client;
      const slowMayAnswer = gate();
      provider.fakes.anthropic.script({ until: slowMayAnswer.promise });
      const slow = client.handleChat({ message: 'slow one' });
      await waitFor('the slow chat at the upstream', () => provider.fakes.anthropic.requests.length === 1);
      const quick = await Promise.all(Array.from({ length: 8 }, (_, index) => client.handleChat({ message: `quick ${index}` })));
      for (const chat of quick) {
        await eventually(`chat ${chat.jobId} to be recorded`, async () => (await client.getJob({ jobId: chat.jobId })).job);
      }
      slowMayAnswer.open();
      const { jobId } = await slow;
      // One batch: the ids share their first 28 characters.
      expect(jobId.slice(0, 28)).toBe(quick[0]!.jobId.slice(0, 28));
      expect(await eventually('the slow chat to be recorded', async () => (await client.getJob({ jobId })).job)).toMatchObject({ status: JobStatus.JOB_STATUS_SUCCEEDED, message: 'slow one' });
      // The batch's second write holds the quick ones too.
      for (const chat of quick) expect((await client.getJob({ jobId: chat.jobId })).job!.output).toBe(chat.response);
      const listed = new Set((await client.listJobs({ pageSize: 500 })).jobs.map((job) => job.jobId));
      expect([jobId, ...quick.map((chat) => chat.jobId)].every((id) => listed.has(id))).toBe(true);
    } finally {
      await agent.stop();
    }
  });
});

describe('an agent at its limits', () => {
  it('answers RESOURCE_EXHAUSTED with a retry hint past its inline calls and queue', async () => {
    const agent = await startAgent({ name: 'agent-small', executorPort: executor.grpcPort, natsUrl: nats.url, env: { AGENT_MAX_CONCURRENT_CALLS: '1', AGENT_MAX_QUEUED_CALLS: '0', AGENT_RUN_JOBS: 'false' } });
    try {
      provider.fakes.anthropic.script({ hang: true });
      const controller = new AbortController();
      const holding = agent.client.handleChat({ message: 'hold', pipeline: 'one-step' }, { signal: controller.signal }).catch(() => undefined);
      await waitFor('the first chat at the upstream', () => provider.fakes.anthropic.requests.length === 1, 20_000);
      let trailer: string | undefined;
      const refused = await failure(agent.client.handleChat({ message: 'more', pipeline: 'one-step' }, { onTrailer: (metadata) => (trailer = metadata.get('grpc-retry-pushback-ms')) }));
      expect(refused.code).toBe(Status.RESOURCE_EXHAUSTED);
      expect(refused.details).toMatch(/retry in about \d+ ms/);
      expect(Number(trailer)).toBeGreaterThan(0);
      controller.abort();
      await holding;
    } finally {
      await agent.stop();
    }
  });

  it('ends an inline chat at AGENT_CHAT_TIMEOUT_MS, aborting its upstream call, and records it as failed', async () => {
    const agent = await startAgent({ name: 'agent-impatient', executorPort: executor.grpcPort, natsUrl: nats.url, env: { AGENT_CHAT_TIMEOUT_MS: '700', AGENT_RUN_JOBS: 'false' } });
    try {
      provider.fakes.anthropic.script({ hang: true });
      const timedOut = await failure(agent.client.handleChat({ message: 'too slow', pipeline: 'one-step' }));
      expect(timedOut.code).toBe(Status.DEADLINE_EXCEEDED);
      await provider.fakes.anthropic.waitForAbort(0);
      const { jobs } = await eventually('the chat to be recorded', async () => {
        const list = await agent.client.listJobs({ statuses: [JobStatus.JOB_STATUS_FAILED], pipeline: 'one-step' });
        return list.jobs.some((job) => job.message === 'too slow') ? list : undefined;
      });
      expect(jobs.find((job) => job.message === 'too slow')).toMatchObject({ origin: 'chat', errorCode: 'DEADLINE_EXCEEDED', replica: 'agent-impatient' });
    } finally {
      await agent.stop();
    }
  });

  it('ends a job that keeps failing to run after AGENT_JOB_MAX_DELIVERIES deliveries as failed, saying so', async () => {
    // Its executor is unreachable: every delivery fails UNAVAILABLE and goes back to the queue.
    const agent = await startAgent({
      name: 'agent-stranded',
      executorPort: await freePort(),
      natsUrl: nats.url,
      env: { AGENT_JOB_MAX_DELIVERIES: '2' },
    });
    try {
      const stranded = await startIsolated(agent);
      expect(stranded).toMatchObject({ status: JobStatus.JOB_STATUS_FAILED, errorCode: 'ABORTED', deliveries: 3 });
      expect(stranded.error).toContain('gave up after 2 deliveries');
    } finally {
      await agent.stop();
    }
  });
});

/**
 * Submits a job while only `agent` takes jobs: the file's replicas are stopped for good (this is
 * the file's last test).
 */
async function startIsolated(agent: AgentUnderTest): Promise<proto.Job> {
  for (const replica of agents.splice(0)) await replica.stop();
  const { job } = await agent.client.submitJob({ pipeline: 'one-step', message: 'stranded' });
  return jobEnded(agent, job!.jobId);
}
