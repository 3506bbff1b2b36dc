/**
 * Prompt versions per (pipeline, step), with A/B weights, in a JetStream KV bucket.
 *
 * The registry keeps every valid entry in memory and answers `select` synchronously from there,
 * so the request path never waits on NATS. A KV watcher applies puts and deletes as they happen;
 * after the connection reconnects the registry re-reads the bucket with a fresh watcher (the old
 * one may point at a consumer the server no longer has), and while NATS is unreachable it keeps
 * serving the last known good versions. An invalid entry is logged and ignored: the previous
 * good value for its key stays.
 */
import { createHash } from 'node:crypto';
import { Kvm, KvWatchInclude, type KV, type KvEntry, type KvWatchEntry } from '@nats-io/kv';
import type { NatsConnection, QueuedIterator, Status } from '@nats-io/transport-node';
import { z } from 'zod';

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

export interface PromptRegistryLogger {
  info: Function;
  warn: Function;
  debug: Function;
}

export interface PromptRegistryOptions {
  logger: PromptRegistryLogger;
  /** KV bucket name; default `elexirion_prompts`. */
  bucket?: string;
}

export const DEFAULT_PROMPT_BUCKET = 'elexirion_prompts';
import { PIPELINE_NAME, STEP_NAME } from '../pipeline/schema.js';

export { PIPELINE_NAME, STEP_NAME };

/** `publish` or `remove` was given something that is not a valid prompt entry. */
export class InvalidPromptEntryError extends Error {
  override readonly name = 'InvalidPromptEntryError';
  constructor(readonly problems: string[]) {
    super(`invalid prompt entry: ${problems.join('; ')}`);
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

const entryShape = {
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
};
const publishSchema = z.object(entryShape);
const storedSchema = z.object({ ...entryShape, updatedAt: z.string().min(1) });

// Compile-time checks that the schemas produce the public types.
const _storedMatches: (value: z.infer<typeof storedSchema>) => PromptEntry = (value) => value;
const _publishMatches: (value: z.infer<typeof publishSchema>) => Omit<PromptEntry, 'updatedAt'> = (value) => value;
void _storedMatches;
void _publishMatches;

function problemsOf(error: z.ZodError): string[] {
  return error.issues.map((issue) => `${issue.path.length ? issue.path.join('.') : '(entry)'}: ${issue.message}`);
}

function keyOf(pipeline: string, step: string): string {
  return `${pipeline}.${step}`;
}

function checkNames(pipeline: string, step: string): void {
  const problems: string[] = [];
  if (typeof pipeline !== 'string' || !PIPELINE_NAME.test(pipeline)) problems.push(`pipeline ${JSON.stringify(pipeline)} must match ${PIPELINE_NAME}`);
  if (typeof step !== 'string' || !STEP_NAME.test(step)) problems.push(`step ${JSON.stringify(step)} must match ${STEP_NAME}`);
  if (problems.length) throw new InvalidPromptEntryError(problems);
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/** A number in [0, 1) from a hash of (sessionKey, pipeline, step). */
function stickyPoint(sessionKey: string, pipeline: string, step: string): number {
  const digest = createHash('sha256').update(sessionKey).update('\0').update(pipeline).update('\0').update(step).digest();
  return digest.readUIntBE(0, 6) / 2 ** 48;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** How often a load waiting for its snapshot checks that its watcher is still alive. */
const LOAD_POLL_MS = 1_000;
/** Gives up on one load (attach rejects; a resync retries) after this long. */
const LOAD_TIMEOUT_MS = 30_000;
const RESYNC_MIN_BACKOFF_MS = 250;
const RESYNC_MAX_BACKOFF_MS = 5_000;

/** `NatsConnection.status()` is typed as an AsyncIterable; the object it returns can stop. */
type StatusStream = AsyncIterable<Status> & { stop?: () => void };

interface Watch {
  iterator: QueuedIterator<KvWatchEntry>;
  /** Keys whose current value arrived during this watch's snapshot. */
  seen: Set<string>;
}

export class PromptRegistry {
  readonly bucket: string;
  readonly #logger: PromptRegistryLogger;
  /** Last known good entry per key. */
  readonly #entries = new Map<string, PromptEntry>();
  /** Highest KV revision applied per key (puts, deletes and rejected puts), against stale writes. */
  readonly #revisions = new Map<string, number>();
  #kv: KV | undefined;
  #connection: NatsConnection | undefined;
  #watch: Watch | undefined;
  #status: StatusStream | undefined;
  /** Bumped by attach/close: loops of an older generation stop. */
  #generation = 0;
  /** The generation a resync loop is running for, if any. */
  #resyncing: number | undefined;
  #resyncAgain = false;
  #attached = false;
  #closed = false;

  constructor(options: PromptRegistryOptions) {
    this.#logger = options.logger;
    this.bucket = options.bucket ?? DEFAULT_PROMPT_BUCKET;
  }

  /** True once the bucket has been loaded (stays true while NATS is away; false after close). */
  get attached(): boolean {
    return this.#attached && !this.#closed;
  }

  /**
   * Opens (or creates) the bucket, loads every current entry, then keeps watching for puts and
   * deletes, across reconnects, until close. Rejects when NATS or the bucket cannot be reached;
   * never for a bad entry. Attaching again (e.g. with a new connection) replaces the old watch.
   */
  async attach(connection: NatsConnection): Promise<void> {
    if (this.#closed) throw new Error('PromptRegistry is closed');
    const generation = ++this.#generation;
    this.#stopWatch();
    this.#status?.stop?.();
    this.#status = undefined;
    const kv = await new Kvm(connection).create(this.bucket, {
      history: 5,
      description: 'Elexirion prompt versions per pipeline.step',
    });
    if (generation !== this.#generation) throw new Error('PromptRegistry attach was superseded by close() or another attach()');
    this.#kv = kv;
    this.#connection = connection;
    await this.#load(kv, generation);
    this.#attached = true;
    this.#followConnection(connection, generation);
    this.#logger.info({ bucket: this.bucket, entries: this.#entries.size }, 'prompt registry attached');
  }

  /**
   * The version to use for this run: undefined when there is no entry or no version with a
   * weight above 0. Without a session key a weighted random choice; with one a choice fixed by a
   * hash of (sessionKey, pipeline, step), stable while the entry's versions and weights are.
   */
  select(pipeline: string, step: string, sessionKey?: string): PromptVersion | undefined {
    const entry = this.#entries.get(keyOf(pipeline, step));
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

  /** Validates and stores an entry (updatedAt is set now). For the optimizer and tests. */
  async publish(entry: Omit<PromptEntry, 'updatedAt'>): Promise<void> {
    checkNames(entry?.pipeline, entry?.step);
    const checked = publishSchema.safeParse(entry);
    if (!checked.success) throw new InvalidPromptEntryError(problemsOf(checked.error));
    const kv = this.#requireKv();
    const stored: PromptEntry = { ...checked.data, updatedAt: new Date().toISOString() };
    const key = keyOf(stored.pipeline, stored.step);
    const revision = await kv.put(key, JSON.stringify(stored));
    // Read your own write; the watcher delivers the same revision again.
    this.#applyPut(key, stored, revision);
  }

  /** Deletes the entry for (pipeline, step); select then returns undefined for it. */
  async remove(pipeline: string, step: string): Promise<void> {
    checkNames(pipeline, step);
    const kv = this.#requireKv();
    const key = keyOf(pipeline, step);
    await kv.delete(key);
    // kv.delete does not return the marker's revision; the watcher confirms it.
    this.#entries.delete(key);
  }

  /** The current in-memory view (last known good entries). */
  entries(): PromptEntry[] {
    return [...this.#entries.values()];
  }

  /** Stops watching. The in-memory entries stay readable through select/entries. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#generation++;
    this.#stopWatch();
    this.#status?.stop?.();
    this.#status = undefined;
  }

  #requireKv(): KV {
    if (this.#closed) throw new Error('PromptRegistry is closed');
    if (!this.#kv) throw new Error('PromptRegistry is not attached to NATS');
    return this.#kv;
  }

  #stopWatch(): void {
    const watch = this.#watch;
    this.#watch = undefined;
    watch?.iterator.stop();
  }

  /**
   * Starts a watcher over the last value of every key and resolves once its snapshot has been
   * applied: the entry with no messages pending after it (delta 0) ends the snapshot. Keys that
   * were not in the snapshot are then dropped (they were deleted while nobody watched), at that
   * very moment, before the watcher applies any later update.
   */
  async #load(kv: KV, generation: number): Promise<void> {
    const empty = (await kv.status()).streamInfo.state.messages === 0;
    const iterator = await kv.watch({ include: KvWatchInclude.LastValue });
    if (generation !== this.#generation) {
      iterator.stop();
      throw new Error('PromptRegistry load was superseded by close() or another attach()');
    }
    this.#stopWatch();
    const watch: Watch = { iterator, seen: new Set() };
    this.#watch = watch;
    // The snapshot is the truth: forget revisions, they restart if a server lost its store.
    this.#revisions.clear();

    let snapshotDone = false;
    let loaded = false;
    let wake: (() => void) | undefined;
    const finishSnapshot = () => {
      if (snapshotDone) return;
      snapshotDone = true;
      this.#prune(watch.seen);
      wake?.();
    };
    if (empty) finishSnapshot();

    void (async () => {
      try {
        for await (const entry of iterator) {
          if (this.#watch !== watch) break;
          this.#apply(entry);
          if (!snapshotDone) {
            watch.seen.add(entry.key);
            if (entry.delta === 0) finishSnapshot();
          }
        }
      } catch (error) {
        this.#logger.warn({ err: error, bucket: this.bucket }, 'prompt registry watcher failed');
      } finally {
        wake?.();
        if (this.#watch === watch) {
          this.#watch = undefined;
          // Before the load finished, the load itself fails and its caller decides.
          if (loaded && generation === this.#generation) this.#resync(generation, 'watcher ended');
        }
      }
    })();

    const deadline = Date.now() + LOAD_TIMEOUT_MS;
    try {
      while (!snapshotDone) {
        if (this.#watch !== watch) throw new Error('prompt registry watcher ended before the bucket was loaded');
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`prompt registry did not load bucket ${this.bucket} within ${LOAD_TIMEOUT_MS} ms`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.min(left, LOAD_POLL_MS));
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wake = undefined;
        // Everything was purged after the watch started: no snapshot entry will come.
        if (!snapshotDone && (await kv.status()).streamInfo.state.messages === 0) finishSnapshot();
      }
      if (this.#watch !== watch) throw new Error('prompt registry watcher ended while the bucket was loading');
      loaded = true;
    } catch (error) {
      if (this.#watch === watch) this.#stopWatch();
      throw error;
    }
  }

  #prune(seen: Set<string>): void {
    for (const key of [...this.#entries.keys()]) {
      if (!seen.has(key)) {
        this.#entries.delete(key);
        this.#logger.info({ key, bucket: this.bucket }, 'prompt entry no longer in the registry');
      }
    }
  }

  /** Re-loads after a reconnect (the old watcher's consumer may be gone), retrying with backoff. */
  #followConnection(connection: NatsConnection, generation: number): void {
    // At run time a QueuedIterator: stop() unregisters it from the connection.
    const status: StatusStream = connection.status();
    this.#status = status;
    void (async () => {
      for await (const event of status) {
        if (generation !== this.#generation) break;
        if (event.type === 'disconnect') {
          this.#logger.warn({ bucket: this.bucket }, 'prompt registry lost NATS; serving last known good prompts');
        } else if (event.type === 'reconnect') {
          this.#resync(generation, 'reconnected');
        }
      }
    })();
  }

  #resync(generation: number, reason: string): void {
    if (this.#resyncing === generation) {
      this.#resyncAgain = true;
      return;
    }
    this.#resyncing = generation;
    void (async () => {
      let attempt = 0;
      try {
        for (;;) {
          this.#resyncAgain = false;
          const connection = this.#connection;
          const kv = this.#kv;
          if (generation !== this.#generation || !connection || !kv) return;
          if (connection.isClosed()) {
            this.#logger.warn({ bucket: this.bucket }, 'prompt registry connection closed; serving last known good prompts until attached again');
            return;
          }
          try {
            await this.#load(kv, generation);
            this.#logger.info({ bucket: this.bucket, reason, entries: this.#entries.size }, 'prompt registry reloaded');
            attempt = 0;
            if (!this.#resyncAgain) return;
          } catch (error) {
            attempt++;
            const wait = Math.min(RESYNC_MAX_BACKOFF_MS, RESYNC_MIN_BACKOFF_MS * 2 ** Math.min(attempt, 10));
            this.#logger.debug({ err: error, bucket: this.bucket, attempt, retryInMs: wait }, 'prompt registry reload failed; retrying');
            await sleep(wait);
          }
        }
      } finally {
        if (this.#resyncing === generation) this.#resyncing = undefined;
      }
    })();
  }

  #apply(entry: KvWatchEntry | KvEntry): void {
    const key = entry.key;
    if (entry.operation !== 'PUT') {
      if (!this.#newer(key, entry.revision)) return;
      this.#revisions.set(key, entry.revision);
      if (this.#entries.delete(key)) this.#logger.info({ key, bucket: this.bucket }, 'prompt entry removed');
      return;
    }
    let parsed: unknown;
    try {
      parsed = entry.json<unknown>();
    } catch (error) {
      this.#reject(key, entry.revision, [`not JSON (${error instanceof Error ? error.message : String(error)})`]);
      return;
    }
    const checked = storedSchema.safeParse(parsed);
    if (!checked.success) {
      this.#reject(key, entry.revision, problemsOf(checked.error));
      return;
    }
    if (keyOf(checked.data.pipeline, checked.data.step) !== key) {
      this.#reject(key, entry.revision, [`entry is for ${keyOf(checked.data.pipeline, checked.data.step)}`]);
      return;
    }
    this.#applyPut(key, checked.data, entry.revision);
  }

  #newer(key: string, revision: number): boolean {
    return revision >= (this.#revisions.get(key) ?? 0);
  }

  #applyPut(key: string, entry: PromptEntry, revision: number): void {
    if (!this.#newer(key, revision)) return;
    this.#revisions.set(key, revision);
    const previous = this.#entries.get(key);
    this.#entries.set(key, deepFreeze(entry));
    if (previous?.updatedAt !== entry.updatedAt) {
      this.#logger.info({ key, bucket: this.bucket, revision, versions: entry.versions.map((version) => version.id) }, 'prompt entry updated');
    }
  }

  #reject(key: string, revision: number, problems: string[]): void {
    if (this.#newer(key, revision)) this.#revisions.set(key, revision);
    this.#logger.warn(
      { key, bucket: this.bucket, revision, problems, keeping: this.#entries.has(key) ? 'previous good value' : 'nothing' },
      'ignoring invalid prompt entry',
    );
  }
}
