import { timeoutSignal } from '@elexirion/kit';
import { StoppedBySibling, mapUntilFailure } from '../map-until-failure.js';
import type { RunContext, StepHandler } from '../step-context.js';

/** Child steps at once (at most `max_parallel`), in the same scope; output: their outputs by name. */
export const runParallel: StepHandler<'parallel'> = async (step, context) => {
  // One child failing stops the others.
  using children = timeoutSignal(context.signal, undefined);
  const run: RunContext = { ...context.run, signal: children.signal };
  await mapUntilFailure(
    step.steps,
    step.max_parallel ?? step.steps.length,
    (failed) => children.abort(new StoppedBySibling(context.prefix + step.steps[failed]!.name)),
    (child) => context.runChild(child, run, context.scope, context.prefix),
  );
  const outputs: Record<string, unknown> = {};
  for (const child of step.steps) {
    const value = context.scope.steps.get(child.name);
    outputs[child.name] = value?.json ?? value?.output ?? '';
  }
  return { output: JSON.stringify(outputs), json: outputs, status: 'completed' };
};
