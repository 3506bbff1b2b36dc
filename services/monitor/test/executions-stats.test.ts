// The prompt version statistics' arithmetic, against values computed independently (numerical
// integration of Student's t density, the normal's erfc): p-values, confidence intervals, and
// which version is the baseline.
import { describe, expect, it } from 'vitest';
import { percentile, promptVersionStats, scoreSummary, twoProportionPValue, welchPValue } from '../src/executions/prompt-version-stats.js';
import type { ExecutionRecord } from '../src/executions/execution-record.js';

function run(runId: string, version: string, options: { status?: string; thumbs?: number; durationMs?: number } = {}): ExecutionRecord {
  const usage = { inputTokens: 1, outputTokens: 1, costUsd: 0.01 };
  return {
    runId,
    jobId: '',
    pipeline: 'qa',
    status: options.status ?? 'OK',
    inputs: {},
    output: '',
    steps: [
      { name: 'answer', type: 'llm', output: '', provider: 'mock', model: 'm', usage, durationMs: options.durationMs ?? 10, attempts: 1, status: 'completed', promptVersion: version, json: '', error: '', fallbackUsed: false, failedTargets: [] },
    ],
    usage,
    durationMs: 10,
    finishedAtMs: 0,
    errorMessage: '',
    route: '',
    traceId: '',
    eventId: '',
    feedback: options.thumbs === undefined ? [] : [{ name: 'thumbs', score: options.thumbs, label: '', comment: '', source: 1, recordedAtMs: 0, recordedBy: '' }],
  };
}

describe('prompt version statistics', () => {
  it("computes Welch's t-test and the two-proportion z-test p-values", () => {
    expect(welchPValue([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])).toBeCloseTo(0.107531, 5);
    expect(twoProportionPValue(45, 100, 30, 100)).toBeCloseTo(0.02846, 5);
    // Too few data, or nothing varies: 1.
    expect(welchPValue([1], [2, 3])).toBe(1);
    expect(welchPValue([1, 1], [1, 1])).toBe(1);
    expect(twoProportionPValue(0, 0, 3, 4)).toBe(1);
    expect(twoProportionPValue(5, 5, 7, 7)).toBe(1);
  });

  it('interpolates percentiles between closest ranks', () => {
    expect(percentile([70, 50], 0.5)).toBe(60);
    expect(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.95)).toBeCloseTo(9.55);
    expect(percentile([4], 0.95)).toBe(4);
    expect(percentile([], 0.5)).toBe(0);
  });

  it('gives the mean of scores with a 95% confidence interval from Student\'s t', () => {
    const summary = scoreSummary([1, 1, 1, 0]);
    expect(summary.count).toBe(4);
    expect(summary.mean).toBe(0.75);
    // t(0.975, 3) = 3.182446; standard error 0.5 / 2.
    expect(summary.ci95Low).toBeCloseTo(0.75 - 3.182446 * 0.25, 5);
    expect(summary.ci95High).toBeCloseTo(0.75 + 3.182446 * 0.25, 5);
    expect(scoreSummary([])).toEqual({ count: 0, mean: 0, ci95Low: 0, ci95High: 0 });
  });

  it('takes "yaml" as the baseline when it has runs, else the version with the most runs', () => {
    const withYaml = promptVersionStats([run('a', 'yaml'), run('b', 'v2'), run('c', 'v2')], 'thumbs', '');
    expect(withYaml.versions.filter((version) => version.baseline).map((version) => version.version)).toEqual(['yaml']);
    expect(withYaml.comparisons.map((comparison) => [comparison.candidate, comparison.baseline])).toEqual([['v2', 'yaml']]);

    const records = [run('a', 'v1', { thumbs: 1, durationMs: 10 }), run('b', 'v1', { thumbs: 0, durationMs: 20 }), run('c', 'v1', { thumbs: 1, durationMs: 30 }), run('d', 'v2', { status: 'INTERNAL', thumbs: 0, durationMs: 50 }), run('e', 'v2', { thumbs: 0, durationMs: 70 })];
    const withoutYaml = promptVersionStats(records, 'thumbs', 'answer');
    const [v1, v2] = withoutYaml.versions;
    expect(v1).toMatchObject({ version: 'v1', runs: 3, successRate: 1, latencyP50Ms: 20, baseline: true });
    expect(v2).toMatchObject({ version: 'v2', runs: 2, successRate: 0.5, latencyP50Ms: 60, baseline: false });
    expect(withoutYaml.comparisons).toEqual([
      expect.objectContaining({ candidate: 'v2', baseline: 'v1', successRateDelta: -0.5, latencyP50DeltaMs: 40 }),
    ]);
    expect(withoutYaml.comparisons[0]!.scoreDelta).toBeCloseTo(-2 / 3);
    // t = -2 on 2 degrees of freedom (v2's scores do not vary): p = 1 - 2/sqrt(6).
    expect(withoutYaml.comparisons[0]!.scorePValue).toBeCloseTo(1 - 2 / Math.sqrt(6), 6);
    // 3 of 3 against 1 of 2: pooled 0.8, z = 0.5 / sqrt(0.16 * 5/6).
    expect(withoutYaml.comparisons[0]!.successRatePValue).toBeCloseTo(0.170904, 5);
    expect(promptVersionStats(records, 'thumbs', 'no-such-step').versions).toEqual([]);
  });

  it("takes the rollout's baseline when it has runs (a promoted version), whatever else ran", () => {
    const records = [run('a', 'yaml'), run('b', 'yaml'), run('c', 'v1'), run('d', 'v2')];
    const promoted = promptVersionStats(records, 'thumbs', '', new Map([['answer', 'v1']]));
    expect(promoted.versions.filter((version) => version.baseline).map((version) => version.version)).toEqual(['v1']);
    expect(promoted.comparisons.map((comparison) => [comparison.candidate, comparison.baseline])).toEqual([
      ['yaml', 'v1'],
      ['v2', 'v1'],
    ]);
    // A baseline with no runs in the range: the rule without a rollout.
    expect(promptVersionStats(records, 'thumbs', '', new Map([['answer', 'v9']])).comparisons.map((comparison) => comparison.baseline)).toEqual(['yaml', 'yaml']);
  });
});
