// The job queue is bounded (AGENT_MAX_QUEUED_JOBS, the stream's max_msgs with discard new): past
// it SubmitJob is RESOURCE_EXHAUSTED with a retry hint, and the refused job leaves nothing behind.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientError, Status } from 'nice-grpc';
import { proto } from '@elexirion/kit';
import { freePort, startAgent, startNats, stopAll, type AgentUnderTest, type NatsServer } from '@elexirion/testing';

let nats: NatsServer;
let agent: AgentUnderTest;

beforeAll(async () => {
  nats = await startNats();
  // Runs no job, so the queue only fills; no executor is needed to store jobs.
  agent = await startAgent({
    name: 'agent-bounded',
    executorPort: await freePort(),
    natsUrl: nats.url,
    env: { AGENT_RUN_JOBS: 'false', AGENT_MAX_QUEUED_JOBS: '2', AGENT_ROUTES_FILE: 'none', AGENT_DEFAULT_PIPELINE: 'one-step' },
  });
});

afterAll(async () => {
  await stopAll();
});

describe('a full job queue', () => {
  it('refuses the next job with RESOURCE_EXHAUSTED and a retry hint, keeping what it accepted', async () => {
    const accepted = [];
    for (const message of ['first', 'second']) accepted.push((await agent.client.submitJob({ pipeline: 'one-step', message })).job!);
    let pushback: unknown;
    const refused = await agent.client.submitJob({ pipeline: 'one-step', message: 'third', idempotencyKey: 'refused-key' }, { onTrailer: (trailer) => (pushback = trailer.get('grpc-retry-pushback-ms')) }).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(refused).toBeInstanceOf(ClientError);
    expect((refused as ClientError).code).toBe(Status.RESOURCE_EXHAUSTED);
    expect((refused as ClientError).details).toMatch(/maximum of 2 jobs \(AGENT_MAX_QUEUED_JOBS\): retry in about \d+ ms/);
    expect(Number(pushback)).toBeGreaterThan(0);
    // Nothing of the refused job stays: the two accepted are listed, queued, and its key is free.
    const listed = (await agent.client.listJobs({})).jobs;
    expect(listed.map((job) => job.jobId).sort()).toEqual(accepted.map((job) => job.jobId).sort());
    expect(listed.every((job) => job.status === proto.JobStatus.JOB_STATUS_QUEUED)).toBe(true);
    // A key still held would answer the refused job (deduplicated) or ABORTED, not the full queue again.
    const again = await agent.client.submitJob({ pipeline: 'one-step', message: 'third', idempotencyKey: 'refused-key' }).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect((again as ClientError).code).toBe(Status.RESOURCE_EXHAUSTED);
  });
});
