/**
 * Which provider models and presets a pipeline's steps call, where the YAML says so, and the check
 * of those names against what the provider serves (its ListModels), so a misspelt alias is found
 * before the first step runs and is paid for, not when its step is reached.
 */
import { didYouMean } from '@elexirion/kit';
import type { LoadedPipeline } from './loader.js';
import type { Pipeline, Step } from './schema.js';

type LlmStep = Extract<Step, { prompt: unknown }>;

/** The provider alias a step type calls when neither the step nor the pipeline names a model. */
const DEFAULT_ALIAS: Partial<Record<LlmStep['type'], string>> = {
  claude: 'claude',
  claude_smart: 'claude_smart',
  claude_robust: 'claude_smart',
  gemini: 'gemini',
  gemini_structured: 'gemini',
};
const FALLBACK_ALIAS = 'claude_smart';

/** The model a step calls: its own, else the pipeline's default, else its type's alias. */
export function stepModel(pipeline: Pipeline, step: LlmStep): string {
  return step.model ?? pipeline.defaults.model ?? DEFAULT_ALIAS[step.type] ?? FALLBACK_ALIAS;
}

/** The preset a step asks for; undefined lets the alias use its default preset. */
export function stepPreset(pipeline: Pipeline, step: LlmStep): string | undefined {
  return step.preset ?? (step.type === 'claude_smart' || step.type === 'claude_robust' ? pipeline.defaults.preset : undefined);
}

/** A place in a pipeline file. */
export interface Place {
  file: string;
  line?: number;
  column?: number;
}

/** One model (and preset) a step calls, with where each name is written. */
export interface ModelReference {
  step: string;
  stepType: string;
  model: string;
  /** Where the model name comes from: the step's `model`, `workflow.defaults.model`, the step's type, or claude_robust's `fallback_model`. */
  modelFrom: 'model' | 'defaults' | 'type' | 'fallback_model';
  modelAt: Place;
  preset?: { name: string; from: 'preset' | 'defaults'; at: Place };
}

/** What the provider serves, from its ListModels. */
export interface ModelCatalog {
  /** Alias name -> its preset names. */
  aliases: ReadonlyMap<string, readonly string[]>;
  /** Provider names a "<provider>/<model>" target may name. */
  providers: readonly string[];
}

const TARGET_MODEL = /^[\w.:-]+$/;

/**
 * Every model reference of an LLM step, `at` giving the place of a path in the document. Steps are
 * given with their document path (workflow.steps.0.steps.1 ...).
 */
export function modelReferencesOf(pipeline: Pipeline, steps: Iterable<{ step: Step; path: (string | number)[] }>, at: (path: (string | number)[]) => Place): ModelReference[] {
  const references: ModelReference[] = [];
  for (const { step, path } of steps) {
    if (!('prompt' in step)) continue;
    const modelFrom = step.model !== undefined ? 'model' : pipeline.defaults.model !== undefined ? 'defaults' : 'type';
    const modelAt = at(modelFrom === 'model' ? [...path, 'model'] : modelFrom === 'defaults' ? ['workflow', 'defaults', 'model'] : [...path, 'type']);
    const reference: ModelReference = { step: step.name, stepType: step.type, model: stepModel(pipeline, step), modelFrom, modelAt };
    const preset = stepPreset(pipeline, step);
    if (preset !== undefined) {
      const from = step.preset !== undefined ? 'preset' : 'defaults';
      reference.preset = { name: preset, from, at: at(from === 'preset' ? [...path, 'preset'] : ['workflow', 'defaults', 'preset']) };
    }
    references.push(reference);
    if (step.type === 'claude_robust' && step.fallback_model !== undefined) {
      references.push({ step: step.name, stepType: step.type, model: step.fallback_model, modelFrom: 'fallback_model', modelAt: at([...path, 'fallback_model']) });
    }
  }
  return references;
}

interface ModelProblem extends Place {
  message: string;
}

/** The references the catalog does not serve, each at its place, with a "did you mean" for a near miss. */
function checkModelReferences(references: readonly ModelReference[], catalog: ModelCatalog): ModelProblem[] {
  const problems: ModelProblem[] = [];
  const seen = new Set<string>();
  const add = (place: Place, message: string) => {
    const key = `${place.file}:${place.line}:${place.column}:${message}`;
    if (seen.has(key)) return;
    seen.add(key);
    problems.push({ ...place, message });
  };
  const aliasNames = [...catalog.aliases.keys()];
  for (const reference of references) {
    const { model, preset } = reference;
    const slash = model.indexOf('/');
    if (slash >= 0) {
      const provider = model.slice(0, slash);
      if (!catalog.providers.includes(provider)) {
        add(reference.modelAt, `${subject(reference)} "${model}" names provider "${provider}", which is not one of ${catalog.providers.join(', ')}${didYouMean(provider, catalog.providers)}`);
      } else if (!TARGET_MODEL.test(model.slice(slash + 1))) {
        add(reference.modelAt, `${subject(reference)} "${model}" is not "<provider>/<model>" (a model id of letters, digits, _ . : -)`);
      }
      if (preset) add(preset.at, `${presetSubject(reference)}: presets belong to aliases, and "${model}" is an explicit "<provider>/<model>" target`);
      continue;
    }
    const presets = catalog.aliases.get(model);
    if (!presets) {
      const known = `(aliases: ${aliasNames.join(', ')})`;
      add(
        reference.modelAt,
        reference.modelFrom === 'type'
          ? `step "${reference.step}": type ${reference.stepType} calls the alias "${model}" when no model is named, and the provider does not serve it; name a model ${known}`
          : `${subject(reference)} "${model}" is neither an alias the provider serves nor "<provider>/<model>"${didYouMean(model, aliasNames)} ${known}`,
      );
      continue;
    }
    if (preset && !presets.includes(preset.name)) {
      const known = presets.length > 0 ? `(presets: ${presets.join(', ')})` : '(it has none)';
      add(preset.at, `${presetSubject(reference)}: alias "${model}" has no preset "${preset.name}"${didYouMean(preset.name, presets)} ${known}`);
    }
  }
  return problems;
}

function subject(reference: ModelReference): string {
  switch (reference.modelFrom) {
    case 'defaults':
      // Not naming the step: one problem for every step that uses the default.
      return 'workflow.defaults.model:';
    case 'fallback_model':
      return `step "${reference.step}": fallback_model`;
    default:
      return `step "${reference.step}": model`;
  }
}

function presetSubject(reference: ModelReference): string {
  return reference.preset?.from === 'defaults' ? 'workflow.defaults.preset' : `step "${reference.step}": preset`;
}

/** Whether the pipeline or one it calls has an LLM step. */
export function callsModels(loaded: LoadedPipeline): boolean {
  if (loaded.models.length > 0) return true;
  for (const child of loaded.children.values()) if (callsModels(child)) return true;
  return false;
}

/** Every model problem of the pipeline and of the pipelines it calls (each in its own file). */
export function checkModels(loaded: LoadedPipeline, catalog: ModelCatalog): ModelProblem[] {
  const problems: ModelProblem[] = [];
  const visited = new Set<LoadedPipeline>();
  const visit = (current: LoadedPipeline) => {
    if (visited.has(current)) return;
    visited.add(current);
    problems.push(...checkModelReferences(current.models, catalog));
    for (const child of current.children.values()) visit(child);
  };
  visit(loaded);
  return problems;
}
