// The minute records' exactly-once rule, deterministically, against a real nats-server: the
// write-then-crash-before-ack case (a batch applied by one replica delivered again to another),
// a batch split over two minutes that crashed between them, two replicas racing on one minute,
// the ack floor keeping the applied list short, and the bound on series.
import { describe, expect, it } from 'vitest';
import { proto } from '@elexirion/kit';
import { connectNats } from '@elexirion/testing';
import { cleanupAfterEach, natsForFile } from '@elexirion/testing/fixtures';
import { MinuteStore } from '../src/metrics/minute-store.js';
import { MinuteAggregates, OVERFLOW_VALUE } from '../src/metrics/aggregates.js';

const nats = natsForFile();
const later = cleanupAfterEach();
let nextMinute = 29_000_000;

/** A replica's MinuteStore on a connection of its own. */
async function replica(maxSeries = 400): Promise<MinuteStore> {
  const connection = await connectNats(nats.url);
  later(() => connection.close());
  return MinuteStore.open(connection, 1, maxSeries);
}

function runEvent(pipeline: string, durationMs: number, status = 'OK'): proto.TelemetryEvent {
  return proto.TelemetryEvent.fromPartial({ service: 'executor', kind: 'run', status, durationMs, executorRun: { pipeline, usage: { inputTokens: 1, outputTokens: 2, costUsd: 0.5 } } });
}

const applying = (...events: proto.TelemetryEvent[]) => (aggregates: MinuteAggregates) => {
  for (const event of events) aggregates.apply(event);
};

async function runsIn(store: MinuteStore, minute: number): Promise<number> {
  const { aggregates } = await store.read(minute);
  return [...aggregates.series.values()].filter((series) => series.dimensions.kind === 'run').reduce((sum, series) => sum + series.count, 0);
}

describe('minute records', () => {
  it('adds a batch delivered again after its first replica wrote it and died before the ack only once', async () => {
    const minute = nextMinute++;
    const dead = await replica();
    const takeover = await replica();
    expect(await dead.applyBatch(minute, 7, 0, applying(runEvent('p', 10), runEvent('p', 20)))).toBe(true);
    // ... killed here; the stream gives batch 7 to the other replica.
    expect(await takeover.applyBatch(minute, 7, 0, applying(runEvent('p', 10), runEvent('p', 20)))).toBe(false);
    expect(await takeover.applyBatch(minute, 8, 0, applying(runEvent('p', 30)))).toBe(true);
    expect(await runsIn(takeover, minute)).toBe(3);
  });

  it('finishes a batch of two minutes that stopped between them, without adding the first again', async () => {
    const first = nextMinute++;
    const second = nextMinute++;
    const dead = await replica();
    const takeover = await replica();
    await dead.applyBatch(first, 11, 0, applying(runEvent('p', 5)));
    // Died before the second minute: the redelivery skips the first, adds the second.
    expect(await takeover.applyBatch(first, 11, 0, applying(runEvent('p', 5)))).toBe(false);
    expect(await takeover.applyBatch(second, 11, 0, applying(runEvent('p', 6)))).toBe(true);
    expect([await runsIn(takeover, first), await runsIn(takeover, second)]).toEqual([1, 1]);
  });

  it('keeps every batch of two replicas writing one minute at once (compare-and-set, then read again)', async () => {
    const minute = nextMinute++;
    const one = await replica();
    const two = await replica();
    // Each has the minute cached at its own revision: every other write conflicts and retries.
    await Promise.all(
      Array.from({ length: 40 }, (_, index) => (index % 2 ? one : two).applyBatch(minute, 100 + index, 0, applying(runEvent(`p${index % 3}`, index + 1, index % 4 ? 'OK' : 'UNAVAILABLE')))),
    );
    expect(await runsIn(one, minute)).toBe(40);
    const { aggregates, applied } = await one.read(minute);
    const errors = [...aggregates.series.values()].reduce((sum, series) => sum + (series.errorsByStatus.UNAVAILABLE ?? 0), 0);
    expect(errors).toBe(10);
    expect([...applied].sort((a, b) => a - b)).toEqual(Array.from({ length: 40 }, (_, index) => 100 + index));
    const cost = [...aggregates.series.values()].reduce((sum, series) => sum + series.costUsd, 0);
    expect(cost).toBeCloseTo(20, 9);
  });

  it('forgets the applied sequences at or below the ack floor', async () => {
    const minute = nextMinute++;
    const store = await replica();
    for (let sequence = 1; sequence <= 50; sequence += 1) await store.applyBatch(minute, sequence, sequence - 3, applying(runEvent('p', sequence)));
    expect((await store.read(minute)).applied).toEqual([48, 49, 50]);
    expect(await runsIn(store, minute)).toBe(50);
  });

  it('folds series past the bound into the kind\'s "(other)" series, totals exact', async () => {
    const minute = nextMinute++;
    const store = await replica(10);
    const events = Array.from({ length: 25 }, (_, index) => runEvent(`pipeline-${index}`, index + 1));
    await store.applyBatch(minute, 1, 0, applying(...events));
    const { aggregates } = await store.read(minute);
    expect(aggregates.series.size).toBe(11);
    expect(aggregates.overflowed).toBe(15);
    expect(await runsIn(store, minute)).toBe(25);
    const other = [...aggregates.series.values()].find((series) => series.dimensions.pipeline === OVERFLOW_VALUE)!;
    expect(other.count).toBe(15);
    expect(other.latency.count).toBe(15);
  });

  it('folds the smallest series into "(other)" until the record fits its byte bound, totals exact', () => {
    const aggregates = new MinuteAggregates(1_000);
    // Wide latency spreads: many sketch bins per series.
    for (let index = 0; index < 60; index += 1) {
      for (let call = 0; call <= index; call += 1) aggregates.apply(runEvent(`pipeline-${index}`, 1 + call * 997 + index * 13));
    }
    const encode = () => JSON.stringify(aggregates.toStored());
    const before = Buffer.byteLength(encode());
    const bytes = aggregates.fitInto(Math.floor(before / 3), encode);
    expect(bytes).toBeLessThanOrEqual(Math.floor(before / 3));
    expect(Buffer.byteLength(encode())).toBe(bytes);
    const all = [...aggregates.series.values()];
    expect(all.reduce((sum, series) => sum + series.count, 0)).toBe((60 * 61) / 2);
    // The largest series keep their own rows; the smallest went first.
    expect(all.some((series) => series.dimensions.pipeline === 'pipeline-59')).toBe(true);
    expect(all.some((series) => series.dimensions.pipeline === 'pipeline-0')).toBe(false);
    expect(all.find((series) => series.dimensions.pipeline === OVERFLOW_VALUE)!.count).toBe(aggregates.overflowed);
  });

  it('adds an agent job served by the emergent fallback to its pipeline\'s run fallbacks, not to its runs', () => {
    const aggregates = new MinuteAggregates(100);
    aggregates.apply(runEvent('p', 10));
    expect(aggregates.apply(proto.TelemetryEvent.fromPartial({ service: 'agent', kind: 'job', status: 'OK', agentJob: { jobId: 'j1', pipeline: 'p', fallbackUsed: true } }))).toBe(true);
    expect(aggregates.apply(proto.TelemetryEvent.fromPartial({ service: 'agent', kind: 'job', status: 'OK', agentJob: { jobId: 'j2', pipeline: 'p', fallbackUsed: false } }))).toBe(false);
    const [runs] = [...aggregates.series.values()];
    expect([aggregates.series.size, runs!.count, runs!.fallbacks]).toEqual([1, 1, 1]);
  });
});
