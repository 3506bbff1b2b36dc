/**
 * What one step of a loaded pipeline can see when it runs: the declared inputs, the steps that run
 * before it, the variables earlier set_variable steps set, and its loop values. The loader checks
 * the YAML's own templates the same way (loader.ts checkSteps); this answers it for a template
 * that comes from elsewhere (a published prompt version) against the step it will replace.
 */
import type { Pipeline, Step } from './schema.js';
import { isLlmStep } from './loader.js';
import { referencesOf, TemplateError, type Reference } from './templates.js';

export interface StepScope {
  step: Step;
  inputs: ReadonlySet<string>;
  steps: ReadonlySet<string>;
  vars: ReadonlySet<string>;
  /** Undefined outside a for_each step. */
  loop: ReadonlySet<string> | undefined;
}

/** The scope of the step named `name` (at any depth), or undefined when the pipeline has none. */
export function stepScope(pipeline: Pipeline, name: string): StepScope | undefined {
  const inputs = new Set(Object.keys(pipeline.inputs));
  const visit = (steps: Step[], visible: Set<string>, vars: Set<string>, loop: Set<string> | undefined, concurrent: boolean): StepScope | undefined => {
    const siblings = new Set(visible);
    for (const step of steps) {
      const seen = concurrent ? visible : siblings;
      if (step.name === name) return { step, inputs, steps: new Set(seen), vars: new Set(vars), loop: loop && new Set(loop) };
      if (step.type === 'parallel') {
        const found = visit(step.steps, new Set(seen), vars, loop, true);
        if (found) return found;
        for (const child of step.steps) siblings.add(child.name);
      }
      if (step.type === 'for_each') {
        const found = visit(step.steps, new Set(seen), new Set(vars), new Set([...(loop ?? []), step.as, 'item', 'index']), false);
        if (found) return found;
      }
      if (step.type === 'set_variable') vars.add(step.variable);
      siblings.add(step.name);
    }
    return undefined;
  };
  return visit(pipeline.steps, new Set(), new Set(), undefined, false);
}

/** Whether the pipeline has an LLM step (a step with a prompt) of that name, at any depth. */
export function isLlmStepOf(pipeline: Pipeline, name: string): boolean {
  const scope = stepScope(pipeline, name);
  return scope !== undefined && isLlmStep(scope.step);
}

/**
 * The problems of a template meant for the step of `scope`: a placeholder that does not parse, or
 * one that names what the step cannot see. Empty when the template is fine.
 */
export function templateProblems(template: string, scope: StepScope): string[] {
  let references: Reference[];
  try {
    references = referencesOf(template);
  } catch (error) {
    if (error instanceof TemplateError) return [error.message];
    throw error;
  }
  const problems: string[] = [];
  for (const reference of references) {
    const problem =
      reference.kind === 'input' && !scope.inputs.has(reference.name)
        ? `names input "${reference.name}", which the pipeline does not declare`
        : reference.kind === 'step' && !scope.steps.has(reference.step)
          ? reference.step === scope.step.name
            ? 'refers to its own output'
            : `names step "${reference.step}", which does not run before step "${scope.step.name}"`
          : reference.kind === 'var' && !scope.vars.has(reference.name)
            ? `names variable "${reference.name}", which no earlier set_variable step sets`
            : reference.kind === 'loop' && !scope.loop?.has(reference.name)
              ? scope.loop
                ? `names loop value "${reference.name}" (this loop has ${[...scope.loop].join(', ')})`
                : 'uses a loop value outside a for_each step'
              : undefined;
    if (problem) problems.push(`{{${reference.text}}} ${problem}`);
  }
  return problems;
}
