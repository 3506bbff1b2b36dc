/**
 * Run checkpoints in a JetStream KV bucket: after every completed top-level step the executor
 * saves the run's state under its run id, so any replica can resume the run from its last
 * completed step. One key per run (history 1); the bucket's max age expires old runs (per-message
 * TTL does not exist on the NATS 2.9 servers we support).
 */
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { z } from 'zod';

export interface CheckpointStep {
  name: string;
  type: string;
  status: 'completed' | 'skipped';
  output: string;
  /** Parsed output when the step's output is structured. */
  json?: unknown;
  provider: string;
  model: string;
  usage: { inputTokens: number; outputTokens: number; costUsd: number };
  attempts: number;
  durationMs: number;
  promptVersion: string;
}

export interface RunCheckpoint {
  runId: string;
  jobId: string;
  pipeline: string;
  source: { kind: 'named'; name: string } | { kind: 'inline'; yaml: string };
  inputs: Record<string, string>;
  promptOverrides: Record<string, string>;
  sessionKey: string;
  /** Completed top-level steps, in order. */
  steps: CheckpointStep[];
  vars: Record<string, unknown>;
  status: 'running' | 'completed' | 'failed';
  error?: string;
  /** ISO 8601. */
  startedAt: string;
  /** ISO 8601. */
  updatedAt: string;
}

export interface CheckpointStoreOptions {
  /** KV bucket name; default `elexirion_checkpoints`. */
  bucket?: string;
  /** Max age of a checkpoint (the bucket's TTL) in ms; default 7 days. */
  ttlMs?: number;
}

export const DEFAULT_CHECKPOINT_BUCKET = 'elexirion_checkpoints';
export const DEFAULT_CHECKPOINT_TTL_MS = 7 * 24 * 60 * 60 * 1000;

/** The entry stored under a run id is not a checkpoint (bad JSON, wrong shape, another run's). */
export class CheckpointCorruptError extends Error {
  override readonly name = 'CheckpointCorruptError';
  constructor(
    readonly runId: string,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(`checkpoint for run ${runId} is corrupt: ${reason}`, options);
  }
}

/** A checkpoint that cannot be saved (wrong shape, too large for the server). */
export class CheckpointRejectedError extends Error {
  override readonly name = 'CheckpointRejectedError';
  constructor(
    readonly runId: string,
    readonly reason: string,
  ) {
    super(`checkpoint for run ${runId} cannot be saved: ${reason}`);
  }
}

// Unknown fields are kept (loose objects) so a checkpoint written by a newer replica during a
// rolling upgrade survives being loaded and saved again by an older one.
const isoDate = z.iso.datetime({ offset: true });

const stepSchema = z.looseObject({
  name: z.string().min(1),
  type: z.string(),
  status: z.enum(['completed', 'skipped']),
  output: z.string(),
  json: z.unknown().optional(),
  provider: z.string(),
  model: z.string(),
  usage: z.looseObject({
    inputTokens: z.number().nonnegative(),
    outputTokens: z.number().nonnegative(),
    costUsd: z.number().nonnegative(),
  }),
  attempts: z.number().int().nonnegative(),
  durationMs: z.number().nonnegative(),
  promptVersion: z.string(),
});

const checkpointSchema = z.looseObject({
  runId: z.string().min(1),
  jobId: z.string(),
  pipeline: z.string().min(1),
  source: z.discriminatedUnion('kind', [
    z.looseObject({ kind: z.literal('named'), name: z.string().min(1) }),
    z.looseObject({ kind: z.literal('inline'), yaml: z.string() }),
  ]),
  inputs: z.record(z.string(), z.string()),
  promptOverrides: z.record(z.string(), z.string()),
  sessionKey: z.string(),
  steps: z.array(stepSchema),
  vars: z.record(z.string(), z.unknown()),
  status: z.enum(['running', 'completed', 'failed']),
  error: z.string().optional(),
  startedAt: isoDate,
  updatedAt: isoDate,
});

// Compile-time check that the schema produces a RunCheckpoint.
const _schemaMatchesType: (value: z.infer<typeof checkpointSchema>) => RunCheckpoint = (value) => value;
void _schemaMatchesType;

/** One KV token: no dots, nothing the KV key rules reject. UUIDs qualify. */
const RUN_ID = /^[A-Za-z0-9_-]{1,128}$/;

function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 5)
    .map((issue) => `${issue.path.length ? issue.path.join('.') : '(root)'}: ${issue.message}`)
    .join('; ');
}

export class CheckpointStore {
  readonly bucket: string;
  readonly #kv: KV;
  readonly #connection: NatsConnection;

  private constructor(kv: KV, connection: NatsConnection, bucket: string) {
    this.#kv = kv;
    this.#connection = connection;
    this.bucket = bucket;
  }

  /**
   * Binds to the bucket, creating it when missing (history 1, file storage, max age = ttlMs).
   * An existing bucket is used as it is: its TTL is not changed.
   */
  static async open(connection: NatsConnection, options: CheckpointStoreOptions = {}): Promise<CheckpointStore> {
    const bucket = options.bucket ?? DEFAULT_CHECKPOINT_BUCKET;
    const ttlMs = options.ttlMs ?? DEFAULT_CHECKPOINT_TTL_MS;
    if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw new RangeError(`checkpoint ttlMs must be a positive number of ms, got ${ttlMs}`);
    const kv = await new Kvm(connection).create(bucket, {
      history: 1,
      ttl: ttlMs,
      description: 'Elexirion run checkpoints (one key per run id)',
    });
    return new CheckpointStore(kv, connection, bucket);
  }

  /** Writes the checkpoint under its run id (one put per call; the latest save wins). */
  async save(checkpoint: RunCheckpoint): Promise<void> {
    const runId = checkRunId(checkpoint.runId);
    const checked = checkpointSchema.safeParse(checkpoint);
    if (!checked.success) throw new CheckpointRejectedError(runId, describeIssues(checked.error));
    const data = new TextEncoder().encode(JSON.stringify(checkpoint));
    const maxPayload = this.#connection.info?.max_payload;
    if (maxPayload && data.length > maxPayload) {
      throw new CheckpointRejectedError(runId, `${data.length} bytes exceeds the server's max payload of ${maxPayload} bytes`);
    }
    await this.#kv.put(runId, data);
  }

  /** The run's checkpoint; undefined when there is none (never saved, deleted or expired). */
  async load(runId: string): Promise<RunCheckpoint | undefined> {
    checkRunId(runId);
    const entry = await this.#kv.get(runId);
    if (!entry || entry.operation !== 'PUT') return undefined;
    let raw: unknown;
    try {
      raw = entry.json<unknown>();
    } catch (error) {
      throw new CheckpointCorruptError(runId, `not JSON (${error instanceof Error ? error.message : String(error)})`, { cause: error });
    }
    const checked = checkpointSchema.safeParse(raw);
    if (!checked.success) throw new CheckpointCorruptError(runId, describeIssues(checked.error), { cause: checked.error });
    if (checked.data.runId !== runId) throw new CheckpointCorruptError(runId, `entry belongs to run ${checked.data.runId}`);
    return checked.data;
  }

  /** Removes the run's checkpoint (a delete marker; the bucket's max age clears it later). */
  async delete(runId: string): Promise<void> {
    checkRunId(runId);
    await this.#kv.delete(runId);
  }
}

function checkRunId(runId: string): string {
  if (typeof runId !== 'string' || !RUN_ID.test(runId)) {
    throw new TypeError(`invalid run id ${JSON.stringify(runId)}: expected 1-128 characters of A-Z a-z 0-9 _ - (a UUID)`);
  }
  return runId;
}
