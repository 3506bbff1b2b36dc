import { readFile } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { ClientError, ServerError, Status, callOptions, defineService, proto, type ServiceContext } from '@elexirion/kit';
import { PipelineError, parsePipeline, type Pipeline } from './pipeline.js';
import { TemplateError, renderTemplate } from './templates.js';

const defaultPipelinesDir = fileURLToPath(new URL('../../../pipelines/', import.meta.url));

export const executorConfigSchema = z.object({
  PIPELINES_DIR: z.string().min(1).default(defaultPipelinesDir),
});
export type ExecutorConfig = z.infer<typeof executorConfigSchema>;

/** The provider alias a step type calls when neither the step nor the pipeline names a model. */
const DEFAULT_ALIAS_BY_STEP_TYPE: Record<string, string> = { claude: 'claude', gemini: 'gemini', claude_smart: 'claude_smart' };

/** Pipeline names are plain file stems: no separators, no dots, so no path can escape the folder. */
const PIPELINE_NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/;

export function createExecutor(context: ServiceContext<ExecutorConfig>) {
  const { config, clients, events, logger } = context;
  const provider = clients.get('provider');

  async function loadPipeline(name: string): Promise<Pipeline> {
    if (!PIPELINE_NAME.test(name)) {
      throw new ServerError(Status.INVALID_ARGUMENT, `pipeline: "${name}" is not a pipeline name (lowercase letters, digits, _ and -, at most 64)`);
    }
    let text: string;
    try {
      text = await readFile(join(config.PIPELINES_DIR, `${name}.yaml`), 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new ServerError(Status.NOT_FOUND, `pipeline "${name}" does not exist`);
      throw error;
    }
    try {
      return parsePipeline(`${name}.yaml`, text);
    } catch (error) {
      if (error instanceof PipelineError) throw new ServerError(Status.INVALID_ARGUMENT, error.message);
      throw error;
    }
  }

  function resolveInputs(pipeline: Pipeline, given: Record<string, string>): Record<string, string> {
    const inputs: Record<string, string> = {};
    for (const [name, spec] of Object.entries(pipeline.inputs)) {
      const value = given[name] ?? (spec.default === undefined ? undefined : String(spec.default));
      if (value === undefined) {
        if (spec.required) throw new ServerError(Status.INVALID_ARGUMENT, `inputs.${name}: required by pipeline "${pipeline.name}" and not given`);
        continue;
      }
      inputs[name] = value;
    }
    for (const name of Object.keys(given)) {
      if (!(name in pipeline.inputs)) throw new ServerError(Status.INVALID_ARGUMENT, `inputs.${name}: pipeline "${pipeline.name}" has no such input`);
    }
    return inputs;
  }

  const implementation: proto.ExecutorServiceImplementation = {
    async execute(request, callContext) {
      const started = performance.now();
      const runId = randomUUID();
      let pipelineName = request.pipeline;
      const steps: proto.StepResult[] = [];
      const usage = { inputTokens: 0, outputTokens: 0, costUsd: 0 };
      try {
        const pipeline = await loadPipeline(request.pipeline);
        pipelineName = pipeline.name;
        const inputs = resolveInputs(pipeline, request.inputs);
        const outputs: Record<string, { output: string }> = {};
        for (const step of pipeline.steps) {
          const stepStarted = performance.now();
          let prompt: string;
          try {
            prompt = renderTemplate(step.prompt, { inputs, steps: outputs }, `${pipeline.name}: step "${step.name}" prompt`);
          } catch (error) {
            if (error instanceof TemplateError) throw new ServerError(Status.INVALID_ARGUMENT, error.message);
            throw error;
          }
          const answer = await provider.complete(
            {
              messages: [{ role: proto.Role.ROLE_USER, content: prompt }],
              system: step.system ?? '',
              model: step.model ?? pipeline.defaults.model ?? DEFAULT_ALIAS_BY_STEP_TYPE[step.type] ?? 'claude_smart',
              preset: step.preset ?? pipeline.defaults.preset ?? '',
              ...(step.temperature === undefined ? {} : { temperature: step.temperature }),
              ...(step.max_tokens === undefined ? {} : { maxTokens: step.max_tokens }),
              metadata: { pipeline: pipeline.name, step: step.name, run_id: runId },
            },
            callOptions(callContext),
          );
          outputs[step.name] = { output: answer.text };
          const stepUsage = answer.usage ?? { inputTokens: 0, outputTokens: 0, costUsd: 0 };
          usage.inputTokens += stepUsage.inputTokens;
          usage.outputTokens += stepUsage.outputTokens;
          usage.costUsd += stepUsage.costUsd;
          steps.push({
            name: step.name,
            type: step.type,
            output: answer.text,
            provider: answer.provider,
            model: answer.model,
            usage: stepUsage,
            durationMs: Math.round(performance.now() - stepStarted),
            attempts: answer.attempts,
          });
        }
        const output = steps.at(-1)?.output ?? '';
        const durationMs = Math.round(performance.now() - started);
        events.publish('run', {
          status: 'OK',
          durationMs,
          executorRun: { runId, jobId: request.jobId, pipeline: pipeline.name, inputs, output, steps, usage },
        });
        return { pipeline: pipeline.name, output, steps, usage, durationMs, runId };
      } catch (error) {
        const code = error instanceof ServerError || error instanceof ClientError ? Status[error.code] : 'INTERNAL';
        events.publish('run', {
          status: code,
          durationMs: Math.round(performance.now() - started),
          executorRun: { runId, jobId: request.jobId, pipeline: pipelineName, inputs: request.inputs, steps, usage, errorMessage: error instanceof Error ? error.message : String(error) },
        });
        logger.debug({ err: error, pipeline: pipelineName, run_id: runId }, 'run failed');
        throw error;
      }
    },
  };
  return { implementation };
}

export const executorService = defineService({
  name: 'executor',
  configSchema: executorConfigSchema,
  create: createExecutor,
});
