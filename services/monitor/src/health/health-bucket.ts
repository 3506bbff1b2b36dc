import type { KvBucketSpec } from '@elexirion/kit';
import { z } from 'zod';

/** The system health every replica computes; one replica's compare-and-set write wins each change. */
export const systemHealthRecordSchema = z.object({
  kind: z.literal('system'),
  status: z.enum(['healthy', 'degraded', 'critical']),
  causes: z.array(z.string()),
  services: z.record(z.string(), z.enum(['SERVING', 'NOT_SERVING', 'UNREACHABLE'])),
  consumerLag: z.number().int().min(0),
  updatedAt: z.iso.datetime(),
});
export type SystemHealthRecord = z.infer<typeof systemHealthRecordSchema>;

/** A provider's breaker, from its "breaker" events (whichever replica reads the event writes it). */
export const breakerRecordSchema = z.object({
  kind: z.literal('breaker'),
  provider: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
  state: z.enum(['closed', 'half_open', 'open']),
  /** The last report's time (ISO 8601; a change or a repeat): an older report never replaces a newer one. */
  changedAt: z.iso.datetime(),
  /** When it left closed, while it is not closed. */
  openSince: z.iso.datetime().optional(),
});
export type BreakerRecord = z.infer<typeof breakerRecordSchema>;

export type HealthBucketRecord = SystemHealthRecord | BreakerRecord;

export const SYSTEM_KEY = 'system';
export const breakerKey = (provider: string) => `breaker.${provider}`;

/** `elexirion_health`: the system health under `system`, each provider's breaker under `breaker.<provider>`. */
export const HEALTH_BUCKET: KvBucketSpec<HealthBucketRecord> = {
  bucket: 'elexirion_health',
  schema: z.discriminatedUnion('kind', [systemHealthRecordSchema, breakerRecordSchema]),
  key: { pattern: /^(system|breaker\.[A-Za-z0-9_-]{1,64})$/, description: 'system or breaker.<provider>', name: 'health key' },
  check: (key, value) => {
    const expected = value.kind === 'system' ? SYSTEM_KEY : breakerKey(value.provider);
    return key === expected ? undefined : `a ${value.kind} record belongs under ${expected}`;
  },
  description: 'System health and provider breaker states, written by the monitor',
};
