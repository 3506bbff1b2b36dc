/**
 * Prompt versions per (pipeline, step), with A/B weights, in a JetStream KV bucket.
 *
 * The registry reads from a watched in-memory view of the bucket (the kit's KvView), so `select`
 * answers synchronously and the request path never waits on NATS; while NATS is unreachable it
 * keeps serving the last known good versions. An invalid entry is logged and ignored: the
 * previous good value for its key stays.
 */
import { createHash } from 'node:crypto';
import { ElexirionError, KvRejectedValueError, KvView, Status, type KvViewLogger } from '@elexirion/kit';
import type { NatsConnection } from '@nats-io/transport-node';
import { z } from 'zod';
import { PIPELINE_NAME, STEP_NAME } from '../pipeline/schema.js';

export interface PromptVersion {
  id: string;
  weight: number;
  prompt: string;
  system?: string;
  demos?: { input: string; output: string }[];
  createdAt?: string;
  source?: string;
}

export interface PromptEntry {
  pipeline: string;
  step: string;
  versions: PromptVersion[];
  updatedAt: string;
}

export type PromptRegistryLogger = KvViewLogger;

export interface PromptRegistryOptions {
  logger: PromptRegistryLogger;
  /** KV bucket name; default `elexirion_prompts`. */
  bucket?: string;
}

export const DEFAULT_PROMPT_BUCKET = 'elexirion_prompts';

export { PIPELINE_NAME, STEP_NAME };

/** `publish` or `remove` was given something that is not a valid prompt entry. */
export class InvalidPromptEntryError extends ElexirionError {
  override readonly name: string = 'InvalidPromptEntryError';
  constructor(
    readonly problems: readonly string[],
    options?: ErrorOptions,
  ) {
    super(Status.INVALID_ARGUMENT, `invalid prompt entry: ${problems.join('; ')}`, options);
  }
}

const versionSchema = z.object({
  id: z.string().min(1, 'must not be empty'),
  weight: z.number().finite().nonnegative('must be >= 0'),
  prompt: z.string().refine((value) => value.trim().length > 0, 'must not be empty'),
  system: z.string().optional(),
  demos: z.array(z.object({ input: z.string(), output: z.string() })).optional(),
  createdAt: z.string().optional(),
  source: z.string().optional(),
});

const entrySchema = z.object({
  pipeline: z.string().regex(PIPELINE_NAME, `must match ${PIPELINE_NAME}`),
  step: z.string().regex(STEP_NAME, `must match ${STEP_NAME}`),
  versions: z
    .array(versionSchema)
    .min(1, 'needs at least one version')
    .superRefine((versions, context) => {
      const seen = new Set<string>();
      versions.forEach((version, index) => {
        if (seen.has(version.id)) context.addIssue({ code: 'custom', path: [index, 'id'], message: `duplicate version id "${version.id}"` });
        seen.add(version.id);
      });
    }),
  updatedAt: z.string().min(1),
});

function keyOf(pipeline: string, step: string): string {
  return `${pipeline}.${step}`;
}

function checkNames(pipeline: string, step: string): void {
  const problems: string[] = [];
  if (typeof pipeline !== 'string' || !PIPELINE_NAME.test(pipeline)) problems.push(`pipeline ${JSON.stringify(pipeline)} must match ${PIPELINE_NAME}`);
  if (typeof step !== 'string' || !STEP_NAME.test(step)) problems.push(`step ${JSON.stringify(step)} must match ${STEP_NAME}`);
  if (problems.length) throw new InvalidPromptEntryError(problems);
}

/** A number in [0, 1) from a hash of (sessionKey, pipeline, step). */
function stickyPoint(sessionKey: string, pipeline: string, step: string): number {
  const digest = createHash('sha256').update(sessionKey).update('\0').update(pipeline).update('\0').update(step).digest();
  return digest.readUIntBE(0, 6) / 2 ** 48;
}

export class PromptRegistry {
  readonly bucket: string;
  readonly #view: KvView<PromptEntry>;

  constructor(options: PromptRegistryOptions) {
    const { logger } = options;
    this.bucket = options.bucket ?? DEFAULT_PROMPT_BUCKET;
    this.#view = new KvView<PromptEntry>({
      bucket: this.bucket,
      schema: entrySchema,
      // The names themselves are checked by the schema; the check ties them to the key.
      key: { pattern: /^[\w-]+\.[\w-]+$/, description: 'pipeline.step' },
      check: (key, entry) => (keyOf(entry.pipeline, entry.step) === key ? undefined : `entry is for ${keyOf(entry.pipeline, entry.step)}`),
      history: 5,
      description: 'Elexirion prompt versions per pipeline.step',
      logger,
      label: 'prompt',
      onChange: ({ key, value, previous, revision }) => {
        if (!value) logger.info({ key, bucket: this.bucket }, 'prompt entry removed');
        else if (value.updatedAt !== previous?.updatedAt) logger.info({ key, bucket: this.bucket, revision, versions: value.versions.map((version) => version.id) }, 'prompt entry updated');
      },
    });
  }

  /** True once the bucket has been loaded (stays true while NATS is away; false after close). */
  get attached(): boolean {
    return this.#view.attached;
  }

  /**
   * Opens (or creates) the bucket, loads every current entry, then keeps watching for puts and
   * deletes, across reconnects, until close. Rejects when NATS or the bucket cannot be reached;
   * never for a bad entry. Attaching again (e.g. with a new connection) replaces the old watch.
   */
  attach(connection: NatsConnection): Promise<void> {
    return this.#view.attach(connection);
  }

  /**
   * The version to use for this run: undefined when there is no entry or no version with a
   * weight above 0. Without a session key a weighted random choice; with one a choice fixed by a
   * hash of (sessionKey, pipeline, step), stable while the entry's versions and weights are.
   */
  select(pipeline: string, step: string, sessionKey?: string): PromptVersion | undefined {
    const entry = this.#view.get(keyOf(pipeline, step));
    if (!entry) return undefined;
    const eligible = entry.versions.filter((version) => version.weight > 0);
    if (eligible.length === 0) return undefined;
    const total = eligible.reduce((sum, version) => sum + version.weight, 0);
    const point = (sessionKey !== undefined ? stickyPoint(sessionKey, pipeline, step) : Math.random()) * total;
    let cumulative = 0;
    for (const version of eligible) {
      cumulative += version.weight;
      if (point < cumulative) return version;
    }
    return eligible[eligible.length - 1];
  }

  /** Validates and stores an entry (updatedAt is set now), visible to this registry at once. For the optimizer and tests. */
  async publish(entry: Omit<PromptEntry, 'updatedAt'>): Promise<void> {
    checkNames(entry?.pipeline, entry?.step);
    try {
      await this.#view.put(keyOf(entry.pipeline, entry.step), { ...entry, updatedAt: new Date().toISOString() });
    } catch (error) {
      if (error instanceof KvRejectedValueError) throw new InvalidPromptEntryError(error.problems, { cause: error });
      throw error;
    }
  }

  /** Deletes the entry for (pipeline, step); select then returns undefined for it. */
  async remove(pipeline: string, step: string): Promise<void> {
    checkNames(pipeline, step);
    await this.#view.delete(keyOf(pipeline, step));
  }

  /** The current in-memory view (last known good entries). */
  entries(): PromptEntry[] {
    return this.#view.entries().map(([, entry]) => entry);
  }

  /** Stops watching. The in-memory entries stay readable through select/entries. */
  close(): Promise<void> {
    return this.#view.close();
  }
}
