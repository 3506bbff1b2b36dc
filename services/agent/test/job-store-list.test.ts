// JobStore.list against a real nats-server while the jobs it lists are being written: every job
// stored before the listing began is in it, however its record changes meanwhile (a running job's
// progress rewrites its record many times a second).
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { proto } from '@elexirion/kit';
import { cleanupAfterEach, natsForFile } from '@elexirion/testing/fixtures';
import { JobStore } from '../src/jobs/job-store.js';

const nats = natsForFile({ connect: true });
const later = cleanupAfterEach();

async function store(): Promise<JobStore> {
  const suffix = randomUUID().replaceAll('-', '').slice(0, 12);
  const { Kvm } = await import('@nats-io/kv');
  const buckets = { bucket: `jobs_${suffix}`, keysBucket: `keys_${suffix}`, inlineBucket: `inline_${suffix}` };
  later(async () => {
    const kvm = new Kvm(nats.connection);
    for (const name of Object.values(buckets)) await (await kvm.open(name)).destroy().catch(() => undefined);
  });
  return JobStore.open(nats.connection, { retentionMs: 3_600_000, ...buckets });
}

function queuedJob(message: string): proto.Job {
  return proto.Job.fromPartial({ jobId: randomUUID(), status: proto.JobStatus.JOB_STATUS_QUEUED, origin: 'submitted', pipeline: 'one-step', message, createdAt: new Date() });
}

describe('JobStore.list', () => {
  it('lists every stored job while their records are rewritten during the listing', async () => {
    const jobs = await store();
    const stored = [queuedJob('a'), queuedJob('b'), queuedJob('c')];
    for (const job of stored) await jobs.create(job);
    // Each record rewritten in turn, without pause, as running jobs' progress is.
    let writing = true;
    const writer = (async () => {
      for (let step = 0; writing; step += 1) {
        const job = stored[step % stored.length]!;
        await jobs.mutate(job.jobId, (current) => ({ ...current, status: proto.JobStatus.JOB_STATUS_RUNNING, currentStep: `step-${step}` }));
      }
    })();
    try {
      for (let listing = 0; listing < 100; listing += 1) {
        const listed = (await jobs.list()).map((job) => job.jobId).sort();
        expect(listed, `listing ${listing}`).toEqual(stored.map((job) => job.jobId).sort());
      }
    } finally {
      writing = false;
      await writer;
    }
  });
});
