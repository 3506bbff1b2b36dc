// The A/B comparison of one step's prompt versions as the monitor measures them from completed
// runs (GetPromptVersionStats): per version its runs, success rate, latency, cost and the mean of
// one feedback score; per candidate its differences from the baseline with their p-values, and
// in words whether that is a finding, no difference yet, or too little data.
import { formatCost, formatCount, formatMs } from '../../ui/format.js';
import { formatPValue, formatScore, formatShare, formatSigned } from './prompt-format.js';
import { GUARD_DEFAULTS, type PromptRollout, type PromptVersionComparison, type PromptVersionStats } from './prompt-types.js';

export interface StepComparisonProps {
  label: string;
  versions: PromptVersionStats[];
  comparisons: PromptVersionComparison[];
  scoreName: string;
  rollout: PromptRollout | undefined;
}

export function StepComparison({ label, versions, comparisons, scoreName, rollout }: StepComparisonProps) {
  if (versions.length === 0) {
    return <p class="muted">No completed runs of {label} in this time range: nothing to compare yet.</p>;
  }
  const runsOf = new Map(versions.map((version) => [version.version ?? '', Number(version.runs ?? 0)]));
  const scoreCountOf = new Map(versions.map((version) => [version.version ?? '', Number(version.score?.count ?? 0)]));
  return (
    <>
      <div class="table-scroll">
        <table class="prompt-stats">
          <caption class="visually-hidden">Figures per prompt version of {label}</caption>
          <thead>
            <tr>
              <th scope="col">Version</th>
              <th scope="col" class="num">
                Runs
              </th>
              <th scope="col" class="num">
                Success rate
              </th>
              <th scope="col" class="num">
                Latency p50
              </th>
              <th scope="col" class="num">
                Latency p95
              </th>
              <th scope="col" class="num">
                Mean cost
              </th>
              <th scope="col" class="num">
                Score “{scoreName}” mean (95% CI)
              </th>
            </tr>
          </thead>
          <tbody>
            {versions.map((version) => (
              <tr key={version.version} data-version={version.version}>
                <th scope="row">
                  <code>{version.version}</code>
                  {version.baseline ? <span class="badge">reference</span> : null}
                </th>
                <td class="num">{formatCount(version.runs ?? '0')}</td>
                <td class="num">{formatShare(version.successRate)}</td>
                <td class="num">{formatMs(version.latencyP50Ms ?? 0)}</td>
                <td class="num">{formatMs(version.latencyP95Ms ?? 0)}</td>
                <td class="num">{formatCost(version.costUsdMean ?? 0)}</td>
                <td class="num">
                  {Number(version.score?.count ?? 0) > 0 ? (
                    <>
                      {formatScore(version.score?.mean)} ({formatScore(version.score?.ci95Low)} to {formatScore(version.score?.ci95High)}), {formatCount(version.score?.count)}{' '}
                      {Number(version.score?.count) === 1 ? 'score' : 'scores'}
                    </>
                  ) : (
                    <span class="muted">no scores</span>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {comparisons.length === 0 ? (
        <p class="muted">Only one version has runs in this range: there is no second arm to compare.</p>
      ) : (
        <div class="table-scroll">
          <p class="muted">
            Differences are against the reference version: the rollout's baseline when it has runs in the range, else <code>yaml</code> when it has, else the version with the most runs.
          </p>
          <table class="prompt-comparisons">
            <caption class="visually-hidden">Each version of {label} against the reference version</caption>
            <thead>
              <tr>
                <th scope="col">Version vs reference</th>
                <th scope="col" class="num">
                  Success rate difference
                </th>
                <th scope="col" class="num">
                  Score difference
                </th>
                <th scope="col" class="num">
                  Latency p50 difference
                </th>
                <th scope="col" class="num">
                  Mean cost difference
                </th>
                <th scope="col">Verdict</th>
              </tr>
            </thead>
            <tbody>
              {comparisons.map((comparison) => {
                const candidate = comparison.candidate ?? '';
                const baseline = comparison.baseline ?? '';
                const scored = (scoreCountOf.get(candidate) ?? 0) > 0 && (scoreCountOf.get(baseline) ?? 0) > 0;
                return (
                  <tr key={candidate} data-candidate={candidate}>
                    <th scope="row">
                      <code>{candidate}</code> vs <code>{baseline}</code>
                    </th>
                    <td class="num">
                      {formatSigned(comparison.successRateDelta, formatShare)} <span class="muted">({formatPValue(comparison.successRatePValue)})</span>
                    </td>
                    <td class="num">
                      {scored ? (
                        <>
                          {formatSigned(comparison.scoreDelta, formatScore)} <span class="muted">({formatPValue(comparison.scorePValue)})</span>
                        </>
                      ) : (
                        <span class="muted">no “{scoreName}” scores on both sides</span>
                      )}
                    </td>
                    <td class="num">{formatSigned(comparison.latencyP50DeltaMs, formatMs)}</td>
                    <td class="num">{formatSigned(comparison.costUsdMeanDelta, formatCost)}</td>
                    <td>{verdict(comparison, runsOf.get(candidate) ?? 0, runsOf.get(baseline) ?? 0, scored, scoreName, rollout)}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}

/**
 * What the comparison says, in words. The runs a side a decision needs and the significance are
 * the guard's when this candidate is the one guarded, else the guard's defaults. A p-value left
 * out of the JSON is 0 (proto3 omits zeros); the monitor answers 1 when it lacks the data.
 */
function verdict(comparison: PromptVersionComparison, candidateRuns: number, baselineRuns: number, scored: boolean, scoreName: string, rollout: PromptRollout | undefined): string {
  const guarded = rollout?.guard && rollout.candidate === comparison.candidate ? rollout.guard : undefined;
  const minRuns = guarded?.minRuns || GUARD_DEFAULTS.minRuns;
  const significance = guarded?.significance || GUARD_DEFAULTS.significance;
  const findings: string[] = [];
  if ((comparison.successRatePValue ?? 0) < significance) {
    findings.push(`success rate ${(comparison.successRateDelta ?? 0) > 0 ? 'higher' : 'lower'} (${formatPValue(comparison.successRatePValue)})`);
  }
  if (scored && (comparison.scorePValue ?? 0) < significance) {
    findings.push(`“${scoreName}” score ${(comparison.scoreDelta ?? 0) > 0 ? 'higher' : 'lower'} (${formatPValue(comparison.scorePValue)})`);
  }
  if (candidateRuns < minRuns || baselineRuns < minRuns) {
    const tooFew = `Too little data: ${candidateRuns} and ${baselineRuns} runs; a decision needs at least ${minRuns} a side.`;
    return findings.length > 0 ? `${tooFew} So far: ${findings.join('; ')}.` : tooFew;
  }
  if (findings.length > 0) return `Significant at p < ${significance}: ${findings.join('; ')}.`;
  return `No significant difference yet at p < ${significance} (${candidateRuns} and ${baselineRuns} runs).`;
}
