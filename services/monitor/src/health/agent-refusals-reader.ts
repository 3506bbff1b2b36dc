import { EventsReader, KvRevisionConflictError, type KvStore, type Logger } from '@elexirion/kit';
import type { NatsConnection } from '@nats-io/transport-node';
import { AGENT_REFUSALS_KEY, MAX_AGENT_REFUSALS_KEPT, type AgentRefusalsRecord, type HealthBucketRecord } from './health-bucket.js';

/** The durable consumer the monitor replicas share for the gateway's request events. */
export const REQUESTS_CONSUMER = 'monitor-health-requests';
const REQUESTS_SUBJECT = 'elexirion.events.gateway.request';
/** The gateway's calls answered by the agent (not by the bypass, which marks its answers degraded). */
const AGENT_CHAT_METHODS = new Set(['Chat', 'ChatStream']);
const MAX_CAS_ATTEMPTS = 10;

/**
 * Keeps the agent's recent refusals (its RESOURCE_EXHAUSTED answers to chats, as the gateway's
 * "request" events tell them; the gateway's own limits refuse before a call is observed, so they
 * are not among them) in the health bucket, for the rule that bypasses an overloaded agent. A
 * batch without a refusal writes nothing, so a healthy system costs a decode per batch.
 */
export async function readAgentRefusals(
  connection: NatsConnection,
  store: KvStore<HealthBucketRecord>,
  options: { stream: string; windowMs: number; logger: Logger; signal: AbortSignal },
): Promise<void> {
  const { logger, signal, windowMs } = options;
  // From now on: refusals older than the consumer are history, not an overload.
  const reader = await EventsReader.open(connection, { stream: options.stream, durable: REQUESTS_CONSUMER, filterSubject: REQUESTS_SUBJECT, deliver: 'new', signal });
  void reader
    .consume(
      async (batch) => {
        const times: number[] = [];
        for (const { event } of batch.events) {
          const request = event.gatewayRequest;
          if (event.status === 'RESOURCE_EXHAUSTED' && request && !request.degraded && AGENT_CHAT_METHODS.has(request.method)) times.push((event.time ?? batch.time).getTime());
        }
        if (times.length > 0) await recordRefusals(store, times, windowMs);
      },
      { onUndecodable: (message) => logger.warn({ subject: message.subject, sequence: message.streamSequence, reason: message.reason }, 'request event that does not decode; skipped') },
    )
    .catch((error: unknown) => logger.warn({ err: error }, 'gateway request events reader stopped'));
}

async function recordRefusals(store: KvStore<HealthBucketRecord>, times: number[], windowMs: number): Promise<void> {
  for (let attempt = 1; attempt <= MAX_CAS_ATTEMPTS; attempt += 1) {
    const stored = await store.get(AGENT_REFUSALS_KEY);
    const previous = stored?.value.kind === 'agent_refusals' ? stored.value.times.map((time) => Date.parse(time)) : [];
    const since = Date.now() - windowMs;
    const kept = [...previous, ...times]
      .filter((time) => time >= since)
      .sort((a, b) => a - b)
      .slice(-MAX_AGENT_REFUSALS_KEPT);
    const record: AgentRefusalsRecord = { kind: 'agent_refusals', times: kept.map((time) => new Date(time).toISOString()) };
    try {
      if (stored) await store.update(AGENT_REFUSALS_KEY, record, stored.revision);
      else await store.create(AGENT_REFUSALS_KEY, record);
      return;
    } catch (error) {
      if (!(error instanceof KvRevisionConflictError)) throw error;
    }
  }
  throw new Error(`could not record the agent's refusals: ${MAX_CAS_ATTEMPTS} compare-and-set conflicts in a row`);
}
