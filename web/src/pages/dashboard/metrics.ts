// What the dashboard reads from the monitor (through the gateway), as proto3 JSON: default values
// are absent, int64 are strings. The helpers turn the rows into the figures the charts show.
import { call } from '../../api.js';


export interface MetricsRow {
  group?: Record<string, string>;
  minute?: string;
  count?: string | number;
  errorsByStatus?: Record<string, string>;
  latencyP50Ms?: number;
  latencyP90Ms?: number;
  latencyP95Ms?: number;
  latencyP99Ms?: number;
  latencyMeanMs?: number;
  inputTokens?: string | number;
  outputTokens?: string | number;
  costUsd?: number;
  fallbacks?: string;
  successRate?: number;
}

export interface MetricsResponse {
  rows?: MetricsRow[];
  startTime?: string;
  endTime?: string;
}

export interface MetricsRequest {
  filter?: { kind?: string; pipeline?: string; provider?: string; model?: string };
  startTime?: string;
  endTime?: string;
  groupBy?: string[];
  perMinute?: boolean;
}

/** The ranges the picker offers; the monitor keeps 24 h by default (MONITOR_RETENTION_HOURS). */
export const RANGES = [
  { id: '15m', label: 'Last 15 minutes', minutes: 15 },
  { id: '1h', label: 'Last hour', minutes: 60 },
  { id: '6h', label: 'Last 6 hours', minutes: 360 },
  { id: '24h', label: 'Last 24 hours', minutes: 1440 },
] as const;
export type RangeId = (typeof RANGES)[number]['id'];

const MINUTE_MS = 60_000;

/**
 * The range's start: `minutes` whole minutes ending with the current one. The monitor rounds the
 * range out to whole minutes and refuses one longer than its retention, so the start is the
 * first minute of exactly `minutes` (not one more once rounded).
 */
export function rangeStart(minutes: number, now = Date.now()): Date {
  return new Date((Math.floor(now / MINUTE_MS) - minutes + 1) * MINUTE_MS);
}

export const num = (value: string | number | undefined): number => (value === undefined ? 0 : Number(value));

export function errorsTotal(row: MetricsRow | undefined): number {
  return Object.values(row?.errorsByStatus ?? {}).reduce((sum, count) => sum + num(count), 0);
}

/** Everything the dashboard's figures come from, for one range. */
export interface DashboardFigures {
  startTime: Date;
  endTime: Date;
  /** Pipeline runs over the whole range. */
  runs: MetricsRow | undefined;
  /** Pipeline runs per minute, every minute of the range (a minute without runs: count 0). */
  runMinutes: Array<{ minute: Date; row: MetricsRow | undefined }>;
  /** Provider calls per provider and model. */
  completions: MetricsRow[];
  /** Pipeline runs per pipeline (the prompt comparison starts on the busiest). */
  runsByPipeline: MetricsRow[];
  readAt: Date;
}

export async function readFigures(minutes: number, signal: AbortSignal): Promise<DashboardFigures> {
  const startTime = rangeStart(minutes).toISOString();
  const metrics = (body: MetricsRequest) => call<MetricsResponse>('POST', '/v1/monitor/metrics', body, { signal });
  const [runs, completions, byPipeline] = await Promise.all([
    metrics({ filter: { kind: 'run' }, startTime, perMinute: true }),
    metrics({ filter: { kind: 'completion' }, startTime, groupBy: ['METRIC_DIMENSION_PROVIDER', 'METRIC_DIMENSION_MODEL'] }),
    metrics({ filter: { kind: 'run' }, startTime, groupBy: ['METRIC_DIMENSION_PIPELINE'] }),
  ]);
  const runRows = runs.rows ?? [];
  const start = new Date(runs.startTime ?? startTime);
  const end = new Date(runs.endTime ?? Date.now());
  // Minutes without events are not rows: fill them in, so the time axis is even.
  const byMinute = new Map(runRows.filter((row) => row.minute).map((row) => [Date.parse(row.minute!), row]));
  const runMinutes: DashboardFigures['runMinutes'] = [];
  for (let minute = start.getTime(); minute < end.getTime(); minute += MINUTE_MS) runMinutes.push({ minute: new Date(minute), row: byMinute.get(minute) });
  return {
    startTime: start,
    endTime: end,
    runs: runRows.find((row) => !row.minute),
    runMinutes,
    completions: (completions.rows ?? []).filter((row) => !row.minute).sort((a, b) => num(b.count) - num(a.count)),
    runsByPipeline: (byPipeline.rows ?? []).filter((row) => !row.minute).sort((a, b) => num(b.count) - num(a.count)),
    readAt: new Date(),
  };
}

export function minuteLabel(minute: Date, rangeMinutes: number): string {
  const time = minute.toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit' });
  // Over a day the same hour comes twice: say which day.
  return rangeMinutes > 360 ? `${minute.toLocaleDateString('en-GB', { day: '2-digit', month: 'short' })} ${time}` : time;
}
