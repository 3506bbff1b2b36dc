import { randomBytes } from 'node:crypto';
import { ElexirionError, KvRevisionConflictError, KvStore, KvView, ServerError, Status, type KvViewLogger } from '@elexirion/kit';
import type { Metadata } from 'nice-grpc-common';
import { z } from 'zod';
import type { NatsConnection, StoredKey, StoredLimits } from './key-registry.js';
import { FirstAttach } from './first-attach.js';

// Limits per key that hold across gateway replicas, in one JetStream KV bucket every replica
// watches, so the checks before a call read memory:
//
// Requests per minute: the entry `<key id>` counts the requests replicas reserved this minute. A
// replica reserves a block (one compare-and-set on that entry) and admits from it locally; the
// counter never passes the limit, so the replicas together never admit more than the limit. What
// they may admit less: requests reserved by one replica and not used this minute, at most one
// block per replica (BLOCK_SHARE of the limit, at least 1, at most MAX_BLOCK).
//
// Tokens per minute and USD per day and month are known after a call. Each replica writes its own
// totals for the current windows to its own entry `<key id>.<replica id>` (one writer per entry:
// a plain put, never a conflict), one put in flight per key and at most one per FLUSH_INTERVAL_MS,
// so calls finishing meanwhile go in the next. A key's use is the sum of its replicas' entries
// and its shared entry (where a replica that stops folds its totals). A call is refused once the
// window's use has reached the limit; what can pass a limit is what calls already admitted spend
// (those in flight on every replica when it was reached) and what the other replicas have not
// written yet (at most FLUSH_INTERVAL_MS of their calls plus one put's round trip).

export const USAGE_BUCKET = 'elexirion_gateway_key_usage';
const BLOCK_SHARE = 0.01;
const MAX_BLOCK = 1_000;
const MAX_CAS_ATTEMPTS = 30;
/** After a lost compare-and-set, a random pause up to this (doubling per attempt, capped): a replica that must read again before writing would otherwise keep losing to one that writes straight away. */
const CAS_BACKOFF_MS = { base: 1, max: 25 };
/** Least time between two writes of one replica's usage of one key. */
const FLUSH_INTERVAL_MS = 20;
// An idle key's entry goes after a month and a few days (its month is over by then).
const USAGE_TTL_MS = 35 * 24 * 3600_000;

const usageSchema = z.object({
  /** The UTC minute (ms since the epoch / 60000) the minute counters are for. */
  minute: z.number().int(),
  /** Requests admitted or reserved by replicas this minute. */
  requests: z.number().int().min(0),
  tokens: z.number().int().min(0),
  /** UTC day (YYYY-MM-DD) and month (YYYY-MM) the spend is for. */
  day: z.string(),
  spentDay: z.number().min(0),
  month: z.string(),
  spentMonth: z.number().min(0),
});
export type KeyUsageRecord = z.infer<typeof usageSchema>;

/** `<key id>` (the requests reserved) or `<key id>.<replica id>` (a replica's tokens and spend). */
const USAGE_KEY = /^([0-9a-f]{16})(?:\.([0-9a-f]{16}))?$/;

const usageBucket = {
  bucket: USAGE_BUCKET,
  schema: usageSchema,
  key: { pattern: USAGE_KEY, description: 'a key id (16 hexadecimal characters), or a key id, a dot and a replica id', name: 'usage key' },
  ttlMs: USAGE_TTL_MS,
  description: 'Elexirion gateway API key usage in the current minute, day and month',
};

/** The request block a replica reserves at once under a requests-per-minute limit. */
export function requestBlock(requestsPerMinute: number): number {
  return Math.max(1, Math.min(MAX_BLOCK, Math.floor(requestsPerMinute * BLOCK_SHARE)));
}

interface Windows {
  minute: number;
  day: string;
  month: string;
  /** Seconds until each window ends (at least 1). */
  minuteLeft: number;
  dayLeft: number;
  monthLeft: number;
}

let lastWindows: { second: number; windows: Windows } | undefined;

/** The windows at `now`; the same object all through one second (every call asks, and dates are not free). */
function windowsAt(now: number): Windows {
  const second = Math.floor(now / 1000);
  if (lastWindows?.second !== second) lastWindows = { second, windows: computeWindows(second * 1000) };
  return lastWindows.windows;
}

function computeWindows(now: number): Windows {
  const date = new Date(now);
  const iso = date.toISOString();
  const nextDay = Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate() + 1);
  const nextMonth = Date.UTC(date.getUTCFullYear(), date.getUTCMonth() + 1, 1);
  const minute = Math.floor(now / 60_000);
  const secondsTo = (at: number) => Math.max(1, Math.ceil((at - now) / 1000));
  return {
    minute,
    day: iso.slice(0, 10),
    month: iso.slice(0, 7),
    minuteLeft: secondsTo((minute + 1) * 60_000),
    dayLeft: secondsTo(nextDay),
    monthLeft: secondsTo(nextMonth),
  };
}

/** The record as of `windows`: counters of windows that ended start again at zero. */
function current(record: KeyUsageRecord | undefined, windows: Windows): KeyUsageRecord {
  const sameMinute = record?.minute === windows.minute;
  const sameDay = record?.day === windows.day;
  const sameMonth = record?.month === windows.month;
  return {
    minute: windows.minute,
    requests: sameMinute ? record!.requests : 0,
    tokens: sameMinute ? record!.tokens : 0,
    day: windows.day,
    spentDay: sameDay ? record!.spentDay : 0,
    month: windows.month,
    spentMonth: sameMonth ? record!.spentMonth : 0,
  };
}

/** What a replica holds for one key: its unspent reservation, and its own use (its entry's value). */
class LocalKey {
  minute = 0;
  granted = 0;
  admitted = 0;
  reserving: Promise<number> | undefined;
  /** This replica's use in the current windows; what its entry holds once written. */
  own: KeyUsageRecord | undefined;
  /** `own` changed since the last put. */
  dirty = false;
  flushing: Promise<void> | undefined;
  lastPutAt = -Infinity;
}

export interface CallUsage {
  tokens: number;
  costUsd: number;
}

export class KeyLimits {
  /** This process's replica id: the name of its usage entries. */
  readonly replicaId = randomBytes(8).toString('hex');
  readonly #view: KvView<KeyUsageRecord>;
  readonly #logger: KvViewLogger;
  readonly #local = new Map<string, LocalKey>();
  /** Every replica's usage entry by key id (kept from the view's changes), so a check sums a few, not the bucket. */
  readonly #replicaEntries = new Map<string, Map<string, KeyUsageRecord>>();
  #store: KvStore<KeyUsageRecord> | undefined;
  readonly #firstAttach = new FirstAttach();
  #closing = false;

  constructor(options: { logger: KvViewLogger }) {
    this.#logger = options.logger;
    this.#view = new KvView<KeyUsageRecord>({
      ...usageBucket,
      logger: options.logger,
      label: 'API key usage',
      onChange: ({ key, value }) => {
        const [, keyId, replica] = USAGE_KEY.exec(key) ?? [];
        if (!keyId || !replica) return;
        let entries = this.#replicaEntries.get(keyId);
        if (value) {
          if (!entries) this.#replicaEntries.set(keyId, (entries = new Map()));
          entries.set(replica, value);
        } else {
          entries?.delete(replica);
        }
      },
    });
  }

  async attach(connection: NatsConnection): Promise<void> {
    this.#store = await KvStore.open(connection, usageBucket);
    await this.#view.attach(connection);
    this.#firstAttach.done();
  }

  /** Writes what is pending, folds this replica's entries into the keys' shared ones, stops watching. */
  async close(): Promise<void> {
    this.#closing = true;
    await Promise.allSettled([...this.#local.values()].map((local) => local.flushing));
    await this.#foldOwnEntries();
    await this.#view.close();
  }

  /**
   * A replica that stops adds its use to each key's shared entry and deletes its own entries, so
   * entries do not pile up with every rollout (a replica that crashed leaves its entries until
   * the bucket's max age). Added before deleted: for a moment the use counts twice, never not.
   */
  async #foldOwnEntries(): Promise<void> {
    const store = this.#store;
    if (!store || !this.#view.attached) return;
    const windows = windowsAt(Date.now());
    for (const [keyId, local] of this.#local) {
      if (!local.own) continue;
      const own = current(local.own, windows);
      try {
        if (own.tokens > 0 || own.spentMonth > 0) {
          await this.#change(keyId, windows, (record) => ({
            ...record,
            tokens: record.tokens + own.tokens,
            spentDay: record.spentDay + own.spentDay,
            spentMonth: record.spentMonth + own.spentMonth,
          }));
        }
        await store.delete(`${keyId}.${this.replicaId}`);
      } catch (error) {
        this.#logger.warn({ err: error, keyId }, 'could not fold this replica\'s API key usage into the shared entry; it stays in its own');
      }
    }
  }

  static limited(limits: StoredLimits): boolean {
    return limits.requestsPerMinute > 0 || limits.tokensPerMinute > 0 || limits.dailyBudgetUsd > 0 || limits.monthlyBudgetUsd > 0;
  }

  /** The key's use in the current windows: the requests reserved, and every replica's tokens and spend (this one's as it is now). */
  usage(keyId: string, now = Date.now()): KeyUsageRecord {
    const windows = windowsAt(now);
    // The shared entry: the requests reserved, and the use of replicas that have stopped.
    const total = current(this.#view.get(keyId), windows);
    for (const [replica, entry] of this.#replicaEntries.get(keyId) ?? []) {
      if (replica !== this.replicaId) add(total, current(entry, windows));
    }
    const own = this.#local.get(keyId)?.own;
    if (own) add(total, current(own, windows));
    return total;
  }

  /**
   * Admits one call of `key` or throws RESOURCE_EXHAUSTED; either way the call's trailer gets
   * the key's rate-limit state (`x-ratelimit-*`, and `retry-after` when refused).
   */
  async admit(key: StoredKey, trailer: Metadata, now = Date.now()): Promise<void> {
    const { limits } = key;
    const windows = windowsAt(now);
    const local = this.#localOf(key.keyId, windows.minute);
    const used = this.usage(key.keyId, now);
    const refuse = (what: string, retryAfter: number): never => {
      this.#setHeaders(key, local, windows, used, trailer);
      trailer.set('retry-after', String(retryAfter));
      throw new ServerError(Status.RESOURCE_EXHAUSTED, `API key "${key.name}" ${what}; retry after ${retryAfter} s`);
    };
    if (limits.monthlyBudgetUsd > 0 && used.spentMonth >= limits.monthlyBudgetUsd) refuse(`has spent its monthly budget of $${limits.monthlyBudgetUsd}`, windows.monthLeft);
    if (limits.dailyBudgetUsd > 0 && used.spentDay >= limits.dailyBudgetUsd) refuse(`has spent its daily budget of $${limits.dailyBudgetUsd}`, windows.dayLeft);
    if (limits.tokensPerMinute > 0 && used.tokens >= limits.tokensPerMinute) refuse(`has used its ${limits.tokensPerMinute} tokens per minute`, windows.minuteLeft);
    if (limits.requestsPerMinute > 0) {
      while (local.admitted >= local.granted) {
        // One reservation in flight per key per replica; concurrent calls wait for it.
        local.reserving ??= this.#reserve(key.keyId, limits.requestsPerMinute, windows).finally(() => (local.reserving = undefined));
        const granted = await local.reserving;
        if (local.minute !== windows.minute) break; // a new minute began meanwhile: this call counts there
        if (granted === 0 && local.admitted >= local.granted) refuse(`has made its ${limits.requestsPerMinute} requests per minute`, windows.minuteLeft);
      }
      local.admitted += 1;
    }
    this.#setHeaders(key, local, windows, used, trailer);
  }

  /** Adds a finished call's tokens and cost to this replica's use of the key, written to its entry (batched with others finishing meanwhile). */
  record(keyId: string, usage: CallUsage): void {
    const tokens = Math.max(0, Math.trunc(usage.tokens) || 0);
    const usd = Math.max(0, usage.costUsd || 0);
    if (tokens === 0 && usd === 0) return;
    const windows = windowsAt(Date.now());
    const local = this.#localOf(keyId, windows.minute);
    const own = current(local.own, windows);
    own.tokens += tokens;
    own.spentDay += usd;
    own.spentMonth += usd;
    local.own = own;
    local.dirty = true;
    local.flushing ??= this.#flush(keyId, local).finally(() => (local.flushing = undefined));
  }

  #localOf(keyId: string, minute: number): LocalKey {
    let local = this.#local.get(keyId);
    if (!local) {
      local = new LocalKey();
      this.#local.set(keyId, local);
    }
    if (local.minute !== minute) {
      // What was reserved last minute and not used is gone with it.
      local.minute = minute;
      local.granted = 0;
      local.admitted = 0;
    }
    return local;
  }

  /** Reserves up to a block of requests from the shared counter; 0 when the minute's limit is reached. */
  async #reserve(keyId: string, limit: number, windows: Windows): Promise<number> {
    const block = requestBlock(limit);
    let granted = 0;
    await this.#change(keyId, windows, (record) => {
      granted = Math.max(0, Math.min(block, limit - record.requests));
      return granted > 0 ? { ...record, requests: record.requests + granted } : undefined;
    });
    const local = this.#local.get(keyId);
    if (local && local.minute === windows.minute) local.granted += granted;
    return granted;
  }

  /**
   * Puts this replica's use of the key to its own entry until it is written as it stands, at most
   * once per FLUSH_INTERVAL_MS: a busy key costs each replica at most 1000 / FLUSH_INTERVAL_MS
   * writes a second, however many calls it makes.
   */
  async #flush(keyId: string, local: LocalKey): Promise<void> {
    const store = this.#store;
    const entry = `${keyId}.${this.replicaId}`;
    while (local.dirty && local.own) {
      const wait = local.lastPutAt + FLUSH_INTERVAL_MS - performance.now();
      if (wait > 0 && !this.#closing) await new Promise((resolve) => setTimeout(resolve, wait));
      local.dirty = false;
      local.lastPutAt = performance.now();
      const value = local.own;
      try {
        if (!store) throw new Error('not attached to NATS');
        const revision = await store.put(entry, value);
        this.#view.applyWrite(entry, value, revision);
      } catch (error) {
        // Still counted by this replica's checks; written with the next call's usage.
        local.dirty = true;
        this.#logger.warn({ err: error, keyId }, 'could not write API key usage to the shared bucket; will retry with the next usage');
        return;
      }
    }
  }

  /**
   * One compare-and-set on the key's entry: `change` gets the entry as of `windows` and answers
   * the new value (undefined: nothing to write). Starts from the watched view's copy and reads
   * the entry only after a conflict.
   */
  async #change(keyId: string, windows: Windows, change: (record: KeyUsageRecord) => KeyUsageRecord | undefined): Promise<void> {
    await this.#firstAttach.wait();
    const store = this.#store;
    if (!store || !this.#view.attached) throw new ElexirionError(Status.UNAVAILABLE, 'API key limits cannot be checked now: the usage store (NATS) is not reachable');
    let value = this.#view.get(keyId);
    let revision = this.#view.revision(keyId);
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt += 1) {
      const next = change(current(value, windows));
      if (!next) return;
      try {
        const written = revision === undefined ? await store.create(keyId, next) : await store.update(keyId, next, revision);
        this.#view.applyWrite(keyId, next, written);
        return;
      } catch (error) {
        if (!(error instanceof KvRevisionConflictError)) throw error;
        await new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(CAS_BACKOFF_MS.max, CAS_BACKOFF_MS.base * 2 ** attempt)));
        const fresh = await store.get(keyId);
        value = fresh?.value;
        revision = fresh?.revision;
      }
    }
    throw new ElexirionError(Status.ABORTED, `API key ${keyId}: its usage kept changing under ${MAX_CAS_ATTEMPTS} attempts to update it; try again`);
  }

  /** `shared`: the key's use as admit read it (its tokens; the requests reserved are read again). */
  #setHeaders(key: StoredKey, local: LocalKey, windows: Windows, shared: KeyUsageRecord, trailer: Metadata): void {
    const { limits } = key;
    if (limits.requestsPerMinute > 0) {
      // Not reserved by any replica yet (read again: this call may have reserved a block), plus
      // this replica's reservation not used yet.
      const reserved = current(this.#view.get(key.keyId), windows).requests;
      const remaining = Math.max(0, limits.requestsPerMinute - reserved) + Math.max(0, local.granted - local.admitted);
      trailer.set('x-ratelimit-limit-requests', String(limits.requestsPerMinute));
      trailer.set('x-ratelimit-remaining-requests', String(remaining));
      trailer.set('x-ratelimit-reset-requests', `${windows.minuteLeft}s`);
    }
    if (limits.tokensPerMinute > 0) {
      trailer.set('x-ratelimit-limit-tokens', String(limits.tokensPerMinute));
      trailer.set('x-ratelimit-remaining-tokens', String(Math.max(0, limits.tokensPerMinute - shared.tokens)));
      trailer.set('x-ratelimit-reset-tokens', `${windows.minuteLeft}s`);
    }
  }
}

function add(total: KeyUsageRecord, entry: KeyUsageRecord): void {
  total.tokens += entry.tokens;
  total.spentDay += entry.spentDay;
  total.spentMonth += entry.spentMonth;
}
