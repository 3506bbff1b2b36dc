import { timeoutSignal } from '@elexirion/kit';
import { TemplateError, resolveValue } from '../../pipeline/templates.js';
import { StoppedBySibling, mapUntilFailure } from '../map-until-failure.js';
import type { MutableScope, RunContext, StepHandler } from '../step-context.js';

const MAX_LOOP_ITEMS = 1_000;

/**
 * The child steps once per item (`concurrency` items at once), each iteration in a scope of its
 * own that starts from the loop's; output: the last child's output of every iteration, in order.
 */
export const runForEach: StepHandler<'for_each'> = async (step, context) => {
  const { scope } = context;
  let items: unknown = typeof step.items === 'string' ? resolveValue(step.items, scope) : step.items;
  if (typeof items === 'string') {
    const text = items;
    try {
      items = JSON.parse(text);
    } catch {
      throw new TemplateError(`items: "${text.slice(0, 60)}" is not a JSON list`);
    }
  }
  if (!Array.isArray(items)) throw new TemplateError('items: expected a list');
  if (items.length > MAX_LOOP_ITEMS) throw new TemplateError(`items: ${items.length} items is over the limit of ${MAX_LOOP_ITEMS}`);
  // One iteration failing stops the others.
  using iterations = timeoutSignal(context.signal, undefined);
  const run: RunContext = { ...context.run, signal: iterations.signal };
  const last = step.steps.at(-1)!.name;
  const results = await mapUntilFailure(
    items,
    step.concurrency,
    (failed) => iterations.abort(new StoppedBySibling(`${context.name}[${failed}]`)),
    async (item, index) => {
      const iteration: MutableScope = { inputs: scope.inputs, steps: new Map(scope.steps), vars: { ...scope.vars }, loop: { ...scope.loop, item, index, [step.as]: item } };
      const prefix = `${context.name}[${index}]/`;
      for (const child of step.steps) await context.runChild(child, run, iteration, prefix);
      const value = iteration.steps.get(last);
      return value?.json ?? value?.output ?? '';
    },
  );
  return { output: JSON.stringify(results), json: results, status: 'completed' };
};
