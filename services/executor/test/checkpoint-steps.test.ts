import { describe, expect, it } from 'vitest';
import type { proto } from '@elexirion/kit';
import { appendCheckpointSteps, fromStepResult, toStepResult, type CheckpointStep } from '../src/state/checkpoint-steps.js';

const result = (name: string, status: string, json = ''): proto.StepResult => ({
  name,
  type: 'claude',
  output: `${name} out`,
  provider: 'fake',
  model: 'm',
  usage: { inputTokens: 3, outputTokens: 4, costUsd: 0.5 },
  durationMs: 12,
  attempts: 1,
  status,
  promptVersion: 'yaml',
  json,
  error: status === 'failed' ? 'it failed' : '',
  fallbackUsed: false,
  failedTargets: [],
});

describe('checkpoint steps', () => {
  it('store JSON parsed and give it back as text, so a restored step reads as it ran', () => {
    const stored = fromStepResult(result('plan', 'completed', '{"n":5}'));
    expect(stored.json).toEqual({ n: 5 });
    expect(toStepResult(stored)).toEqual(result('plan', 'completed', '{"n":5}'));
    expect(fromStepResult(result('skip', 'skipped'))).not.toHaveProperty('json');
  });

  it('keep who served a step and what failed before it, so a resumed run still says a fallback served', () => {
    const served = { ...result('plan', 'completed'), fallbackUsed: true, failedTargets: ['anthropic/claude-sonnet-5: overloaded (529), 3 attempts'] };
    const stored = fromStepResult(served);
    expect(stored).toMatchObject({ fallbackUsed: true, failedTargets: served.failedTargets });
    expect(toStepResult(stored)).toEqual(served);
    expect(fromStepResult(result('first', 'completed'))).not.toHaveProperty('fallbackUsed');
  });

  it('leave failed steps out when results are appended', () => {
    const steps: CheckpointStep[] = [fromStepResult(result('first', 'completed'))];
    appendCheckpointSteps(steps, [result('first', 'completed'), result('a', 'failed'), result('b', 'skipped')], 1);
    expect(steps.map((step) => [step.name, step.status])).toEqual([
      ['first', 'completed'],
      ['b', 'skipped'],
    ]);
  });
});
