import { resolveValue } from '../../pipeline/templates.js';
import type { StepHandler } from '../step-context.js';
import { valueOutcome } from '../step-outcome.js';

/** Sets `vars.<variable>` for the steps after it (a template resolves to its value); output: the value. */
export const runSetVariable: StepHandler<'set_variable'> = (step, context) => {
  const value = typeof step.value === 'string' ? resolveValue(step.value, context.scope) : step.value;
  context.scope.vars[step.variable] = value;
  return valueOutcome(value);
};
