export { executorService, executorConfigSchema, type ExecutorConfig } from './executor-service.js';
export { parsePipeline, PipelineError, LLM_STEP_TYPES, type Pipeline, type PipelineStep } from './pipeline.js';
export { renderTemplate, TemplateError } from './templates.js';
