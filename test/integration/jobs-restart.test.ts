// A full restart of the stack (nats-server on its store directory, provider, executor, agent)
// keeps every job record, and a job accepted but not yet run before it runs after it.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { proto } from '@elexirion/kit';
import { eventually, freePort, jobEnded, startAgent, startExecutor, startNats, startProvider, stopAll, type AgentUnderTest, type ExecutorUnderTest, type NatsServer, type ProviderUnderTest } from '@elexirion/testing';

const { JobStatus } = proto;
const dirs: string[] = [];

afterAll(async () => {
  await stopAll();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

interface Running {
  nats: NatsServer;
  provider: ProviderUnderTest;
  executor: ExecutorUnderTest;
  agent: AgentUnderTest;
  stop(): Promise<void>;
}

async function startAll(natsPort: number, store: string, pipelines: string, agentEnv: NodeJS.ProcessEnv): Promise<Running> {
  const nats = await startNats(natsPort, store);
  const provider = await startProvider();
  const executor = await startExecutor({ providerPort: provider.grpcPort, natsUrl: nats.url, env: { PIPELINES_DIR: pipelines, TELEMETRY_EVENTS: 'false' } });
  const agent = await startAgent({ name: 'agent-r', executorPort: executor.grpcPort, natsUrl: nats.url, env: { AGENT_ROUTES_FILE: 'none', AGENT_DEFAULT_PIPELINE: 'one-step', ...agentEnv } });
  return {
    nats,
    provider,
    executor,
    agent,
    async stop() {
      await agent.stop();
      await executor.stop();
      await provider.stop();
      await nats.stop();
    },
  };
}

describe('a full restart of the stack', () => {
  it('keeps every job record, and runs the job that was still queued', async () => {
    const store = mkdtempSync(join(tmpdir(), 'elexirion-nats-'));
    const pipelines = mkdtempSync(join(tmpdir(), 'elexirion-jobs-pipelines-'));
    dirs.push(store, pipelines);
    writeFileSync(
      join(pipelines, 'one-step.yaml'),
      'workflow:\n  name: one-step\n  inputs:\n    message: { type: string, required: true }\n  steps:\n    - { name: answer, type: claude, prompt: "{{inputs.message}}" }\n',
    );
    const natsPort = await freePort();

    let stack = await startAll(natsPort, store, pipelines, {});
    const submitted = (await stack.agent.client.submitJob({ pipeline: 'one-step', message: 'before', idempotencyKey: 'restart-key' })).job!;
    const done = await jobEnded(stack.agent, submitted.jobId);
    const chat = await stack.agent.client.handleChat({ message: 'chat before' });
    const chatRecord = await eventually('the chat to be recorded', async () => (await stack.agent.client.getJob({ jobId: chat.jobId })).job);
    await stack.stop();

    // The same store, with an agent that does not run jobs: a job is accepted and stays queued.
    stack = await startAll(natsPort, store, pipelines, { AGENT_RUN_JOBS: 'false' });
    const queued = (await stack.agent.client.submitJob({ pipeline: 'one-step', message: 'queued across a restart' })).job!;
    await stack.stop();

    stack = await startAll(natsPort, store, pipelines, {});
    try {
      expect((await stack.agent.client.getJob({ jobId: submitted.jobId })).job).toEqual(done);
      expect((await stack.agent.client.getJob({ jobId: chat.jobId })).job).toEqual(chatRecord);
      const ran = await jobEnded(stack.agent, queued.jobId);
      expect(ran).toMatchObject({ status: JobStatus.JOB_STATUS_SUCCEEDED, output: 'fake anthropic reply to: queued across a restart' });
      const listed = (await stack.agent.client.listJobs({})).jobs.map((job) => job.jobId);
      expect(listed.sort()).toEqual([submitted.jobId, chat.jobId, queued.jobId].sort());
      // The idempotency key survived too.
      const again = await stack.agent.client.submitJob({ pipeline: 'one-step', message: 'before', idempotencyKey: 'restart-key' });
      expect(again).toMatchObject({ deduplicated: true, job: { jobId: submitted.jobId } });
    } finally {
      await stack.stop();
    }
  });
});
