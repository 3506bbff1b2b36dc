import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { Status } from 'nice-grpc-common';
import type { Logger } from './logger.js';

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

/**
 * How a method streams, as the `grpc_type` label of go-grpc-prometheus and nice-grpc-prometheus
 * names it.
 */
export type GrpcType = 'unary' | 'client_stream' | 'server_stream' | 'bidi_stream';

export function grpcTypeOf(requestStream: boolean, responseStream: boolean): GrpcType {
  if (requestStream) return responseStream ? 'bidi_stream' : 'client_stream';
  return responseStream ? 'server_stream' : 'unary';
}

/**
 * One Prometheus registry per process; every hosted service labels its series with `service`.
 *
 * The gRPC series follow go-grpc-prometheus and nice-grpc-prometheus, so existing gRPC dashboards
 * read them: `grpc_server_started_total`, `grpc_server_handled_total{grpc_code}` and the
 * `grpc_server_handling_seconds` histogram (and `grpc_client_*` alike), labelled `grpc_type`,
 * `grpc_service` (`elexirion.v1.Provider`) and `grpc_method` (`Complete`). Beyond those,
 * `service` is the Elexirion service that served or made the call, and a client's `transport`
 * says whether the callee was in this process (`in_process`) or reached over `grpc`.
 *
 * The gRPC counters and latency histograms are counted in each method's RpcSeries (fields
 * incremented per call) and handed to prom-client when scraped: prom-client's `inc` and
 * `observe` hash the labels on every call (about 0.7 µs and 2 µs), several times a call per hop.
 */
export class Metrics {
  readonly registry = new Registry();
  private readonly series = { server: [] as RpcSeries[], client: [] as RpcSeries[] };

  readonly serverStarted: Counter<string> = new Counter({
    name: 'grpc_server_started_total',
    help: 'RPCs started on the server.',
    labelNames: ['service', 'grpc_type', 'grpc_service', 'grpc_method'] as const,
    registers: [this.registry],
    collect: () => collectStarted(this.serverStarted, this.series.server),
  });

  readonly serverHandled: Counter<string> = new Counter({
    name: 'grpc_server_handled_total',
    help: 'RPCs completed on the server, whatever their outcome (grpc_code).',
    labelNames: ['service', 'grpc_type', 'grpc_service', 'grpc_method', 'grpc_code'] as const,
    registers: [this.registry],
    collect: () => collectHandled(this.serverHandled, this.series.server),
  });

  readonly serverHandling = new SeriesHistogram('grpc_server_handling_seconds', 'Time from the start of an RPC to its end, on the server.', this.series.server, this.registry);

  readonly clientStarted: Counter<string> = new Counter({
    name: 'grpc_client_started_total',
    help: 'RPCs started to other services, by transport (grpc or in_process).',
    labelNames: ['service', 'grpc_type', 'grpc_service', 'grpc_method', 'transport'] as const,
    registers: [this.registry],
    collect: () => collectStarted(this.clientStarted, this.series.client),
  });

  readonly clientHandled: Counter<string> = new Counter({
    name: 'grpc_client_handled_total',
    help: 'RPCs to other services completed, whatever their outcome (grpc_code), by transport (grpc or in_process).',
    labelNames: ['service', 'grpc_type', 'grpc_service', 'grpc_method', 'grpc_code', 'transport'] as const,
    registers: [this.registry],
    collect: () => collectHandled(this.clientHandled, this.series.client),
  });

  readonly clientHandling = new SeriesHistogram('grpc_client_handling_seconds', 'Time for an RPC to another service to complete, as the caller sees it.', this.series.client, this.registry);

  readonly eventsPublished = new Counter({
    name: 'elexirion_telemetry_events_published_total',
    help: 'Telemetry events the events stream acknowledged (JetStream).',
    labelNames: ['service', 'kind'] as const,
    registers: [this.registry],
  });

  readonly eventsDropped = new Counter({
    name: 'elexirion_telemetry_events_dropped_total',
    help: 'Telemetry events dropped instead of slowing requests (queue full, NATS down, a batch the stream refused or never acknowledged).',
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

  /** Counts `series` in `grpc_<side>_started_total` and `_handled_total` from now on. */
  track(side: 'server' | 'client', series: RpcSeries): void {
    this.series[side].push(series);
  }
}

function collectStarted(counter: Counter<string>, series: readonly RpcSeries[]): void {
  counter.reset();
  for (const one of series) if (one.started > 0) counter.inc(one.labels, one.started);
}

function collectHandled(counter: Counter<string>, series: readonly RpcSeries[]): void {
  counter.reset();
  for (const one of series) {
    one.handled.forEach((count, code) => {
      if (count > 0) counter.inc(one.withCode(code), count);
    });
  }
}

type Labels = Record<string, string>;

/**
 * A `*_handling_seconds` histogram read from the RpcSeries' own bucket counts when scraped, in
 * the shape prom-client's registry renders (what its Histogram's `get` answers).
 */
class SeriesHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly series: readonly RpcSeries[],
    registry: Registry,
  ) {
    registry.registerMetric(this as unknown as Parameters<Registry['registerMetric']>[0]);
  }

  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: { labels: Record<string, string | number>; value: number; metricName: string }[] }> {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
    const bucket = `${this.name}_bucket`;
    for (const one of this.series) {
      if (one.latencyCount === 0) continue;
      let cumulative = 0;
      LATENCY_BUCKETS.forEach((le, index) => {
        cumulative += one.latencyBuckets[index]!;
        values.push({ labels: { ...one.labels, le }, value: cumulative, metricName: bucket });
      });
      values.push({ labels: { ...one.labels, le: '+Inf' }, value: one.latencyCount, metricName: bucket });
      values.push({ labels: one.labels, value: one.latencySum, metricName: `${this.name}_sum` });
      values.push({ labels: one.labels, value: one.latencyCount, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  /** Registry.resetMetrics(). */
  reset(): void {
    for (const one of this.series) {
      one.latencyBuckets.fill(0);
      one.latencySum = 0;
      one.latencyCount = 0;
    }
  }
}

/**
 * The labels of one method's series as one side of one service sees it, made once per method
 * rather than once per call (a call looks them up by its path).
 */
export class RpcSeries {
  readonly labels: Labels;
  /** Calls started. */
  started = 0;
  /** Calls ended, by status code. */
  readonly handled: number[] = new Array<number>(17).fill(0);
  /** Calls ended, by the first LATENCY_BUCKETS bound their duration is within (not cumulative). */
  readonly latencyBuckets: number[] = new Array<number>(LATENCY_BUCKETS.length).fill(0);
  latencySum = 0;
  latencyCount = 0;
  private readonly withCodes: Labels[] = [];

  /** `path` is the method's path, "/elexirion.v1.Provider/Complete". */
  constructor(
    readonly path: string,
    type: GrpcType,
    service: string,
    transport?: 'grpc' | 'in_process',
  ) {
    const slash = path.lastIndexOf('/');
    this.labels = { service, grpc_type: type, grpc_service: path.slice(1, slash), grpc_method: path.slice(slash + 1) };
    if (transport) this.labels.transport = transport;
  }

  observeLatency(seconds: number): void {
    for (let index = 0; index < LATENCY_BUCKETS.length; index += 1) {
      if (seconds <= LATENCY_BUCKETS[index]!) {
        this.latencyBuckets[index]! += 1;
        break;
      }
    }
    this.latencySum += seconds;
    this.latencyCount += 1;
  }

  /** The labels with `grpc_code`, for `*_handled_total`. */
  withCode(code: Status): Labels {
    return (this.withCodes[code] ??= { ...this.labels, grpc_code: Status[code] ?? 'UNKNOWN' });
  }
}

/** The series of each method one side of one service has seen, found by path. */
export class RpcSeriesTable {
  private readonly byPath = new Map<string, RpcSeries>();

  constructor(
    private readonly metrics: Metrics,
    private readonly side: 'server' | 'client',
    private readonly service: string,
    private readonly transport?: 'grpc' | 'in_process',
  ) {}

  get(path: string, type: GrpcType): RpcSeries {
    let series = this.byPath.get(path);
    if (!series) {
      series = new RpcSeries(path, type, this.service, this.transport);
      this.byPath.set(path, series);
      this.metrics.track(this.side, series);
    }
    return series;
  }

  /** The series of `path`, with one more RPC counted as started (`grpc_*_started_total`). */
  start(path: string, type: GrpcType): RpcSeries {
    const series = this.get(path, type);
    series.started += 1;
    return series;
  }
}

/** Counts and times one RPC served (`grpc_server_*`); logs failures that are the server's fault. */
export function recordServerCall(metrics: Metrics, logger: Logger, series: RpcSeries, code: Status, elapsedMs: number): void {
  series.handled[code] = (series.handled[code] ?? 0) + 1;
  series.observeLatency(elapsedMs / 1000);
  if (code === Status.INTERNAL || code === Status.UNKNOWN || code === Status.DATA_LOSS) {
    logger.error({ method: series.path, code: Status[code], ms: Math.round(elapsedMs) }, 'rpc failed');
  } else if (logger.isLevelEnabled('debug')) {
    logger.debug({ method: series.path, code: Status[code], ms: Math.round(elapsedMs) }, 'rpc handled');
  }
}

/** Counts and times one call to another service (`grpc_client_*`). */
export function recordClientCall(metrics: Metrics, series: RpcSeries, code: Status, elapsedMs: number): void {
  series.handled[code] = (series.handled[code] ?? 0) + 1;
  series.observeLatency(elapsedMs / 1000);
}
