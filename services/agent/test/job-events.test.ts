import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import { ServerError, Status, proto } from '@elexirion/kit';
import { connectNats, eventually, startNats, waitFor } from '@elexirion/testing';
import { cleanupAfterEach, natsForFile } from '@elexirion/testing/fixtures';
import { JobEventLog, JobEventsError, type JobEventBody } from '../src/jobs/job-events.js';
import { watchJob } from '../src/jobs/watch-job.js';

const nats = natsForFile({ connect: true });
const later = cleanupAfterEach();
const { JobStatus } = proto;

/** A log on a stream (and subjects) of its own, deleted when the test ends. */
async function eventLog(): Promise<JobEventLog> {
  const suffix = randomUUID().replaceAll('-', '');
  const stream = `JOB_EVENTS_${suffix}`;
  later(async () => (await jetstreamManager(nats.connection)).streams.delete(stream).catch(() => undefined));
  return JobEventLog.open(nats.connection, { stream, subjectPrefix: `test.${suffix}.events` });
}

async function consumerCount(log: JobEventLog): Promise<number> {
  return (await (await jetstreamManager(nats.connection)).streams.info(log.stream)).state.consumer_count;
}

const status = (value: proto.JobStatus, detail = ''): JobEventBody => ({ statusChanged: { status: value, detail, job: undefined } });
const delta = (text: string): JobEventBody => ({ textDelta: { step: 'answer', text } });
const started = (step: string): JobEventBody => ({ stepStarted: { step, type: 'llm' } });

/** What a watch yields, up to its end (or `limit` events, then it stops watching). */
async function collect(events: AsyncIterable<proto.JobEvent>, limit = Infinity): Promise<proto.JobEvent[]> {
  const seen: proto.JobEvent[] = [];
  if (limit === 0) return seen;
  for await (const event of events) {
    seen.push(event);
    if (seen.length >= limit) break;
  }
  return seen;
}

/** A compact view of an event: what it says, not its time. */
function summary(event: proto.JobEvent): string {
  if (event.statusChanged) return `status:${proto.jobStatusToJSON(event.statusChanged.status)}`;
  if (event.stepStarted) return `started:${event.stepStarted.step}`;
  if (event.textDelta) return `text:${event.textDelta.text}`;
  if (event.stepFinished) return `finished:${event.stepFinished.name}`;
  if (event.stepFailed) return `failed:${event.stepFailed.step}`;
  return 'empty';
}

/** Appends a whole job's events, the last one terminal; answers their sequences. */
async function appendJob(log: JobEventLog, jobId: string, texts: string[]): Promise<number[]> {
  const sequences = [await log.append(jobId, status(JobStatus.JOB_STATUS_RUNNING))];
  for (const text of texts) sequences.push(await log.append(jobId, delta(text)));
  sequences.push(await log.append(jobId, status(JobStatus.JOB_STATUS_SUCCEEDED)));
  return sequences;
}

describe('JobEventLog', () => {
  it('replays a finished job in order, each event with its sequence, and ends at its terminal event', async () => {
    const log = await eventLog();
    const jobId = randomUUID();
    const sequences = await appendJob(log, jobId, ['a', 'b', 'c']);
    expect(sequences).toEqual([...sequences].sort((x, y) => x - y));

    const events = await collect(log.watch(jobId, 0, new AbortController().signal));
    expect(events.map(summary)).toEqual(['status:JOB_STATUS_RUNNING', 'text:a', 'text:b', 'text:c', 'status:JOB_STATUS_SUCCEEDED']);
    expect(events.map((event) => event.sequence)).toEqual(sequences);
    expect(events.every((event) => event.jobId === jobId && event.time instanceof Date)).toBe(true);
    // The watch's consumer is gone once it ended.
    expect(await consumerCount(log)).toBe(0);
  });

  it('resumed after a sequence, gives exactly the events after it, each once', async () => {
    const log = await eventLog();
    const jobId = randomUUID();
    const sequences = await appendJob(log, jobId, ['one', 'two', 'three', 'four', 'five']);

    // A client sees three events, drops, and comes back with the last sequence it saw.
    const firstPart = await collect(log.watch(jobId, 0, new AbortController().signal), 3);
    const lastSeen = firstPart.at(-1)!.sequence;
    const rest = await collect(log.watch(jobId, lastSeen, new AbortController().signal));

    expect([...firstPart, ...rest].map((event) => event.sequence)).toEqual(sequences);
    expect(rest.map(summary)).toEqual(['text:three', 'text:four', 'text:five', 'status:JOB_STATUS_SUCCEEDED']);
  });

  it('ends at once for a client that saw the terminal event already, and refuses a sequence no event has', async () => {
    const log = await eventLog();
    const jobId = randomUUID();
    const sequences = await appendJob(log, jobId, ['x']);

    expect(await collect(log.watch(jobId, sequences.at(-1)!, new AbortController().signal))).toEqual([]);
    await expect(collect(log.watch(jobId, sequences.at(-1)! + 100, new AbortController().signal))).rejects.toMatchObject({
      name: 'JobEventsError',
      code: Status.OUT_OF_RANGE,
      message: expect.stringContaining(`after_sequence ${sequences.at(-1)! + 100} is past the last job event stored`),
    });
    expect(await consumerCount(log)).toBe(0);
  });

  it('ends at a failed or cancelled status too', async () => {
    const log = await eventLog();
    for (const terminal of [JobStatus.JOB_STATUS_FAILED, JobStatus.JOB_STATUS_CANCELLED]) {
      const jobId = randomUUID();
      await log.append(jobId, started('plan'));
      await log.append(jobId, status(terminal, 'it ended'));
      const events = await collect(log.watch(jobId, 0, new AbortController().signal));
      expect(events.map(summary)).toEqual(['started:plan', `status:${proto.jobStatusToJSON(terminal)}`]);
    }
  });

  it('follows live events after the stored ones, until the job ends', async () => {
    const log = await eventLog();
    const jobId = randomUUID();
    await log.append(jobId, status(JobStatus.JOB_STATUS_QUEUED));

    const seen: proto.JobEvent[] = [];
    const watching = (async () => {
      for await (const event of log.watch(jobId, 0, new AbortController().signal)) seen.push(event);
    })();
    await waitFor('the stored event', () => seen.length === 1);
    await log.append(jobId, status(JobStatus.JOB_STATUS_RUNNING));
    await waitFor('the first live event', () => seen.length === 2);
    await log.append(jobId, started('answer'));
    await log.append(jobId, delta('hello'));
    await log.append(jobId, status(JobStatus.JOB_STATUS_SUCCEEDED));
    await watching;

    expect(seen.map(summary)).toEqual(['status:JOB_STATUS_QUEUED', 'status:JOB_STATUS_RUNNING', 'started:answer', 'text:hello', 'status:JOB_STATUS_SUCCEEDED']);
    expect(await consumerCount(log)).toBe(0);
  });

  it('waits for new events when resumed past the job\'s last one', async () => {
    const log = await eventLog();
    const jobId = randomUUID();
    const other = randomUUID();
    await log.append(jobId, status(JobStatus.JOB_STATUS_RUNNING));
    // Another job's events take the stream's sequence further than this job's last.
    const otherSequences = await appendJob(log, other, ['o']);

    const watching = collect(log.watch(jobId, otherSequences.at(-1)!, new AbortController().signal));
    await eventually('the watch consumer', async () => ((await consumerCount(log)) === 1 ? true : undefined));
    const next = await log.append(jobId, delta('after'));
    const last = await log.append(jobId, status(JobStatus.JOB_STATUS_SUCCEEDED));

    expect((await watching).map((event) => event.sequence)).toEqual([next, last]);
  });

  it('gives each job only its own events when many are appended interleaved', async () => {
    const log = await eventLog();
    const jobs = Array.from({ length: 5 }, () => randomUUID());
    await Promise.all(jobs.map((jobId) => log.append(jobId, status(JobStatus.JOB_STATUS_RUNNING))));
    for (let index = 0; index < 10; index += 1) {
      await Promise.all(jobs.map((jobId) => log.append(jobId, delta(`${jobId.slice(0, 8)}-${index}`))));
    }
    await Promise.all(jobs.map((jobId) => log.append(jobId, status(JobStatus.JOB_STATUS_SUCCEEDED))));

    const watched = await Promise.all(jobs.map((jobId) => collect(log.watch(jobId, 0, new AbortController().signal))));
    watched.forEach((events, index) => {
      const jobId = jobs[index]!;
      expect(events.every((event) => event.jobId === jobId)).toBe(true);
      expect(events.map(summary)).toEqual([
        'status:JOB_STATUS_RUNNING',
        ...Array.from({ length: 10 }, (_, n) => `text:${jobId.slice(0, 8)}-${n}`),
        'status:JOB_STATUS_SUCCEEDED',
      ]);
    });
  });

  it('keeps the order of a burst of appends that do not wait for each other', async () => {
    const log = await eventLog();
    const jobId = randomUUID();
    const texts = Array.from({ length: 300 }, (_, index) => `t${index}`);
    const sequences = await Promise.all([...texts.map((text) => log.append(jobId, delta(text))), log.append(jobId, status(JobStatus.JOB_STATUS_SUCCEEDED))]);
    expect(sequences).toEqual([...sequences].sort((x, y) => x - y));

    const events = await collect(log.watch(jobId, 0, new AbortController().signal));
    expect(events.map(summary)).toEqual([...texts.map((text) => `text:${text}`), 'status:JOB_STATUS_SUCCEEDED']);
  });

  it('ends with an AbortError when aborted, and deletes its consumer', async () => {
    const log = await eventLog();
    const jobId = randomUUID();
    await log.append(jobId, status(JobStatus.JOB_STATUS_RUNNING));

    const controller = new AbortController();
    const seen: proto.JobEvent[] = [];
    const watching = (async () => {
      for await (const event of log.watch(jobId, 0, controller.signal)) seen.push(event);
    })();
    await waitFor('the first event', () => seen.length === 1);
    expect(await consumerCount(log)).toBe(1);
    controller.abort();

    await expect(watching).rejects.toMatchObject({ name: 'AbortError' });
    // Deleted by the watch itself, not left for the server's inactivity threshold (60 s).
    expect(await consumerCount(log)).toBe(0);
  });

  it('deletes its consumer when the caller stops reading', async () => {
    const log = await eventLog();
    const jobId = randomUUID();
    await log.append(jobId, status(JobStatus.JOB_STATUS_RUNNING));
    await log.append(jobId, delta('more'));

    expect(await collect(log.watch(jobId, 0, new AbortController().signal), 1)).toHaveLength(1);
    expect(await consumerCount(log)).toBe(0);
  });

  it('goes on across a NATS restart, losing and repeating nothing', async () => {
    const store = mkdtempSync(join(tmpdir(), 'elexirion-job-events-'));
    later(() => rmSync(store, { recursive: true, force: true }));
    let server = await startNats(undefined, store);
    later(() => server.stop());
    const connection = await connectNats(server.url, { reconnectForever: true, later });
    const log = await JobEventLog.open(connection);
    const jobId = randomUUID();
    await log.append(jobId, status(JobStatus.JOB_STATUS_RUNNING));
    await log.append(jobId, delta('before'));

    const seen: proto.JobEvent[] = [];
    const watching = (async () => {
      for await (const event of log.watch(jobId, 0, new AbortController().signal)) seen.push(event);
    })();
    await waitFor('the stored events', () => seen.length === 2);

    await server.stop();
    server = await startNats(server.port, store);
    // The watch's consumer lived in the old server's memory; the new one has none until the watch makes it again.
    const after = await eventually('an append after the restart', () => log.append(jobId, delta('after')), 20_000);
    const last = await log.append(jobId, status(JobStatus.JOB_STATUS_SUCCEEDED));
    await watching;

    expect(seen.map(summary)).toEqual(['status:JOB_STATUS_RUNNING', 'text:before', 'text:after', 'status:JOB_STATUS_SUCCEEDED']);
    expect(seen.slice(2).map((event) => event.sequence)).toEqual([after, last]);
  });

  it('refuses a malformed job id, an event with other than one body, and a stream that takes other subjects', async () => {
    const log = await eventLog();
    await expect(log.append('a.>', delta('x'))).rejects.toMatchObject({ name: 'JobEventsError', code: Status.INVALID_ARGUMENT, message: expect.stringContaining('job_id: expected 1-128 characters') });
    await expect(collect(log.watch('a b', 0, new AbortController().signal))).rejects.toMatchObject({ code: Status.INVALID_ARGUMENT });
    await expect(collect(log.watch(randomUUID(), -1, new AbortController().signal))).rejects.toMatchObject({ code: Status.INVALID_ARGUMENT });
    await expect(log.append(randomUUID(), {} as JobEventBody)).rejects.toMatchObject({ code: Status.INVALID_ARGUMENT, message: expect.stringContaining('not none') });
    await expect(log.append(randomUUID(), { ...delta('x'), ...started('y') } as JobEventBody)).rejects.toMatchObject({
      code: Status.INVALID_ARGUMENT,
      message: expect.stringContaining('not stepStarted and textDelta'),
    });

    // Opened again on the same stream: binds to it.
    const again = await JobEventLog.open(nats.connection, { stream: log.stream, subjectPrefix: log.subjectPrefix });
    const jobId = randomUUID();
    const sequence = await again.append(jobId, status(JobStatus.JOB_STATUS_SUCCEEDED));
    expect((await collect(log.watch(jobId, 0, new AbortController().signal))).map((event) => event.sequence)).toEqual([sequence]);

    const refused = JobEventLog.open(nats.connection, { stream: log.stream, subjectPrefix: 'test.elsewhere' });
    await expect(refused).rejects.toBeInstanceOf(JobEventsError);
    await expect(refused).rejects.toMatchObject({ code: Status.FAILED_PRECONDITION, message: expect.stringContaining('not "test.elsewhere.>"') });
  });
});

describe('watchJob', () => {
  it('streams a known job\'s events, and answers INVALID_ARGUMENT for a malformed id and NOT_FOUND for an unknown job', async () => {
    const log = await eventLog();
    const jobId = randomUUID();
    const sequences = await appendJob(log, jobId, ['hi']);
    const deps = { events: log, originOf: async (id: string) => (id === jobId ? 'submitted' : undefined) };
    const context = { signal: new AbortController().signal };

    const responses: proto.WatchJobResponse[] = [];
    for await (const response of watchJob(deps, { jobId, afterSequence: sequences[0]! }, context)) responses.push(response);
    expect(responses.map((response) => response.event!.sequence)).toEqual(sequences.slice(1));

    const malformed = (async () => {
      for await (const _ of watchJob(deps, { jobId: 'no/slashes', afterSequence: 0 }, context)) void _;
    })();
    await expect(malformed).rejects.toBeInstanceOf(ServerError);
    await expect(malformed).rejects.toMatchObject({ code: Status.INVALID_ARGUMENT, details: expect.stringContaining('job_id: expected 1-128 characters of A-Z a-z 0-9 _ -') });

    const unknown = randomUUID();
    const missing = (async () => {
      for await (const _ of watchJob(deps, { jobId: unknown, afterSequence: 0 }, context)) void _;
    })();
    await expect(missing).rejects.toMatchObject({ code: Status.NOT_FOUND, details: `job ${unknown} not found` });
    expect(await consumerCount(log)).toBe(0);
  });

  it('ends at once for an inline call\'s record (a chat has no events), rather than waiting for ones that never come', async () => {
    const log = await eventLog();
    const chatId = randomUUID();
    const deps = { events: log, originOf: async (id: string) => (id === chatId ? 'chat' : undefined) };
    const responses: proto.WatchJobResponse[] = [];
    for await (const response of watchJob(deps, { jobId: chatId, afterSequence: 0 }, { signal: new AbortController().signal })) responses.push(response);
    expect(responses).toEqual([]);
  });
});
