// Job records bigger than NATS's max payload (1 MB by default) allows a KV value. Inline calls
// (HandleChat) recorded as jobs in batches: a batch's value must stay under it, or every record of
// the batch is lost. A submitted job with a long output: its record and its last event must fit.
// Real nats-server, provider (fake Anthropic upstream), executor and agent processes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { proto } from '@elexirion/kit';
import {
  eventually,
  jobEnded,
  startJobsStack,
  stopAll,
  type AgentUnderTest,
  type JobsStack,
  type ProviderUnderTest,
} from '@elexirion/testing';

const ONE_STEP = `
workflow:
  name: one-step
  inputs:
    message: { type: string, required: true }
  steps:
    - { name: answer, type: claude, prompt: "{{inputs.message}}" }
`;

let stack: JobsStack;
let provider: ProviderUnderTest;
let agent: AgentUnderTest;

beforeAll(async () => {
  stack = await startJobsStack({
    pipelines: { 'one-step': ONE_STEP },
    agents: ['agent-inline'],
    // A wide window: every chat of the test starts within one batch's window.
    agentEnv: { AGENT_ROUTES_FILE: 'none', AGENT_DEFAULT_PIPELINE: 'one-step', AGENT_INLINE_RECORD_WINDOW_MS: '2000', AGENT_MAX_CONCURRENT_CALLS: '64' },
  });
  provider = stack.provider;
  agent = stack.agents[0]!;
});

afterAll(async () => {
  await stack?.stop();
  await stopAll();
});

/** A message of `size` characters, different for each `index`. */
function longMessage(index: number, size: number): string {
  return `chat ${index}: ${'lorem ipsum "quoted" \n'.repeat(Math.ceil(size / 22))}`.slice(0, size);
}

describe('inline calls with large records', () => {
  it('are all recorded, many concurrent ones with long outputs sharing a batch, one too big for a record trimmed with a marker', async () => {
    // The fake answers each chat with its message: a record holds the text four times (message,
    // input, output, step output), about 240 KB here, so 12 of them are about 3 MB.
    const chats = await Promise.all(Array.from({ length: 12 }, (_, index) => agent.client.handleChat({ message: longMessage(index, 60_000) })));
    // One alone is over 1 MB.
    const huge = await agent.client.handleChat({ message: longMessage(99, 400_000) });
    expect(new Set([...chats, huge].map((chat) => chat.jobId.slice(0, 28))).size).toBeLessThanOrEqual(2);

    for (const [index, chat] of chats.entries()) {
      const job = await eventually(`chat ${index} to be recorded`, async () => (await agent.client.getJob({ jobId: chat.jobId })).job, 20_000);
      expect(job).toMatchObject({ status: proto.JobStatus.JOB_STATUS_SUCCEEDED, origin: 'chat', message: longMessage(index, 60_000), output: chat.response });
    }
    const trimmed = await eventually('the huge chat to be recorded', async () => (await agent.client.getJob({ jobId: huge.jobId })).job, 20_000);
    expect(trimmed.status).toBe(proto.JobStatus.JOB_STATUS_SUCCEEDED);
    expect(huge.response.length).toBeGreaterThan(400_000);
    // Its beginning is kept, and the marker says how much was cut and why.
    expect(huge.response.startsWith(trimmed.output.split('[... ')[0]!)).toBe(true);
    expect(trimmed.output).toMatch(new RegExp(`\\[\\.\\.\\. \\d+ of ${huge.response.length} characters cut: a job record must fit NATS's max payload\\]$`));
    expect(trimmed.message).toMatch(/characters cut: a job record must fit NATS's max payload\]$/);

    const listed = new Set((await agent.client.listJobs({ pageSize: 500 })).jobs.map((job) => job.jobId));
    for (const chat of [...chats, huge]) expect(listed.has(chat.jobId)).toBe(true);
  });

  it('start a new batch past 64 calls, however short the window', async () => {
    const chats = await Promise.all(Array.from({ length: 70 }, (_, index) => agent.client.handleChat({ message: `short ${index}` })));
    const batches = new Map<string, number>();
    for (const chat of chats) batches.set(chat.jobId.slice(0, 28), (batches.get(chat.jobId.slice(0, 28)) ?? 0) + 1);
    expect(batches.size).toBeGreaterThanOrEqual(2);
    for (const count of batches.values()) expect(count).toBeLessThanOrEqual(64);
    for (const chat of chats) {
      expect((await eventually(`chat ${chat.jobId} to be recorded`, async () => (await agent.client.getJob({ jobId: chat.jobId })).job, 20_000)).output).toBe(chat.response);
    }
  });
});

describe('a submitted job with a record bigger than max payload', () => {
  it('ends SUCCEEDED once, its long texts cut with a marker in its record and its last event', async () => {
    provider.fakes.anthropic.reset();
    const message = longMessage(7, 400_000);
    const { job } = await agent.client.submitJob({ pipeline: 'one-step', message });
    const jobId = job!.jobId;
    const done = await jobEnded(agent, jobId);
    expect(done).toMatchObject({ status: proto.JobStatus.JOB_STATUS_SUCCEEDED, deliveries: 1 });
    expect(done.output).toMatch(/characters cut: a job record must fit NATS's max payload\]$/);
    expect(`fake anthropic reply to: ${message}`.startsWith(done.output.split('[... ')[0]!)).toBe(true);
    // Run once: not again and again for a record that cannot be written.
    expect(provider.fakes.anthropic.requests).toHaveLength(1);
    // A watcher gets the end.
    const events: proto.JobEvent[] = [];
    for await (const { event } of agent.client.watchJob({ jobId, afterSequence: 0 })) events.push(event!);
    expect(events.at(-1)!.statusChanged).toMatchObject({ status: proto.JobStatus.JOB_STATUS_SUCCEEDED, job: { jobId, output: done.output } });
  });
});
