/**
 * Run checkpoints in a JetStream KV bucket: after every completed top-level step the executor
 * saves the run's state under its run id, so any replica can resume the run from its last
 * completed step. One key per run (history 1); the bucket's max age expires old runs (per-message
 * TTL does not exist on the NATS 2.9 servers we support).
 */
import { KvCorruptEntryError, KvRejectedValueError, KvStore, RUN_ID_DESCRIPTION, RUN_ID_PATTERN, type KvKeyRule } from '@elexirion/kit';
import type { PromptTemplateRecord } from './prompt-entry.js';
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
  /** Present when the step was served by other than its first choice. */
  fallbackUsed?: boolean;
  failedTargets?: string[];
}

export interface RunCheckpoint {
  runId: string;
  jobId: string;
  pipeline: string;
  source: { kind: 'named'; name: string } | { kind: 'inline'; yaml: string };
  inputs: Record<string, string>;
  promptOverrides: Record<string, string>;
  /** Whole prompts per step (ExecuteRequest.prompt_candidates), so a resumed run keeps them; absent in older checkpoints. */
  promptCandidates?: Record<string, PromptTemplateRecord>;
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
export class CheckpointCorruptError extends KvCorruptEntryError {
  override readonly name: string = 'CheckpointCorruptError';
  get runId(): string {
    return this.key;
  }
}

/** A checkpoint that cannot be saved (wrong shape, too large for the server). */
export class CheckpointRejectedError extends KvRejectedValueError {
  override readonly name: string = 'CheckpointRejectedError';
  get runId(): string {
    return this.key;
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
  fallbackUsed: z.boolean().optional(),
  failedTargets: z.array(z.string()).optional(),
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
  promptCandidates: z.record(z.string(), z.object({ prompt: z.string(), system: z.string().optional(), demos: z.array(z.object({ input: z.string(), output: z.string() })).optional() })).optional(),
  sessionKey: z.string(),
  steps: z.array(stepSchema),
  vars: z.record(z.string(), z.unknown()),
  status: z.enum(['running', 'completed', 'failed']),
  error: z.string().optional(),
  startedAt: isoDate,
  updatedAt: isoDate,
});

/** What a run id may be: one KV key token, no dots (UUIDs qualify). */
export const RUN_ID: KvKeyRule = { pattern: RUN_ID_PATTERN, description: RUN_ID_DESCRIPTION, name: 'run id' };

export class CheckpointStore {
  readonly bucket: string;
  readonly #store: KvStore<RunCheckpoint>;

  private constructor(store: KvStore<RunCheckpoint>) {
    this.#store = store;
    this.bucket = store.bucket;
  }

  /**
   * Binds to the bucket, creating it when missing (history 1, file storage, max age = ttlMs).
   * An existing bucket is used as it is: its TTL is not changed.
   */
  static async open(connection: NatsConnection, options: CheckpointStoreOptions = {}): Promise<CheckpointStore> {
    const store = await KvStore.open<RunCheckpoint>(connection, {
      bucket: options.bucket ?? DEFAULT_CHECKPOINT_BUCKET,
      schema: checkpointSchema,
      key: RUN_ID,
      check: (runId, checkpoint) => (checkpoint.runId === runId ? undefined : `entry belongs to run ${checkpoint.runId}`),
      ttlMs: options.ttlMs ?? DEFAULT_CHECKPOINT_TTL_MS,
      history: 1,
      description: 'Elexirion run checkpoints (one key per run id)',
    });
    return new CheckpointStore(store);
  }

  /** Writes the checkpoint under its run id (one put per call; the latest save wins). */
  async save(checkpoint: RunCheckpoint): Promise<void> {
    try {
      await this.#store.put(checkpoint.runId, checkpoint);
    } catch (error) {
      if (error instanceof KvRejectedValueError) throw new CheckpointRejectedError(error.bucket, error.key, error.problems);
      throw error;
    }
  }

  /** The run's checkpoint; undefined when there is none (never saved, deleted or expired). */
  async load(runId: string): Promise<RunCheckpoint | undefined> {
    try {
      return (await this.#store.get(runId))?.value;
    } catch (error) {
      if (error instanceof KvCorruptEntryError) throw new CheckpointCorruptError(error.bucket, error.key, error.problems, { cause: error.cause });
      throw error;
    }
  }

  /** Removes the run's checkpoint (a delete marker; the bucket's max age clears it later). */
  async delete(runId: string): Promise<void> {
    await this.#store.delete(runId);
  }
}
