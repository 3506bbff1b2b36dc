import { ServerError, Status } from '@elexirion/kit';
import { renderTemplate } from '../../pipeline/templates.js';
import { resolveInputs } from '../inputs.js';
import type { MutableScope, RunContext, StepHandler } from '../step-context.js';
import { lastOutput } from '../step-outcome.js';

/**
 * Another pipeline's steps, in a run and scope of their own (no prompt overrides, no checkpoint
 * of its own), named under this step ("review/check"); output: its last step's, json: its outputs.
 */
export const runNestedPipeline: StepHandler<'pipeline'> = async (step, context) => {
  const child = context.run.pipeline.children.get(step.pipeline);
  if (!child) throw new ServerError(Status.INTERNAL, `pipeline "${step.pipeline}" was not loaded`);
  const given: Record<string, string> = {};
  for (const [name, template] of Object.entries(step.inputs)) given[name] = renderTemplate(template, context.scope);
  const inputs = resolveInputs(child.name, child.pipeline.inputs, given);
  const run: RunContext = { request: { ...context.run.request, promptOverrides: {}, promptCandidates: {} }, pipeline: child, results: [], signal: context.signal, deadline: context.deadline };
  const scope: MutableScope = { inputs, steps: new Map(), vars: {} };
  const prefix = `${context.name}/`;
  for (const childStep of child.pipeline.steps) await context.runChild(childStep, run, scope, prefix);
  // Its steps join the run's results (and so its checkpoint) only once all completed: a resumed
  // run runs a failed nested step again whole.
  context.run.results.push(...run.results);
  const outputs: Record<string, string> = {};
  for (const [name, template] of Object.entries(child.pipeline.outputs ?? {})) outputs[name] = renderTemplate(template, scope);
  return { output: lastOutput(child.pipeline.steps, scope), json: outputs, status: 'completed' };
};
