import { ServerError, Status, proto } from '@elexirion/kit';
import { DIMENSIONS, METRIC_KINDS, SeriesAggregate, type Dimension, type ScoreSums, type SeriesDimensions } from './aggregates.js';
import { MINUTE_MS, type MinuteStore } from './minute-store.js';
import { scoreSummary } from './score-summary.js';

const DEFAULT_RANGE_MS = 3_600_000;
/** Minute records read at once. */
const READ_CONCURRENCY = 32;

const DIMENSION_OF: Partial<Record<proto.MetricDimension, Dimension>> = {
  [proto.MetricDimension.METRIC_DIMENSION_PIPELINE]: 'pipeline',
  [proto.MetricDimension.METRIC_DIMENSION_STEP]: 'step',
  [proto.MetricDimension.METRIC_DIMENSION_PROVIDER]: 'provider',
  [proto.MetricDimension.METRIC_DIMENSION_MODEL]: 'model',
  [proto.MetricDimension.METRIC_DIMENSION_ROUTE]: 'route',
  [proto.MetricDimension.METRIC_DIMENSION_PROMPT_VERSION]: 'prompt_version',
  [proto.MetricDimension.METRIC_DIMENSION_KIND]: 'kind',
};

const FILTER_FIELDS: Array<[keyof Omit<proto.MetricsFilter, 'kind'>, Dimension]> = [
  ['pipeline', 'pipeline'],
  ['step', 'step'],
  ['provider', 'provider'],
  ['model', 'model'],
  ['route', 'route'],
  ['promptVersion', 'prompt_version'],
];

function invalid(message: string): never {
  throw new ServerError(Status.INVALID_ARGUMENT, message);
}

/** The range in whole minutes [startMinute, endMinute), rounded out; checked against the retention. */
export function metricsRange(request: Pick<proto.GetMetricsRequest, 'startTime' | 'endTime'>, retentionHours: number, now = Date.now()): { startMinute: number; endMinute: number } {
  const nowMinute = Math.floor(now / MINUTE_MS);
  const endMinute = request.endTime ? Math.ceil(request.endTime.getTime() / MINUTE_MS) : nowMinute + 1;
  const startMinute = request.startTime ? Math.floor(request.startTime.getTime() / MINUTE_MS) : endMinute - DEFAULT_RANGE_MS / MINUTE_MS;
  if (!Number.isFinite(endMinute)) invalid('end_time is not a valid time');
  if (!Number.isFinite(startMinute)) invalid('start_time is not a valid time');
  if (endMinute < startMinute) invalid(`end_time ${request.endTime!.toISOString()} is before start_time ${new Date(startMinute * MINUTE_MS).toISOString()}`);
  const retentionMinutes = retentionHours * 60;
  if (endMinute - startMinute > retentionMinutes) invalid(`the range from start_time to end_time is ${((endMinute - startMinute) / 60).toFixed(1)} h, more than the retention of ${retentionHours} h (MONITOR_RETENTION_HOURS)`);
  // One minute of grace: the oldest minute kept may be on its way out.
  if (startMinute < nowMinute - retentionMinutes) invalid(`start_time ${new Date(startMinute * MINUTE_MS).toISOString()} is past the retention of ${retentionHours} h (MONITOR_RETENTION_HOURS): nothing older is kept`);
  return { startMinute, endMinute };
}

function checkedGroupBy(groupBy: proto.MetricDimension[]): Dimension[] {
  const dimensions = groupBy.map((value, index) => DIMENSION_OF[value] ?? invalid(`group_by[${index}] is ${proto.metricDimensionToJSON(value)}: expected one of ${Object.values(DIMENSION_OF).map((name) => `METRIC_DIMENSION_${name!.toUpperCase()}`).join(', ')}`));
  return [...new Set(dimensions)];
}

function checkedKind(kind: string): string {
  const chosen = kind || 'run';
  if (!(METRIC_KINDS as readonly string[]).includes(chosen)) invalid(`filter.kind "${kind}" is not one of ${METRIC_KINDS.join(', ')}`);
  return chosen;
}

interface Row {
  group: Partial<Record<Dimension, string>>;
  minute: number | undefined;
  aggregate: SeriesAggregate;
}

function emptyDimensions(): SeriesDimensions {
  return Object.fromEntries(DIMENSIONS.map((dimension) => [dimension, ''])) as SeriesDimensions;
}

/** GetMetrics: reads the range's minute records and merges the matching series per group (and minute). */
export async function getMetrics(request: proto.GetMetricsRequest, minutes: MinuteStore, retentionHours: number): Promise<proto.GetMetricsResponse> {
  const { startMinute, endMinute } = metricsRange(request, retentionHours);
  const groupBy = checkedGroupBy(request.groupBy);
  const filter = request.filter ?? proto.MetricsFilter.fromPartial({});
  const kind = checkedKind(filter.kind);
  const wanted = FILTER_FIELDS.filter(([field]) => filter[field] !== '').map(([field, dimension]) => [dimension, filter[field]] as const);

  const totals = new Map<string, Row>();
  const perMinute = new Map<string, Row>();
  const add = (rows: Map<string, Row>, key: string, group: Row['group'], minute: number | undefined, series: SeriesAggregate) => {
    let row = rows.get(key);
    if (!row) rows.set(key, (row = { group, minute, aggregate: new SeriesAggregate(emptyDimensions()) }));
    row.aggregate.merge(series);
  };

  const keys: number[] = [];
  for (let minute = startMinute; minute < endMinute; minute += 1) keys.push(minute);
  const read = await mapConcurrently(keys, READ_CONCURRENCY, async (minute) => minutes.read(minute));
  read.forEach((cached, index) => {
    const minute = keys[index]!;
    for (const series of cached.aggregates.series.values()) {
      const { dimensions } = series;
      if (dimensions.kind !== kind) continue;
      if (wanted.some(([dimension, value]) => dimensions[dimension] !== value)) continue;
      const group = Object.fromEntries(groupBy.map((dimension) => [dimension, dimensions[dimension]]));
      const groupKey = groupBy.map((dimension) => dimensions[dimension]).join('\u001f');
      add(totals, groupKey, group, undefined, series);
      if (request.perMinute) add(perMinute, `${minute}\u001f${groupKey}`, group, minute, series);
    }
  });

  const byGroup = (a: Row, b: Row) => JSON.stringify(Object.values(a.group)).localeCompare(JSON.stringify(Object.values(b.group)));
  const rows = [...totals.values()].sort(byGroup);
  const minuteRows = [...perMinute.values()].sort((a, b) => a.minute! - b.minute! || byGroup(a, b));
  return {
    rows: [...rows, ...minuteRows].map(toRow),
    startTime: new Date(startMinute * MINUTE_MS),
    endTime: new Date(endMinute * MINUTE_MS),
  };
}

function toRow({ group, minute, aggregate }: Row): proto.MetricsRow {
  const failures = Object.values(aggregate.errorsByStatus).reduce((sum, count) => sum + count, 0);
  const latency = aggregate.latency;
  const quantile = (q: number) => (latency.count > 0 ? latency.getValueAtQuantile(q) : 0);
  return {
    group: group as Record<string, string>,
    minute: minute === undefined ? undefined : new Date(minute * MINUTE_MS),
    count: aggregate.count,
    errorsByStatus: aggregate.errorsByStatus,
    latencyP50Ms: quantile(0.5),
    latencyP90Ms: quantile(0.9),
    latencyP95Ms: quantile(0.95),
    latencyP99Ms: quantile(0.99),
    latencyMeanMs: latency.count > 0 ? latency.sum / latency.count : 0,
    inputTokens: aggregate.inputTokens,
    outputTokens: aggregate.outputTokens,
    costUsd: aggregate.costUsd,
    fallbacks: aggregate.fallbacks,
    feedback: Object.fromEntries(Object.entries(aggregate.feedback).filter(([, sums]: [string, ScoreSums]) => sums.count > 0).map(([name, sums]) => [name, scoreSummary(sums)])),
    successRate: aggregate.count > 0 ? (aggregate.count - failures) / aggregate.count : 0,
  };
}

async function mapConcurrently<T, R>(items: T[], concurrency: number, map: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await map(items[index]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  return results;
}
