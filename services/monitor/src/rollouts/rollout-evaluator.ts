import { mean, percentile, twoProportionPValue, welchPValue, type VersionSample } from '../executions/prompt-version-stats.js';

/**
 * The guard's decision rules, as a pure function of the two arms' figures (see README.md). The
 * statistics are the executions area's (prompt-version-stats.ts); this file only says which test
 * decides what.
 */

/** What a guard can watch (prompts.proto PromptRolloutGuard.metric). */
export const GUARD_METRICS = ['success_rate', 'score', 'latency_p95_ms', 'cost_usd_mean'] as const;
export type GuardMetric = (typeof GUARD_METRICS)[number];

/** The guard with its defaults filled in (prompts.proto: score_name thumbs, min_runs 30, significance 0.05, max_runs 10 x min_runs). */
export interface GuardSettings {
  metric: GuardMetric;
  scoreName: string;
  minRuns: number;
  significance: number;
  maxRuns: number;
}

export const DEFAULT_GUARD = { metric: 'success_rate', scoreName: 'thumbs', minRuns: 30, significance: 0.05, maxRunsPerMinRuns: 10 } as const;
const SCORE_NAME = /^[a-z0-9_.-]{1,64}$/;

/** The guard as the registry holds it (the proto's fields, zero when unset). */
export interface GuardFields {
  metric: string;
  scoreName: string;
  minRuns: number;
  significance: number;
  maxRuns: number;
}

/** The guard's settings with defaults, or the problem that makes it unusable (naming the field). */
export function guardSettings(guard: GuardFields): GuardSettings | { problem: string } {
  const metric = guard.metric || DEFAULT_GUARD.metric;
  if (!(GUARD_METRICS as readonly string[]).includes(metric)) return { problem: `guard.metric must be one of ${GUARD_METRICS.join(', ')}, got ${JSON.stringify(metric.slice(0, 80))}` };
  const scoreName = guard.scoreName || DEFAULT_GUARD.scoreName;
  if (!SCORE_NAME.test(scoreName)) return { problem: `guard.score_name must be 1-64 characters of a-z 0-9 _ . -, got ${JSON.stringify(scoreName.slice(0, 80))}` };
  const minRuns = guard.minRuns || DEFAULT_GUARD.minRuns;
  if (!Number.isInteger(minRuns) || minRuns < 2) return { problem: `guard.min_runs must be an integer of at least 2, got ${minRuns}` };
  const significance = guard.significance || DEFAULT_GUARD.significance;
  if (!(significance > 0 && significance < 0.5)) return { problem: `guard.significance must be between 0 and 0.5, got ${significance}` };
  const maxRuns = guard.maxRuns || DEFAULT_GUARD.maxRunsPerMinRuns * minRuns;
  if (!Number.isInteger(maxRuns) || maxRuns < minRuns) return { problem: `guard.max_runs must be an integer of at least min_runs (${minRuns}), got ${maxRuns}` };
  return { metric: metric as GuardMetric, scoreName, minRuns, significance, maxRuns };
}

/** One arm's figures since the rollout started (a VersionSample; an arm without runs is empty). */
export type ArmFigures = Pick<VersionSample, 'runs' | 'successes' | 'latenciesMs' | 'costsUsd' | 'scores'>;

export const EMPTY_ARM: ArmFigures = { runs: 0, successes: 0, latenciesMs: [], costsUsd: [], scores: [] };

/** What was compared: the metric (or failure_rate for the early rollback), each arm's value and sample, the p-value. */
export interface Comparison {
  metric: GuardMetric | 'failure_rate';
  candidateValue: number;
  baselineValue: number;
  candidateRuns: number;
  baselineRuns: number;
  pValue: number;
}

export type RolloutVerdict =
  | { decision: 'hold'; reason: string; comparison: Comparison | undefined }
  | { decision: 'promote' | 'rollback'; reason: string; comparison: Comparison };

export interface EvaluationOptions {
  /** Runs each arm needs before the early failure check (capped at min_runs). */
  earlyMinRuns: number;
}

/** The reason of a rollback at max_runs without a significant difference. */
export const NO_IMPROVEMENT = 'no significant improvement; the baseline stays';

function failureRate(arm: ArmFigures): number {
  return arm.runs === 0 ? 0 : (arm.runs - arm.successes) / arm.runs;
}

function formatted(value: number): string {
  return String(Number(value.toPrecision(4)));
}

function pText(p: number): string {
  return p < 0.0001 ? 'p < 0.0001' : `p = ${formatted(p)}`;
}

interface MetricTest {
  /** The sample the metric is measured on: runs, or scored runs for "score". */
  size(arm: ArmFigures): number;
  value(arm: ArmFigures): number;
  /** Two-sided p-value of the difference. */
  pValue(candidate: ArmFigures, baseline: ArmFigures): number;
  higherIsBetter: boolean;
}

const METRIC_TESTS: Record<GuardMetric, MetricTest> = {
  success_rate: {
    size: (arm) => arm.runs,
    value: (arm) => (arm.runs === 0 ? 0 : arm.successes / arm.runs),
    pValue: (candidate, baseline) => twoProportionPValue(candidate.successes, candidate.runs, baseline.successes, baseline.runs),
    higherIsBetter: true,
  },
  score: {
    size: (arm) => arm.scores.length,
    value: (arm) => mean(arm.scores),
    pValue: (candidate, baseline) => welchPValue(candidate.scores, baseline.scores),
    higherIsBetter: true,
  },
  // The p95 is what is reported; Welch's t on the per-run latencies is what decides.
  latency_p95_ms: {
    size: (arm) => arm.latenciesMs.length,
    value: (arm) => percentile(arm.latenciesMs, 0.95),
    pValue: (candidate, baseline) => welchPValue(candidate.latenciesMs, baseline.latenciesMs),
    higherIsBetter: false,
  },
  cost_usd_mean: {
    size: (arm) => arm.costsUsd.length,
    value: (arm) => mean(arm.costsUsd),
    pValue: (candidate, baseline) => welchPValue(candidate.costsUsd, baseline.costsUsd),
    higherIsBetter: false,
  },
};

/**
 * The guard's verdict on a candidate against its baseline:
 * 1. at any time, once each arm has `earlyMinRuns` runs (at most min_runs): rollback when the
 *    candidate fails significantly more often (one-sided two-proportion z-test, p < significance);
 * 2. once each arm's sample of the metric has min_runs: promote when the metric is significantly
 *    better, rollback when significantly worse (two-sided test, p < significance; the sign of the
 *    difference says which);
 * 3. once both have max_runs without a significant difference: rollback (NO_IMPROVEMENT);
 * otherwise hold.
 */
export function evaluateRollout(guard: GuardSettings, candidate: ArmFigures, baseline: ArmFigures, options: EvaluationOptions): RolloutVerdict {
  const earlyMinRuns = Math.max(1, Math.min(options.earlyMinRuns, guard.minRuns));
  if (candidate.runs >= earlyMinRuns && baseline.runs >= earlyMinRuns) {
    const candidateFailures = candidate.runs - candidate.successes;
    const baselineFailures = baseline.runs - baseline.successes;
    const pValue = twoProportionPValue(candidateFailures, candidate.runs, baselineFailures, baseline.runs, 'greater');
    if (pValue < guard.significance) {
      const comparison: Comparison = { metric: 'failure_rate', candidateValue: failureRate(candidate), baselineValue: failureRate(baseline), candidateRuns: candidate.runs, baselineRuns: baseline.runs, pValue };
      return {
        decision: 'rollback',
        reason: `the candidate fails more often than the baseline: ${candidateFailures} of ${candidate.runs} runs against ${baselineFailures} of ${baseline.runs} (one-sided ${pText(pValue)} < ${guard.significance})`,
        comparison,
      };
    }
  }
  const test = METRIC_TESTS[guard.metric];
  const candidateSize = test.size(candidate);
  const baselineSize = test.size(baseline);
  const sampleName = guard.metric === 'score' ? `runs with feedback "${guard.scoreName}"` : 'runs';
  if (candidateSize < guard.minRuns || baselineSize < guard.minRuns) {
    return { decision: 'hold', reason: `waiting for ${guard.minRuns} ${sampleName} per arm: candidate ${candidateSize}, baseline ${baselineSize}`, comparison: undefined };
  }
  const pValue = test.pValue(candidate, baseline);
  const comparison: Comparison = { metric: guard.metric, candidateValue: test.value(candidate), baselineValue: test.value(baseline), candidateRuns: candidateSize, baselineRuns: baselineSize, pValue };
  const figures = `${guard.metric === 'score' ? `${guard.scoreName} mean` : guard.metric} ${formatted(comparison.candidateValue)} against ${formatted(comparison.baselineValue)} over ${candidateSize} and ${baselineSize} ${sampleName}`;
  if (pValue < guard.significance) {
    // The means decide the direction (the p95 reported for latency may differ in rare cases).
    const difference = guard.metric === 'latency_p95_ms' ? mean(candidate.latenciesMs) - mean(baseline.latenciesMs) : comparison.candidateValue - comparison.baselineValue;
    const better = test.higherIsBetter ? difference > 0 : difference < 0;
    if (difference !== 0) {
      return better
        ? { decision: 'promote', reason: `the candidate is significantly better: ${figures} (${pText(pValue)} < ${guard.significance})`, comparison }
        : { decision: 'rollback', reason: `the candidate is significantly worse: ${figures} (${pText(pValue)} < ${guard.significance})`, comparison };
    }
  }
  if (candidateSize >= guard.maxRuns && baselineSize >= guard.maxRuns) {
    return { decision: 'rollback', reason: `${NO_IMPROVEMENT}: ${figures} after ${guard.maxRuns} per arm (${pText(pValue)})`, comparison };
  }
  return { decision: 'hold', reason: `no significant difference yet: ${figures} (${pText(pValue)})`, comparison };
}
