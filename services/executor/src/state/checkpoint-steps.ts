/**
 * A run's steps as its checkpoint stores them and as the wire carries them: the stored step keeps
 * `json` parsed (text on the wire) and has no `error`, as a checkpoint keeps no failed step.
 */
import type { proto } from '@elexirion/kit';
import type { RunCheckpoint } from './checkpoint-store.js';

export type CheckpointStep = RunCheckpoint['steps'][number];

/** The wire result of a step restored from a checkpoint. */
export function toStepResult(step: CheckpointStep): proto.StepResult {
  return {
    name: step.name,
    type: step.type,
    output: step.output,
    provider: step.provider,
    model: step.model,
    usage: step.usage,
    durationMs: step.durationMs,
    attempts: step.attempts,
    status: step.status,
    promptVersion: step.promptVersion,
    json: step.json === undefined ? '' : JSON.stringify(step.json),
    error: '',
    fallbackUsed: step.fallbackUsed ?? false,
    failedTargets: step.failedTargets ?? [],
  };
}

/** The checkpoint step of a completed or skipped step's wire result. */
export function fromStepResult(result: proto.StepResult): CheckpointStep {
  return {
    name: result.name,
    type: result.type,
    status: result.status === 'skipped' ? 'skipped' : 'completed',
    output: result.output,
    ...(result.json ? { json: JSON.parse(result.json) } : {}),
    provider: result.provider,
    model: result.model,
    usage: result.usage ?? { inputTokens: 0, outputTokens: 0, costUsd: 0 },
    attempts: result.attempts,
    durationMs: result.durationMs,
    promptVersion: result.promptVersion,
    ...(result.fallbackUsed ? { fallbackUsed: true, failedTargets: result.failedTargets } : {}),
  };
}

/** Appends the checkpoint steps of `results` from index `from` on, leaving out failed steps. */
export function appendCheckpointSteps(steps: CheckpointStep[], results: readonly proto.StepResult[], from: number): void {
  for (let index = from; index < results.length; index += 1) {
    const result = results[index]!;
    if (result.status !== 'failed') steps.push(fromStepResult(result));
  }
}
