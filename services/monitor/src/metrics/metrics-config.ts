import { z } from 'zod';

/** The performance database's settings. */
export const metricsConfigShape = {
  /** How long one-minute buckets are kept (the KV bucket's max age), and the widest range GetMetrics reads. */
  MONITOR_RETENTION_HOURS: z.coerce.number().int().min(1).max(24 * 90).default(24),
  /** The durable consumer every monitor replica shares on the events stream. */
  MONITOR_METRICS_CONSUMER: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/).default('monitor-metrics'),
  /**
   * For the consumer when a replica creates it: start from every event the stream holds (`all`) or
   * from those published from then on (`new`, e.g. a benchmark next to an old stream). One that
   * exists resumes where it is.
   */
  MONITOR_METRICS_START: z.enum(['all', 'new']).default('all'),
  /** For the consumer when a replica creates it: how long a batch delivered to a replica that died waits before another replica gets it. */
  MONITOR_METRICS_ACK_WAIT_MS: z.coerce.number().int().min(1_000).max(600_000).default(30_000),
  /** How often the consumer's info is read: the lag gauge, and the ack floor that bounds a bucket's applied sequences. */
  MONITOR_METRICS_LAG_POLL_MS: z.coerce.number().int().min(100).max(60_000).default(2_000),
  /**
   * Series (distinct kind and dimension values) one minute keeps; past it, new ones of a kind are
   * folded into that kind's "(other)" series: totals stay exact, the breakdown of the rest is lost.
   */
  MONITOR_METRICS_MAX_SERIES: z.coerce.number().int().min(10).max(5_000).default(400),
};
