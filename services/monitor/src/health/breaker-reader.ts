import { EventsReader, KvRevisionConflictError, type KvStore, type Logger, type proto } from '@elexirion/kit';
import type { NatsConnection } from '@nats-io/transport-node';
import { breakerKey, type BreakerRecord, type HealthBucketRecord } from './health-bucket.js';

/** The durable consumer the monitor replicas share for breaker events: each event is read by one. */
export const BREAKER_CONSUMER = 'monitor-health-breakers';
const BREAKER_SUBJECT = 'elexirion.events.provider.breaker';
/** Compare-and-set attempts before a write gives up (the batch is then delivered again). */
const MAX_CAS_ATTEMPTS = 10;

/**
 * Reads the providers' "breaker" events through a durable consumer the replicas share and keeps
 * each provider's breaker in the health bucket, where every replica sees it. Writes are
 * compare-and-set, and an event older than the stored state is ignored, so two replicas handling
 * two events of one provider at once end with the newer.
 */
export async function readBreakerEvents(connection: NatsConnection, store: KvStore<HealthBucketRecord>, options: { stream: string; logger: Logger; signal: AbortSignal }): Promise<void> {
  const { logger, signal } = options;
  const reader = await EventsReader.open(connection, { stream: options.stream, durable: BREAKER_CONSUMER, filterSubject: BREAKER_SUBJECT, signal });
  // consume() runs until the reader closes (the signal) or stops on its own: then this use's
  // attach is not running any more, and the next reconnect opens it again.
  void reader
    .consume(
      async (batch) => {
        for (const { event } of batch.events) {
          if (event.providerBreaker) await recordBreaker(store, event, event.providerBreaker, logger);
        }
      },
      { onUndecodable: (message) => logger.warn({ subject: message.subject, sequence: message.streamSequence, reason: message.reason }, 'breaker event that does not decode; skipped') },
    )
    .catch((error: unknown) => logger.warn({ err: error }, 'breaker events reader stopped'));
}

async function recordBreaker(store: KvStore<HealthBucketRecord>, event: proto.TelemetryEvent, breaker: proto.ProviderBreakerEvent, logger: Logger): Promise<void> {
  const state = breaker.state;
  if (state !== 'closed' && state !== 'open' && state !== 'half_open') {
    logger.warn({ provider: breaker.provider, state }, 'breaker event with an unknown state; skipped');
    return;
  }
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(breaker.provider)) {
    logger.warn({ provider: breaker.provider }, 'breaker event with an invalid provider name; skipped');
    return;
  }
  const changedAt = (event.time ?? new Date()).toISOString();
  const key = breakerKey(breaker.provider);
  for (let attempt = 1; attempt <= MAX_CAS_ATTEMPTS; attempt += 1) {
    const stored = await store.get(key);
    const previous = stored?.value.kind === 'breaker' ? stored.value : undefined;
    if (previous && previous.changedAt > changedAt) return;
    // Open and half-open both count as "not closed": the time it left closed is kept across them.
    const openSince = state === 'closed' ? undefined : previous && previous.state !== 'closed' ? (previous.openSince ?? changedAt) : changedAt;
    const record: BreakerRecord = { kind: 'breaker', provider: breaker.provider, state, changedAt, ...(openSince ? { openSince } : {}) };
    try {
      if (stored) await store.update(key, record, stored.revision);
      else await store.create(key, record);
      if (previous?.state !== state) logger.info({ provider: breaker.provider, breaker: state }, 'provider breaker state recorded');
      return;
    } catch (error) {
      if (!(error instanceof KvRevisionConflictError)) throw error;
    }
  }
  throw new Error(`could not record the breaker of ${breaker.provider}: ${MAX_CAS_ATTEMPTS} compare-and-set conflicts in a row`);
}
