import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { ServerError, Status, type ClientMiddleware, type ServerMiddleware } from 'nice-grpc-common';
import { ClientError } from 'nice-grpc-common';
import { isAbortError } from 'abort-controller-x';
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

function statusOf(error: unknown): Status {
  if (error instanceof ServerError || error instanceof ClientError) return error.code;
  if (isAbortError(error)) return Status.CANCELLED;
  return Status.UNKNOWN;
}

/** Server middleware: counts and times every RPC, and logs failures that are the server's fault. */
export function serverObservabilityMiddleware(service: string, metrics: Metrics, logger: Logger): ServerMiddleware {
  return async function* observe(call, context) {
    const started = performance.now();
    let code = Status.OK;
    try {
      return yield* call.next(call.request, context);
    } catch (error) {
      code = statusOf(error);
      throw error;
    } finally {
      const seconds = (performance.now() - started) / 1000;
      const method = call.method.path;
      metrics.serverHandled.inc({ service, grpc_method: method, grpc_code: Status[code] });
      metrics.serverHandling.observe({ service, grpc_method: method }, seconds);
      if (code === Status.INTERNAL || code === Status.UNKNOWN || code === Status.DATA_LOSS) {
        logger.error({ method, code: Status[code], ms: Math.round(seconds * 1000) }, 'rpc failed');
      } else {
        logger.debug({ method, code: Status[code], ms: Math.round(seconds * 1000) }, 'rpc handled');
      }
    }
  };
}

/** Client middleware: counts and times calls to other services. */
export function clientObservabilityMiddleware(service: string, transport: 'grpc' | 'in_process', metrics: Metrics): ClientMiddleware {
  return async function* observe(call, options) {
    const started = performance.now();
    let code = Status.OK;
    try {
      return yield* call.next(call.request, options);
    } catch (error) {
      code = statusOf(error);
      throw error;
    } finally {
      const method = call.method.path;
      metrics.clientHandled.inc({ service, grpc_method: method, grpc_code: Status[code], transport });
      metrics.clientHandling.observe({ service, grpc_method: method, transport }, (performance.now() - started) / 1000);
    }
  };
}
