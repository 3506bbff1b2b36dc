// Prompt versions of one pipeline side by side (GetPromptVersionStats): each version's runs,
// success, latency, cost and feedback, and each candidate against its baseline.
import { useEffect, useId, useState } from 'preact/hooks';
import { call } from '../../api.js';
import { ErrorNotice } from '../../ui/error-notice.js';
import { formatCost, formatCount, formatMs } from '../../ui/format.js';
import type { GetPromptVersionStatsResponse as PromptStatsResponse, PromptVersionComparison, PromptVersionStats, ScoreSummary } from '../../api-types.js';

const percent = (rate: number | undefined) => `${((rate ?? 0) * 100).toFixed(1)}%`;
const signed = (value: number | undefined, format: (value: number) => string) => {
  const number = value ?? 0;
  return number > 0 ? `+${format(number)}` : number < 0 ? `−${format(-number)}` : format(0);
};
// The monitor answers p = 1 when there is not enough data for the test, as when there is no difference.
const pValue = (value: number | undefined) => ((value ?? 0) >= 1 ? 'p = 1: no difference, or too few runs' : (value ?? 0) < 0.001 ? 'p < 0.001' : `p ${(value ?? 0).toFixed(3)}`);

function score(summary: ScoreSummary | undefined): string {
  if (!summary?.count) return 'no feedback';
  return `${(summary.mean ?? 0).toFixed(2)} (${(summary.ci95Low ?? 0).toFixed(2)}–${(summary.ci95High ?? 0).toFixed(2)}, ${formatCount(summary.count)})`;
}

export function PromptStatsPanel({ pipelines, startTime, refreshed }: { pipelines: Array<{ name: string; label: string }>; startTime: string; refreshed: number }) {
  const selectId = useId();
  const [chosen, setChosen] = useState<string | null>(null);
  const pipeline = chosen && pipelines.some((entry) => entry.name === chosen) ? chosen : pipelines[0]?.name;
  const [stats, setStats] = useState<PromptStatsResponse | null>(null);
  const [error, setError] = useState<unknown>(null);

  useEffect(() => {
    if (!pipeline) return;
    const controller = new AbortController();
    call<PromptStatsResponse>('GET', `/v1/pipelines/${encodeURIComponent(pipeline)}/prompt-stats`, undefined, { query: { startTime }, signal: controller.signal })
      .then((answer) => {
        setStats(answer);
        setError(null);
      })
      .catch((failure: unknown) => {
        if (!controller.signal.aborted) setError(failure);
      });
    return () => controller.abort();
  }, [pipeline, startTime, refreshed]);

  if (!pipeline) return <p class="muted">No pipeline has run in this range yet.</p>;
  const versions = stats?.versions ?? [];
  const comparisons = stats?.comparisons ?? [];
  return (
    <div>
      <div class="pipeline-picker">
        <label for={selectId}>Pipeline</label>
        <select id={selectId} value={pipeline} onChange={(event) => setChosen((event.target as HTMLSelectElement).value)}>
          {pipelines.map((entry) => (
            <option key={entry.name} value={entry.name}>
              {entry.label}
            </option>
          ))}
        </select>
      </div>
      <ErrorNotice error={error} title="Could not read the prompt versions' figures" />
      {stats === null && !error ? <p class="muted">Loading the prompt versions…</p> : null}
      {stats !== null && versions.length === 0 ? <p class="muted">No runs of {pipeline} in this range yet.</p> : null}
      {versions.length > 0 ? (
        <table aria-label={`Prompt versions of ${pipeline}`}>
          <thead>
            <tr>
              <th scope="col">Step</th>
              <th scope="col">Version</th>
              <th scope="col" class="num">Runs</th>
              <th scope="col" class="num">Success</th>
              <th scope="col" class="num">p50</th>
              <th scope="col" class="num">p95</th>
              <th scope="col" class="num">Mean cost</th>
              <th scope="col">Score (95% CI, count)</th>
            </tr>
          </thead>
          <tbody>
            {versions.map((version) => (
              <tr key={`${version.step}/${version.version}`}>
                <td>{version.step}</td>
                <th scope="row">
                  <span class="mono">{version.version}</span> {version.baseline ? <span class="badge">baseline</span> : null}
                </th>
                <td class="num">{formatCount(version.runs ?? '0')}</td>
                <td class="num">{percent(version.successRate)}</td>
                <td class="num">{formatMs(version.latencyP50Ms ?? 0)}</td>
                <td class="num">{formatMs(version.latencyP95Ms ?? 0)}</td>
                <td class="num">{formatCost(version.costUsdMean ?? 0)}</td>
                <td>{score(version.score)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      {comparisons.length > 0 ? (
        <table aria-label={`Candidates against their baselines in ${pipeline}`}>
          <thead>
            <tr>
              <th scope="col">Step</th>
              <th scope="col">Candidate vs baseline</th>
              <th scope="col" class="num">Success Δ</th>
              <th scope="col" class="num">Score Δ</th>
              <th scope="col" class="num">p50 Δ</th>
              <th scope="col" class="num">Mean cost Δ</th>
            </tr>
          </thead>
          <tbody>
            {comparisons.map((comparison) => (
              <tr key={`${comparison.step}/${comparison.candidate}`}>
                <td>{comparison.step}</td>
                <th scope="row">
                  <span class="mono">{comparison.candidate}</span> vs <span class="mono">{comparison.baseline}</span>
                </th>
                <td class="num">
                  {signed((comparison.successRateDelta ?? 0) * 100, (value) => `${value.toFixed(1)} pt`)} ({pValue(comparison.successRatePValue)})
                </td>
                <td class="num">
                  {signed(comparison.scoreDelta, (value) => value.toFixed(2))} ({pValue(comparison.scorePValue)})
                </td>
                <td class="num">{signed(comparison.latencyP50DeltaMs, formatMs)}</td>
                <td class="num">{signed(comparison.costUsdMeanDelta, formatCost)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : versions.length > 0 ? (
        <p class="muted">No candidate version is being compared with a baseline in this pipeline.</p>
      ) : null}
    </div>
  );
}
