import type { proto } from '@elexirion/kit';
import type { Step } from '../pipeline/schema.js';
import { asText, type Scope, type StepValue } from '../pipeline/templates.js';
import { zeroUsage } from './usage.js';

/**
 * What a step handler returns. The run keeps it in its scope as it is (it is the StepValue later
 * steps' templates read) and turns it into the wire's StepResult once, when the step ends.
 */
export interface StepOutcome extends StepValue {
  status: 'completed' | 'skipped';
  provider?: string;
  model?: string;
  usage?: proto.Usage;
  /** Provider attempts the step took in all, retries and repairs included. */
  attempts?: number;
  /** The prompt it used: "override", a registry version id, "yaml", or "default_output". */
  promptVersion?: string;
  /** Served by other than its first choice (the alias's next target, or a fallback model). */
  fallbackUsed?: boolean;
  /** What failed before what served it. */
  failedTargets?: string[];
}

/** A step that did not run; shared, as nothing writes to an outcome once it is made. */
export const SKIPPED: StepOutcome = Object.freeze({ output: '', status: 'skipped' });

/** A computed value as an outcome: text as it is; anything else as its JSON text, and the value. */
export function valueOutcome(value: unknown): StepOutcome {
  return typeof value === 'string' ? { output: value, status: 'completed' } : { output: asText(value), json: value, status: 'completed' };
}

/** A step's result on the wire and in events, from its outcome. */
export function stepResult(name: string, type: Step['type'], outcome: StepOutcome, durationMs: number): proto.StepResult {
  return {
    name,
    type,
    output: outcome.output,
    provider: outcome.provider ?? '',
    model: outcome.model ?? '',
    usage: outcome.usage ?? zeroUsage(),
    durationMs,
    attempts: outcome.attempts ?? 0,
    status: outcome.status,
    promptVersion: outcome.promptVersion ?? '',
    json: outcome.json === undefined ? '' : JSON.stringify(outcome.json),
    error: '',
    fallbackUsed: outcome.fallbackUsed ?? false,
    failedTargets: outcome.failedTargets ?? [],
  };
}

/** The result of a step that failed with `error` (the message its status error carries). */
export function failedStepResult(name: string, type: Step['type'], error: string, durationMs: number, promptVersion = ''): proto.StepResult {
  return { name, type, output: '', provider: '', model: '', usage: zeroUsage(), durationMs, attempts: 0, status: 'failed', promptVersion, json: '', error, fallbackUsed: false, failedTargets: [] };
}

/** The output of a list of steps: that of the last one that was not skipped. */
export function lastOutput(steps: readonly Step[], scope: Scope): string {
  for (let index = steps.length - 1; index >= 0; index -= 1) {
    const value = scope.steps.get(steps[index]!.name);
    if (value && value.status !== 'skipped') return value.output;
  }
  return '';
}
