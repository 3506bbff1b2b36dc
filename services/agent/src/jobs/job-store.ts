/**
 * Job records in a JetStream KV bucket, one key per job id, and idempotency keys in a second
 * bucket. A record is the job's proto3 JSON (what GetJob answers, so readers need no mapping of
 * their own) plus what is never answered: the webhook's secret. Writes that race (a take-over, a
 * cancel, a step's progress) are compare-and-set by revision.
 */
import { createHash } from 'node:crypto';
import { KvRejectedValueError, KvRevisionConflictError, KvStore, proto, type KvKeyRule } from '@elexirion/kit';
import { JOB_ID } from './job-events.js';
import { Kvm, type KV } from '@nats-io/kv';
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { nanos, type NatsConnection } from '@nats-io/transport-node';
import { z } from 'zod';

export const DEFAULT_JOBS_BUCKET = 'elexirion_jobs';
export const DEFAULT_JOB_KEYS_BUCKET = 'elexirion_job_keys';
export const DEFAULT_INLINE_JOBS_BUCKET = 'elexirion_inline_jobs';

const KEY_HASH: KvKeyRule = { pattern: /^[0-9a-f]{64}$/, description: 'a SHA-256 in hex', name: 'idempotency key hash' };

const STATUS_NAMES = ['JOB_STATUS_QUEUED', 'JOB_STATUS_RUNNING', 'JOB_STATUS_SUCCEEDED', 'JOB_STATUS_FAILED', 'JOB_STATUS_CANCELLED'] as const;
const isoDate = z.iso.datetime({ offset: true });

// The fields the agent reads to decide things are checked; the rest is the job's proto3 JSON,
// kept as it is (loose), so a record written by a newer replica survives an older one.
const storedJobSchema = z.looseObject({
  jobId: z.string().min(1),
  status: z.enum(STATUS_NAMES),
  origin: z.enum(['submitted', 'chat', 'pipeline']),
  pipeline: z.string().optional(),
  createdAt: isoDate,
  deliveries: z.number().int().nonnegative().optional(),
  replica: z.string().optional(),
  webhookSecret: z.string().optional(),
});
type StoredJob = z.infer<typeof storedJobSchema>;

const keyClaimSchema = z.looseObject({ jobId: z.string().min(1) });

// Inline calls are recorded in batches, one key per batch: a chat does not pay a JetStream write
// of its own. An inline job's id is a UUID that names its batch: version 8 (custom) where a
// submitted job's is 4, its first 28 characters the batch's id and its last 8 hex digits its
// index in the batch.
const inlineBatchSchema = z.looseObject({ jobs: z.array(storedJobSchema) });
type InlineBatch = z.infer<typeof inlineBatchSchema>;
const INLINE_JOB_ID = /^([0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{4})[0-9a-f]{8}$/;
/** NATS's default max_payload, for when the server's INFO is not known. */
const DEFAULT_MAX_PAYLOAD = 1024 * 1024;
/** Room kept below max_payload for what the write adds around the value. */
const PAYLOAD_MARGIN = 1024;
const JOBS_PREFIX = '{"jobs":[';
const JOBS_SUFFIX = ']}';
const utf8 = new TextEncoder();

/**
 * An inline call's record as stored: encoded once (a batch is written again while records come
 * in), and its size in bytes, for placing it in its batch's value or under a key of its own.
 */
export interface EncodedInlineJob {
  jobId: string;
  json: string;
  bytes: number;
}

/** A new batch's id: a random UUID's first 28 characters, marked version 8. */
export function newInlineBatchId(uuid: string): string {
  return `${uuid.slice(0, 14)}8${uuid.slice(15, 28)}`;
}

/** The id of the call at `index` in the batch. */
export function inlineJobId(batchId: string, index: number): string {
  return `${batchId}${index.toString(16).padStart(8, '0')}`;
}

/** The batch an inline job's id names; undefined for a submitted job's id. */
export function inlineBatchOf(jobId: string): string | undefined {
  return INLINE_JOB_ID.exec(jobId)?.[1];
}

export interface JobRecord {
  job: proto.Job;
  /** The webhook's secret: stored for deliveries after a take-over, never answered. */
  webhookSecret: string;
  revision: number;
}

const TERMINAL: ReadonlySet<proto.JobStatus> = new Set([proto.JobStatus.JOB_STATUS_SUCCEEDED, proto.JobStatus.JOB_STATUS_FAILED, proto.JobStatus.JOB_STATUS_CANCELLED]);
export function isFinished(status: proto.JobStatus): boolean {
  return TERMINAL.has(status);
}

function toStored(job: proto.Job, webhookSecret: string): StoredJob {
  const json = proto.Job.toJSON(job) as StoredJob;
  return webhookSecret ? { ...json, webhookSecret } : json;
}

function fromStored(stored: StoredJob, revision: number): JobRecord {
  return { job: proto.Job.fromJSON(stored), webhookSecret: stored.webhookSecret ?? '', revision };
}

export class JobStore {
  readonly #jobs: KvStore<StoredJob>;
  readonly #keys: KvStore<z.infer<typeof keyClaimSchema>>;
  /** The jobs bucket untyped, for its status (where a listing's snapshot ends). */
  readonly #raw: KV;
  readonly #inline: KvStore<InlineBatch>;
  /** The inline bucket untyped: a batch's value is put together from records checked and encoded once (encodeInline). */
  readonly #rawInline: KV;
  readonly #maxPayload: () => number;
  /** For listings, which read the buckets' streams with a consumer of their own. */
  readonly #connection: NatsConnection;

  private constructor(connection: NatsConnection, jobs: KvStore<StoredJob>, keys: KvStore<z.infer<typeof keyClaimSchema>>, raw: KV, inline: KvStore<InlineBatch>, rawInline: KV, maxPayload: () => number) {
    this.#connection = connection;
    this.#jobs = jobs;
    this.#keys = keys;
    this.#raw = raw;
    this.#inline = inline;
    this.#rawInline = rawInline;
    this.#maxPayload = maxPayload;
  }

  /** The most bytes of records one value of the inline bucket may hold: the server's max_payload, less the value's frame and a margin. */
  get inlineValueLimit(): number {
    return this.#maxPayload() - PAYLOAD_MARGIN - JOBS_PREFIX.length - JOBS_SUFFIX.length;
  }

  /** Binds to both buckets, creating them when missing with `retentionMs` as their max age. */
  static async open(connection: NatsConnection, options: { retentionMs: number; bucket?: string; keysBucket?: string; inlineBucket?: string }): Promise<JobStore> {
    const jobs = await KvStore.open<StoredJob>(connection, {
      bucket: options.bucket ?? DEFAULT_JOBS_BUCKET,
      schema: storedJobSchema,
      key: JOB_ID,
      check: (jobId, job) => (job.jobId === jobId ? undefined : `entry belongs to job ${job.jobId}`),
      ttlMs: options.retentionMs,
      history: 1,
      description: 'Elexirion agent jobs (one key per job id)',
    });
    const keys = await KvStore.open(connection, {
      bucket: options.keysBucket ?? DEFAULT_JOB_KEYS_BUCKET,
      schema: keyClaimSchema,
      key: KEY_HASH,
      ttlMs: options.retentionMs,
      history: 1,
      description: 'Elexirion agent idempotency keys (SHA-256 of the key -> job id)',
    });
    const inline = await KvStore.open<InlineBatch>(connection, {
      bucket: options.inlineBucket ?? DEFAULT_INLINE_JOBS_BUCKET,
      schema: inlineBatchSchema,
      key: JOB_ID,
      check: (key, batch) => {
        // A record too big to share its batch's value is stored alone, under its job id.
        if (inlineBatchOf(key) !== undefined) return batch.jobs.length === 1 && batch.jobs[0]!.jobId === key ? undefined : `entry under job id ${key} must hold that job alone`;
        const batchId = key;
        const stranger = batch.jobs.find((job) => inlineBatchOf(job.jobId) !== batchId);
        return stranger ? `entry holds job ${stranger.jobId} of another batch` : undefined;
      },
      ttlMs: options.retentionMs,
      history: 1,
      description: 'Elexirion agent inline calls (HandleChat, RunPipeline) as jobs, a batch of them per key',
    });
    const kvm = new Kvm(connection);
    return new JobStore(connection, jobs, keys, await kvm.open(jobs.bucket), inline, await kvm.open(inline.bucket), () => connection.info?.max_payload ?? DEFAULT_MAX_PAYLOAD);
  }

  /** Throws KvInvalidKeyError (INVALID_ARGUMENT) unless `jobId` may be a job id. */
  async get(jobId: string): Promise<JobRecord | undefined> {
    const batch = inlineBatchOf(jobId);
    if (batch !== undefined) {
      // In its batch's value, or (too big to share it) under its own id.
      const stored = (await this.#inline.get(batch))?.value.jobs.find((job) => job.jobId === jobId) ?? (await this.#inline.get(jobId))?.value.jobs[0];
      return stored && fromStored(stored, 0);
    }
    const entry = await this.#jobs.get(jobId);
    return entry && fromStored(entry.value, entry.revision);
  }

  /**
   * An inline call's record, checked as the bucket checks its values and encoded, at most
   * `inlineValueLimit` bytes: a record bigger than that (a long output) has its longest texts cut
   * to fit, each cut one ending in a marker saying how much of it was cut (trimToFit).
   * KvRejectedValueError when the record is not one the bucket may hold.
   */
  encodeInline(job: proto.Job): EncodedInlineJob {
    const batchId = inlineBatchOf(job.jobId);
    if (batchId === undefined) throw new KvRejectedValueError(this.#inline.bucket, job.jobId, ['not an inline job id (version 8 UUID)']);
    const limit = this.inlineValueLimit;
    const encode = (record: proto.Job): EncodedInlineJob => {
      const json = JSON.stringify(this.#inline.check(batchId, { jobs: [toStored(record, '')] }).jobs[0]);
      return { jobId: record.jobId, json, bytes: Buffer.byteLength(json) };
    };
    const encoded = encode(job);
    return encoded.bytes <= limit ? encoded : trimToFit(job, limit, encode);
  }

  /**
   * Writes a batch of inline calls' records (finished jobs nobody else writes) under the batch's
   * id; a later write of the same batch holds every record of the earlier one and more. Their
   * bytes together must stay within `inlineValueLimit` (the caller places the others alone).
   */
  async putInlineBatch(batchId: string, records: readonly EncodedInlineJob[]): Promise<void> {
    const stranger = records.find((record) => inlineBatchOf(record.jobId) !== batchId);
    if (stranger) throw new KvRejectedValueError(this.#inline.bucket, batchId, [`entry holds job ${stranger.jobId} of another batch`]);
    await this.#rawInline.put(this.#inline.checkKey(batchId), utf8.encode(`${JOBS_PREFIX}${records.map((record) => record.json).join(',')}${JOBS_SUFFIX}`));
  }

  /** Writes one inline call's record under its own job id: it is too big to share its batch's value. GetJob looks there when the batch lacks it. */
  async putInlineAlone(record: EncodedInlineJob): Promise<void> {
    await this.#rawInline.put(this.#inline.checkKey(record.jobId), utf8.encode(`${JOBS_PREFIX}${record.json}${JOBS_SUFFIX}`));
  }

  /**
   * The job as its record keeps it: as it is when its JSON fits the server's max_payload, else
   * with its long texts cut to fit, each ending in a marker (trimToFit). A job's last event
   * carries it so too.
   */
  fit(job: proto.Job, webhookSecret = ''): proto.Job {
    const limit = this.#maxPayload() - PAYLOAD_MARGIN;
    const measure = (candidate: proto.Job) => ({ job: candidate, bytes: Buffer.byteLength(JSON.stringify(toStored(candidate, webhookSecret))) });
    const measured = measure(job);
    return measured.bytes <= limit ? job : trimToFit(job, limit, measure).job;
  }

  /** Stores a new job (fitted to max_payload); KvRevisionConflictError if its id exists. */
  async create(job: proto.Job, webhookSecret = ''): Promise<number> {
    return this.#jobs.create(job.jobId, toStored(this.fit(job, webhookSecret), webhookSecret));
  }

  /**
   * Writes the job (fitted to max_payload) if its record is still at `revision`;
   * KvRevisionConflictError otherwise. The answer holds the job as given, not cut: later changes
   * start from it, so a text is never cut twice.
   */
  async update(record: JobRecord, job: proto.Job): Promise<JobRecord> {
    const revision = await this.#jobs.update(job.jobId, toStored(this.fit(job, record.webhookSecret), record.webhookSecret), record.revision);
    return { job, webhookSecret: record.webhookSecret, revision };
  }

  /**
   * Reads, changes and writes back until no other write came between (compare-and-set).
   * `change` answers the new job, or undefined to leave the record as it is.
   */
  async mutate(jobId: string, change: (job: proto.Job) => proto.Job | undefined): Promise<JobRecord | undefined> {
    for (;;) {
      const record = await this.get(jobId);
      if (!record) return undefined;
      const next = change(record.job);
      if (!next) return record;
      try {
        return await this.update(record, next);
      } catch (error) {
        if (!(error instanceof KvRevisionConflictError)) throw error;
      }
    }
  }

  async delete(jobId: string): Promise<void> {
    await this.#jobs.delete(jobId);
  }

  /**
   * Claims an idempotency key for `jobId`: undefined when this call claimed it, else the job id
   * that holds it. Two concurrent claims cannot both win: the key is created only if absent.
   */
  async claimKey(idempotencyKey: string, jobId: string): Promise<string | undefined> {
    const hash = keyHash(idempotencyKey);
    for (;;) {
      try {
        await this.#keys.create(hash, { jobId });
        return undefined;
      } catch (error) {
        if (!(error instanceof KvRevisionConflictError)) throw error;
      }
      const holder = await this.#keys.get(hash);
      if (holder) return holder.value.jobId;
      // Released between our create and get: claim it again.
    }
  }

  async releaseKey(idempotencyKey: string): Promise<void> {
    await this.#keys.delete(keyHash(idempotencyKey));
  }

  /**
   * Every stored job: the last entry of each key of both buckets, each read with one watcher
   * (not a read per key: a week of quiet-hour chats is thousands of batches of one). The
   * buckets' max age bounds how many there are; ListJobs filters and pages them.
   */
  async list(): Promise<proto.Job[]> {
    const [submitted, inline] = await Promise.all([
      lastValues(this.#connection, this.#jobs, this.#raw, (stored, revision) => [fromStored(stored, revision).job]),
      lastValues(this.#connection, this.#inline, this.#rawInline, (batch) => batch.jobs.map((stored) => fromStored(stored, 0).job)),
    ]);
    return [...submitted, ...inline];
  }
}

/** Records a listing reads per pull. */
const LIST_PULL_SIZE = 2_000;
/** How long a pull waits for records the server said were pending (removed meanwhile by max age: fewer come). */
const LIST_PULL_WAIT_MS = 2_000;

/**
 * The jobs in the last value of every key of a bucket, read with one consumer (not a read per
 * key: a week of quiet-hour chats is thousands of batches of one). A value that does not decode
 * is not listed (GetJob names it: DATA_LOSS).
 *
 * A plain pull consumer over the bucket's stream, read for as many records as it had pending
 * when made: a record rewritten while the listing reads (a running job's progress) loses its
 * earlier value from the bucket (history 1) and is read at its new place at the end, so it is
 * still counted once, and busy writers cannot keep the listing going. Not a KV watcher: it
 * delivers last values per subject, which nats-server versions without nats-server#7005 (2.9,
 * as Debian ships it) skip and repeat while keys are rewritten, and it stopped at the bucket's
 * last write when the listing began, before keys rewritten since.
 */
async function lastValues<T>(connection: NatsConnection, store: KvStore<T>, raw: KV, jobsOf: (value: T, revision: number) => proto.Job[]): Promise<proto.Job[]> {
  const status = await raw.status();
  if (status.values === 0) return [];
  const stream = status.streamInfo.config.name;
  const prefix = `$KV.${store.bucket}.`;
  const manager = await jetstreamManager(connection);
  const made = await manager.consumers.add(stream, {
    // The buckets keep one revision per key, so every message is a key's last value (not
    // LastPerSubject: see above).
    deliver_policy: DeliverPolicy.All,
    ack_policy: AckPolicy.None,
    filter_subject: `${prefix}>`,
    mem_storage: true,
    // Removed below; the threshold only covers a process that died mid-listing.
    inactive_threshold: nanos(60_000),
  });
  // Each key's latest revision wins (a rewritten record is met again at its new place).
  const jobs = new Map<string, { revision: number; jobs: proto.Job[] }>();
  try {
    const consumer = await jetstream(connection).consumers.get(stream, made.name);
    let left = made.num_pending;
    while (left > 0) {
      const batch = await consumer.fetch({ max_messages: Math.min(left, LIST_PULL_SIZE), expires: LIST_PULL_WAIT_MS });
      let received = 0;
      for await (const message of batch) {
        received += 1;
        const key = message.subject.slice(prefix.length);
        const operation = message.headers?.get('KV-Operation');
        if ((jobs.get(key)?.revision ?? 0) < message.seq) {
          let listed: proto.Job[] = [];
          try {
            listed = operation === 'DEL' || operation === 'PURGE' ? [] : jobsOf(store.decode({ key, value: message.data }), message.seq);
          } catch {
            // not listed (above)
          }
          jobs.set(key, { revision: message.seq, jobs: listed });
        }
        // Nothing after it: the bucket was read to its end.
        left = message.info.pending === 0 ? 0 : left - 1;
      }
      if (received === 0) break;
    }
  } finally {
    await manager.consumers.delete(stream, made.name).catch(() => undefined);
  }
  return [...jobs.values()].flatMap((value) => value.jobs);
}

/** Texts of a record that may be long (what callers sent and what models answered). */
function cutTexts(job: proto.Job, cut: (text: string) => string): proto.Job {
  const each = (texts: Record<string, string>) => Object.fromEntries(Object.entries(texts).map(([name, text]) => [name, cut(text)]));
  return {
    ...job,
    message: cut(job.message),
    inputs: each(job.inputs),
    output: cut(job.output),
    outputs: each(job.outputs),
    error: cut(job.error),
    steps: job.steps.map((step) => ({ ...step, output: cut(step.output), json: cut(step.json), error: cut(step.error) })),
  };
}

/**
 * The record with every long text cut to a length at which it fits `limit` bytes: halved until it
 * fits. A cut text keeps its beginning and ends in "[... N of M characters cut: a job record must
 * fit NATS's max payload]"; an inline call's answer had all of it, a submitted job's text deltas
are in its events (WatchJob). A record that does not fit even
 * with every text cut to nothing (thousands of inputs) keeps none of its texts, steps, inputs or
 * outputs, and its output says so.
 */
function trimToFit<Encoded extends { bytes: number }>(job: proto.Job, limit: number, encode: (job: proto.Job) => Encoded): Encoded {
  for (let keep = Math.floor(limit / 2); keep >= 64; keep = Math.floor(keep / 2)) {
    const encoded = encode(cutTexts(job, (text) => (text.length <= keep ? text : `${text.slice(0, keep)}[... ${text.length - keep} of ${text.length} characters cut: a job record must fit NATS's max payload]`)));
    if (encoded.bytes <= limit) return encoded;
  }
  return encode({ ...cutTexts(job, () => ''), inputs: {}, outputs: {}, steps: [], output: "[the record's texts, steps, inputs and outputs were cut: together they did not fit NATS's max payload]" });
}

function keyHash(idempotencyKey: string): string {
  return createHash('sha256').update(idempotencyKey).digest('hex');
}
