import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Counter, type Registry } from 'prom-client';
import { z } from 'zod';
import {
  ConcurrencyLimiter,
  boolFlag,
  ElexirionError,
  LimitExceededError,
  ServerError,
  Status,
  defineService,
  incomingDeadline,
  callOptions,
  proto,
  setRunFailure,
  toServerError,
  type ServiceContext,
} from '@elexirion/kit';
import type { CallContext } from 'nice-grpc-common';
import { StepFailure, describeRunFailure } from './engine/failure-class.js';
import { RunEngine, type RunRequest, type RunResult } from './engine/run-engine.js';
import { PipelineError, PipelineLoader, countSteps, formatProblem, type LoadedPipeline, type Problem } from './pipeline/loader.js';
import { callsModels, checkModels, type ModelCatalog } from './pipeline/models.js';
import { PIPELINE_NAME } from './pipeline/schema.js';
import { CheckpointStore, RUN_ID, type RunCheckpoint } from './state/checkpoint-store.js';
import { ProviderModels } from './provider-models.js';
import { CHECKPOINT_SKIP_REASONS, CheckpointWriter } from './state/checkpoint-writer.js';
import { PromptRegistry } from './state/prompt-registry.js';
import { checkTemplate } from './state/prompt-changes.js';
import type { PromptTemplateRecord } from './state/prompt-entry.js';
import { promptLifecycleCalls } from './prompt-calls.js';

const defaultPipelinesDir = fileURLToPath(new URL('../../../pipelines/', import.meta.url));

export const executorConfigSchema = z.object({
  PIPELINES_DIR: z.string().min(1).default(defaultPipelinesDir),
  EXECUTOR_MAX_CONCURRENT_RUNS: z.coerce.number().int().positive().default(10_000),
  EXECUTOR_MAX_QUEUED_RUNS: z.coerce.number().int().min(0).default(10_000),
  EXECUTOR_CHECKPOINTS: boolFlag().default(true),
  EXECUTOR_CHECKPOINT_TTL_HOURS: z.coerce.number().int().positive().default(24 * 7),
  EXECUTOR_CHECKPOINT_TIMEOUT_MS: z.coerce.number().int().positive().default(1_000),
  EXECUTOR_PROMPT_REGISTRY: boolFlag().default(true),
});
export type ExecutorConfig = z.infer<typeof executorConfigSchema>;

/** Steps one run may give candidate prompts for. */
const MAX_PROMPT_CANDIDATES = 100;

/** Without a caller deadline, a queued run waits at most this long for a slot. */
const QUEUE_WAIT_MS = 60_000;

function invalid(message: string): ServerError {
  return new ServerError(Status.INVALID_ARGUMENT, message);
}

/** A run id the checkpoint bucket can key: INVALID_ARGUMENT naming `field` otherwise. */
function checkRunId(field: string, value: string): void {
  if (!RUN_ID.pattern.test(value)) throw invalid(`${field}: expected ${RUN_ID.description}, got ${JSON.stringify(value.slice(0, 80))}`);
}

export function createExecutor(context: ServiceContext<ExecutorConfig>) {
  const { config, clients, events, logger, metrics, nats } = context;
  const loader = new PipelineLoader(config.PIPELINES_DIR);
  const registry = new PromptRegistry({ logger, bucket: 'elexirion_prompts' });
  let checkpoints: CheckpointStore | undefined;

  // State lives in JetStream KV; runs go on without it (no resume, YAML prompts) until it attaches.
  if (config.EXECUTOR_CHECKPOINTS) {
    nats.use('checkpoints', async (connection) => {
      checkpoints = await CheckpointStore.open(connection, { ttlMs: config.EXECUTOR_CHECKPOINT_TTL_HOURS * 3_600_000 });
    });
  }
  if (config.EXECUTOR_PROMPT_REGISTRY) nats.use('prompt registry', (connection) => registry.attach(connection));
  const checkpointWriter = config.EXECUTOR_CHECKPOINTS
    ? new CheckpointWriter({ store: () => checkpoints, nats, skipped: checkpointsSkippedCounter(metrics.registry), logger, timeoutMs: config.EXECUTOR_CHECKPOINT_TIMEOUT_MS })
    : undefined;

  const engine = new RunEngine({
    provider: clients.get('provider'),
    loader,
    prompts: () => (registry.attached ? registry : undefined),
    checkpoints: checkpointWriter,
    events,
    logger,
  });
  const providerModels = new ProviderModels(clients.get('provider'), logger);
  /** The last check of each loaded pipeline, against the catalog it was made with. */
  const modelChecks = new WeakMap<LoadedPipeline, { catalog: ModelCatalog; problems: Problem[] }>();

  function modelProblems(loaded: LoadedPipeline, catalog: ModelCatalog): Problem[] {
    const kept = modelChecks.get(loaded);
    if (kept?.catalog === catalog) return kept.problems;
    const problems = checkModels(loaded, catalog);
    modelChecks.set(loaded, { catalog, problems });
    return problems;
  }

  /**
   * The models and presets the pipeline (and those it calls) names that the provider does not
   * serve; undefined when the provider cannot say. A pipeline without LLM steps asks nothing.
   */
  async function checkPipelineModels(loaded: LoadedPipeline, signal: AbortSignal): Promise<Problem[] | undefined> {
    if (!callsModels(loaded)) return [];
    const catalog = await providerModels.get(signal);
    if (!catalog) return undefined;
    const problems = modelProblems(loaded, catalog);
    if (problems.length === 0) return problems;
    const fresh = await providerModels.fresh(signal);
    return fresh && fresh !== catalog ? modelProblems(loaded, fresh) : problems;
  }

  const admission = new ConcurrencyLimiter({ maxConcurrency: config.EXECUTOR_MAX_CONCURRENT_RUNS, maxQueue: config.EXECUTOR_MAX_QUEUED_RUNS });

  /** Loads a named or inline pipeline; a bad one throws PipelineError (with every problem). */
  async function load(request: { pipeline: string; inlineYaml: string }): Promise<LoadedPipeline> {
    if (request.inlineYaml) {
      if (request.pipeline) throw invalid('pipeline and inline_yaml: give one, not both');
      return loader.loadInline(request.inlineYaml);
    }
    if (!request.pipeline) throw invalid('pipeline: name a pipeline or give inline_yaml');
    if (!PIPELINE_NAME.test(request.pipeline)) {
      throw invalid(`pipeline: "${request.pipeline.slice(0, 80)}" is not a pipeline name (lowercase letters, digits, _ and -, at most 64)`);
    }
    return loader.loadNamed(request.pipeline);
  }

  /** Admission, loading (or the checkpoint), the run, and its telemetry. */
  async function execute(request: proto.ExecuteRequest, callContext: CallContext, emit?: RunRequest['emit']): Promise<{ runId: string; result: RunResult }> {
    const observation = events.begin('run');
    const deadline = incomingDeadline(callContext)?.getTime();
    let release: () => void;
    try {
      release = await admission.acquire(callContext.signal, deadline ?? Date.now() + QUEUE_WAIT_MS);
    } catch (error) {
      throw toServerError(error, error instanceof LimitExceededError ? 'executor is at its run limit' : undefined);
    }
    let runId: string = randomUUID();
    // Until the pipeline is loaded, failures are told with what the request named.
    let pipelineName = request.resumeRunId ? '' : request.pipeline || '<inline>';
    let resume: RunCheckpoint | undefined;
    let runStarted = false;
    // The steps that ran, kept here so a failed run's event carries them too (the monitor counts a version's failures).
    const steps: proto.StepResult[] = [];
    try {
      let source: RunCheckpoint['source'];
      let loaded: LoadedPipeline;
      if (request.resumeRunId) {
        checkRunId('resume_run_id', request.resumeRunId);
        if (request.pipeline || request.inlineYaml) throw invalid('resume_run_id: a resumed run keeps its pipeline; send no pipeline or inline_yaml');
        if (request.runId) throw invalid('run_id and resume_run_id: give one, not both');
        const store = checkpoints;
        if (!store) throw new ServerError(Status.UNAVAILABLE, 'checkpoints are unavailable (NATS): the run cannot be resumed now');
        resume = await store.load(request.resumeRunId);
        if (!resume) throw new ServerError(Status.NOT_FOUND, `run "${request.resumeRunId}" has no checkpoint`);
        if (Object.keys(request.inputs).length > 0) throw invalid('inputs: a resumed run keeps the inputs it started with; send none');
        runId = resume.runId;
        source = resume.source;
        loaded = await load(source.kind === 'named' ? { pipeline: source.name, inlineYaml: '' } : { pipeline: '', inlineYaml: source.yaml });
      } else {
        if (request.runId) {
          checkRunId('run_id', request.runId);
          if (await checkpoints?.load(request.runId).catch(() => undefined)) {
            throw new ServerError(Status.ALREADY_EXISTS, `run "${request.runId}" already exists: resume it with resume_run_id`);
          }
          runId = request.runId;
        }
        loaded = await load(request);
        source = request.inlineYaml ? { kind: 'inline', yaml: request.inlineYaml } : { kind: 'named', name: loaded.name };
      }
      pipelineName = loaded.name;
      // Before any step runs (and is paid for): a model or preset the provider does not serve.
      // Without the provider's list the run goes on; the provider refuses such a call itself.
      const modelIssues = await checkPipelineModels(loaded, callContext.signal);
      if (modelIssues && modelIssues.length > 0) throw new PipelineError(modelIssues);
      const jobId = resume?.jobId ?? request.jobId;
      const promptCandidates = resume ? (resume.promptCandidates ?? {}) : candidateTemplates(request.promptCandidates);
      // From here a failure is the run's, not the request's: it carries a RunFailure.
      runStarted = true;
      const result = await engine.run(loaded, {
        runId,
        jobId,
        source,
        inputs: request.inputs,
        promptOverrides: resume?.promptOverrides ?? request.promptOverrides,
        promptCandidates,
        results: steps,
        sessionKey: resume?.sessionKey ?? request.sessionKey,
        signal: callContext.signal,
        deadline,
        ...(emit ? { emit } : {}),
        ...(resume ? { resume } : {}),
      });
      observation.succeeded({
        durationMs: result.durationMs,
        executorRun: { runId, jobId, pipeline: result.pipeline, inputs: stringInputs(result.inputs), output: result.output, steps: result.steps, usage: result.usage },
      });
      return { runId, result };
    } catch (error) {
      // A failure from elsewhere (a downstream call, the unexpected) is told with the pipeline's
      // name; this service's own say what they are about (a step's failure names its pipeline).
      const failure = error instanceof ServerError || error instanceof ElexirionError ? toServerError(error) : toServerError(error, pipelineName || `run "${request.resumeRunId}"`);
      observation.failed(failure, (errorMessage) => ({ executorRun: { runId, jobId: request.jobId, pipeline: pipelineName, inputs: request.inputs, errorMessage, steps } }));
      // The step and class come from the engine's error; code and message from what the caller is told.
      const runFailure = runStarted ? describeRunFailure(error instanceof StepFailure ? error : failure, runId, pipelineName) : undefined;
      if (runFailure) setRunFailure(callContext.trailer, { ...runFailure, code: Status[failure.code] ?? 'UNKNOWN', message: failure.details });
      throw failure;
    } finally {
      release();
    }
  }

  function response(runId: string, result: RunResult): proto.ExecuteResponse {
    return {
      pipeline: result.pipeline,
      output: result.output,
      steps: result.steps,
      usage: result.usage,
      durationMs: result.durationMs,
      runId,
      outputs: result.outputs,
      status: 'completed',
      resumedSteps: result.resumedSteps,
    };
  }

  function summary(name: string, loaded?: LoadedPipeline, error?: PipelineError): proto.PipelineSummary {
    if (!loaded) return { name, description: '', inputs: [], stepCount: 0, valid: false, problem: error ? formatProblem(error.problems[0]!) : 'not valid' };
    const { pipeline } = loaded;
    return {
      name: pipeline.name,
      description: pipeline.description,
      inputs: Object.entries(pipeline.inputs).map(([inputName, spec]) => ({ name: inputName, type: spec.type, required: spec.required, description: spec.description ?? '' })),
      stepCount: countSteps(pipeline.steps),
      valid: true,
      problem: '',
    };
  }

  const implementation: proto.ExecutorServiceImplementation = {
    async execute(request, callContext) {
      const { runId, result } = await execute(request, callContext);
      return response(runId, result);
    },

    async *executeStream(wrapper, callContext) {
      if (!wrapper.request) throw invalid('request: required');
      // Events are produced by the run and consumed here; a bounded wait is not needed as the
      // consumer is this generator, which gRPC flow control paces.
      const queue: proto.ExecuteStreamResponse[] = [];
      let wake: (() => void) | undefined;
      let finished = false;
      let failure: unknown;
      let final: proto.ExecuteResponse | undefined;
      void execute(wrapper.request, callContext, (event) => {
        queue.push(event);
        wake?.();
      }).then(
        ({ runId, result }) => {
          final = response(runId, result);
          finished = true;
          wake?.();
        },
        (error: unknown) => {
          failure = error;
          finished = true;
          wake?.();
        },
      );
      while (true) {
        while (queue.length > 0) yield queue.shift()!;
        if (finished) break;
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
      }
      while (queue.length > 0) yield queue.shift()!;
      if (failure) throw failure;
      yield { runFinished: final! };
    },

    async validate(request, callContext) {
      let problems: Problem[];
      try {
        const loaded = await load(request);
        const modelIssues = await checkPipelineModels(loaded, callContext.signal);
        if (!modelIssues) throw new ServerError(Status.UNAVAILABLE, 'the provider service does not list its models now: the pipeline\'s models and presets cannot be checked; try again');
        if (modelIssues.length === 0) return { valid: true, problems: [], summary: summary(loaded.name, loaded) };
        problems = modelIssues;
      } catch (error) {
        if (!(error instanceof PipelineError)) throw error;
        problems = error.problems;
      }
      return {
        valid: false,
        problems: problems.map((problem) => ({ file: problem.file, line: problem.line ?? 0, column: problem.column ?? 0, message: problem.message })),
        summary: undefined,
      };
    },

    ...promptLifecycleCalls({ registry: config.EXECUTOR_PROMPT_REGISTRY ? registry : undefined, loader, events, logger }),

    async getPipeline(request, callContext) {
      const loaded = await load(request);
      const yaml = request.inlineYaml || (await loader.readSource(loaded.name));
      // The chains are the provider's now (not the kept catalog): a fallback is chosen from them.
      const models = await clients.get('provider').listModels({}, callOptions(callContext)).catch((error: unknown) => {
        logger.warn({ err: error }, 'GetPipeline: the provider does not list its models now; answering without its chains');
        return undefined;
      });
      const openBreakers = new Set(models?.providers.filter((provider) => provider.breakerState === 'open').map((provider) => provider.name));
      return {
        summary: summary(loaded.name, loaded),
        yaml,
        stepModels: loaded.models
          .filter((reference) => reference.modelFrom !== 'fallback_model')
          .map((reference) => ({ step: reference.step, type: reference.stepType, model: reference.model, preset: reference.preset?.name ?? '' })),
        modelChains: (models?.aliases ?? []).map((alias) => ({
          alias: alias.name,
          targets: alias.targets,
          presets: alias.presets,
          firstTargetBreakerOpen: alias.targets.length > 0 && openBreakers.has(alias.targets[0]!.split('/')[0]!),
        })),
      };
    },

    async listPipelines(_request, callContext) {
      const all = await loader.list();
      // Checked against the provider's models when it lists them; the listing does not wait on it otherwise.
      const catalog = all.some((entry) => entry.loaded && callsModels(entry.loaded)) ? await providerModels.get(callContext.signal) : undefined;
      return {
        pipelines: all.map((entry) => {
          const problems = entry.loaded && catalog ? modelProblems(entry.loaded, catalog) : [];
          return problems.length > 0 ? summary(entry.name, undefined, new PipelineError(problems)) : summary(entry.name, entry.loaded, entry.error);
        }),
      };
    },
  };

  return {
    implementation,
    async close() {
      checkpointWriter?.close();
      await registry.close().catch(() => {});
    },
  };
}

function checkpointsSkippedCounter(registry: Registry): Counter<'reason'> {
  const counter = new Counter({
    name: 'elexirion_executor_checkpoints_skipped_total',
    help: 'Run checkpoints not written while the run went on: NATS not connected, bucket not attached, write timed out, rejected or failed.',
    labelNames: ['reason'],
    registers: [registry],
  });
  // Every reason from 0, so that a rate over the series means something before the first skip.
  for (const reason of CHECKPOINT_SKIP_REASONS) counter.inc({ reason }, 0);
  return counter;
}

/** ExecuteRequest.prompt_candidates as the engine takes them, each within the bounds a published version has. */
function candidateTemplates(candidates: Record<string, proto.PromptTemplate>): Record<string, PromptTemplateRecord> {
  const names = Object.keys(candidates);
  if (names.length > MAX_PROMPT_CANDIDATES) throw invalid(`prompt_candidates: ${names.length} entries is over the limit of ${MAX_PROMPT_CANDIDATES}`);
  const templates: Record<string, PromptTemplateRecord> = {};
  for (const name of names) {
    const candidate = candidates[name]!;
    templates[name] = checkTemplate({ prompt: candidate.prompt, system: candidate.system, demos: candidate.demos }, `prompt_candidates.${name}`);
  }
  return templates;
}

function stringInputs(inputs: Record<string, unknown>): Record<string, string> {
  return Object.fromEntries(Object.entries(inputs).map(([key, value]) => [key, typeof value === 'string' ? value : JSON.stringify(value)]));
}

export const executorService = defineService({
  name: 'executor',
  configSchema: executorConfigSchema,
  create: createExecutor,
});
