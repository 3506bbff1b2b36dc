/**
 * A typed JetStream KV store over one bucket: values are JSON checked by a zod schema on the way
 * in (nothing invalid is written) and on the way out (a bad stored value is a named error, never
 * a silently wrong object), keys follow a rule, and compare-and-set writes are by revision.
 * The bucket's max age is its TTL: per-message TTL does not exist on the NATS 2.9 servers we
 * support.
 */
import { JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream';
import { Kvm, type KV, type KvEntry, type KvWatchEntry } from '@nats-io/kv';
import type { NatsConnection, QueuedIterator } from '@nats-io/transport-node';
import type { z } from 'zod';
import { describeIssues, KvCorruptEntryError, KvInvalidKeyError, KvRejectedValueError, KvRevisionConflictError } from './kv-errors.js';

/** Which keys a bucket allows. */
export interface KvKeyRule {
  /** Tested against the whole key; anchor it. It must not allow what KV keys cannot hold (spaces, `*`, `>`, leading or trailing dots). */
  pattern: RegExp;
  /** The rule in words, for error messages ("1-128 characters of A-Z a-z 0-9 _ -"). */
  description: string;
  /** What the keys are called in messages ("run id"); "key" by default. */
  name?: string;
}

/** What a bucket holds: shared by the store that writes it and the views that watch it. */
export interface KvBucketSpec<T> {
  bucket: string;
  /** The value's schema; what it outputs is what is stored and read back. */
  schema: z.ZodType<T>;
  key: KvKeyRule;
  /** A check beyond the schema that involves the key ("the entry's runId equals its key"): a problem, or undefined when fine. */
  check?: (key: string, value: T) => string | undefined;
  /** The bucket's max age in ms, when this creates it; none by default. An existing bucket is used as it is. */
  ttlMs?: number;
  /** Values kept per key, when this creates the bucket; 1 by default. */
  history?: number;
  /** The bucket's description, when this creates it. */
  description?: string;
}

/** A stored value and the revision that wrote it (for compare-and-set). */
export interface KvRecord<T> {
  value: T;
  revision: number;
}

const WRONG_LAST_SEQUENCE: number[] = [JetStreamApiCodes.StreamWrongLastSequence, JetStreamApiCodes.StreamWrongLastSequenceUnknown];
const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

export class KvStore<T> {
  readonly bucket: string;
  readonly #spec: KvBucketSpec<T>;
  readonly #kv: KV;
  readonly #connection: NatsConnection;

  private constructor(spec: KvBucketSpec<T>, kv: KV, connection: NatsConnection) {
    this.bucket = spec.bucket;
    this.#spec = spec;
    this.#kv = kv;
    this.#connection = connection;
  }

  /** Binds to the bucket, creating it when missing (file storage, with the spec's history, TTL and description). */
  static async open<T>(connection: NatsConnection, spec: KvBucketSpec<T>): Promise<KvStore<T>> {
    const { ttlMs, history = 1 } = spec;
    if (ttlMs !== undefined && (!Number.isFinite(ttlMs) || ttlMs <= 0)) throw new RangeError(`ttlMs of bucket ${spec.bucket} must be a positive number of ms, got ${ttlMs}`);
    if (!Number.isInteger(history) || history < 1 || history > 64) throw new RangeError(`history of bucket ${spec.bucket} must be 1 to 64, got ${history}`);
    const kv = await new Kvm(connection).create(spec.bucket, {
      history,
      ...(ttlMs !== undefined ? { ttl: ttlMs } : {}),
      ...(spec.description !== undefined ? { description: spec.description } : {}),
    });
    return new KvStore(spec, kv, connection);
  }

  /** The key's value; undefined when it was never written, is deleted or has expired. */
  async get(key: string): Promise<KvRecord<T> | undefined> {
    this.checkKey(key);
    const entry = await this.#kv.get(key);
    if (!entry || entry.operation !== 'PUT') return undefined;
    return { value: this.decode(entry), revision: entry.revision };
  }

  /** Writes the value (the latest write wins) and returns its revision. */
  async put(key: string, value: T): Promise<number> {
    const data = this.#encode(key, value);
    return this.#kv.put(key, data);
  }

  /** Writes the value only if the key has none (never written, deleted or expired); else KvRevisionConflictError. */
  async create(key: string, value: T): Promise<number> {
    const data = this.#encode(key, value);
    return this.#kv.create(key, data).catch((error: unknown) => this.#conflict(error, key, 0));
  }

  /** Writes the value only if the key is still at `expectedRevision`; else KvRevisionConflictError. */
  async update(key: string, value: T, expectedRevision: number): Promise<number> {
    if (!Number.isSafeInteger(expectedRevision) || expectedRevision < 1) throw new RangeError(`expectedRevision must be a revision (an integer >= 1), got ${expectedRevision}`);
    const data = this.#encode(key, value);
    return this.#kv.update(key, data, expectedRevision).catch((error: unknown) => this.#conflict(error, key, expectedRevision));
  }

  /** Deletes the key (a delete marker; the bucket's max age clears it later); with `expectedRevision`, only if still there. */
  async delete(key: string, expectedRevision?: number): Promise<void> {
    this.checkKey(key);
    if (expectedRevision === undefined) return this.#kv.delete(key);
    if (!Number.isSafeInteger(expectedRevision) || expectedRevision < 1) throw new RangeError(`expectedRevision must be a revision (an integer >= 1), got ${expectedRevision}`);
    return this.#kv.delete(key, { previousSeq: expectedRevision }).catch((error: unknown) => this.#conflict(error, key, expectedRevision));
  }

  /** Every key that has a value now (deleted keys excluded). Reads the bucket's subjects, not its values. */
  async keys(): Promise<string[]> {
    const keys: string[] = [];
    for await (const key of await this.#kv.keys()) keys.push(key);
    return keys;
  }

  /** Whether the bucket holds no message at all (no value, no delete marker). */
  async isEmpty(): Promise<boolean> {
    return (await this.#kv.status()).values === 0;
  }

  /**
   * A watcher over the raw entries: the last entry of every key (the one with delta 0 ends that
   * snapshot), then every put and delete as it happens. Entries are not checked; `decode` does
   * that. KvView is built on it.
   */
  watch(): Promise<QueuedIterator<KvWatchEntry>> {
    return this.#kv.watch();
  }

  /** Throws KvInvalidKeyError unless the bucket's key rule allows the key. */
  checkKey(key: string): string {
    const rule = this.#spec.key;
    if (typeof key !== 'string' || !rule.pattern.test(key)) throw new KvInvalidKeyError(this.bucket, key, rule.description, rule.name);
    return key;
  }

  /** The value as it would be stored under the key (the schema's output); KvRejectedValueError when it may not be. */
  check(key: string, value: T): T {
    this.checkKey(key);
    const checked = this.#spec.schema.safeParse(value);
    if (!checked.success) throw new KvRejectedValueError(this.bucket, key, describeIssues(checked.error));
    const problem = this.#spec.check?.(key, checked.data);
    if (problem !== undefined) throw new KvRejectedValueError(this.bucket, key, [problem]);
    return checked.data;
  }

  /** The value of a stored PUT entry; KvCorruptEntryError when it is not JSON or not what the bucket holds. */
  decode(entry: Pick<KvEntry, 'key' | 'value'>): T {
    const { key } = entry;
    if (typeof key !== 'string' || !this.#spec.key.pattern.test(key)) throw new KvCorruptEntryError(this.bucket, key, [`key does not match: expected ${this.#spec.key.description}`]);
    let raw: unknown;
    try {
      raw = JSON.parse(decoder.decode(entry.value));
    } catch (error) {
      throw new KvCorruptEntryError(this.bucket, key, [`not JSON (${error instanceof Error ? error.message : String(error)})`], { cause: error });
    }
    const checked = this.#spec.schema.safeParse(raw);
    if (!checked.success) throw new KvCorruptEntryError(this.bucket, key, describeIssues(checked.error), { cause: checked.error });
    const problem = this.#spec.check?.(key, checked.data);
    if (problem !== undefined) throw new KvCorruptEntryError(this.bucket, key, [problem]);
    return checked.data;
  }

  #encode(key: string, value: T): Uint8Array {
    const data = encoder.encode(JSON.stringify(this.check(key, value)));
    const maxPayload = this.#connection.info?.max_payload;
    if (maxPayload && data.length > maxPayload) {
      throw new KvRejectedValueError(this.bucket, key, [`${data.length} bytes exceeds the server's max payload of ${maxPayload} bytes`]);
    }
    return data;
  }

  #conflict(error: unknown, key: string, expectedRevision: number): never {
    if (error instanceof JetStreamApiError && WRONG_LAST_SEQUENCE.includes(error.code)) {
      throw new KvRevisionConflictError(this.bucket, key, expectedRevision, { cause: error });
    }
    throw error;
  }
}
