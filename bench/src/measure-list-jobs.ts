/**
 * How long the agent's job store takes to list every job (what each ListJobs call reads), with
 * `--jobs` submitted jobs and as many inline calls, these one per batch (the worst case: calls
 * further apart than the batch window, as at a quiet hour). A real nats-server of its own.
 *
 *   source scripts/env.sh && npx tsc -b && \
 *   node --disable-warning=ExperimentalWarning --import ./bench/src/ts-hooks.mjs bench/src/measure-list-jobs.ts --jobs 2000
 */
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { proto } from '@elexirion/kit';
import { connectNats, startNats, stopAll } from '@elexirion/testing';
import { JobStore, inlineJobId, newInlineBatchId } from '../../services/agent/dist/jobs/job-store.js';

const { values } = parseArgs({ options: { jobs: { type: 'string', default: '2000' }, rounds: { type: 'string', default: '5' } } });
const count = Number(values.jobs);
const rounds = Number(values.rounds);

function job(jobId: string, origin: string, index: number): proto.Job {
  return {
    ...proto.Job.fromPartial({}),
    jobId,
    status: proto.JobStatus.JOB_STATUS_SUCCEEDED,
    origin,
    pipeline: index % 2 ? 'general' : 'analysis',
    message: `request ${index}: ${'a question of some length '.repeat(8)}`,
    inputs: { message: `request ${index}` },
    createdAt: new Date(Date.now() - index * 1000),
    finishedAt: new Date(),
    deliveries: 1,
    replica: 'agent-1',
    output: `answer ${index}: ${'a reply of some length '.repeat(40)}`,
    steps: [proto.StepResult.fromPartial({ name: 'answer', type: 'claude', output: 'a reply of some length '.repeat(40), provider: 'anthropic', model: 'claude-sonnet-5', status: 'completed' })],
  };
}

async function timed(what: string, list: () => Promise<proto.Job[]>, expected: number): Promise<void> {
  const times: number[] = [];
  for (let round = 0; round < rounds; round += 1) {
    const started = performance.now();
    const jobs = await list();
    times.push(performance.now() - started);
    if (jobs.length !== expected) throw new Error(`${what}: listed ${jobs.length} jobs, expected ${expected}`);
  }
  times.sort((a, b) => a - b);
  console.log(`${what}: median ${times[Math.floor(times.length / 2)]!.toFixed(0)} ms, min ${times[0]!.toFixed(0)} ms, max ${times.at(-1)!.toFixed(0)} ms (${rounds} rounds)`);
}

const nats = await startNats();
const connection = await connectNats(nats.url);
try {
  const store = await JobStore.open(connection, { retentionMs: 7 * 24 * 3_600_000 });
  for (let start = 0; start < count; start += 100) {
    await Promise.all(Array.from({ length: Math.min(100, count - start) }, (_, offset) => store.create(job(randomUUID(), 'submitted', start + offset))));
  }
  await timed(`${count} submitted jobs`, () => store.list(), count);
  for (let start = 0; start < count; start += 100) {
    await Promise.all(
      Array.from({ length: Math.min(100, count - start) }, (_, offset) => {
        const batch = newInlineBatchId(randomUUID());
        return store.putInlineBatch(batch, [store.encodeInline(job(inlineJobId(batch, 0), 'chat', start + offset))]);
      }),
    );
  }
  await timed(`${count} submitted jobs and ${count} inline calls (one a batch)`, () => store.list(), 2 * count);
} finally {
  await connection.close();
  await nats.stop();
  await stopAll();
}
