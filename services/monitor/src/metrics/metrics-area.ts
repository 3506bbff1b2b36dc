import type { MonitorArea, MonitorContext } from '../monitor-area.js';
import { getMetrics } from './get-metrics.js';
import { MetricsConsumer, type ConsumerLag } from './metrics-consumer.js';
import { MinuteStore } from './minute-store.js';
import { ServerError, Status } from '@elexirion/kit';

export interface MetricsArea extends MonitorArea<'getMetrics'> {
  /** The events consumer's backlog as last read (every MONITOR_METRICS_LAG_POLL_MS); undefined before the first read. */
  consumerLag(): ConsumerLag | undefined;
}

const ATTACH_WAIT_MS = 5_000;

async function waitAtMost(promise: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([promise, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

/** The performance database: the events consumer, one-minute aggregates in KV, GetMetrics. */
export async function metricsArea(context: MonitorContext): Promise<MetricsArea> {
  const { config, host, logger, metrics, nats } = context;
  let minutes: MinuteStore | undefined;
  let bucketOpened!: () => void;
  const opened = new Promise<void>((resolve) => (bucketOpened = resolve));
  const consumer = new MetricsConsumer({
    stream: host.TELEMETRY_STREAM,
    durable: config.MONITOR_METRICS_CONSUMER,
    lagPollMs: config.MONITOR_METRICS_LAG_POLL_MS,
    ackWaitMs: config.MONITOR_METRICS_ACK_WAIT_MS,
    deliver: config.MONITOR_METRICS_START,
    logger,
    registry: metrics.registry,
    minutes: () => minutes,
  });
  nats.use('monitor metrics: one-minute aggregates and the events consumer', async (connection, signal) => {
    minutes = await MinuteStore.open(connection, config.MONITOR_RETENTION_HOURS, config.MONITOR_METRICS_MAX_SERIES);
    bucketOpened();
    await consumer.attach(connection, signal);
  });
  return {
    implementation: {
      async getMetrics(request) {
        // A call in the moment after start waits for the bucket rather than failing at once.
        if (!minutes) await waitAtMost(opened, ATTACH_WAIT_MS);
        if (!minutes) throw new ServerError(Status.UNAVAILABLE, `the performance database is not attached to NATS (waited ${ATTACH_WAIT_MS / 1000} s); retry shortly`);
        return getMetrics(request, minutes, config.MONITOR_RETENTION_HOURS);
      },
    },
    consumerLag: () => consumer.consumerLag(),
    close: () => consumer.close(),
  };
}
