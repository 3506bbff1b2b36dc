import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { Status } from 'nice-grpc-common';
import type { Logger } from './logger.js';

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

/** One Prometheus registry per process; every hosted service labels its series with `service`. */
export class Metrics {
  readonly registry = new Registry();

  readonly serverHandled = new Counter({
    name: 'grpc_server_handled_total',
    help: 'RPCs completed by the server, by status code.',
    labelNames: ['service', 'grpc_method', 'grpc_code'] as const,
    registers: [this.registry],
  });

  readonly serverHandling = new Histogram({
    name: 'grpc_server_handling_seconds',
    help: 'Time to handle an RPC on the server.',
    labelNames: ['service', 'grpc_method'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });

  readonly clientHandled = new Counter({
    name: 'grpc_client_handled_total',
    help: 'RPCs made to other services, by status code and transport (grpc or in_process).',
    labelNames: ['service', 'grpc_method', 'grpc_code', 'transport'] as const,
    registers: [this.registry],
  });

  readonly clientHandling = new Histogram({
    name: 'grpc_client_handling_seconds',
    help: 'Time for an RPC to another service to complete, as the caller sees it.',
    labelNames: ['service', 'grpc_method', 'transport'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });

  readonly eventsPublished = new Counter({
    name: 'elexirion_telemetry_events_published_total',
    help: 'Telemetry events handed to NATS.',
    labelNames: ['service', 'kind'] as const,
    registers: [this.registry],
  });

  readonly eventsDropped = new Counter({
    name: 'elexirion_telemetry_events_dropped_total',
    help: 'Telemetry events dropped instead of slowing requests (queue full, NATS down, publish error).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  readonly eventsQueued = new Gauge({
    name: 'elexirion_telemetry_events_queued',
    help: 'Telemetry events waiting to be published.',
    registers: [this.registry],
  });

  constructor(options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }
}

/** Counts and times one RPC served (`grpc_server_*`); logs failures that are the server's fault. */
export function recordServerCall(metrics: Metrics, logger: Logger, service: string, method: string, code: Status, elapsedMs: number): void {
  metrics.serverHandled.inc({ service, grpc_method: method, grpc_code: Status[code] });
  metrics.serverHandling.observe({ service, grpc_method: method }, elapsedMs / 1000);
  if (code === Status.INTERNAL || code === Status.UNKNOWN || code === Status.DATA_LOSS) {
    logger.error({ method, code: Status[code], ms: Math.round(elapsedMs) }, 'rpc failed');
  } else {
    logger.debug({ method, code: Status[code], ms: Math.round(elapsedMs) }, 'rpc handled');
  }
}

/** Counts and times one call to another service (`grpc_client_*`). */
export function recordClientCall(metrics: Metrics, caller: string, method: string, transport: 'grpc' | 'in_process', code: Status, elapsedMs: number): void {
  metrics.clientHandled.inc({ service: caller, grpc_method: method, grpc_code: Status[code], transport });
  metrics.clientHandling.observe({ service: caller, grpc_method: method, transport }, elapsedMs / 1000);
}
