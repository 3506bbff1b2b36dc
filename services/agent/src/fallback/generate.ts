import { parse, stringify } from 'yaml';
import { PIPELINE_NAME, proto } from '@elexirion/kit';

const { FailureClass } = proto;

/**
 * How a failed run is recovered, by its failure class (docs/architecture.md, "Emergent fallback"):
 *
 * | class                     | fallback pipeline                                                        |
 * |---------------------------|--------------------------------------------------------------------------|
 * | provider_error            | the same steps on an alternative provider chain (another vendor may serve) |
 * | overloaded                | the same steps on an alternative provider chain (another vendor has room)  |
 * | timeout                   | a shorter prompt under a longer timeout: one step, the inputs only, twice the time |
 * | invalid_output            | a single simple step: one plain answer, no schema to miss                |
 * | max_turns_exceeded        | a single simple step: one call, no turns to run out of                   |
 * | tool_restriction_violated | the same steps without tools                                             |
 */
export type FallbackStrategy = 'alternative_chain' | 'short_prompt_longer_timeout' | 'single_step' | 'without_tools';

export const STRATEGY_BY_CLASS: Readonly<Partial<Record<proto.FailureClass, FallbackStrategy>>> = {
  [FailureClass.FAILURE_CLASS_PROVIDER_ERROR]: 'alternative_chain',
  [FailureClass.FAILURE_CLASS_OVERLOADED]: 'alternative_chain',
  [FailureClass.FAILURE_CLASS_TIMEOUT]: 'short_prompt_longer_timeout',
  [FailureClass.FAILURE_CLASS_INVALID_OUTPUT]: 'single_step',
  [FailureClass.FAILURE_CLASS_MAX_TURNS_EXCEEDED]: 'single_step',
  [FailureClass.FAILURE_CLASS_TOOL_RESTRICTION_VIOLATED]: 'without_tools',
};

/** The classes a fallback is generated for, in the order of the enum. */
export const FALLBACK_CLASSES = Object.keys(STRATEGY_BY_CLASS).map(Number) as proto.FailureClass[];

/** Step fields that give a step tools; the agentic steps add them, and a tool fallback drops them. */
const TOOL_FIELDS = ['tools', 'allowed_tools'] as const;

/** A timeout fallback gets this many times the failed step's time. */
const TIMEOUT_FACTOR = 2;
/** A timeout fallback's answer is capped, so that it comes sooner. */
const SHORT_ANSWER_MAX_TOKENS = 1024;
const DEFAULT_MODEL = 'claude_smart';

/** Why no fallback pipeline can be made for a failure (no alternative chain is served, ...). */
export class NoFallbackError extends Error {
  override readonly name = 'NoFallbackError';
}

export interface GeneratedFallback {
  name: string;
  strategy: FallbackStrategy;
  yaml: string;
}

/** "overloaded" for FAILURE_CLASS_OVERLOADED: the class as it appears in names. */
export function failureClassSlug(failureClass: proto.FailureClass): string {
  return proto.failureClassToJSON(failureClass).replace(/^FAILURE_CLASS_/, '').toLowerCase();
}

/** `<pipeline>--fallback-<class>`, the pipeline's part shortened to keep a pipeline name's 64 characters. */
export function fallbackName(pipeline: string, failureClass: proto.FailureClass): string {
  const suffix = `--fallback-${failureClassSlug(failureClass)}`;
  return `${pipeline.slice(0, 64 - suffix.length)}${suffix}`;
}

type StepDoc = Record<string, unknown> & { name?: unknown; steps?: unknown };
type WorkflowDoc = Record<string, unknown> & { name: string; inputs?: Record<string, Record<string, unknown>>; defaults?: Record<string, unknown>; steps: StepDoc[] };

/**
 * A pipeline for recovering from `failure` of the pipeline `definition` describes (the executor's
 * GetPipeline). Throws NoFallbackError when the class has none, or none can be made.
 */
export function generateFallback(definition: proto.GetPipelineResponse, failure: Pick<proto.RunFailure, 'failureClass' | 'step'>): GeneratedFallback {
  const strategy = STRATEGY_BY_CLASS[failure.failureClass];
  if (!strategy) throw new NoFallbackError(`no fallback for failure class ${proto.failureClassToJSON(failure.failureClass)}`);
  const document = parse(definition.yaml) as { workflow: WorkflowDoc };
  const workflow = document.workflow;
  const name = fallbackName(workflow.name, failure.failureClass);
  const failedStep = stepModelOf(definition, failure.step);
  let generated: WorkflowDoc;
  switch (strategy) {
    case 'alternative_chain':
      generated = onAlternativeChains(workflow, definition);
      break;
    case 'without_tools':
      generated = { ...workflow, steps: mapSteps(workflow.steps, (step) => withoutKeys(step, TOOL_FIELDS)) };
      break;
    case 'single_step':
      generated = singleStep(workflow, failedStep, { system: workflow.description ? String(workflow.description) : 'Answer the request.' });
      break;
    case 'short_prompt_longer_timeout':
      generated = shortPromptLongerTimeout(workflow, failedStep, failure.step);
      break;
  }
  generated.name = name;
  generated.description = `Emergent fallback of ${workflow.name} after ${failureClassSlug(failure.failureClass)} (${strategy.replaceAll('_', ' ')}).`;
  if (!PIPELINE_NAME.test(name)) throw new NoFallbackError(`"${name}" is not a pipeline name`);
  return { name, strategy, yaml: stringify({ workflow: generated }) };
}

/** The model of the failed step, else of the first LLM step; the step name may be a child's path ("fan/one"). */
function stepModelOf(definition: proto.GetPipelineResponse, step: string): proto.StepModel | undefined {
  const own = step.split('/').at(-1);
  return definition.stepModels.find((model) => model.step === own) ?? definition.stepModels[0];
}

/** Every LLM step on a chain whose first target is not its own chain's first target; defaults made explicit per step. */
function onAlternativeChains(workflow: WorkflowDoc, definition: proto.GetPipelineResponse): WorkflowDoc {
  const chains = new Map(definition.modelChains.map((chain) => [chain.alias, chain]));
  const models = new Map(definition.stepModels.map((model) => [model.step, model]));
  const defaults = withoutKeys(workflow.defaults ?? {}, ['model', 'preset']);
  let retargeted = 0;
  const steps = mapSteps(workflow.steps, (step) => {
    const model = typeof step.name === 'string' ? models.get(step.name) : undefined;
    if (!model || !('prompt' in step)) return step;
    const alternative = alternativeChain(model.model, definition.modelChains, chains);
    if (!alternative) throw new NoFallbackError(`no provider chain other than "${model.model}" (first target ${firstTarget(model.model, chains) ?? 'unknown'}) is served for step "${step.name}"`);
    retargeted += 1;
    const moved: StepDoc = { ...withoutKeys(step, ['preset']), model: alternative.alias };
    // Presets belong to aliases: kept only where the alternative has the same one.
    if (model.preset && alternative.presets.includes(model.preset)) moved.preset = model.preset;
    return moved;
  });
  if (retargeted === 0) throw new NoFallbackError('the pipeline has no LLM step to move to another provider chain');
  return { ...workflow, defaults, steps };
}

function firstTarget(model: string, chains: ReadonlyMap<string, proto.ModelChain>): string | undefined {
  return model.includes('/') ? model : chains.get(model)?.targets[0];
}

/**
 * A chain whose first target differs from `model`'s: one on another vendor first, one whose first
 * vendor's breaker is closed first, then the provider's own order; never the mock for a vendor.
 */
function alternativeChain(model: string, all: readonly proto.ModelChain[], chains: ReadonlyMap<string, proto.ModelChain>): proto.ModelChain | undefined {
  const failed = firstTarget(model, chains);
  const failedVendor = failed?.split('/')[0];
  const rank = (chain: proto.ModelChain) => (chain.targets[0]!.split('/')[0] === failedVendor ? 2 : 0) + (chain.firstTargetBreakerOpen ? 1 : 0);
  // The mock answers for real vendors only when it was the one failing (offline).
  return all
    .filter((chain) => chain.targets.length > 0 && chain.targets[0] !== failed && (failedVendor === 'mock' || !chain.targets[0]!.startsWith('mock/')))
    .map((chain, order) => ({ chain, order }))
    .sort((a, b) => rank(a.chain) - rank(b.chain) || a.order - b.order)[0]?.chain;
}

/** One `llm` step answering from the inputs alone, on the failed step's model. */
function singleStep(workflow: WorkflowDoc, model: proto.StepModel | undefined, options: { system: string; preamble?: string; maxTokens?: number; timeout?: number }): WorkflowDoc {
  const inputs = Object.keys(workflow.inputs ?? {});
  const body = inputs.length === 1 ? `{{inputs.${inputs[0]}}}` : inputs.map((input) => `${input}: {{inputs.${input}}}`).join('\n');
  const prompt = [options.preamble, body || String(workflow.description || 'Answer the request.')].filter(Boolean).join('\n\n');
  const step: StepDoc = { name: 'answer', type: 'llm', model: model?.model ?? DEFAULT_MODEL };
  if (model?.preset) step.preset = model.preset;
  if (options.maxTokens !== undefined) step.max_tokens = options.maxTokens;
  if (options.timeout !== undefined) step.timeout = options.timeout;
  step.system = options.system;
  step.prompt = prompt;
  const defaults: Record<string, unknown> = {};
  const runTimeout = durationMs(workflow.defaults?.run_timeout);
  if (runTimeout !== undefined) defaults.run_timeout = options.timeout !== undefined ? Math.max(runTimeout, options.timeout) : runTimeout;
  const generated: WorkflowDoc = { name: workflow.name, steps: [step] };
  if (workflow.inputs) generated.inputs = workflow.inputs;
  if (Object.keys(defaults).length > 0) generated.defaults = defaults;
  return generated;
}

/** One step with the inputs only and a capped answer, under twice the failed step's time limit (when it had one). */
function shortPromptLongerTimeout(workflow: WorkflowDoc, model: proto.StepModel | undefined, failedStep: string): WorkflowDoc {
  const limit = stepTimeout(workflow, failedStep);
  return singleStep(workflow, model, {
    system: 'Answer briefly and directly.',
    preamble: workflow.description ? `Task: ${workflow.description}` : undefined,
    maxTokens: SHORT_ANSWER_MAX_TOKENS,
    ...(limit !== undefined ? { timeout: limit * TIMEOUT_FACTOR } : {}),
  });
}

/** The time limit the failed step ran under: its own, else the pipeline's step or run timeout. */
function stepTimeout(workflow: WorkflowDoc, failedStep: string): number | undefined {
  const path = failedStep.split('/');
  let steps: StepDoc[] | undefined = workflow.steps;
  let own: number | undefined;
  for (const name of path) {
    const step: StepDoc | undefined = steps?.find((candidate) => candidate.name === name);
    own = durationMs(step?.timeout) ?? own;
    steps = Array.isArray(step?.steps) ? (step.steps as StepDoc[]) : undefined;
  }
  return own ?? durationMs(workflow.defaults?.step_timeout) ?? durationMs(workflow.defaults?.run_timeout);
}

/** Milliseconds of a YAML duration (a number of ms, or "30s", "2m" ...), as the executor reads it. */
function durationMs(value: unknown): number | undefined {
  if (typeof value === 'number') return value;
  if (typeof value !== 'string') return undefined;
  const match = /^(\d+)(ms|s|m|h)$/.exec(value);
  if (!match) return undefined;
  return Number(match[1]) * { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }[match[2] as 'ms' | 's' | 'm' | 'h'];
}

/** Every step, children (parallel, for_each) included, through `map`. */
function mapSteps(steps: StepDoc[], map: (step: StepDoc) => StepDoc): StepDoc[] {
  return steps.map((step) => {
    const mapped = map(step);
    return Array.isArray(mapped.steps) ? { ...mapped, steps: mapSteps(mapped.steps as StepDoc[], map) } : mapped;
  });
}

function withoutKeys<T extends Record<string, unknown>>(value: T, keys: readonly string[]): T {
  const copy = { ...value };
  for (const key of keys) delete copy[key];
  return copy;
}
