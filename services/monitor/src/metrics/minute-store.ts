import { KvRevisionConflictError, KvStore, type KvBucketSpec } from '@elexirion/kit';
import type { NatsConnection } from '@nats-io/transport-node';
import { z } from 'zod';
import { MinuteAggregates, type StoredSeries } from './aggregates.js';

export const METRICS_BUCKET = 'MONITOR_METRICS';
export const MINUTE_MS = 60_000;

const scoreSums = z.object({ count: z.number(), sum: z.number(), sumSquares: z.number() });
const storedSeries: z.ZodType<StoredSeries> = z.object({
  d: z.array(z.string()),
  count: z.number().int(),
  errors: z.record(z.string(), z.number().int()),
  latency: z.object({ zeroCount: z.number().nonnegative(), bins: z.array(z.number()), sum: z.number(), min: z.number(), max: z.number() }),
  inputTokens: z.number(),
  outputTokens: z.number(),
  costUsd: z.number(),
  fallbacks: z.number().int(),
  feedback: z.record(z.string(), scoreSums),
});

/** One minute's aggregates, and the stream sequences of the batches already applied to it. */
export interface MinuteRecord {
  /** Minutes since the Unix epoch (the key, as a number). */
  minute: number;
  /**
   * Stream sequences of the event batches applied to this minute that the consumer may still
   * deliver again: those above its ack floor when the record was written. A sequence at or below
   * the ack floor was acknowledged and is never delivered again, so it can be forgotten; this
   * keeps the list to the messages in flight (a few dozen), whatever the event rate.
   */
  applied: number[];
  series: StoredSeries[];
  /** Events that went to an "(other)" series because the minute held the most series it keeps. */
  overflowed: number;
}

const minuteRecord: z.ZodType<MinuteRecord> = z.object({
  minute: z.number().int().nonnegative(),
  applied: z.array(z.number().int().positive()),
  series: z.array(storedSeries),
  overflowed: z.number().int().nonnegative(),
});

export function minuteKey(minute: number): string {
  return String(minute);
}

export function metricsBucketSpec(retentionHours: number): KvBucketSpec<MinuteRecord> {
  return {
    bucket: METRICS_BUCKET,
    schema: minuteRecord,
    key: { pattern: /^[0-9]{1,12}$/, description: 'minutes since the Unix epoch', name: 'minute' },
    check: (key, value) => (minuteKey(value.minute) === key ? undefined : `minute ${value.minute} is not its key ${key}`),
    ttlMs: retentionHours * 3_600_000,
    description: 'Monitor: one-minute aggregates of the telemetry events (written by the monitor-metrics consumer)',
  };
}

/** A minute as this replica last read or wrote it. */
interface CachedMinute {
  aggregates: MinuteAggregates;
  applied: number[];
  /** 0: not in KV yet. */
  revision: number;
}

/** Minutes a replica keeps decoded: the current one and a few before it (late batches). */
const CACHED_MINUTES = 8;
const MAX_ATTEMPTS = 20;
/** A record's JSON stays under this: NATS's default max_payload is 1 MiB, and the KV message has headers too. */
export const MAX_RECORD_BYTES = 768 * 1024;
/** Below this many series a record cannot reach MAX_RECORD_BYTES (a series is at most a few KB), so its size is not measured. */
const SERIES_SIZE_CHECKED = 100;

/**
 * Applies batches of events to their minutes' KV records, exactly once per batch:
 *
 * Each record lists the stream sequences applied to it, and is written with compare-and-set on
 * the revision it was read at; a batch is acknowledged only after every minute it touches is
 * written. So a batch delivered again (its replica killed between the write and the ack, or the
 * ack lost) finds its sequence in each minute it was written to and adds nothing there, and is
 * added to a minute it had not reached yet. Two replicas writing one minute at once cannot both
 * win: the loser's update fails on the revision, and it reads the minute again (with the other's
 * events and sequences) and applies its batch to that. Nothing is added in memory that is not
 * in the record written: a failed write drops the cached minute, and the next try reads KV.
 */
export class MinuteStore {
  private readonly cache = new Map<number, CachedMinute>();
  /** applyBatch calls run one after another: they share the cached minutes. */
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    readonly store: KvStore<MinuteRecord>,
    private readonly maxSeries: number,
  ) {}

  static async open(connection: NatsConnection, retentionHours: number, maxSeries: number): Promise<MinuteStore> {
    return new MinuteStore(await KvStore.open(connection, metricsBucketSpec(retentionHours)), maxSeries);
  }

  /**
   * Adds `apply`'s events to `minute` unless batch `sequence` is in it already. `ackFloor`: the
   * consumer's last known ack floor (sequences at or below it are dropped from the list).
   * Resolves true when it added them, false when they were there.
   */
  applyBatch(minute: number, sequence: number, ackFloor: number, apply: (aggregates: MinuteAggregates) => void): Promise<boolean> {
    const applied = this.queue.then(() => this.applyNow(minute, sequence, ackFloor, apply));
    this.queue = applied.catch(() => {});
    return applied;
  }

  private async applyNow(minute: number, sequence: number, ackFloor: number, apply: (aggregates: MinuteAggregates) => void): Promise<boolean> {
    for (let attempt = 1; ; attempt += 1) {
      const current = this.cache.get(minute) ?? (await this.read(minute));
      if (current.applied.includes(sequence)) return false;
      apply(current.aggregates);
      current.applied = current.applied.filter((applied) => applied > ackFloor);
      current.applied.push(sequence);
      const recordOf = (): MinuteRecord => ({ minute, applied: current.applied, series: current.aggregates.toStored(), overflowed: current.aggregates.overflowed });
      if (current.aggregates.series.size > SERIES_SIZE_CHECKED) current.aggregates.fitInto(MAX_RECORD_BYTES, () => JSON.stringify(recordOf()));
      const record = recordOf();
      try {
        current.revision = current.revision === 0 ? await this.store.create(minuteKey(minute), record) : await this.store.update(minuteKey(minute), record, current.revision);
        this.remember(minute, current);
        return true;
      } catch (error) {
        // What is cached now holds events that may not be in KV: read the minute again.
        this.cache.delete(minute);
        if (!(error instanceof KvRevisionConflictError) || attempt >= MAX_ATTEMPTS) throw error;
        // Another replica wrote the minute meanwhile; a little jitter keeps two from colliding again.
        await new Promise((resolve) => setTimeout(resolve, Math.random() * 5 * attempt));
      }
    }
  }

  async read(minute: number): Promise<CachedMinute> {
    const record = await this.store.get(minuteKey(minute));
    if (!record) return { aggregates: new MinuteAggregates(this.maxSeries), applied: [], revision: 0 };
    return { aggregates: MinuteAggregates.fromStored(record.value.series, record.value.overflowed, this.maxSeries), applied: [...record.value.applied], revision: record.revision };
  }

  private remember(minute: number, cached: CachedMinute): void {
    this.cache.delete(minute);
    this.cache.set(minute, cached);
    // Oldest written first out (Map keeps insertion order).
    while (this.cache.size > CACHED_MINUTES) this.cache.delete(this.cache.keys().next().value!);
  }
}
