import { createHash, randomUUID } from 'node:crypto';
import { KvRevisionConflictError, KvStore, type KvBucketSpec, type KvRecord, type KvView } from '@elexirion/kit';
import { z } from 'zod';

// Each (rule, group) alert's state in one KV entry, shared by the monitor replicas. Every replica
// evaluates every rule; a state change is written with compare-and-set on the entry's revision,
// so of two replicas that see the same change one writes it and the other finds it written.
// The notification of a change is claimed the same way (claimedBy/claimedAt), delivered, and
// marked delivered: one notification per change, and a replica that dies after claiming leaves
// the claim to expire and another delivers it (with the same delivery id, so a receiver that got
// it once can tell).

export const ALERTS_BUCKET = 'elexirion_alerts';
/** A claim not marked delivered within this long is taken over by another replica. */
export const CLAIM_TIMEOUT_MS = 30_000;

const stateSchema = z.object({
  rule: z.string(),
  labels: z.record(z.string(), z.string()),
  state: z.enum(['ok', 'pending', 'firing']),
  severity: z.enum(['warning', 'critical', '']),
  value: z.number().nullable(),
  threshold: z.number(),
  since: z.string(),
  summary: z.string(),
  /** The last change that calls for a notification (firing or resolved), if any. */
  notification: z
    .object({
      deliveryId: z.string(),
      transition: z.enum(['firing', 'resolved']),
      at: z.string(),
      claimedBy: z.string().optional(),
      claimedAt: z.string().optional(),
      deliveredAt: z.string().optional(),
    })
    .optional(),
});

export type AlertRecord = z.output<typeof stateSchema>;

const ALERT_KEY = /^[a-z0-9][a-z0-9_-]{0,63}\.[0-9a-f]{16}$/;

/** The entry of a rule's group: its name and a hash of the group's labels. */
export function alertKey(rule: string, labels: Record<string, string>): string {
  const sorted = Object.keys(labels)
    .sort()
    .map((key) => `${key}=${labels[key]}`)
    .join(',');
  return `${rule}.${createHash('sha256').update(sorted).digest('hex').slice(0, 16)}`;
}

/** The alert states bucket, for the store that writes it and the views that watch it (health). */
export const ALERTS_BUCKET_SPEC: KvBucketSpec<AlertRecord> = {
  bucket: ALERTS_BUCKET,
  schema: stateSchema,
  key: { pattern: ALERT_KEY, description: '<rule>.<16 hex digits>', name: 'alert key' },
  description: 'Elexirion alert states, one per rule and group (the monitor)',
};

/**
 * The alert states: read from a watched copy of the bucket (every evaluation round reads them all;
 * the watch brings other replicas' writes), written through the store with compare-and-set and
 * shown in the copy at once.
 */
export class AlertStore {
  private constructor(
    private readonly store: KvStore<AlertRecord>,
    private readonly view: KvView<AlertRecord>,
  ) {}

  /** Opens the bucket and attaches `view` (made with ALERTS_BUCKET_SPEC) to it. */
  static async open(connection: Parameters<typeof KvStore.open>[0], view: KvView<AlertRecord>): Promise<AlertStore> {
    const store = await KvStore.open(connection, ALERTS_BUCKET_SPEC);
    await view.attach(connection);
    return new AlertStore(store, view);
  }

  all(): Array<{ key: string } & KvRecord<AlertRecord>> {
    return this.view.entries().map(([key, value]) => ({ key, value, revision: this.view.revision(key)! }));
  }

  get(key: string): KvRecord<AlertRecord> | undefined {
    const value = this.view.get(key);
    return value === undefined ? undefined : { value, revision: this.view.revision(key)! };
  }

  /**
   * Writes `next` over the revision read (or as new): false when another replica wrote first
   * (its write stands; the watch brings it to this replica's copy).
   */
  async change(key: string, next: AlertRecord, revision: number | undefined): Promise<boolean> {
    try {
      const written = revision === undefined ? await this.store.create(key, next) : await this.store.update(key, next, revision);
      this.view.applyWrite(key, next, written);
      return true;
    } catch (error) {
      if (error instanceof KvRevisionConflictError) return false;
      throw error;
    }
  }

  async delete(key: string): Promise<void> {
    await this.view.delete(key);
  }
}

export function newNotification(transition: 'firing' | 'resolved', now: Date): NonNullable<AlertRecord['notification']> {
  return { deliveryId: randomUUID(), transition, at: now.toISOString() };
}
