/// <reference path="./jstat.d.ts" />
import jStatModule from 'jstat';
import { proto } from '@elexirion/kit';
import { scoreOf, type ExecutionRecord } from './execution-record.js';

const { jStat } = jStatModule;

/** The version a step's figures are compared with, when it has runs: the YAML prompt (last known good). */
export const YAML_VERSION = 'yaml';

/** What one (pipeline, step, version) did over the runs collected: its arm of a comparison. */
export interface VersionSample {
  pipeline: string;
  step: string;
  version: string;
  runs: number;
  /** Runs that ended OK with this step not failed; the others are failures of the version. */
  successes: number;
  /** The step's duration and cost in each run, and the run's score (runs with that feedback only). */
  latenciesMs: number[];
  costsUsd: number[];
  scores: number[];
}

/**
 * Which way a test looks: "two-sided" (any difference), "greater" (the first side's value is
 * higher than the second's), "less" (lower).
 */
export type Alternative = 'two-sided' | 'greater' | 'less';

/** Mean, and the 95% confidence interval of the mean (Student's t); the mean alone below 2 scores. */
export function scoreSummary(scores: number[]): proto.ScoreSummary {
  const count = scores.length;
  if (count === 0) return { count: 0, mean: 0, ci95Low: 0, ci95High: 0 };
  const mean = jStat.mean(scores);
  if (count < 2) return { count, mean, ci95Low: mean, ci95High: mean };
  const halfWidth = jStat.studentt.inv(0.975, count - 1) * (jStat.stdev(scores, true) / Math.sqrt(count));
  return { count, mean, ci95Low: mean - halfWidth, ci95High: mean + halfWidth };
}

/**
 * p-value of a two-proportion z-test (pooled) of A's proportion against B's; 1 when either side
 * has no runs or nothing varies (both all successes, or all failures).
 */
export function twoProportionPValue(successesA: number, runsA: number, successesB: number, runsB: number, alternative: Alternative = 'two-sided'): number {
  if (runsA === 0 || runsB === 0) return 1;
  const pooled = (successesA + successesB) / (runsA + runsB);
  const standardError = Math.sqrt(pooled * (1 - pooled) * (1 / runsA + 1 / runsB));
  if (!(standardError > 0)) return 1;
  return normalPValue((successesA / runsA - successesB / runsB) / standardError, alternative);
}

/**
 * p-value of Welch's t-test of A's mean against B's; 1 with fewer than 2 values a side. When
 * neither side varies, the limit of the test: 1 for equal means, 0 (or 1 when the difference is
 * the other way than `alternative` asks) for different ones (e.g. every run of one version
 * costs 0.002 and every run of the other 0.001).
 */
export function welchPValue(a: number[], b: number[], alternative: Alternative = 'two-sided'): number {
  if (a.length < 2 || b.length < 2) return 1;
  const varianceA = jStat.variance(a, true) / a.length;
  const varianceB = jStat.variance(b, true) / b.length;
  const difference = jStat.mean(a) - jStat.mean(b);
  const standardError = Math.sqrt(varianceA + varianceB);
  if (!(standardError > 0)) {
    if (difference === 0) return 1;
    return alternative === 'two-sided' || (alternative === 'greater') === difference > 0 ? 0 : 1;
  }
  const t = difference / standardError;
  // Welch–Satterthwaite degrees of freedom.
  const freedom = (varianceA + varianceB) ** 2 / (varianceA ** 2 / (a.length - 1) + varianceB ** 2 / (b.length - 1));
  const upper = (x: number) => 1 - jStat.studentt.cdf(x, freedom);
  return clampP(alternative === 'two-sided' ? 2 * upper(Math.abs(t)) : alternative === 'greater' ? upper(t) : upper(-t));
}

function normalPValue(z: number, alternative: Alternative): number {
  const upper = (x: number) => 1 - jStat.normal.cdf(x, 0, 1);
  return clampP(alternative === 'two-sided' ? 2 * upper(Math.abs(z)) : alternative === 'greater' ? upper(z) : upper(-z));
}

function clampP(p: number): number {
  return Number.isFinite(p) ? Math.min(1, Math.max(0, p)) : 1;
}

/**
 * Linear interpolation between closest ranks (R's type 7, numpy's default). Not
 * jStat.percentile: 1.9.6 answers the lower value near the top ([50, 70] -> 50 for the median).
 */
export function percentile(values: number[], fraction: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const position = (sorted.length - 1) * fraction;
  const below = Math.floor(position);
  const above = Math.min(below + 1, sorted.length - 1);
  return sorted[below]! + (position - below) * (sorted[above]! - sorted[below]!);
}

export function mean(values: number[]): number {
  return values.length === 0 ? 0 : jStat.mean(values);
}

/** The key of a (pipeline, step, version) sample. */
export function sampleKey(pipeline: string, step: string, version: string): string {
  return JSON.stringify([pipeline, step, version]);
}

/**
 * Each (pipeline, step, version)'s sample of the runs given (of the steps `wanted` accepts). A run
 * counts for every version its steps used; it succeeded for a version when its status is OK and
 * that step did not fail, so a failed run (its steps carry their versions) is a failure of each
 * version it used. Latency and cost are the step's; the score is the run's feedback `scoreName`.
 */
export function collectVersionSamples(records: Iterable<ExecutionRecord>, scoreName: string, wanted: (pipeline: string, step: string) => boolean): VersionSample[] {
  const samples = new Map<string, VersionSample>();
  for (const record of records) {
    const score = scoreOf(record, scoreName);
    for (const step of record.steps) {
      if (!step.promptVersion || !wanted(record.pipeline, step.name)) continue;
      const key = sampleKey(record.pipeline, step.name, step.promptVersion);
      let sample = samples.get(key);
      if (!sample) {
        sample = { pipeline: record.pipeline, step: step.name, version: step.promptVersion, runs: 0, successes: 0, latenciesMs: [], costsUsd: [], scores: [] };
        samples.set(key, sample);
      }
      sample.runs++;
      if (record.status === 'OK' && step.status !== 'failed') sample.successes++;
      sample.latenciesMs.push(step.durationMs);
      sample.costsUsd.push(step.usage.costUsd);
      if (score !== undefined) sample.scores.push(score);
    }
  }
  return [...samples.values()];
}

/**
 * Per (pipeline, step, version) figures of the runs given, and each version compared with its
 * step's baseline: the rollout's (`rolloutBaselines`, by step name) when it has runs, else "yaml"
 * when it has runs, else the version with the most runs; the samples as collectVersionSamples
 * makes them.
 */
export function promptVersionStats(records: ExecutionRecord[], scoreName: string, stepFilter: string, rolloutBaselines: ReadonlyMap<string, string> = new Map()): proto.GetPromptVersionStatsResponse {
  const samples = collectVersionSamples(records, scoreName, (_pipeline, step) => !stepFilter || step === stepFilter);
  const bySteps = new Map<string, VersionSample[]>();
  for (const sample of samples) {
    const key = JSON.stringify([sample.pipeline, sample.step]);
    bySteps.set(key, [...(bySteps.get(key) ?? []), sample]);
  }
  const versions: proto.PromptVersionStats[] = [];
  const comparisons: proto.PromptVersionComparison[] = [];
  const stepKeys = [...bySteps.keys()].sort();
  for (const stepKey of stepKeys) {
    const stepSamples = bySteps.get(stepKey)!;
    stepSamples.sort((a, b) => b.runs - a.runs || a.version.localeCompare(b.version));
    const rolloutBaseline = rolloutBaselines.get(stepSamples[0]!.step);
    const baseline = stepSamples.find((sample) => sample.version === rolloutBaseline) ?? stepSamples.find((sample) => sample.version === YAML_VERSION) ?? stepSamples[0]!;
    const figures = new Map(stepSamples.map((sample) => [sample, figuresOf(sample, sample === baseline)]));
    for (const sample of stepSamples) versions.push(figures.get(sample)!);
    const base = figures.get(baseline)!;
    for (const sample of stepSamples) {
      if (sample === baseline) continue;
      const candidate = figures.get(sample)!;
      comparisons.push({
        pipeline: sample.pipeline,
        step: sample.step,
        candidate: sample.version,
        baseline: baseline.version,
        successRateDelta: candidate.successRate - base.successRate,
        scoreDelta: candidate.score!.count > 0 && base.score!.count > 0 ? candidate.score!.mean - base.score!.mean : 0,
        latencyP50DeltaMs: candidate.latencyP50Ms - base.latencyP50Ms,
        costUsdMeanDelta: candidate.costUsdMean - base.costUsdMean,
        successRatePValue: twoProportionPValue(sample.successes, sample.runs, baseline.successes, baseline.runs),
        scorePValue: welchPValue(sample.scores, baseline.scores),
      });
    }
  }
  return { versions, comparisons };
}

function figuresOf(sample: VersionSample, baseline: boolean): proto.PromptVersionStats {
  return {
    pipeline: sample.pipeline,
    step: sample.step,
    version: sample.version,
    runs: sample.runs,
    successRate: sample.runs === 0 ? 0 : sample.successes / sample.runs,
    latencyP50Ms: percentile(sample.latenciesMs, 0.5),
    latencyP95Ms: percentile(sample.latenciesMs, 0.95),
    costUsdMean: mean(sample.costsUsd),
    score: scoreSummary(sample.scores),
    baseline,
  };
}
