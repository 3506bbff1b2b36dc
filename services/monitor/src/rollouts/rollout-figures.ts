import type { ExecutionRecord } from '../executions/execution-record.js';
import type { ExecutionStore } from '../executions/execution-store.js';
import { collectVersionSamples, sampleKey } from '../executions/prompt-version-stats.js';
import { EMPTY_ARM, type ArmFigures } from './rollout-evaluator.js';

/** A guarded rollout to measure: its step, its two arms, since when, and which feedback scores it. */
export interface WatchedRollout {
  pipeline: string;
  step: string;
  candidate: string;
  baseline: string;
  startedAtMs: number;
  scoreName: string;
}

export interface RolloutArms {
  candidate: ArmFigures;
  baseline: ArmFigures;
}

/**
 * Each rollout's two arms from the executions kept: the runs of its pipeline that finished since
 * it started, whose step used the candidate or the baseline (failed runs included: a failed run is
 * a failure of the versions its steps used). One scan per pipeline, from its oldest rollout's start.
 */
export async function readRolloutArms(store: ExecutionStore, rollouts: readonly WatchedRollout[], nowMs: number, oldestMs: number): Promise<Map<WatchedRollout, RolloutArms>> {
  const byPipeline = new Map<string, WatchedRollout[]>();
  for (const rollout of rollouts) byPipeline.set(rollout.pipeline, [...(byPipeline.get(rollout.pipeline) ?? []), rollout]);
  const arms = new Map<WatchedRollout, RolloutArms>();
  for (const [pipeline, watched] of byPipeline) {
    const startMs = Math.max(oldestMs, Math.min(...watched.map((rollout) => rollout.startedAtMs)));
    const steps = new Set(watched.map((rollout) => rollout.step));
    const records = await store.scan(
      { startMs, endMs: nowMs, pipeline },
      (record) => record.pipeline === pipeline && record.steps.some((step) => steps.has(step.name) && step.promptVersion !== ''),
      Number.POSITIVE_INFINITY,
    );
    for (const rollout of watched) arms.set(rollout, armsOf(records, rollout));
  }
  return arms;
}

/** The rollout's two arms among `records` (its pipeline's runs): runs since it started, of its step. */
export function armsOf(records: readonly ExecutionRecord[], rollout: WatchedRollout): RolloutArms {
  const since = records.filter((record) => record.finishedAtMs >= rollout.startedAtMs);
  const samples = collectVersionSamples(since, rollout.scoreName, (pipeline, step) => pipeline === rollout.pipeline && step === rollout.step);
  const byKey = new Map(samples.map((sample) => [sampleKey(sample.pipeline, sample.step, sample.version), sample]));
  const arm = (version: string): ArmFigures => byKey.get(sampleKey(rollout.pipeline, rollout.step, version)) ?? EMPTY_ARM;
  return { candidate: arm(rollout.candidate), baseline: arm(rollout.baseline) };
}
