// The guard's decision rules as a pure function of the two arms' figures: the early rollback of a
// candidate that fails more often, promotion and rollback on each metric once both arms have
// min_runs (in the right direction for each), the rollback at max_runs without a difference,
// holding otherwise, and the guard's defaults and bad values. The p-values are checked against
// values computed independently (the normal's tail by hand; Student's t from the same formula the
// executions area's tests check).
import { describe, expect, it } from 'vitest';
import type { ExecutionRecord } from '../src/executions/execution-record.js';
import { twoProportionPValue, welchPValue } from '../src/executions/prompt-version-stats.js';
import { armsOf } from '../src/rollouts/rollout-figures.js';
import { EMPTY_ARM, NO_IMPROVEMENT, evaluateRollout, guardSettings, type ArmFigures, type GuardSettings } from '../src/rollouts/rollout-evaluator.js';

const EARLY = { earlyMinRuns: 5 };

function guard(fields: Partial<GuardSettings> = {}): GuardSettings {
  return { metric: 'success_rate', scoreName: 'thumbs', minRuns: 30, significance: 0.05, maxRuns: 300, ...fields };
}

/** An arm of `runs` runs of which `failures` failed, with the per-run values given (repeated to fill). */
function arm(runs: number, failures = 0, values: { scores?: number[]; latenciesMs?: number[]; costsUsd?: number[] } = {}): ArmFigures {
  const fill = (pattern: number[] | undefined, fallback: number) => Array.from({ length: runs }, (_, index) => (pattern ? pattern[index % pattern.length]! : fallback));
  return {
    runs,
    successes: runs - failures,
    scores: values.scores ? fill(values.scores, 0) : [],
    latenciesMs: fill(values.latenciesMs, 100),
    costsUsd: fill(values.costsUsd, 0.001),
  };
}

describe('one-sided tests (the statistics the guard uses)', () => {
  it('gives the one-sided two-proportion and Welch p-values', () => {
    // 5 of 5 against 0 of 5: pooled 0.5, z = 1 / sqrt(0.25 * 0.4) = 3.1623; upper normal tail 7.827e-4.
    expect(twoProportionPValue(5, 5, 0, 5, 'greater')).toBeCloseTo(7.827e-4, 6);
    expect(twoProportionPValue(5, 5, 0, 5, 'less')).toBeCloseTo(1 - 7.827e-4, 6);
    expect(twoProportionPValue(5, 5, 0, 5)).toBeCloseTo(2 * 7.827e-4, 6);
    // One-sided Welch: half the two-sided p when t points the asked way.
    const twoSided = welchPValue([2, 4, 6, 8, 10], [1, 2, 3, 4, 5]);
    expect(welchPValue([2, 4, 6, 8, 10], [1, 2, 3, 4, 5], 'greater')).toBeCloseTo(twoSided / 2, 10);
    expect(welchPValue([2, 4, 6, 8, 10], [1, 2, 3, 4, 5], 'less')).toBeCloseTo(1 - twoSided / 2, 10);
    // Neither side varies: the limit of the test (0 for different means, 1 for equal ones or the other way).
    expect(welchPValue([0.002, 0.002], [0.001, 0.001])).toBe(0);
    expect(welchPValue([0.002, 0.002], [0.001, 0.001], 'less')).toBe(1);
    expect(welchPValue([0.002, 0.002], [0.001, 0.001], 'greater')).toBe(0);
    expect(welchPValue([1, 1], [1, 1])).toBe(1);
  });
});

describe('guard settings', () => {
  it('fills in the defaults of prompts.proto', () => {
    expect(guardSettings({ metric: '', scoreName: '', minRuns: 0, significance: 0, maxRuns: 0 })).toEqual({ metric: 'success_rate', scoreName: 'thumbs', minRuns: 30, significance: 0.05, maxRuns: 300 });
    expect(guardSettings({ metric: 'score', scoreName: 'rating', minRuns: 10, significance: 0.01, maxRuns: 0 })).toEqual({ metric: 'score', scoreName: 'rating', minRuns: 10, significance: 0.01, maxRuns: 100 });
  });

  it('names the field of a guard it cannot apply', () => {
    const base = { metric: 'score', scoreName: '', minRuns: 10, significance: 0.05, maxRuns: 0 };
    expect(guardSettings({ ...base, metric: 'accuracy' })).toEqual({ problem: expect.stringMatching(/^guard\.metric must be one of success_rate, score, latency_p95_ms, cost_usd_mean/) });
    expect(guardSettings({ ...base, scoreName: 'Not A Name' })).toEqual({ problem: expect.stringMatching(/^guard\.score_name/) });
    expect(guardSettings({ ...base, minRuns: 1 })).toEqual({ problem: expect.stringMatching(/^guard\.min_runs/) });
    expect(guardSettings({ ...base, significance: 0.7 })).toEqual({ problem: expect.stringMatching(/^guard\.significance/) });
    expect(guardSettings({ ...base, maxRuns: 5 })).toEqual({ problem: expect.stringMatching(/^guard\.max_runs must be an integer of at least min_runs \(10\)/) });
  });
});

describe('the guard verdict', () => {
  it('rolls back a candidate that fails significantly more often, long before min_runs', () => {
    const verdict = evaluateRollout(guard({ metric: 'score' }), arm(5, 5), arm(5, 0), EARLY);
    expect(verdict.decision).toBe('rollback');
    expect(verdict.comparison).toEqual({ metric: 'failure_rate', candidateValue: 1, baselineValue: 0, candidateRuns: 5, baselineRuns: 5, pValue: twoProportionPValue(5, 5, 0, 5, 'greater') });
    expect(verdict.reason).toMatch(/^the candidate fails more often than the baseline: 5 of 5 runs against 0 of 5/);
    // With the baseline's many runs too.
    expect(evaluateRollout(guard(), arm(6, 4), arm(60, 1), EARLY).decision).toBe('rollback');
  });

  it('does not roll back early below the floor of runs, nor for failures no worse than the baseline', () => {
    expect(evaluateRollout(guard(), arm(4, 4), arm(40, 0), EARLY)).toMatchObject({ decision: 'hold', comparison: undefined });
    expect(evaluateRollout(guard(), arm(40, 0), arm(4, 4), EARLY).decision).toBe('hold');
    // Failing as often as the baseline, or less often: nothing early.
    expect(evaluateRollout(guard(), arm(10, 2), arm(10, 2), EARLY).decision).toBe('hold');
    expect(evaluateRollout(guard(), arm(10, 0), arm(10, 6), EARLY).decision).toBe('hold');
    // The floor is capped at min_runs.
    expect(evaluateRollout(guard({ minRuns: 3, maxRuns: 30 }), arm(3, 3), arm(3, 0), { earlyMinRuns: 50 }).decision).toBe('rollback');
  });

  it('promotes on a significantly better score and rolls back on a worse one, once both arms have min_runs scored runs', () => {
    const settings = guard({ metric: 'score', minRuns: 10, maxRuns: 100 });
    const good = arm(12, 0, { scores: [1, 1, 1, 0] });
    const bad = arm(12, 0, { scores: [0, 0, 0, 1] });
    const promoted = evaluateRollout(settings, good, bad, EARLY);
    expect(promoted.decision).toBe('promote');
    expect(promoted.comparison).toMatchObject({ metric: 'score', candidateValue: 0.75, baselineValue: 0.25, candidateRuns: 12, baselineRuns: 12 });
    expect(promoted.comparison!.pValue).toBeCloseTo(welchPValue(good.scores, bad.scores), 12);
    expect(promoted.reason).toMatch(/^the candidate is significantly better: thumbs mean 0\.75 against 0\.25 over 12 and 12 runs with feedback "thumbs"/);
    expect(evaluateRollout(settings, bad, good, EARLY).decision).toBe('rollback');
    expect(evaluateRollout(settings, bad, good, EARLY).reason).toMatch(/^the candidate is significantly worse/);
    // Runs without feedback do not count for the score: 40 runs, 5 scored, hold.
    const fewScores = { ...arm(40), scores: [1, 1, 1, 1, 1] };
    expect(evaluateRollout(settings, fewScores, bad, EARLY)).toMatchObject({ decision: 'hold', reason: 'waiting for 10 runs with feedback "thumbs" per arm: candidate 5, baseline 12' });
  });

  it('takes lower as better for latency and cost', () => {
    const settings = (metric: GuardSettings['metric']) => guard({ metric, minRuns: 10, maxRuns: 100 });
    const fast = arm(10, 0, { latenciesMs: [90, 100, 110] });
    const slow = arm(10, 0, { latenciesMs: [190, 200, 210] });
    expect(evaluateRollout(settings('latency_p95_ms'), fast, slow, EARLY).decision).toBe('promote');
    const slower = evaluateRollout(settings('latency_p95_ms'), slow, fast, EARLY);
    expect(slower.decision).toBe('rollback');
    // The p95s are what is reported.
    expect(slower.comparison).toMatchObject({ metric: 'latency_p95_ms', candidateValue: 210, baselineValue: 110 });
    // Every run of an arm costs the same: different means decide (the test's limit).
    const cheaper = evaluateRollout(settings('cost_usd_mean'), arm(10, 0, { costsUsd: [0.001] }), arm(10, 0, { costsUsd: [0.002] }), EARLY);
    expect(cheaper).toMatchObject({ decision: 'promote', comparison: { metric: 'cost_usd_mean', pValue: 0 } });
    expect(cheaper.comparison!.candidateValue).toBeCloseTo(0.001, 12);
    expect(cheaper.comparison!.baselineValue).toBeCloseTo(0.002, 12);
    expect(evaluateRollout(settings('cost_usd_mean'), arm(10, 0, { costsUsd: [0.003] }), arm(10, 0, { costsUsd: [0.002] }), EARLY).decision).toBe('rollback');
  });

  it('promotes a significantly more successful candidate', () => {
    const verdict = evaluateRollout(guard({ minRuns: 30 }), arm(40, 2), arm(40, 14), EARLY);
    expect(verdict).toMatchObject({ decision: 'promote', comparison: { metric: 'success_rate', candidateValue: 38 / 40, baselineValue: 26 / 40 } });
    expect(verdict.comparison!.pValue).toBeCloseTo(twoProportionPValue(38, 40, 26, 40), 12);
  });

  it('holds without a significant difference, and rolls back once both arms have max_runs', () => {
    const settings = guard({ metric: 'score', minRuns: 10, maxRuns: 20 });
    const same = () => arm(15, 0, { scores: [1, 0] });
    const held = evaluateRollout(settings, same(), same(), EARLY);
    expect(held.decision).toBe('hold');
    expect(held.reason).toMatch(/^no significant difference yet: thumbs mean/);
    expect(evaluateRollout(settings, arm(20, 0, { scores: [1, 0] }), arm(19, 0, { scores: [1, 0] }), EARLY).decision).toBe('hold');
    const ended = evaluateRollout(settings, arm(20, 0, { scores: [1, 0] }), arm(25, 0, { scores: [0, 1] }), EARLY);
    expect(ended.decision).toBe('rollback');
    expect(ended.reason.startsWith(NO_IMPROVEMENT)).toBe(true);
  });

  it('holds an arm without runs', () => {
    expect(evaluateRollout(guard(), EMPTY_ARM, arm(100), EARLY)).toMatchObject({ decision: 'hold', reason: 'waiting for 30 runs per arm: candidate 0, baseline 100' });
  });
});

describe("a rollout's arms among the runs", () => {
  function record(runId: string, finishedAtMs: number, steps: Array<{ name: string; version: string; failed?: boolean }>, fields: { status?: string; thumbs?: number } = {}): ExecutionRecord {
    const usage = { inputTokens: 1, outputTokens: 1, costUsd: 0.001 };
    return {
      runId,
      jobId: '',
      pipeline: 'qa',
      status: fields.status ?? 'OK',
      inputs: {},
      output: '',
      steps: steps.map((step) => ({ name: step.name, type: 'llm', output: '', provider: 'mock', model: 'm', usage, durationMs: 10, attempts: 1, status: step.failed ? 'failed' : 'completed', promptVersion: step.version, json: '', error: '', fallbackUsed: false, failedTargets: [] })),
      usage,
      durationMs: 10,
      finishedAtMs,
      errorMessage: '',
      route: '',
      traceId: '',
      eventId: '',
      feedback: fields.thumbs === undefined ? [] : [{ name: 'thumbs', score: fields.thumbs, label: '', comment: '', source: 1, recordedAtMs: 0, recordedBy: '' }],
    };
  }

  it("counts the runs since the rollout started, of its step, failed runs as failures of the versions they used", () => {
    const records = [
      record('before', 999, [{ name: 'answer', version: 'v2' }]),
      record('ok-candidate', 1000, [{ name: 'answer', version: 'v2' }], { thumbs: 1 }),
      record('failed-candidate', 1001, [{ name: 'answer', version: 'v2', failed: true }], { status: 'INVALID_ARGUMENT' }),
      // A later step failed: the run failed, and it is a failure of the version the step used.
      record('later-step-failed', 1002, [{ name: 'answer', version: 'yaml' }, { name: 'format', version: 'yaml', failed: true }], { status: 'UNAVAILABLE' }),
      record('ok-baseline', 1003, [{ name: 'answer', version: 'yaml' }], { thumbs: 0 }),
      record('other-version', 1004, [{ name: 'answer', version: 'v1' }]),
    ];
    const arms = armsOf(records, { pipeline: 'qa', step: 'answer', candidate: 'v2', baseline: 'yaml', startedAtMs: 1000, scoreName: 'thumbs' });
    expect(arms.candidate).toMatchObject({ runs: 2, successes: 1, scores: [1] });
    expect(arms.baseline).toMatchObject({ runs: 2, successes: 1, scores: [0] });
    expect(armsOf(records, { pipeline: 'qa', step: 'answer', candidate: 'v9', baseline: 'yaml', startedAtMs: 0, scoreName: 'thumbs' }).candidate).toEqual(EMPTY_ARM);
  });
});
