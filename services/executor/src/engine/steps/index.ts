/**
 * The step types' handlers. A new step type is its schema (pipeline/schema.ts), one file here,
 * and one row in the table; a type without a row does not compile.
 */
import type { Step } from '../../pipeline/schema.js';
import type { StepContext, StepHandler } from '../step-context.js';
import type { StepOutcome } from '../step-outcome.js';
import { runClaudeRobust } from './claude-robust.js';
import { runForEach } from './for-each.js';
import { runGeminiStructured } from './gemini-structured.js';
import { runLlmStep } from './llm.js';
import { runParallel } from './parallel.js';
import { runNestedPipeline } from './pipeline.js';
import { runSetVariable } from './set-variable.js';
import { runTransform } from './transform.js';

/** One handler for every step type of the schema, each taking the steps of its type. */
export type StepHandlers = { readonly [T in Step['type']]: StepHandler<T> };

export const STEP_HANDLERS: StepHandlers = {
  claude: runLlmStep,
  gemini: runLlmStep,
  llm: runLlmStep,
  claude_smart: runLlmStep,
  claude_robust: runClaudeRobust,
  gemini_structured: runGeminiStructured,
  parallel: runParallel,
  for_each: runForEach,
  set_variable: runSetVariable,
  transform: runTransform,
  pipeline: runNestedPipeline,
};

/** Runs `step` with its type's handler. */
export function runHandler(step: Step, context: StepContext): StepOutcome | Promise<StepOutcome> {
  // The table's type ties each type to its handler; TypeScript cannot follow that through a lookup.
  return (STEP_HANDLERS[step.type] as StepHandler)(step, context);
}
