export { executorService } from './executor-service.js';
export { PipelineLoader, PipelineError, PromptFileError, type LoadedPipeline, type Problem } from './pipeline/loader.js';
export { checkModels, type ModelCatalog } from './pipeline/models.js';
export { ProviderModels } from './provider-models.js';
export { pipelineDocument, STEP_TYPES, type Pipeline, type Step } from './pipeline/schema.js';
export { renderTemplate, resolveValue, referencesOf, parsePath, TemplateError } from './pipeline/templates.js';
export { applyTransform } from './pipeline/transforms.js';
export { evaluateCondition } from './pipeline/conditions.js';
export { CheckpointStore, type RunCheckpoint } from './state/checkpoint-store.js';
export { PromptRegistry, type ServingVersion } from './state/prompt-registry.js';
export type { PromptEntry, PromptVersionRecord, PromptRolloutRecord, PromptChangeRecord, PromptTemplateRecord } from './state/prompt-entry.js';
export {
  LlmCaller,
  completeRequest,
  renderPrompt,
  selectPrompt,
  type LlmCallDependencies,
  type LlmCallOptions,
  type LlmOutcome,
  type LlmStep,
  type SelectedPrompt,
} from './engine/llm-call.js';
export { STEP_HANDLERS, type StepHandlers } from './engine/steps/index.js';
export type { RunContext, StepContext, StepHandler, StepOfType } from './engine/step-context.js';
export type { StepOutcome } from './engine/step-outcome.js';
