import type { KvBucketSpec } from '@elexirion/kit';
import { z } from 'zod';

/** The system health every replica computes; one replica's compare-and-set write wins each change. */
export const systemHealthRecordSchema = z.object({
  kind: z.literal('system'),
  status: z.enum(['healthy', 'degraded', 'critical']),
  causes: z.array(z.string()),
  services: z.record(z.string(), z.enum(['SERVING', 'NOT_SERVING', 'UNREACHABLE', 'UNKNOWN'])),
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

/** The agent's recent refusals (RESOURCE_EXHAUSTED answers to chats through the gateway), from the gateway's "request" events. */
export const agentRefusalsRecordSchema = z.object({
  kind: z.literal('agent_refusals'),
  /** When each refusal happened (ISO 8601), oldest first, within the rules' window and at most MAX_AGENT_REFUSALS_KEPT. */
  times: z.array(z.iso.datetime()).max(1_000),
});
export type AgentRefusalsRecord = z.infer<typeof agentRefusalsRecordSchema>;
export const MAX_AGENT_REFUSALS_KEPT = 1_000;

export type HealthBucketRecord = SystemHealthRecord | BreakerRecord | AgentRefusalsRecord;

export const SYSTEM_KEY = 'system';
export const breakerKey = (provider: string) => `breaker.${provider}`;
export const AGENT_REFUSALS_KEY = 'agent_refusals';

/** `elexirion_health`: the system health under `system`, each provider's breaker under `breaker.<provider>`, the agent's refusals under `agent_refusals`. */
export const HEALTH_BUCKET: KvBucketSpec<HealthBucketRecord> = {
  bucket: 'elexirion_health',
  schema: z.discriminatedUnion('kind', [systemHealthRecordSchema, breakerRecordSchema, agentRefusalsRecordSchema]),
  key: { pattern: /^(system|agent_refusals|breaker\.[A-Za-z0-9_-]{1,64})$/, description: 'system, agent_refusals or breaker.<provider>', name: 'health key' },
  check: (key, value) => {
    const expected = value.kind === 'system' ? SYSTEM_KEY : value.kind === 'agent_refusals' ? AGENT_REFUSALS_KEY : breakerKey(value.provider);
    return key === expected ? undefined : `a ${value.kind} record belongs under ${expected}`;
  },
  description: 'System health and provider breaker states, written by the monitor',
};
