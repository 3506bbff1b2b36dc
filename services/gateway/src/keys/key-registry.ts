import { ElexirionError, KvRevisionConflictError, KvStore, KvView, Status, type KvViewLogger, proto } from '@elexirion/kit';
import { z } from 'zod';
import type { Caller } from '../caller.js';
import { KEY_ID_PATTERN, bearerSecret, keyIdOf, newSecret, secretMatches, sha256Hex } from './api-key-secret.js';
import { FirstAttach } from './first-attach.js';

/** The process's NATS connection, as the kit's KV types take it. */
export type NatsConnection = Parameters<KvView<unknown>['attach']>[0];

export const KEYS_BUCKET = 'elexirion_gateway_keys';

/** The scopes a key may hold (each Gateway call names the one it needs; admin may call anything). */
export const KEY_SCOPES = ['chat', 'jobs', 'pipelines', 'models', 'telemetry', 'prompts:write', 'admin'] as const;

/** The name of the key GATEWAY_ADMIN_KEY stands for. */
export const BOOTSTRAP_KEY_NAME = 'bootstrap';

const limitsSchema = z.object({
  requestsPerMinute: z.number().int().min(0),
  tokensPerMinute: z.number().int().min(0),
  dailyBudgetUsd: z.number().min(0),
  monthlyBudgetUsd: z.number().min(0),
});
export type StoredLimits = z.infer<typeof limitsSchema>;

/** A key as stored: its secret only as a SHA-256. */
const storedKeySchema = z.object({
  keyId: z.string().regex(KEY_ID_PATTERN),
  name: z.string().min(1).max(64),
  secretSha256: z.string().regex(/^[0-9a-f]{64}$/),
  scopes: z.array(z.enum(KEY_SCOPES)),
  createdAt: z.string(),
  expiresAt: z.string().optional(),
  revokedAt: z.string().optional(),
  createdBy: z.string(),
  limits: limitsSchema,
});
export type StoredKey = z.infer<typeof storedKeySchema>;

const keysBucket = {
  bucket: KEYS_BUCKET,
  schema: storedKeySchema,
  key: { pattern: KEY_ID_PATTERN, description: '16 hexadecimal characters', name: 'key id' },
  check: (key: string, value: StoredKey) => (value.keyId === key ? undefined : `keyId ${value.keyId} is not its key ${key}`),
  description: 'Elexirion gateway API keys (secrets stored as SHA-256)',
};

/** A request's key, accepted: who calls, and the stored key behind it (none for the bootstrap key). */
export interface Authenticated {
  caller: Caller;
  key: StoredKey | undefined;
}

/** Where a revoking replica asks every replica to confirm its view holds the revoke. */
const SYNC_SUBJECT = 'elexirion.gateway.keys.sync';
/** The longest a revoke waits for the replicas' answers, and the quiet after the last that ends the wait. */
const SYNC_WAIT_MS = 2_000;
const SYNC_STALL_MS = 100;

const MISSING_TTL_MS = 10_000;
const MISSING_MAX = 10_000;

const NO_LIMITS: StoredLimits = { requestsPerMinute: 0, tokensPerMinute: 0, dailyBudgetUsd: 0, monthlyBudgetUsd: 0 };

/**
 * The gateway's API keys: a watched view of the keys bucket on every replica (a key created or
 * revoked anywhere is seen everywhere as soon as NATS delivers the change), answered from memory
 * on the request path. A key id the view does not hold yet is read from the bucket once, so a key
 * created on another replica a moment ago works at once.
 */
export class KeyRegistry {
  readonly #view: KvView<StoredKey>;
  readonly #bootstrapSha256: string | undefined;
  #store: KvStore<StoredKey> | undefined;
  /** Key ids read and not found lately, so a stream of made-up ids does not become a stream of reads. */
  readonly #missing = new Map<string, number>();
  /** Calls waiting for a key's write to reach this replica's view (see revoke). */
  readonly #waiters = new Map<string, Set<{ revision: number; seen(): void }>>();
  #connection: NatsConnection | undefined;
  #sync: { unsubscribe(): void } | undefined;
  readonly #firstAttach = new FirstAttach();

  constructor(options: { logger: KvViewLogger; adminKey: string | undefined }) {
    this.#view = new KvView<StoredKey>({
      ...keysBucket,
      logger: options.logger,
      label: 'API key',
      onChange: ({ key, revision }) => {
        if (revision === undefined) return;
        for (const waiter of this.#waiters.get(key) ?? []) if (revision >= waiter.revision) waiter.seen();
      },
    });
    this.#bootstrapSha256 = options.adminKey ? sha256Hex(options.adminKey) : undefined;
  }

  async attach(connection: NatsConnection): Promise<void> {
    this.#store = await KvStore.open(connection, keysBucket);
    await this.#view.attach(connection);
    this.#firstAttach.done();
    this.#sync?.unsubscribe();
    this.#connection = connection;
    // Answers a revoking replica once this replica's view holds the revoke (see revoke).
    this.#sync = connection.subscribe(SYNC_SUBJECT, {
      callback: (error, message) => {
        if (error) return;
        let asked: { keyId?: unknown; revision?: unknown };
        try {
          asked = message.json();
        } catch {
          return;
        }
        const { keyId, revision } = asked;
        if (typeof keyId !== 'string' || typeof revision !== 'number') return;
        void this.#reached(keyId, revision).then((held) => {
          if (held) message.respond();
        });
      },
    });
  }

  async close(): Promise<void> {
    this.#sync?.unsubscribe();
    await this.#view.close();
  }

  /** The caller a secret stands for; UNAUTHENTICATED (saying why, never echoing the secret) when none. */
  async authenticate(secret: string | undefined, now = Date.now()): Promise<Authenticated> {
    if (secret === undefined) throw unauthenticated('missing API key: send "authorization: Bearer <key>"');
    const keyId = keyIdOf(secret);
    // A key-shaped secret is never the bootstrap one (GATEWAY_ADMIN_KEY may not start with elx_): one hash per call, not two.
    if (keyId === undefined && this.#bootstrapSha256 && secretMatches(secret, this.#bootstrapSha256)) {
      return { caller: { keyId: BOOTSTRAP_KEY_NAME, name: BOOTSTRAP_KEY_NAME, scopes: ['admin'], admin: true }, key: undefined };
    }
    if (keyId === undefined) throw unauthenticated('invalid API key');
    const key = this.#view.get(keyId) ?? (await this.#readThrough(keyId));
    if (!key || !secretMatches(secret, key.secretSha256)) throw unauthenticated('invalid API key');
    if (key.revokedAt !== undefined) throw unauthenticated(`API key ${keyId} was revoked`);
    if (key.expiresAt !== undefined && Date.parse(key.expiresAt) <= now) throw unauthenticated(`API key ${keyId} expired at ${key.expiresAt}`);
    return { caller: callerOfKey(key), key };
  }

  /**
   * The name of the key an `authorization` header names, from memory, for the HTTP access log
   * (which logs a request once, after its call was authenticated): never the secret.
   */
  nameOf(authorization: string | undefined): string | undefined {
    const secret = bearerSecret(authorization);
    if (secret === undefined) return undefined;
    const keyId = keyIdOf(secret);
    if (keyId !== undefined) return this.#view.get(keyId)?.name;
    return this.#bootstrapSha256 && secretMatches(secret, this.#bootstrapSha256) ? BOOTSTRAP_KEY_NAME : undefined;
  }

  /** A key id not in the view yet (created on another replica a moment ago): one read of the bucket. */
  async #readThrough(keyId: string): Promise<StoredKey | undefined> {
    await this.#firstAttach.wait();
    if (!this.#view.attached || !this.#store) throw new ElexirionError(Status.UNAVAILABLE, 'API keys cannot be checked now: the key store (NATS) is not reachable');
    // Made-up key ids cost one read each, then nothing for a while: the watch brings real new
    // keys within milliseconds, so the read only covers a key made a moment ago elsewhere.
    const now = Date.now();
    if ((this.#missing.get(keyId) ?? 0) > now) return undefined;
    const record = await this.#store.get(keyId);
    if (!record) {
      if (this.#missing.size >= MISSING_MAX) this.#missing.clear();
      this.#missing.set(keyId, now + MISSING_TTL_MS);
      return undefined;
    }
    this.#view.applyWrite(keyId, record.value, record.revision);
    return record.value;
  }

  async create(request: proto.CreateKeyRequest, createdBy: string, now = new Date()): Promise<{ key: StoredKey; secret: string }> {
    const name = request.name.trim();
    if (name.length < 1 || name.length > 64) throw invalid('name: expected 1 to 64 characters');
    if (name === BOOTSTRAP_KEY_NAME) throw invalid(`name: "${BOOTSTRAP_KEY_NAME}" is reserved for GATEWAY_ADMIN_KEY`);
    if (request.scopes.length === 0) throw invalid(`scopes: expected at least one of ${KEY_SCOPES.join(', ')}`);
    for (const [index, scope] of request.scopes.entries()) {
      if (!(KEY_SCOPES as readonly string[]).includes(scope)) throw invalid(`scopes[${index}]: unknown scope "${scope}"; expected one of ${KEY_SCOPES.join(', ')}`);
    }
    if (request.expiresAt && request.expiresAt.getTime() <= now.getTime()) throw invalid('expires_at: expected a time in the future');
    const limits = { ...NO_LIMITS, ...(request.limits ?? {}) };
    for (const [field, value] of Object.entries({
      requests_per_minute: limits.requestsPerMinute,
      tokens_per_minute: limits.tokensPerMinute,
      daily_budget_usd: limits.dailyBudgetUsd,
      monthly_budget_usd: limits.monthlyBudgetUsd,
    })) {
      if (!Number.isFinite(value) || value < 0) throw invalid(`limits.${field}: expected 0 (no limit) or more, got ${value}`);
    }
    // Unique among the keys not revoked, as far as this replica knows (two replicas creating the
    // same name in the same instant can both succeed; names are labels, ids are the identity).
    if (this.#view.entries().some(([, key]) => key.name === name && key.revokedAt === undefined)) {
      throw new ElexirionError(Status.ALREADY_EXISTS, `name: a key named "${name}" exists already`);
    }
    const store = await this.#requireStore();
    const { keyId, secret, sha256 } = newSecret();
    const key: StoredKey = {
      keyId,
      name,
      secretSha256: sha256,
      scopes: [...new Set(request.scopes)] as StoredKey['scopes'],
      createdAt: now.toISOString(),
      ...(request.expiresAt ? { expiresAt: request.expiresAt.toISOString() } : {}),
      createdBy,
      limits: { ...limits, requestsPerMinute: Math.trunc(limits.requestsPerMinute), tokensPerMinute: Math.trunc(limits.tokensPerMinute) },
    };
    const revision = await store.create(keyId, key);
    this.#view.applyWrite(keyId, key, revision);
    return { key, secret };
  }

  /** Marks the key revoked (kept, listed as revoked); every replica refuses it once the change reaches it. */
  async revoke(keyId: string, now = new Date()): Promise<StoredKey> {
    if (!KEY_ID_PATTERN.test(keyId)) throw invalid('key_id: expected 16 hexadecimal characters');
    const store = await this.#requireStore();
    for (let attempt = 0; attempt < 5; attempt += 1) {
      const record = await store.get(keyId);
      if (!record) throw new ElexirionError(Status.NOT_FOUND, `key_id: no key ${keyId}`);
      if (record.value.revokedAt !== undefined) return record.value;
      const revoked = { ...record.value, revokedAt: now.toISOString() };
      try {
        const revision = await store.update(keyId, revoked, record.revision);
        await this.#everyReplicaHas(keyId, revision);
        this.#view.applyWrite(keyId, revoked, revision);
        return revoked;
      } catch (error) {
        if (!(error instanceof KvRevisionConflictError)) throw error;
      }
    }
    throw new ElexirionError(Status.ABORTED, `key ${keyId} kept changing while being revoked; try again`);
  }

  /**
   * Asks every gateway replica (this one included) to answer once its view holds the write, and
   * waits for their answers: until none has come for SYNC_STALL_MS after the last, at most
   * SYNC_WAIT_MS. So a revoked key is refused on every replica by the time RevokeKey answers,
   * a replica cut off from NATS excepted (it serves its last known keys until it is back).
   */
  async #everyReplicaHas(keyId: string, revision: number): Promise<void> {
    const connection = this.#connection;
    if (!connection) return;
    try {
      const answers = await connection.requestMany(SYNC_SUBJECT, JSON.stringify({ keyId, revision }), { strategy: 'stall', stall: SYNC_STALL_MS, maxWait: SYNC_WAIT_MS });
      for await (const answer of answers) void answer;
    } catch {
      // No answer at all (no replica subscribed yet): the watch still brings the change.
    }
  }

  /** Whether this replica's view holds the key at `revision` or later, waiting up to SYNC_WAIT_MS for its watch. */
  async #reached(keyId: string, revision: number): Promise<boolean> {
    if ((this.#view.revision(keyId) ?? 0) >= revision) return true;
    return new Promise<boolean>((resolve) => {
      let waiters = this.#waiters.get(keyId);
      if (!waiters) this.#waiters.set(keyId, (waiters = new Set()));
      const set = waiters;
      const finish = (held: boolean) => {
        clearTimeout(timer);
        set.delete(waiter);
        if (set.size === 0 && this.#waiters.get(keyId) === set) this.#waiters.delete(keyId);
        resolve(held);
      };
      const waiter = { revision, seen: () => finish(true) };
      const timer = setTimeout(() => finish(false), SYNC_WAIT_MS);
      set.add(waiter);
    });
  }

  /** A stored key by id, from this replica's copy (no NATS round trip). */
  stored(keyId: string): StoredKey | undefined {
    return this.#view.get(keyId);
  }

  list(includeInactive: boolean, now = Date.now()): StoredKey[] {
    const keys = this.#view.entries().map(([, key]) => key);
    const active = (key: StoredKey) => key.revokedAt === undefined && (key.expiresAt === undefined || Date.parse(key.expiresAt) > now);
    return (includeInactive ? keys : keys.filter(active)).sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.keyId.localeCompare(b.keyId));
  }

  async #requireStore(): Promise<KvStore<StoredKey>> {
    await this.#firstAttach.wait();
    if (!this.#store || !this.#view.attached) throw new ElexirionError(Status.UNAVAILABLE, 'the key store (NATS) is not reachable now');
    return this.#store;
  }
}

export function callerOfKey(key: StoredKey): Caller {
  return { keyId: key.keyId, name: key.name, scopes: key.scopes, admin: key.scopes.includes('admin') };
}

function unauthenticated(message: string): ElexirionError {
  return new ElexirionError(Status.UNAUTHENTICATED, message);
}

function invalid(message: string): ElexirionError {
  return new ElexirionError(Status.INVALID_ARGUMENT, message);
}
