/**
 * Prompt versions per (pipeline, step), with their rollout, in a JetStream KV bucket.
 *
 * The registry reads from a watched in-memory view of the bucket (the kit's KvView), so `select`
 * answers synchronously and the request path never waits on NATS; while NATS is unreachable it
 * keeps serving the last known good entries. An invalid entry is logged and ignored: the previous
 * good value for its key stays. The arms `select` draws from are computed when an entry changes,
 * not per call.
 *
 * Changes (`change`) are a read-modify-write with compare-and-set on the entry's KV revision: one
 * KV write per change, so an interrupted change leaves nothing half done.
 */
import { createHash } from 'node:crypto';
import { ElexirionError, KvRejectedValueError, KvRevisionConflictError, KvStore, KvView, ServerError, Status, type KvBucketSpec, type KvViewLogger } from '@elexirion/kit';
import type { NatsConnection } from '@nats-io/transport-node';
import { PIPELINE_NAME, STEP_NAME } from '../pipeline/schema.js';
import { entryKey, promptEntrySchema, YAML_VERSION, type LegacyPromptEntry, type PromptDemoRecord, type PromptEntry } from './prompt-entry.js';
import { ensureHistoryStream } from './prompt-history.js';

/** What a run uses of a registry version: its id (the step's prompt_version) and its template. */
export interface ServingVersion {
  id: string;
  prompt: string;
  system?: string;
  demos?: readonly PromptDemoRecord[];
}

export type PromptRegistryLogger = KvViewLogger;

export interface PromptRegistryOptions {
  logger: PromptRegistryLogger;
  /** KV bucket name; default `elexirion_prompts`. */
  bucket?: string;
  /**
   * The stream that keeps every revision of the bucket (the history), "" for none; by default
   * `ELEXIRION_PROMPT_HISTORY` for the default bucket, `ELEXIRION_PROMPT_HISTORY_<bucket>` for another.
   */
  historyStream?: string;
}

export const DEFAULT_PROMPT_BUCKET = 'elexirion_prompts';
export const DEFAULT_PROMPT_HISTORY_STREAM = 'ELEXIRION_PROMPT_HISTORY';

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

/** The arms of one entry: cumulative shares (ending at 1) and what each serves (undefined: the YAML prompt). */
interface Arms {
  bounds: Float64Array;
  versions: (ServingVersion | undefined)[];
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

/** The arms of an entry: its weights in a fixed order (version order, then yaml), or all on the baseline. */
function armsOf(entry: PromptEntry): Arms {
  const serving = new Map<string, ServingVersion>();
  for (const version of entry.versions) {
    const { prompt, system, demos } = version.template;
    serving.set(version.id, { id: version.id, prompt, ...(system ? { system } : {}), ...(demos && demos.length > 0 ? { demos } : {}) });
  }
  const weights = entry.rollout.weights;
  const ids = [...entry.versions.map((version) => version.id), YAML_VERSION].filter((id) => (weights[id] ?? 0) > 0);
  if (ids.length === 0) return { bounds: Float64Array.of(1), versions: [serving.get(entry.rollout.baseline)] };
  const total = ids.reduce((sum, id) => sum + weights[id]!, 0);
  const bounds = new Float64Array(ids.length);
  let cumulative = 0;
  ids.forEach((id, index) => {
    cumulative += weights[id]! / total;
    bounds[index] = cumulative;
  });
  bounds[ids.length - 1] = 1;
  return { bounds, versions: ids.map((id) => serving.get(id)) };
}

/** What a change makes of the entry: the next value, or why not (thrown). */
export type EntryChange = (current: PromptEntry | undefined, revision: number) => PromptEntry;

/** Attempts of one change when writers collide and the caller set no expected revision. */
const CHANGE_ATTEMPTS = 30;

export class PromptRegistry {
  readonly bucket: string;
  readonly historyStream: string;
  readonly #view: KvView<PromptEntry>;
  readonly #spec: KvBucketSpec<PromptEntry>;
  readonly #arms = new Map<string, Arms>();
  readonly #logger: PromptRegistryLogger;
  #store: KvStore<PromptEntry> | undefined;
  #connection: NatsConnection | undefined;
  #historyReady = false;
  /** The change in progress per key in this process: changes to one key queue here, so they rarely collide on the CAS. */
  readonly #changing = new Map<string, Promise<unknown>>();

  constructor(options: PromptRegistryOptions) {
    const { logger } = options;
    this.#logger = logger;
    this.bucket = options.bucket ?? DEFAULT_PROMPT_BUCKET;
    this.historyStream = options.historyStream ?? (this.bucket === DEFAULT_PROMPT_BUCKET ? DEFAULT_PROMPT_HISTORY_STREAM : `${DEFAULT_PROMPT_HISTORY_STREAM}_${this.bucket}`);
    this.#spec = {
      bucket: this.bucket,
      schema: promptEntrySchema,
      // The names themselves are checked by the schema; the check ties them to the key.
      key: { pattern: /^[\w-]+\.[\w-]+$/, description: 'pipeline.step' },
      check: (key, entry) => (entryKey(entry.pipeline, entry.step) === key ? undefined : `entry is for ${entryKey(entry.pipeline, entry.step)}`),
      history: 5,
      description: 'Elexirion prompt versions per pipeline.step',
    };
    this.#view = new KvView<PromptEntry>({
      ...this.#spec,
      logger,
      label: 'prompt',
      onChange: ({ key, value, previous, revision }) => {
        if (!value) {
          this.#arms.delete(key);
          logger.info({ key, bucket: this.bucket }, 'prompt entry removed');
          return;
        }
        this.#arms.set(key, armsOf(value));
        if (value.updatedAt !== previous?.updatedAt) {
          logger.info({ key, bucket: this.bucket, revision, versions: value.versions.map((version) => version.id), weights: value.rollout.weights }, 'prompt entry updated');
        }
      },
    });
  }

  /** True once the bucket has been loaded (stays true while NATS is away; false after close). */
  get attached(): boolean {
    return this.#view.attached;
  }

  /**
   * Opens (or creates) the bucket and the history stream that sources it, loads every current
   * entry, then keeps watching for puts and deletes, across reconnects, until close. Rejects when
   * NATS or the bucket cannot be reached; never for a bad entry. Attaching again (e.g. with a new
   * connection) replaces the old watch.
   */
  async attach(connection: NatsConnection): Promise<void> {
    this.#store = await KvStore.open(connection, this.#spec);
    this.#connection = connection;
    // Before any change is made through this registry, so the history holds every one. Serving
    // does not depend on it: without it runs go on and GetPromptHistory says it is unavailable.
    this.#historyReady = false;
    if (this.historyStream) {
      try {
        await ensureHistoryStream(connection, this.historyStream, this.bucket, this.#logger);
        this.#historyReady = true;
      } catch (error) {
        this.#logger.warn({ err: error, stream: this.historyStream, bucket: this.bucket }, 'prompt history stream cannot be set up; the history is unavailable until the next connect');
      }
    }
    await this.#view.attach(connection);
  }

  /** Whether the history stream was set up on the last attach. */
  get historyReady(): boolean {
    return this.#historyReady;
  }

  /** The connection the registry was attached with (the history reads through it). */
  get connection(): NatsConnection | undefined {
    return this.#connection;
  }

  /**
   * The version to use for this run: undefined for the YAML prompt (no entry, the "yaml" share,
   * or a "yaml" baseline). Without a session key a weighted random choice; with one a choice fixed
   * by a hash of (sessionKey, pipeline, step), stable while the entry's weights are.
   */
  select(pipeline: string, step: string, sessionKey?: string): ServingVersion | undefined {
    const arms = this.#arms.get(entryKey(pipeline, step));
    if (!arms) return undefined;
    const { bounds, versions } = arms;
    if (bounds.length === 1) return versions[0];
    const point = sessionKey !== undefined ? stickyPoint(sessionKey, pipeline, step) : Math.random();
    for (let index = 0; index < bounds.length; index++) if (point < bounds[index]!) return versions[index];
    return versions[versions.length - 1];
  }

  /** The entry for (pipeline, step) as this registry holds it, with its KV revision. */
  get(pipeline: string, step: string): { entry: PromptEntry; revision: number } | undefined {
    const key = entryKey(pipeline, step);
    const entry = this.#view.get(key);
    return entry ? { entry, revision: this.#view.revision(key) ?? 0 } : undefined;
  }

  /** Every entry held (last known good), with its revision. */
  list(): { entry: PromptEntry; revision: number }[] {
    return this.#view.entries().map(([key, entry]) => ({ entry, revision: this.#view.revision(key) ?? 0 }));
  }

  /** The current in-memory view (last known good entries). */
  entries(): PromptEntry[] {
    return this.#view.entries().map(([, entry]) => entry);
  }

  /**
   * One change to (pipeline, step): reads the entry from NATS, lets `apply` make the next one,
   * and writes it only if the entry is still at the revision read (compare-and-set). With an
   * `expectedRevision` (> 0) a different revision is ABORTED naming the current one; without,
   * a lost race is read and applied again. Resolves with the written entry and its revision,
   * visible to `select` at once.
   */
  async change(pipeline: string, step: string, expectedRevision: number, apply: EntryChange): Promise<{ entry: PromptEntry; revision: number }> {
    checkNames(pipeline, step);
    const key = entryKey(pipeline, step);
    const previous = this.#changing.get(key) ?? Promise.resolve();
    const run = previous.catch(() => undefined).then(() => this.#changeNow(key, expectedRevision, apply));
    this.#changing.set(key, run);
    try {
      return await run;
    } finally {
      if (this.#changing.get(key) === run) this.#changing.delete(key);
    }
  }

  async #changeNow(key: string, expectedRevision: number, apply: EntryChange): Promise<{ entry: PromptEntry; revision: number }> {
    const store = this.#store;
    if (!store) throw new ServerError(Status.UNAVAILABLE, 'the prompt registry is not attached to NATS: changes cannot be made now; try again');
    for (let attempt = 1; ; attempt++) {
      let current: { value: PromptEntry; revision: number } | undefined;
      try {
        current = await store.get(key);
      } catch (error) {
        if (error instanceof ElexirionError && error.code === Status.DATA_LOSS) {
          throw new ServerError(Status.FAILED_PRECONDITION, `the stored prompt entry ${key} is not valid (${error.message}); it is not changed`);
        }
        throw error;
      }
      const revision = current?.revision ?? 0;
      if (expectedRevision > 0 && revision !== expectedRevision) throw staleRevision(key, expectedRevision, revision);
      const next = apply(current?.value, revision);
      try {
        const written = revision === 0 ? await store.create(key, next) : await store.update(key, next, revision);
        this.#view.applyWrite(key, next, written);
        return { entry: this.#view.get(key) ?? next, revision: written };
      } catch (error) {
        if (error instanceof KvRejectedValueError) throw new InvalidPromptEntryError(error.problems, { cause: error });
        if (!(error instanceof KvRevisionConflictError)) throw error;
        if (expectedRevision > 0) {
          const now = await store.get(key).catch(() => undefined);
          throw staleRevision(key, expectedRevision, now?.revision ?? 0);
        }
        if (attempt >= CHANGE_ATTEMPTS) throw new ServerError(Status.ABORTED, `prompt entry ${key}: other writers changed it ${attempt} times while this change was applied; try again`);
        // Another replica wrote meanwhile: read again after a short, spread-out pause.
        await new Promise((resolve) => setTimeout(resolve, 2 + Math.random() * 10 * Math.min(attempt, 5)));
      }
    }
  }

  /**
   * Stores an entry as given (current or pre-issue-15 shape), visible to this registry at once,
   * with no change record. For tests and tools; the lifecycle calls use `change`.
   */
  async publish(entry: Omit<PromptEntry, 'updatedAt'> | Omit<LegacyPromptEntry, 'updatedAt'>): Promise<void> {
    checkNames(entry?.pipeline, entry?.step);
    try {
      await this.#view.put(entryKey(entry.pipeline, entry.step), { ...entry, updatedAt: new Date().toISOString() } as PromptEntry);
    } catch (error) {
      if (error instanceof KvRejectedValueError) throw new InvalidPromptEntryError(error.problems, { cause: error });
      throw error;
    }
  }

  /** Deletes the entry for (pipeline, step); select then returns undefined for it. */
  async remove(pipeline: string, step: string): Promise<void> {
    checkNames(pipeline, step);
    await this.#view.delete(entryKey(pipeline, step));
  }

  /** Stops watching. The in-memory entries stay readable through select/entries. */
  close(): Promise<void> {
    return this.#view.close();
  }
}

function staleRevision(key: string, expected: number, current: number): ServerError {
  return new ServerError(
    Status.ABORTED,
    `expected_revision: prompt entry ${key} is at revision ${current}${current === 0 ? ' (it does not exist)' : ''}, not ${expected}; read it again and retry`,
  );
}
