import { renderTemplate, resolveValue } from '../../pipeline/templates.js';
import { applyTransform } from '../../pipeline/transforms.js';
import type { StepHandler } from '../step-context.js';
import { valueOutcome } from '../step-outcome.js';

/** The input's value through the operations, in order; output: the result. */
export const runTransform: StepHandler<'transform'> = (step, context) => {
  // Operation arguments may be templates too ("default: {{steps.draft.output}}").
  const operations = step.operations.map((operation) =>
    Object.fromEntries(Object.entries(operation).map(([key, value]) => [key, key !== 'op' && typeof value === 'string' ? renderTemplate(value, context.scope) : value])),
  ) as typeof step.operations;
  return valueOutcome(applyTransform(resolveValue(step.input, context.scope), operations));
};
