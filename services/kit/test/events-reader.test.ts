import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, headers, type ConnectionOptions, type NatsConnection } from '@nats-io/transport-node';
import {
  EventPublisher,
  EventsReader,
  EventsReaderError,
  Metrics,
  SharedNatsConnection,
  Status,
  createLogger,
  initTracing,
  proto,
  tracer,
  type DeliveredBatch,
  type DeliveredBatchHandler,
  type EventsReaderOptions,
  type Tracing,
  type UndecodableMessage,
} from '@elexirion/kit';
import { eventually, sleep, startNats, stopAll, waitFor, type NatsServer } from '@elexirion/testing';

const STREAM = 'ELEXIRION_EVENTS';

let tracing: Tracing;
beforeAll(() => {
  tracing = initTracing({ serviceName: 'kit-events-reader-test' });
});

/** What each test started, stopped in reverse order after it: readers, then connections, then servers. */
const cleanups: (() => Promise<unknown>)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

afterAll(async () => {
  await stopAll();
  await tracing.shutdown();
});

async function nats(port?: number, storeDir?: string): Promise<NatsServer> {
  const server = await startNats(port, storeDir);
  cleanups.push(() => server.stop());
  return server;
}

async function connection(url: string, options: Partial<ConnectionOptions> = {}): Promise<NatsConnection> {
  const connected = await connect({ servers: url, ...options });
  cleanups.push(() => connected.close());
  return connected;
}

/** An EventPublisher as a host runs one; once it resolves, the stream exists. */
async function publisher(url: string): Promise<EventPublisher> {
  const logger = createLogger({ level: 'silent', name: 'kit-events-reader-test' });
  const shared = new SharedNatsConnection({ url, name: 'kit-events-reader-test', logger });
  const created = new EventPublisher({
    enabled: true,
    queueMax: 1_000,
    flushIntervalMs: 5,
    streamName: STREAM,
    streamMaxAgeHours: 1,
    logger,
    metrics: new Metrics({ defaultMetrics: false }),
  });
  created.start(shared.forService('kit-events-reader-test'));
  cleanups.push(async () => {
    await created.close();
    await shared.stop(1_000);
  });
  expect(await created.waitUntilConnected(10_000)).toBe(true);
  return created;
}

async function open(on: NatsConnection, options: Partial<EventsReaderOptions> & Pick<EventsReaderOptions, 'durable'>): Promise<EventsReader> {
  const reader = await EventsReader.open(on, { stream: STREAM, filterSubject: 'elexirion.events.>', ...options });
  cleanups.push(() => reader.close());
  return reader;
}

/** Runs the reader, keeping what its handler acknowledged and what it reported undecodable. */
function consume(reader: EventsReader, work?: DeliveredBatchHandler) {
  const acknowledged: DeliveredBatch[] = [];
  const undecodable: UndecodableMessage[] = [];
  let failure: unknown;
  const consuming = reader.consume(
    async (batch, signal) => {
      await work?.(batch, signal);
      acknowledged.push(batch);
    },
    { onUndecodable: (message) => undecodable.push(message) },
  );
  consuming.catch((error: unknown) => {
    failure = error;
  });
  return { acknowledged, undecodable, consuming, failure: () => failure };
}

/** Runs `publish` and waits until the stream holds `messages` more messages: one batch per subject. */
async function stored(manager: JetStreamManager, publish: () => void, messages = 1): Promise<void> {
  const before = (await manager.streams.info(STREAM)).state.last_seq;
  publish();
  await eventually(`${messages} more message(s) in the stream`, async () => ((await manager.streams.info(STREAM)).state.last_seq >= before + messages ? true : undefined));
}

function jobIds(batches: DeliveredBatch[]): (string | undefined)[] {
  return batches.flatMap((batch) => batch.events.map(({ event }) => event.agentJob?.jobId));
}

/** A TelemetryEventBatch as the publisher encodes it, for messages published by hand. */
function encodedBatch(...runIds: string[]): Uint8Array {
  const events = runIds.map((runId) => proto.TelemetryEvent.fromPartial({ service: 'executor', kind: 'run', status: 'OK', executorRun: { runId } }));
  return proto.TelemetryEventBatch.encode({ events }).finish();
}

describe('EventsReader', () => {
  it('hands over the events of several batches decoded, in stream order, each with its traceparent', async () => {
    const server = await nats();
    const events = await publisher(server.url);
    const manager = await jetstreamManager(await connection(server.url));
    const before = Date.now();
    let traced: { traceId: string; spanId: string }[] = [];
    await stored(manager, () => {
      traced = ['first', 'second'].map((jobId) =>
        tracer.startActiveSpan(jobId, (span) => {
          events.publish('agent', 'job', { status: 'OK', agentJob: { jobId } });
          span.end();
          return span.spanContext();
        }),
      );
      events.publish('agent', 'job', { status: 'OK', agentJob: { jobId: 'untraced' } });
    });
    await stored(manager, () => events.publish('executor', 'run', { status: 'OK', executorRun: { runId: 'run-1' } }));
    await stored(manager, () => events.publish('agent', 'job', { status: 'FAILED_PRECONDITION', agentJob: { jobId: 'last' } }));

    const reader = await open(await connection(server.url), { durable: 'in-order', deliver: 'all' });
    const read = consume(reader);
    await waitFor('three batches', () => read.acknowledged.length >= 3);

    const [jobs, runs, lastJobs] = read.acknowledged as [DeliveredBatch, DeliveredBatch, DeliveredBatch];
    expect(read.acknowledged.map((batch) => batch.subject)).toEqual(['elexirion.events.agent.job', 'elexirion.events.executor.run', 'elexirion.events.agent.job']);
    expect(read.acknowledged.map((batch) => batch.streamSequence)).toEqual([1, 2, 3]);
    expect(read.acknowledged.map((batch) => batch.deliveryCount)).toEqual([1, 1, 1]);
    for (const batch of read.acknowledged) {
      expect(batch.time.getTime()).toBeGreaterThanOrEqual(before - 1_000);
      expect(batch.time.getTime()).toBeLessThanOrEqual(Date.now() + 1_000);
    }
    expect(jobIds([jobs])).toEqual(['first', 'second', 'untraced']);
    traced.forEach(({ traceId, spanId }, index) => {
      expect(jobs.events[index]!.traceparent).toMatch(new RegExp(`^00-${traceId}-${spanId}-0[01]$`));
      expect(jobs.events[index]!.event.traceId).toBe(traceId);
    });
    expect(jobs.events[2]!.traceparent).toBeUndefined();
    expect(runs.events.map(({ event }) => [event.service, event.kind, event.executorRun?.runId])).toEqual([['executor', 'run', 'run-1']]);
    expect(lastJobs.events.map(({ event }) => event.status)).toEqual(['FAILED_PRECONDITION']);
    expect(read.undecodable).toEqual([]);

    await reader.close();
    await expect(read.consuming).resolves.toBeUndefined();
  });

  it('hands over only the subjects its filter matches', async () => {
    const server = await nats();
    const events = await publisher(server.url);
    const reading = await connection(server.url);
    const runs = consume(await open(reading, { durable: 'runs', filterSubject: 'elexirion.events.*.run' }));
    const executor = consume(await open(reading, { durable: 'executor', filterSubject: 'elexirion.events.executor.>' }));
    const manager = await jetstreamManager(reading);
    await stored(
      manager,
      () => {
        events.publish('executor', 'run', { status: 'OK' });
        events.publish('agent', 'run', { status: 'OK' });
        events.publish('executor', 'step', { status: 'OK' });
        events.publish('agent', 'job', { status: 'OK' });
      },
      4,
    );
    await waitFor('both readers', () => runs.acknowledged.length >= 2 && executor.acknowledged.length >= 2);
    await sleep(300); // nothing else comes
    expect(runs.acknowledged.map((batch) => batch.subject).sort()).toEqual(['elexirion.events.agent.run', 'elexirion.events.executor.run']);
    expect(executor.acknowledged.map((batch) => batch.subject).sort()).toEqual(['elexirion.events.executor.run', 'elexirion.events.executor.step']);
  });

  it('resumes where it left off when opened again with the same durable name', async () => {
    const server = await nats();
    const events = await publisher(server.url);
    const manager = await jetstreamManager(await connection(server.url));
    const publishJob = (jobId: string) => stored(manager, () => events.publish('agent', 'job', { status: 'OK', agentJob: { jobId } }));
    for (const jobId of ['one', 'two', 'three']) await publishJob(jobId);

    // The first reader acknowledges "one" and "two", and is stopped while it works on "three".
    // Its ack wait is longer than the test: "three" can come back only because it stopped.
    const stop = new AbortController();
    let holdingThree = false;
    const first = consume(await open(await connection(server.url), { durable: 'resuming', signal: stop.signal, ackWaitMs: 600_000 }), async (batch, signal) => {
      if (batch.events[0]!.event.agentJob!.jobId !== 'three') return;
      holdingThree = true;
      await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
      throw new Error('stopped before it was done');
    });
    await waitFor('"one" and "two"', () => first.acknowledged.length === 2);
    await waitFor('"three" in its handler', () => holdingThree);
    stop.abort();
    await expect(first.consuming).resolves.toBeUndefined();
    expect(jobIds(first.acknowledged)).toEqual(['one', 'two']);

    for (const jobId of ['four', 'five']) await publishJob(jobId);
    const second = consume(await open(await connection(server.url), { durable: 'resuming' }));
    // What the first reader held went back when it stopped, not at the end of its ack wait.
    await waitFor('"three" to "five"', () => second.acknowledged.length >= 3);
    await sleep(300); // nothing else comes
    expect(jobIds(second.acknowledged)).toEqual(['three', 'four', 'five']);
  });

  it('shares the work between readers of one durable name, each batch going to one of them', async () => {
    const server = await nats();
    await publisher(server.url);
    const handleSlowly = () => sleep(10);
    const readers = [
      consume(await open(await connection(server.url), { durable: 'shared' }), handleSlowly),
      consume(await open(await connection(server.url), { durable: 'shared' }), handleSlowly),
    ];
    const stream = jetstream(await connection(server.url));
    const runIds = Array.from({ length: 40 }, (_, index) => `run-${index}`);
    for (const runId of runIds) await stream.publish('elexirion.events.executor.run', encodedBatch(runId));

    const read = () => readers.flatMap((reader) => reader.acknowledged.flatMap((batch) => batch.events.map(({ event }) => event.executorRun!.runId)));
    await waitFor('every batch', () => read().length >= runIds.length);
    await sleep(300); // nothing comes twice
    expect(read()).toHaveLength(runIds.length);
    expect(new Set(read())).toEqual(new Set(runIds));
    for (const reader of readers) expect(reader.acknowledged.length).toBeGreaterThan(0);
  });

  it('reports a message that does not decode, does not get it again, and goes on with the next', async () => {
    const server = await nats();
    await publisher(server.url);
    const reading = await connection(server.url);
    const reader = consume(await open(reading, { durable: 'strict', ackWaitMs: 1_000 }));
    const stream = jetstream(await connection(server.url));
    const subject = 'elexirion.events.executor.run';
    await stream.publish(subject, new Uint8Array([0x0a, 0x05, 0x01])); // an entry longer than the message
    await stream.publish(subject, new Uint8Array([...encodedBatch('left over'), 0x00, 0x01, 0x02]));
    const twoTraceparents = headers();
    twoTraceparents.append('traceparent', '');
    twoTraceparents.append('traceparent', '');
    await stream.publish(subject, encodedBatch('one event'), { headers: twoTraceparents });
    await stream.publish(subject, encodedBatch('good'));

    await waitFor('the good batch', () => reader.acknowledged.length >= 1);
    await sleep(1_500); // past the ack wait: a message left unanswered would be back by now
    expect(reader.acknowledged.map((batch) => batch.events[0]!.event.executorRun!.runId)).toEqual(['good']);
    expect(reader.undecodable.map((message) => [message.subject, message.streamSequence])).toEqual([
      [subject, 1],
      [subject, 2],
      [subject, 3],
    ]);
    expect(reader.undecodable[0]!.reason).toMatch(/^not a TelemetryEventBatch: /);
    expect(reader.undecodable[1]!.reason).toBe('not a TelemetryEventBatch: 2 bytes left over');
    expect(reader.undecodable[2]!.reason).toBe('2 traceparent header values for 1 events');
    expect(reader.undecodable[0]!.time).toBeInstanceOf(Date);
    const consumer = await (await jetstreamManager(reading)).consumers.info(STREAM, 'strict');
    expect(consumer.num_ack_pending).toBe(0);
    expect(consumer.num_redelivered).toBe(0);
    expect(reader.failure()).toBeUndefined();
  });

  it('delivers a batch again after the redelivery delay when its handler fails', async () => {
    const server = await nats();
    await publisher(server.url);
    const attempts: { at: number; deliveryCount: number }[] = [];
    const reader = consume(await open(await connection(server.url), { durable: 'retrying', redeliveryDelayMs: 400 }), (batch) => {
      attempts.push({ at: Date.now(), deliveryCount: batch.deliveryCount });
      if (attempts.length === 1) throw new Error('the performance database is unavailable');
    });
    await jetstream(await connection(server.url)).publish('elexirion.events.executor.run', encodedBatch('run-1'));

    await waitFor('the batch acknowledged', () => reader.acknowledged.length >= 1);
    await sleep(600); // acknowledged: not delivered a third time
    expect(attempts.map((attempt) => attempt.deliveryCount)).toEqual([1, 2]);
    expect(attempts[1]!.at - attempts[0]!.at).toBeGreaterThanOrEqual(350);
    expect(reader.acknowledged[0]!.events[0]!.event.executorRun!.runId).toBe('run-1');
  });

  it('keeps reading across a restart of nats-server on the same port and store', async () => {
    const store = mkdtempSync(join(tmpdir(), 'elexirion-events-reader-'));
    cleanups.push(async () => rmSync(store, { recursive: true, force: true }));
    let server = await startNats(undefined, store);
    const { port } = server; // restarted there below
    cleanups.push(() => server.stop()); // whichever server runs at the end
    const events = await publisher(server.url);
    const reader = consume(await open(await connection(server.url, { maxReconnectAttempts: -1, reconnectTimeWait: 250 }), { durable: 'across-restarts' }));
    events.publish('agent', 'job', { status: 'OK', agentJob: { jobId: 'before' } });
    await waitFor('the event before the restart', () => reader.acknowledged.length >= 1);

    await server.stop();
    await waitFor('the publisher to notice', () => !events.isConnected); // the server's exit reaches it a moment later
    server = await startNats(port, store);
    expect(await events.waitUntilConnected(15_000)).toBe(true);
    events.publish('agent', 'job', { status: 'OK', agentJob: { jobId: 'after' } });
    await waitFor('the event after the restart', () => reader.acknowledged.length >= 2, 20_000);
    expect(jobIds(reader.acknowledged)).toEqual(['before', 'after']);
    expect(reader.failure()).toBeUndefined();
  });

  it('binds to a durable that exists without changing it, and refuses one that exists with another filter', async () => {
    const server = await nats();
    await publisher(server.url);
    const reading = await connection(server.url);
    await (await open(reading, { durable: 'executor-only', filterSubject: 'elexirion.events.executor.>', ackWaitMs: 5_000 })).close();

    const again = await open(reading, { durable: 'executor-only', filterSubject: 'elexirion.events.executor.>', ackWaitMs: 60_000, deliver: 'new' });
    await again.close();
    const refused = EventsReader.open(reading, { stream: STREAM, durable: 'executor-only', filterSubject: 'elexirion.events.*.run' });
    await expect(refused).rejects.toThrow(EventsReaderError);
    await expect(refused).rejects.toThrow(
      'events consumer "executor-only" on stream ELEXIRION_EVENTS exists with filter subject "elexirion.events.executor.>", not "elexirion.events.*.run"',
    );
    await expect(refused).rejects.toMatchObject({ code: Status.FAILED_PRECONDITION });

    const { config } = await (await jetstreamManager(reading)).consumers.info(STREAM, 'executor-only');
    expect(config.filter_subject).toBe('elexirion.events.executor.>');
    expect(config.ack_wait).toBe(5_000_000_000);
    expect(config.deliver_policy).toBe('all');
  });

  it('refuses a missing stream and a list of filter subjects with errors that say why', async () => {
    const server = await nats(); // no publisher: no stream
    const reading = await connection(server.url);
    await expect(EventsReader.open(reading, { stream: STREAM, durable: 'early', filterSubject: 'elexirion.events.>' })).rejects.toThrow(
      'stream ELEXIRION_EVENTS does not exist (yet): the EventPublisher creates it when it first connects',
    );
    const twoFilters = ['elexirion.events.executor.>', 'elexirion.events.agent.>'] as unknown as string;
    await expect(EventsReader.open(reading, { stream: STREAM, durable: 'two', filterSubject: twoFilters })).rejects.toThrow(/one subject \(nats-server 2\.9 keeps one filter per consumer\)/);
    expect(await (await jetstreamManager(reading)).streams.names().next()).toEqual([]);
  });

  it('ends consume with an EventsReaderError when its consumer is deleted under it', async () => {
    const server = await nats();
    await publisher(server.url);
    const reading = await connection(server.url);
    const reader = consume(await open(reading, { durable: 'doomed' }));
    const manager = await jetstreamManager(reading);
    await eventually('its first pull to be waiting', async () => ((await manager.consumers.info(STREAM, 'doomed')).num_waiting > 0 ? true : undefined));
    await manager.consumers.delete(STREAM, 'doomed');
    await expect(reader.consuming).rejects.toThrow(/^events reader "doomed" on stream ELEXIRION_EVENTS stopped: /);
    await expect(reader.consuming).rejects.toBeInstanceOf(EventsReaderError);
  });
});
