// The dashboard: throughput, latency percentiles, errors by status, cost and tokens per provider
// and model, breakers, prompt versions, alerts and system health, for a time range, kept current
// by Server-Sent Events (the health as it changes; run events say when to read the figures again).
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { call } from '../../api.js';
import { ErrorNotice } from '../../ui/error-notice.js';
import { formatCost, formatCount, formatMs } from '../../ui/format.js';
import { AlertsPanel, type AlertsResponse } from './alerts-panel.js';
import { ChartFigure, usePalette, type Series } from './chart-figure.js';
import { BreakersTable, HealthPanel, type BreakerState, type SystemHealth } from './health-panel.js';
import { keepStreaming, type LiveState } from './live-stream.js';
import { RANGES, errorsTotal, minuteLabel, num, rangeStart, readFigures, type DashboardFigures, type MetricsRow, type RangeId } from './metrics.js';
import { PromptStatsPanel } from './prompt-stats-panel.js';
import './dashboard.css';

/** Figures are read again at most this often while runs keep coming. */
const REFRESH_THROTTLE_MS = 2_000;
/** The monitor aggregates an event a moment after it is published: wait this long after one. */
const AFTER_EVENT_MS = 1_000;
/** Read again this often anyway: the minutes move on and alerts are evaluated without runs. */
const PERIODIC_REFRESH_MS = 30_000;
const RANGE_STORAGE = 'elexirion.dashboard.range';

interface TelemetryEvent {
  event?: { kind?: string; time?: string; providerBreaker?: { provider?: string; state?: string } };
}

/** Reads again when asked, at most every REFRESH_THROTTLE_MS, and once more after the events stop. */
function useThrottledRefresh(): { token: number; request(afterEvent?: boolean): void } {
  const [token, setToken] = useState(0);
  const state = useRef({ timer: 0, lastAt: 0, lastEventAt: 0 });
  useEffect(() => () => clearTimeout(state.current.timer), []);
  const request = useMemo(() => {
    const schedule = (delay: number) => {
      state.current.timer = window.setTimeout(() => {
        state.current.timer = 0;
        state.current.lastAt = Date.now();
        setToken((value) => value + 1);
        // Events that came in the meantime may not be aggregated yet: one more read after them.
        if (Date.now() - state.current.lastEventAt < REFRESH_THROTTLE_MS) schedule(REFRESH_THROTTLE_MS);
      }, delay);
    };
    return (afterEvent = true) => {
      if (afterEvent) state.current.lastEventAt = Date.now();
      if (state.current.timer) return;
      schedule(Math.max(AFTER_EVENT_MS, state.current.lastAt + REFRESH_THROTTLE_MS - Date.now()));
    };
  }, []);
  return { token, request };
}

export function DashboardPage() {
  const [rangeId, setRangeId] = useState<RangeId>(() => {
    const stored = localStorage.getItem(RANGE_STORAGE);
    return RANGES.some((range) => range.id === stored) ? (stored as RangeId) : '1h';
  });
  const range = RANGES.find((entry) => entry.id === rangeId) ?? RANGES[1];
  const refresh = useThrottledRefresh();

  const [figures, setFigures] = useState<DashboardFigures | null>(null);
  const [figuresError, setFiguresError] = useState<unknown>(null);
  const [alerts, setAlerts] = useState<AlertsResponse | null>(null);
  const [alertsError, setAlertsError] = useState<unknown>(null);
  const [pipelines, setPipelines] = useState<string[]>([]);
  const [versioned, setVersioned] = useState<Map<string, number>>(new Map());

  const [health, setHealth] = useState<SystemHealth | null>(null);
  const [healthState, setHealthState] = useState<{ state: LiveState; error?: unknown }>({ state: 'connecting' });
  const [eventsState, setEventsState] = useState<{ state: LiveState; error?: unknown }>({ state: 'connecting' });
  const [breakers, setBreakers] = useState<Record<string, BreakerState>>({});

  // The figures and alerts: on a range change, when runs happened, and every PERIODIC_REFRESH_MS.
  useEffect(() => {
    const controller = new AbortController();
    readFigures(range.minutes, controller.signal)
      .then((read) => {
        setFigures(read);
        setFiguresError(null);
      })
      .catch((error: unknown) => {
        if (!controller.signal.aborted) setFiguresError(error);
      });
    call<AlertsResponse>('GET', '/v1/alerts', undefined, { signal: controller.signal })
      .then((read) => {
        setAlerts(read);
        setAlertsError(null);
      })
      .catch((error: unknown) => {
        if (!controller.signal.aborted) setAlertsError(error);
      });
    const periodic = window.setTimeout(() => refresh.request(false), PERIODIC_REFRESH_MS);
    return () => {
      controller.abort();
      clearTimeout(periodic);
    };
  }, [range.minutes, refresh.token]);

  // The pipelines the prompt comparison can show (a key without the pipelines scope: those that ran).
  useEffect(() => {
    const controller = new AbortController();
    call<{ pipelines?: Array<{ name: string }> }>('GET', '/v1/pipelines', undefined, { signal: controller.signal })
      .then((read) => setPipelines((read.pipelines ?? []).map((pipeline) => pipeline.name)))
      .catch(() => {});
    return () => controller.abort();
  }, []);

  // The pipelines with prompt versions in the registry, and how many: those have something to compare.
  useEffect(() => {
    const controller = new AbortController();
    call<{ steps?: Array<{ pipeline?: string; versions?: unknown[] }> }>('GET', '/v1/prompts', undefined, { signal: controller.signal })
      .then((read) => {
        const counts = new Map<string, number>();
        for (const step of read.steps ?? []) if (step.pipeline && step.versions?.length) counts.set(step.pipeline, (counts.get(step.pipeline) ?? 0) + step.versions.length);
        setVersioned(counts);
      })
      .catch(() => {});
    return () => controller.abort();
  }, [refresh.token]);

  // The health: the current one at once, then every change.
  useEffect(() => {
    const controller = new AbortController();
    void keepStreaming<{ health?: SystemHealth }>(
      '/v1/health/watch',
      { onEvent: (data) => setHealth(data.health ?? null), onState: (state, error) => setHealthState({ state, error }) },
      { signal: controller.signal },
    );
    return () => controller.abort();
  }, []);

  // Run and completion events say the figures changed; breaker events are the breakers' states.
  // The last minute is read again on each connection: a breaker not closed is reported again
  // every few seconds, and runs missed while away make the figures read again.
  useEffect(() => {
    const controller = new AbortController();
    void keepStreaming<TelemetryEvent>(
      '/v1/telemetry/events',
      {
        onEvent: ({ event }) => {
          const breaker = event?.providerBreaker;
          if (event?.kind === 'breaker' && breaker?.provider) {
            const reported = { state: breaker.state ?? 'closed', at: event.time ?? new Date().toISOString() };
            setBreakers((current) => {
              const previous = current[breaker.provider!];
              // Replayed reports may come after newer ones: the latest report wins.
              return previous && Date.parse(previous.at) > Date.parse(reported.at) ? current : { ...current, [breaker.provider!]: reported };
            });
          } else refresh.request();
        },
        onState: (state, error) => setEventsState({ state, error }),
      },
      { signal: controller.signal, query: () => ({ kinds: ['run', 'completion', 'breaker'], since: new Date(Date.now() - 60_000).toISOString() }) },
    );
    return () => controller.abort();
  }, []);

  const pipelineChoices = useMemo(() => {
    // Pipelines with prompt versions first (the most runs first), then the busiest of the rest:
    // the first is shown until one is picked.
    const runs = new Map((figures?.runsByPipeline ?? []).map((row) => [row.group?.pipeline ?? '', num(row.count)]));
    const names = [...new Set([...runs.keys(), ...versioned.keys(), ...pipelines])].filter(Boolean);
    return names
      .map((name) => ({ name, versions: versioned.get(name) ?? 0, runs: runs.get(name) ?? 0 }))
      .sort((a, b) => Number(b.versions > 0) - Number(a.versions > 0) || b.runs - a.runs || a.name.localeCompare(b.name))
      .map((entry) => ({ name: entry.name, label: entry.versions ? `${entry.name} (${entry.versions} ${entry.versions === 1 ? 'version' : 'versions'})` : entry.name }));
  }, [figures, pipelines, versioned]);

  const providers = useMemo(() => [...new Set((figures?.completions ?? []).map((row) => row.group?.provider ?? '').filter(Boolean))], [figures]);

  const stopped = [healthState, eventsState].find((entry) => entry.state === 'stopped');
  // The run events' stream answers only once a run happens: "connecting" there is waiting, not trouble.
  const live = healthState.state === 'live' && eventsState.state !== 'reconnecting' && !stopped;
  const liveLabel = stopped ? 'Not live' : live ? 'Live' : healthState.state === 'connecting' ? 'Connecting…' : 'Reconnecting…';

  return (
    <div class="dashboard">
      <div class="dashboard-head">
        <h1>Dashboard</h1>
        <label>
          Time range
          <select
            value={rangeId}
            onChange={(event) => {
              const chosen = (event.target as HTMLSelectElement).value as RangeId;
              // Kept at once (not in an effect): a reload right after the choice keeps it.
              localStorage.setItem(RANGE_STORAGE, chosen);
              setRangeId(chosen);
            }}
          >
            {RANGES.map((entry) => (
              <option key={entry.id} value={entry.id}>
                {entry.label}
              </option>
            ))}
          </select>
        </label>
        <p class="live-state" role="status">
          <span class="visually-hidden">Live updates: </span>
          <span class={`badge ${stopped ? 'bad' : live ? 'ok' : 'warn'}`}>{liveLabel}</span>
        </p>
        <p class="muted read-at">{figures ? `Figures read at ${figures.readAt.toLocaleTimeString()}` : ''}</p>
      </div>
      {stopped ? <ErrorNotice error={stopped.error} title="Live updates stopped" /> : null}
      <ErrorNotice error={figuresError} title="Could not read the metrics" />
      {!figures && !figuresError ? <p class="muted">Loading the figures…</p> : null}
      {figures ? <Figures figures={figures} rangeMinutes={range.minutes} rangeLabel={range.label.toLowerCase()} /> : null}

      <div class="grid">
        <section class="card" aria-labelledby="dashboard-alerts">
          <h2 id="dashboard-alerts">Active alerts</h2>
          <ErrorNotice error={alertsError} title="Could not read the alerts" />
          {alerts ? <AlertsPanel alerts={alerts} /> : alertsError ? null : <p class="muted">Loading the alerts…</p>}
        </section>
        <section class="card" aria-labelledby="dashboard-breakers">
          <h2 id="dashboard-breakers">Provider breakers</h2>
          <BreakersTable providers={providers} breakers={breakers} />
        </section>
        <section class="card" aria-labelledby="dashboard-health">
          <h2 id="dashboard-health">System health</h2>
          {healthState.state === 'reconnecting' && healthState.error ? <ErrorNotice error={healthState.error} title="The system health cannot be read now; trying again" /> : null}
          <HealthPanel health={health} />
        </section>
      </div>

      <section class="card" aria-labelledby="dashboard-prompts">
        <h2 id="dashboard-prompts">Prompt versions</h2>
        {figures ? <PromptStatsPanel pipelines={pipelineChoices} startTime={figures.startTime.toISOString()} refreshed={refresh.token} /> : <p class="muted">Loading…</p>}
      </section>
    </div>
  );
}

function Figures({ figures, rangeMinutes, rangeLabel }: { figures: DashboardFigures; rangeMinutes: number; rangeLabel: string }) {
  const palette = usePalette();
  // Runs in the accent colour, failures in the danger colour (memoised: a new palette redraws).
  const throughputPalette = useMemo(() => ({ ...palette, series: [palette.series[0]!, palette.series[2]!] }), [palette]);
  const errorsPalette = useMemo(() => ({ ...palette, series: [palette.series[2]!] }), [palette]);
  const runs = figures.runs;
  const total = num(runs?.count);
  const failed = errorsTotal(runs);
  const active = figures.runMinutes.filter((entry) => num(entry.row?.count) > 0);
  const labels = useMemo(() => figures.runMinutes.map((entry) => minuteLabel(entry.minute, rangeMinutes)), [figures, rangeMinutes]);
  const throughput = useMemo<Series[]>(
    () => [
      { label: 'Runs', values: figures.runMinutes.map((entry) => num(entry.row?.count)) },
      { label: 'Failed', values: figures.runMinutes.map((entry) => errorsTotal(entry.row)) },
    ],
    [figures],
  );
  const latency = useMemo<Series[]>(() => {
    // A minute without runs has no latency: a gap, not a zero.
    const of = (pick: (row: MetricsRow) => number | undefined) => figures.runMinutes.map((entry) => (num(entry.row?.count) > 0 ? (pick(entry.row!) ?? 0) : null));
    return [
      { label: 'p50', values: of((row) => row.latencyP50Ms) },
      { label: 'p90', values: of((row) => row.latencyP90Ms) },
      { label: 'p99', values: of((row) => row.latencyP99Ms) },
    ];
  }, [figures]);
  const errors = Object.entries(runs?.errorsByStatus ?? {})
    .map(([status, count]) => [status, num(count)] as const)
    .sort((a, b) => b[1] - a[1]);
  const errorSeries = useMemo<Series[]>(() => [{ label: 'Failed runs', values: errors.map(([, count]) => count) }], [figures]);
  const errorLabels = useMemo(() => errors.map(([status]) => status), [figures]);
  const completionLabels = useMemo(() => figures.completions.map((row) => `${row.group?.provider ?? '?'} / ${row.group?.model ?? '?'}`), [figures]);
  const tokenSeries = useMemo<Series[]>(
    () => [
      { label: 'Input tokens', values: figures.completions.map((row) => num(row.inputTokens)) },
      { label: 'Output tokens', values: figures.completions.map((row) => num(row.outputTokens)) },
    ],
    [figures],
  );
  const peak = Math.max(0, ...throughput[0]!.values.map((value) => value ?? 0));

  return (
    <>
      <section aria-labelledby="dashboard-totals">
        <h2 id="dashboard-totals" class="visually-hidden">
          Totals
        </h2>
        <dl class="totals">
          <Total name="Runs" figure="runs" value={formatCount(total)} />
          <Total name="Failed" figure="failed" value={formatCount(failed)} />
          <Total name="Success rate" figure="success-rate" value={total ? `${((runs?.successRate ?? 0) * 100).toFixed(1)}%` : '-'} />
          <Total name="p50" figure="p50" value={total ? formatMs(runs?.latencyP50Ms ?? 0) : '-'} />
          <Total name="p90" figure="p90" value={total ? formatMs(runs?.latencyP90Ms ?? 0) : '-'} />
          <Total name="p99" figure="p99" value={total ? formatMs(runs?.latencyP99Ms ?? 0) : '-'} />
          <Total name="Tokens in / out" figure="tokens" value={`${formatCount(num(runs?.inputTokens))} / ${formatCount(num(runs?.outputTokens))}`} />
          <Total name="Cost" figure="cost" value={formatCost(runs?.costUsd ?? 0)} />
        </dl>
      </section>

      <div class="grid">
        <section class="card" aria-labelledby="dashboard-throughput">
          <h2 id="dashboard-throughput">Throughput</h2>
          {total === 0 ? (
            <p class="muted">No runs in this range yet.</p>
          ) : (
            <ChartFigure
              kind="bar"
              labels={labels}
              series={throughput}
              palette={throughputPalette}
              yTitle="runs per minute"
              summary={`Pipeline runs per minute over the ${rangeLabel}: ${formatCount(total)} runs (${formatCount(failed)} failed) in ${active.length} ${active.length === 1 ? 'minute' : 'minutes'} with runs, at most ${formatCount(peak)} in a minute.`}
              table={
                <table aria-label="Runs per minute">
                  <thead>
                    <tr>
                      <th scope="col">Minute</th>
                      <th scope="col" class="num">Runs</th>
                      <th scope="col" class="num">Failed</th>
                    </tr>
                  </thead>
                  <tbody>
                    {active.map((entry) => (
                      <tr key={entry.minute.getTime()}>
                        <th scope="row">{minuteLabel(entry.minute, rangeMinutes)}</th>
                        <td class="num">{formatCount(num(entry.row?.count))}</td>
                        <td class="num">{formatCount(errorsTotal(entry.row))}</td>
                      </tr>
                    ))}
                  </tbody>
                  <tfoot>
                    <tr>
                      <th scope="row">Whole range</th>
                      <td class="num">{formatCount(total)}</td>
                      <td class="num">{formatCount(failed)}</td>
                    </tr>
                  </tfoot>
                </table>
              }
            />
          )}
        </section>

        <section class="card" aria-labelledby="dashboard-latency">
          <h2 id="dashboard-latency">Latency percentiles</h2>
          {total === 0 ? (
            <p class="muted">No runs in this range yet.</p>
          ) : (
            <ChartFigure
              kind="line"
              labels={labels}
              series={latency}
              palette={palette}
              yTitle="milliseconds"
              summary={`Run latency over the ${rangeLabel}: p50 ${formatMs(runs?.latencyP50Ms ?? 0)}, p90 ${formatMs(runs?.latencyP90Ms ?? 0)}, p99 ${formatMs(runs?.latencyP99Ms ?? 0)}.`}
              table={
                <table aria-label="Latency per minute">
                  <thead>
                    <tr>
                      <th scope="col">Minute</th>
                      <th scope="col" class="num">p50</th>
                      <th scope="col" class="num">p90</th>
                      <th scope="col" class="num">p99</th>
                    </tr>
                  </thead>
                  <tbody>
                    {active.map((entry) => (
                      <tr key={entry.minute.getTime()}>
                        <th scope="row">{minuteLabel(entry.minute, rangeMinutes)}</th>
                        <td class="num">{formatMs(entry.row?.latencyP50Ms ?? 0)}</td>
                        <td class="num">{formatMs(entry.row?.latencyP90Ms ?? 0)}</td>
                        <td class="num">{formatMs(entry.row?.latencyP99Ms ?? 0)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              }
            />
          )}
        </section>

        <section class="card" aria-labelledby="dashboard-errors">
          <h2 id="dashboard-errors">Errors by status</h2>
          {errors.length === 0 ? (
            <p class="muted">{total === 0 ? 'No runs in this range yet.' : 'No failed runs in this range.'}</p>
          ) : (
            <ChartFigure
              kind="bar"
              labels={errorLabels}
              series={errorSeries}
              palette={errorsPalette}
              yTitle="failed runs"
              summary={`Failed runs by status over the ${rangeLabel}: ${errors.map(([status, count]) => `${status} ${formatCount(count)}`).join(', ')}.`}
              table={
                <table aria-label="Failed runs by status">
                  <thead>
                    <tr>
                      <th scope="col">Status</th>
                      <th scope="col" class="num">Failed runs</th>
                    </tr>
                  </thead>
                  <tbody>
                    {errors.map(([status, count]) => (
                      <tr key={status}>
                        <th scope="row">{status}</th>
                        <td class="num">{formatCount(count)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              }
            />
          )}
        </section>

      </div>

      <section class="card" aria-labelledby="dashboard-providers">
        <h2 id="dashboard-providers">Cost and tokens per provider and model</h2>
        {figures.completions.length === 0 ? (
          <p class="muted">No provider calls in this range yet.</p>
        ) : (
          <>
            <ProvidersTable rows={figures.completions} />
            <ChartFigure
              kind="bar"
              labels={completionLabels}
              series={tokenSeries}
              palette={palette}
              yTitle="tokens"
              summary={`Tokens per provider and model over the ${rangeLabel}: ${figures.completions
                .map((row, index) => `${completionLabels[index]} ${formatCount(num(row.inputTokens))} in, ${formatCount(num(row.outputTokens))} out`)
                .join('; ')}.`}
              table={null}
            />
          </>
        )}
      </section>
    </>
  );
}

function Total({ name, figure, value }: { name: string; figure: string; value: string }) {
  return (
    <div class="total">
      <dt>{name}</dt>
      <dd data-figure={figure}>{value}</dd>
    </div>
  );
}

function ProvidersTable({ rows }: { rows: MetricsRow[] }) {
  return (
    <table aria-label="Provider calls per provider and model">
      <thead>
        <tr>
          <th scope="col">Provider</th>
          <th scope="col">Model</th>
          <th scope="col" class="num">Calls</th>
          <th scope="col" class="num">Failed</th>
          <th scope="col" class="num">Input tokens</th>
          <th scope="col" class="num">Output tokens</th>
          <th scope="col" class="num">Cost</th>
          <th scope="col" class="num">p50</th>
        </tr>
      </thead>
      <tbody>
        {rows.map((row) => (
          <tr key={`${row.group?.provider}/${row.group?.model}`}>
            <th scope="row">{row.group?.provider}</th>
            <td class="mono">{row.group?.model}</td>
            <td class="num">{formatCount(num(row.count))}</td>
            <td class="num">{formatCount(errorsTotal(row))}</td>
            <td class="num">{formatCount(num(row.inputTokens))}</td>
            <td class="num">{formatCount(num(row.outputTokens))}</td>
            <td class="num">{formatCost(row.costUsd ?? 0)}</td>
            <td class="num">{formatMs(row.latencyP50Ms ?? 0)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

