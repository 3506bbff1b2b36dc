/**
 * A watched, in-memory view of a KV bucket: every valid value, answered synchronously from
 * memory so a request path never waits on NATS.
 *
 * `attach` loads the bucket with a watcher over the last value of every key, then the same
 * watcher applies puts and deletes as they happen. After the connection reconnects, or when the
 * watcher ends, the view loads the bucket again with a fresh watcher (the old one may point at a
 * consumer the server no longer has), with backoff, and meanwhile keeps serving the last known
 * good values. An invalid entry is logged once and ignored: the last good value for its key
 * stays. Revisions are kept per key, so an older write never replaces a newer one.
 */
import type { KvWatchEntry } from '@nats-io/kv';
import type { NatsConnection, Status as NatsStatus } from '@nats-io/transport-node';
import { retry, type RetryPolicy } from '../reliability/retry.js';
import { ElexirionError, Status } from '../rpc/errors.js';
import { KvCorruptEntryError } from './kv-errors.js';
import { KvStore, type KvBucketSpec } from './kv-store.js';

/** Pino's logger fits; so does anything with these three methods. */
export interface KvViewLogger {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  debug(fields: object, message: string): void;
}

/** A key's value changed in the view. */
export interface KvViewChange<T> {
  key: string;
  /** The new value; undefined when the key is gone (deleted, expired, or missing when the bucket was loaded again). */
  value: T | undefined;
  previous: T | undefined;
  /** The revision that made the change; undefined when the key was missing from a fresh load. */
  revision: number | undefined;
}

export interface KvViewOptions<T> extends KvBucketSpec<T> {
  logger: KvViewLogger;
  /** What the entries are, in log lines: "prompt" logs "ignoring invalid prompt entry". The bucket name by default. */
  label?: string;
  /** Told of every change, after it is applied (on the watcher's turn: keep it quick; it must not throw). */
  onChange?: (change: KvViewChange<T>) => void;
}

/** Loading the bucket again after a reconnect or a lost watcher. */
const RELOAD_RETRY: RetryPolicy = { maxAttempts: Infinity, baseMs: 250, maxMs: 5_000 };
/** How often a load waiting for its snapshot checks that the bucket did not empty meanwhile. */
const LOAD_POLL_MS = 1_000;
/** One load gives up after this long (attach rejects; a reload retries). */
const LOAD_TIMEOUT_MS = 30_000;

/** `NatsConnection.status()` is typed as an AsyncIterable; the object it returns can stop. */
type StatusStream = AsyncIterable<NatsStatus> & { stop?: () => void };

interface Watch {
  stop(): void;
  /** Keys whose last entry arrived during this watch's snapshot. */
  seen: Set<string>;
}

interface Held<T> {
  value: T;
  revision: number;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

export class KvView<T> {
  readonly bucket: string;
  readonly #spec: KvBucketSpec<T>;
  readonly #logger: KvViewLogger;
  readonly #label: string;
  readonly #onChange: ((change: KvViewChange<T>) => void) | undefined;
  /** Last known good value per key; frozen, so a reader cannot change what others read. */
  readonly #held = new Map<string, Held<T>>();
  /** Highest revision applied per key (puts, deletes and invalid puts), against stale writes. */
  readonly #revisions = new Map<string, number>();
  /** The revision of each key's invalid entry already logged, so a reload does not log it again. */
  readonly #loggedInvalid = new Map<string, number>();
  #store: KvStore<T> | undefined;
  #connection: NatsConnection | undefined;
  #watch: Watch | undefined;
  #status: StatusStream | undefined;
  /** One per attach; the next attach or close aborts it, which stops that attach's loops. */
  #session: AbortController | undefined;
  /** The session a reload loop runs for, if any, and whether another reload was asked for meanwhile. */
  #reloading: AbortSignal | undefined;
  #reloadAgain = false;
  #attached = false;
  #closed = false;

  constructor(options: KvViewOptions<T>) {
    const { logger, label, onChange, ...spec } = options;
    this.bucket = spec.bucket;
    this.#spec = spec;
    this.#logger = logger;
    this.#label = label ?? spec.bucket;
    this.#onChange = onChange;
  }

  /** True once the bucket has been loaded; stays true while NATS is away, false after close. */
  get attached(): boolean {
    return this.#attached && !this.#closed;
  }

  /**
   * Opens (or creates) the bucket, loads every current value, then follows changes across
   * reconnects until close. Rejects when NATS or the bucket cannot be reached, never for an
   * invalid entry. Attaching again (to a new connection) replaces the old watch.
   */
  async attach(connection: NatsConnection): Promise<void> {
    if (this.#closed) throw this.#closedError();
    this.#session?.abort();
    const session = new AbortController();
    this.#session = session;
    this.#stopWatch();
    this.#stopStatus();
    const store = await KvStore.open(connection, this.#spec);
    if (session.signal.aborted) throw this.#supersededError();
    this.#store = store;
    this.#connection = connection;
    await this.#load(store, session.signal);
    this.#attached = true;
    this.#follow(connection, session.signal);
    this.#logger.info({ bucket: this.bucket, entries: this.#held.size }, `${this.#label} view attached`);
  }

  /** The key's last known good value. */
  get(key: string): T | undefined {
    return this.#held.get(key)?.value;
  }

  /** The revision of the key's value held here (for a compare-and-set through a KvStore). */
  revision(key: string): number | undefined {
    return this.#held.get(key)?.revision;
  }

  /** Every key and its last known good value, as of now. */
  entries(): [key: string, value: T][] {
    return Array.from(this.#held, ([key, held]) => [key, held.value]);
  }

  get size(): number {
    return this.#held.size;
  }

  /** Writes through the view's store and shows the value at once (read your own writes); returns its revision. */
  async put(key: string, value: T): Promise<number> {
    const store = this.#requireStore();
    const revision = await store.put(key, value);
    this.#set(key, store.check(key, value), revision);
    return revision;
  }

  /** Deletes through the view's store and drops the key at once. */
  async delete(key: string): Promise<void> {
    const store = this.#requireStore();
    await store.delete(key);
    // The delete marker's revision is not returned: the echo of any older put is still refused,
    // since the key's revision stays where it was, and the watcher brings the marker.
    const held = this.#held.get(key);
    if (held) {
      this.#held.delete(key);
      this.#notify({ key, value: undefined, previous: held.value, revision: undefined });
    }
  }

  /**
   * Shows a write this process made through a KvStore of the same bucket (after a
   * compare-and-set, say) at once; ignored when the view already holds a newer revision.
   */
  applyWrite(key: string, value: T, revision: number): void {
    this.#set(key, this.#requireStore().check(key, value), revision);
  }

  /** Stops watching. The values stay readable. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#session?.abort();
    this.#stopWatch();
    this.#stopStatus();
  }

  #requireStore(): KvStore<T> {
    if (this.#closed) throw this.#closedError();
    if (!this.#store) throw new ElexirionError(Status.UNAVAILABLE, `the view of bucket ${this.bucket} is not attached to NATS`);
    return this.#store;
  }

  #closedError(): Error {
    return new ElexirionError(Status.FAILED_PRECONDITION, `the view of bucket ${this.bucket} is closed`);
  }

  #supersededError(): Error {
    return new ElexirionError(Status.ABORTED, `loading bucket ${this.bucket} was superseded by close() or another attach()`);
  }

  #stopWatch(): void {
    const watch = this.#watch;
    this.#watch = undefined;
    watch?.stop();
  }

  #stopStatus(): void {
    this.#status?.stop?.();
    this.#status = undefined;
  }

  /**
   * Starts a watcher over the last value of every key and resolves once its snapshot is
   * applied: the entry with nothing pending after it (delta 0) ends the snapshot, and an empty
   * bucket has none. Keys missing from the snapshot (deleted while nobody watched) are dropped
   * then, before the watcher applies any later change.
   */
  async #load(store: KvStore<T>, session: AbortSignal): Promise<void> {
    const empty = await store.isEmpty();
    const iterator = await store.watch();
    if (session.aborted) {
      iterator.stop();
      throw this.#supersededError();
    }
    this.#stopWatch();
    const watch: Watch = { stop: () => iterator.stop(), seen: new Set() };
    this.#watch = watch;
    // The snapshot is the truth: revisions restart if a server lost its store.
    this.#revisions.clear();

    let snapshotDone = false;
    let loaded = false;
    let wake: (() => void) | undefined;
    const finishSnapshot = () => {
      if (snapshotDone) return;
      snapshotDone = true;
      this.#dropMissing(watch.seen);
      wake?.();
    };
    if (empty) finishSnapshot();

    void (async () => {
      try {
        for await (const entry of iterator) {
          if (this.#watch !== watch) break;
          this.#apply(store, entry);
          if (!snapshotDone) {
            watch.seen.add(entry.key);
            if (entry.delta === 0) finishSnapshot();
          }
        }
      } catch (error) {
        this.#logger.warn({ err: error, bucket: this.bucket }, `${this.#label} view watcher failed`);
      } finally {
        wake?.();
        if (this.#watch === watch) {
          this.#watch = undefined;
          // Before the load finished, the load itself fails and its caller decides.
          if (loaded && !session.aborted) this.#reload(session, 'watcher ended');
        }
      }
    })();

    const deadline = Date.now() + LOAD_TIMEOUT_MS;
    try {
      while (!snapshotDone) {
        if (session.aborted) throw this.#supersededError();
        if (this.#watch !== watch) throw new Error(`the watcher of bucket ${this.bucket} ended before the bucket was loaded`);
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`bucket ${this.bucket} did not load within ${LOAD_TIMEOUT_MS} ms`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.min(left, LOAD_POLL_MS));
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wake = undefined;
        // Everything was purged or expired after the watch started: no snapshot entry will come.
        if (!snapshotDone && (await store.isEmpty())) finishSnapshot();
      }
      if (this.#watch !== watch) throw new Error(`the watcher of bucket ${this.bucket} ended while the bucket was loading`);
      loaded = true;
    } catch (error) {
      if (this.#watch === watch) this.#stopWatch();
      throw error;
    }
  }

  /** Loads the bucket again after a reconnect or a lost watcher, until it works, the connection closes or the session ends. */
  #reload(session: AbortSignal, reason: string): void {
    if (this.#reloading === session) {
      this.#reloadAgain = true;
      return;
    }
    this.#reloading = session;
    void (async () => {
      try {
        do {
          this.#reloadAgain = false;
          await retry(
            async () => {
              const connection = this.#connection;
              const store = this.#store;
              if (!connection || !store || connection.isClosed()) throw new Error('the connection is closed');
              await this.#load(store, session);
            },
            {
              ...RELOAD_RETRY,
              signal: session,
              unref: true,
              retryable: () => !this.#connection?.isClosed(),
              onRetry: ({ attempt, delayMs, error }) =>
                this.#logger.debug({ err: error, bucket: this.bucket, attempt, retryInMs: delayMs }, `${this.#label} view reload failed; retrying`),
            },
          );
          this.#logger.info({ bucket: this.bucket, reason, entries: this.#held.size }, `${this.#label} view reloaded`);
        } while (this.#reloadAgain && !session.aborted);
      } catch (error) {
        if (session.aborted) return;
        this.#logger.warn(
          { err: error, bucket: this.bucket },
          `${this.#label} view stopped reloading (the connection closed); serving last known good values until attached again`,
        );
      } finally {
        if (this.#reloading === session) this.#reloading = undefined;
      }
    })();
  }

  #follow(connection: NatsConnection, session: AbortSignal): void {
    const status: StatusStream = connection.status();
    this.#status = status;
    void (async () => {
      for await (const event of status) {
        if (session.aborted) break;
        if (event.type === 'disconnect') {
          this.#logger.warn({ bucket: this.bucket }, `${this.#label} view lost NATS; serving last known good values`);
        } else if (event.type === 'reconnect') {
          this.#reload(session, 'reconnected');
        }
      }
    })();
  }

  #apply(store: KvStore<T>, entry: KvWatchEntry): void {
    const { key, revision } = entry;
    if (entry.operation !== 'PUT') {
      if (!this.#newer(key, revision)) return;
      this.#revisions.set(key, revision);
      const held = this.#held.get(key);
      if (held) {
        this.#held.delete(key);
        this.#notify({ key, value: undefined, previous: held.value, revision });
      }
      return;
    }
    let value: T;
    try {
      value = store.decode(entry);
    } catch (error) {
      this.#reject(key, revision, error instanceof KvCorruptEntryError ? error.problems : [String(error)]);
      return;
    }
    this.#set(key, value, revision);
  }

  #newer(key: string, revision: number): boolean {
    return revision > (this.#revisions.get(key) ?? 0);
  }

  #set(key: string, value: T, revision: number): void {
    if (!this.#newer(key, revision)) return;
    this.#revisions.set(key, revision);
    const previous = this.#held.get(key);
    this.#held.set(key, { value: deepFreeze(value), revision });
    // A reload brings back the revisions already held: not a change.
    if (previous?.revision !== revision) this.#notify({ key, value, previous: previous?.value, revision });
  }

  #reject(key: string, revision: number, problems: readonly string[]): void {
    if (this.#newer(key, revision)) this.#revisions.set(key, revision);
    if (this.#loggedInvalid.get(key) === revision) return;
    this.#loggedInvalid.set(key, revision);
    this.#logger.warn(
      { key, bucket: this.bucket, revision, problems, keeping: this.#held.has(key) ? 'previous good value' : 'nothing' },
      `ignoring invalid ${this.#label} entry`,
    );
  }

  #dropMissing(seen: Set<string>): void {
    for (const [key, held] of [...this.#held]) {
      if (seen.has(key)) continue;
      this.#held.delete(key);
      this.#notify({ key, value: undefined, previous: held.value, revision: undefined });
    }
  }

  #notify(change: KvViewChange<T>): void {
    if (!this.#onChange) return;
    try {
      this.#onChange(change);
    } catch (error) {
      this.#logger.warn({ err: error, bucket: this.bucket, key: change.key }, `${this.#label} view change listener failed`);
    }
  }
}
