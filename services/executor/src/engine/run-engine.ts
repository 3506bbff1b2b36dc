import { setTimeout as sleep } from 'node:timers/promises';
import { isAbortError } from 'abort-controller-x';
import { ClientError, ServerError, Status, proto, timeoutSignal, type Logger, type ServiceClient, type ServiceEvents } from '@elexirion/kit';
import { evaluateCondition } from '../pipeline/conditions.js';
import { isLlmStep, type LoadedPipeline, type PipelineLoader } from '../pipeline/loader.js';
import { durationMs, type Prompt, type Step } from '../pipeline/schema.js';
import { TemplateError, asText, parsePath, renderTemplate, resolveValue, walkPath, type Scope, type StepValue } from '../pipeline/templates.js';
import { applyTransform } from '../pipeline/transforms.js';
import type { CheckpointStore, RunCheckpoint } from '../state/checkpoint-store.js';
import type { PromptRegistry } from '../state/prompt-registry.js';
import { resolveInputs } from './inputs.js';

/** The provider alias a step type calls when neither the step nor the pipeline names a model. */
const DEFAULT_ALIAS: Record<string, string> = {
  claude: 'claude',
  claude_smart: 'claude_smart',
  claude_robust: 'claude_smart',
  gemini: 'gemini',
  gemini_structured: 'gemini',
};
const MAX_LOOP_ITEMS = 1_000;
/** Codes claude_robust retries: the provider or the network may do better on another try. */
const RETRYABLE = new Set<Status>([Status.UNAVAILABLE, Status.RESOURCE_EXHAUSTED, Status.DEADLINE_EXCEEDED, Status.ABORTED, Status.INTERNAL, Status.UNKNOWN]);

export interface EngineDependencies {
  provider: ServiceClient<'provider'>;
  loader: PipelineLoader;
  prompts: () => PromptRegistry | undefined;
  checkpoints: () => CheckpointStore | undefined;
  events: ServiceEvents;
  logger: Logger;
}

export interface RunRequest {
  runId: string;
  jobId: string;
  source: RunCheckpoint['source'];
  inputs: Record<string, string>;
  promptOverrides: Record<string, string>;
  sessionKey: string;
  signal: AbortSignal;
  deadline: number | undefined;
  /** Stream step progress and text deltas. */
  emit?: (event: proto.ExecuteStreamResponse) => void;
  resume?: RunCheckpoint;
}

export interface RunResult {
  pipeline: string;
  output: string;
  outputs: Record<string, string>;
  steps: proto.StepResult[];
  usage: proto.Usage;
  durationMs: number;
  resumedSteps: number;
  inputs: Record<string, unknown>;
}

/** Everything one run shares across its steps; nested pipelines get their own. */
interface RunContext {
  request: RunRequest;
  pipeline: LoadedPipeline;
  inputs: Record<string, unknown>;
  results: proto.StepResult[];
  signal: AbortSignal;
  deadline: number | undefined;
  /** Prefix of step names in results and events ("loop[2]/", "nested/"). */
  nested: boolean;
}

interface MutableScope extends Scope {
  steps: Map<string, StepValue>;
}

interface StepOutcome {
  output: string;
  json?: unknown;
  provider?: string;
  model?: string;
  usage?: proto.Usage;
  attempts?: number;
  promptVersion?: string;
  status?: 'completed' | 'skipped';
  /** For a structured call: the provider's validated JSON, or why the answer is not. */
  structured?: { json: string; error: string };
}

const ZERO_USAGE = (): proto.Usage => ({ inputTokens: 0, outputTokens: 0, costUsd: 0 });

/** Runs a loaded pipeline's steps under supervision and compiles the result. */
export class RunEngine {
  constructor(private readonly deps: EngineDependencies) {}

  async run(loaded: LoadedPipeline, request: RunRequest): Promise<RunResult> {
    const started = performance.now();
    const { pipeline } = loaded;
    const inputs = request.resume ? resolveInputs(pipeline.name, pipeline.inputs, request.resume.inputs) : resolveInputs(pipeline.name, pipeline.inputs, request.inputs);
    for (const name of Object.keys(request.promptOverrides)) {
      if (!findStep(pipeline.steps, name, isLlmStep)) {
        throw new ServerError(Status.INVALID_ARGUMENT, `${pipeline.name}: prompt_overrides.${name}: no LLM step is named "${name}"`);
      }
    }
    const runTimeout = durationMs(pipeline.defaults.run_timeout);
    using runLimit = timeoutSignal(request.signal, runTimeout);
    const signal = runLimit.signal;
    const deadline = minDeadline(request.deadline, runTimeout ? Date.now() + runTimeout : undefined);
    const context: RunContext = { request, pipeline: loaded, inputs, results: [], signal, deadline, nested: false };
    const scope: MutableScope = { inputs, steps: new Map(), vars: {} };

    let resumed = 0;
    if (request.resume) resumed = this.restore(request.resume, loaded, scope, context);
    request.emit?.({ runStarted: { runId: request.runId, pipeline: pipeline.name } });
    const checkpoint: RunCheckpoint = {
      runId: request.runId,
      jobId: request.jobId,
      pipeline: pipeline.name,
      source: request.source,
      inputs: request.resume?.inputs ?? request.inputs,
      promptOverrides: request.promptOverrides,
      sessionKey: request.sessionKey,
      steps: request.resume?.steps ?? [],
      vars: scope.vars,
      status: 'running',
      startedAt: request.resume?.startedAt ?? new Date().toISOString(),
      updatedAt: new Date().toISOString(),
    };
    try {
      // A checkpoint after every step but the last: a run that ends has nothing left to resume,
      // so a one-step pipeline costs no write at all.
      let saved = request.resume !== undefined;
      for (const [index, step] of pipeline.steps.entries()) {
        if (index < resumed) continue;
        await this.runStep(step, context, scope, '');
        if (index < pipeline.steps.length - 1) saved = (await this.saveCheckpoint(checkpoint, context)) || saved;
      }
      const output = lastOutput(pipeline.steps, scope);
      const outputs: Record<string, string> = {};
      for (const [name, template] of Object.entries(pipeline.outputs ?? {})) outputs[name] = this.render(template, scope, `outputs.${name}`, pipeline.name);
      checkpoint.status = 'completed';
      if (saved) await this.saveCheckpoint(checkpoint, context);
      return {
        pipeline: pipeline.name,
        output,
        outputs,
        steps: context.results,
        usage: totalUsage(context.results),
        durationMs: Math.round(performance.now() - started),
        resumedSteps: resumed,
        inputs,
      };
    } catch (error) {
      checkpoint.status = 'failed';
      checkpoint.error = error instanceof Error ? error.message : String(error);
      await this.saveCheckpoint(checkpoint, context);
      if (request.signal.aborted) throw new ServerError(Status.CANCELLED, `${pipeline.name}: the run was cancelled`);
      if (runLimit.timedOut && !(error instanceof ServerError && error.code !== Status.CANCELLED)) {
        throw new ServerError(Status.DEADLINE_EXCEEDED, `${pipeline.name}: the run went over its run_timeout of ${runTimeout} ms`);
      }
      throw error;
    }
  }

  /** Takes completed steps from a checkpoint; returns how many top-level steps are done. */
  private restore(saved: RunCheckpoint, loaded: LoadedPipeline, scope: MutableScope, context: RunContext): number {
    for (const step of saved.steps) {
      const result = toStepResult(step);
      context.results.push(result);
      if (!step.name.includes('/')) scope.steps.set(step.name, { output: step.output, json: step.json, status: step.status });
    }
    Object.assign(scope.vars, saved.vars);
    let done = 0;
    for (const step of loaded.pipeline.steps) {
      if (!scope.steps.has(step.name)) break;
      done += 1;
    }
    return done;
  }

  /** Writes the run's state; false when there is no store (or the write failed). */
  private async saveCheckpoint(checkpoint: RunCheckpoint, context: RunContext): Promise<boolean> {
    const store = this.deps.checkpoints();
    if (!store || context.nested) return false;
    checkpoint.steps = context.results.filter((result) => result.status !== 'failed').map(fromStepResult);
    checkpoint.updatedAt = new Date().toISOString();
    const timer = new AbortController();
    try {
      await Promise.race([store.save(checkpoint), sleep(2_000, undefined, { signal: timer.signal }).then(() => Promise.reject(new Error('checkpoint write timed out')))]);
      return true;
    } catch (error) {
      // A run never fails for its checkpoint; it only becomes impossible to resume.
      this.deps.logger.warn({ run_id: checkpoint.runId, error: String(error) }, 'checkpoint not saved');
      return false;
    } finally {
      timer.abort();
    }
  }

  private render(template: string, scope: Scope, where: string, pipeline: string): string {
    try {
      return renderTemplate(template, scope);
    } catch (error) {
      if (error instanceof TemplateError) throw new ServerError(Status.INVALID_ARGUMENT, `${pipeline}: ${where}: ${error.message}`);
      throw error;
    }
  }

  private async runStep(step: Step, context: RunContext, scope: MutableScope, prefix: string): Promise<void> {
    const name = prefix + step.name;
    const pipelineName = context.pipeline.name;
    const emit = context.request.emit;
    const started = performance.now();
    const base = { name, type: step.type, output: '', provider: '', model: '', usage: ZERO_USAGE(), durationMs: 0, attempts: 0, status: 'completed', promptVersion: '', json: '', error: '' };

    if (step.when) {
      let run: boolean;
      try {
        run = evaluateCondition(step.when, scope);
      } catch (error) {
        if (error instanceof TemplateError) throw new ServerError(Status.INVALID_ARGUMENT, `${pipelineName}: step "${name}" when: ${error.message}`);
        throw error;
      }
      if (!run) {
        scope.steps.set(step.name, { output: '', status: 'skipped' });
        this.finishStep(context, { ...base, status: 'skipped' });
        return;
      }
    }

    emit?.({ stepStarted: { step: name, type: step.type } });
    const stepTimeout = durationMs(step.timeout ?? context.pipeline.pipeline.defaults.step_timeout);
    using stepLimit = timeoutSignal(context.signal, stepTimeout);
    const signal = stepLimit.signal;
    const deadline = minDeadline(context.deadline, stepTimeout ? Date.now() + stepTimeout : undefined);
    try {
      const outcome = await this.execute(step, context, scope, prefix, signal, deadline);
      const value: StepValue = { output: outcome.output, status: outcome.status ?? 'completed', ...(outcome.json === undefined ? {} : { json: outcome.json }) };
      scope.steps.set(step.name, value);
      this.finishStep(context, {
        ...base,
        output: outcome.output,
        provider: outcome.provider ?? '',
        model: outcome.model ?? '',
        usage: outcome.usage ?? ZERO_USAGE(),
        attempts: outcome.attempts ?? 0,
        status: outcome.status ?? 'completed',
        promptVersion: outcome.promptVersion ?? '',
        json: outcome.json === undefined ? '' : JSON.stringify(outcome.json),
        durationMs: Math.round(performance.now() - started),
      });
    } catch (caught) {
      // The provider may answer DEADLINE_EXCEEDED a moment before our own timer fires: it is
      // still this step's timeout.
      const deadlineHit = caught instanceof ClientError && caught.code === Status.DEADLINE_EXCEEDED && stepTimeout !== undefined && performance.now() >= started + stepTimeout - 50;
      const error = this.stepError(caught, name, pipelineName, context, stepLimit.timedOut || deadlineHit, stepTimeout);
      const failed = { ...base, status: 'failed', error: error.details, durationMs: Math.round(performance.now() - started) };
      context.results.push(failed);
      emit?.({ stepFailed: { step: name, code: Status[error.code], message: error.details } });
      this.publishStep(context, failed);
      throw error;
    }
  }

  private finishStep(context: RunContext, result: proto.StepResult): void {
    context.results.push(result);
    context.request.emit?.({ stepFinished: result });
    this.publishStep(context, result);
  }

  private publishStep(context: RunContext, result: proto.StepResult): void {
    this.deps.events.publish('step', {
      status: result.status === 'failed' ? 'FAILED' : 'OK',
      durationMs: result.durationMs,
      executorStep: { runId: context.request.runId, pipeline: context.pipeline.name, step: result },
    });
  }

  /** One error for a failed step: its gRPC code, and a message that names pipeline and step. */
  private stepError(error: unknown, name: string, pipeline: string, context: RunContext, timedOut: boolean, timeoutMs: number | undefined): ServerError {
    if (error instanceof ServerError && error.details.startsWith(`${pipeline}: `)) return error;
    if (context.request.signal.aborted) return new ServerError(Status.CANCELLED, `${pipeline}: step "${name}": the run was cancelled`);
    if (timedOut) return new ServerError(Status.DEADLINE_EXCEEDED, `${pipeline}: step "${name}" went over its timeout of ${timeoutMs} ms`);
    if (error instanceof TemplateError) return new ServerError(Status.INVALID_ARGUMENT, `${pipeline}: step "${name}": ${error.message}`);
    if (error instanceof ServerError || error instanceof ClientError) return new ServerError(error.code, `${pipeline}: step "${name}": ${error.details}`);
    if (isAbortError(error)) return new ServerError(Status.DEADLINE_EXCEEDED, `${pipeline}: step "${name}": the run's time ran out`);
    this.deps.logger.error({ err: error, pipeline, step: name }, 'step failed unexpectedly');
    return new ServerError(Status.INTERNAL, `${pipeline}: step "${name}" failed unexpectedly`);
  }

  private async execute(step: Step, context: RunContext, scope: MutableScope, prefix: string, signal: AbortSignal, deadline: number | undefined): Promise<StepOutcome> {
    switch (step.type) {
      case 'claude':
      case 'gemini':
      case 'llm':
      case 'claude_smart':
        return this.callModel(step, context, scope, signal, deadline, { displayName: prefix + step.name });
      case 'claude_robust':
        return this.robust(step, context, scope, signal, deadline, prefix + step.name);
      case 'gemini_structured':
        return this.structured(step, context, scope, signal, deadline);
      case 'parallel':
        return this.parallel(step, context, scope, prefix, signal);
      case 'for_each':
        return this.forEach(step, context, scope, prefix, signal);
      case 'set_variable': {
        const value = typeof step.value === 'string' ? resolveValue(step.value, scope) : step.value;
        scope.vars[step.variable] = value;
        return { output: asText(value), ...(typeof value === 'string' ? {} : { json: value }) };
      }
      case 'transform': {
        // Operation arguments may be templates too ("default: {{steps.draft.output}}").
        const operations = step.operations.map((operation) =>
          Object.fromEntries(Object.entries(operation).map(([key, value]) => [key, key !== 'op' && typeof value === 'string' ? renderTemplate(value, scope) : value])),
        ) as typeof step.operations;
        const value = applyTransform(resolveValue(step.input, scope), operations);
        return { output: asText(value), ...(typeof value === 'string' ? {} : { json: value }) };
      }
      case 'pipeline':
        return this.nestedPipeline(step, context, scope, prefix, signal, deadline);
    }
  }

  /** One provider call for an LLM step: prompt version, templates, streaming when asked. */
  private async callModel(
    step: Extract<Step, { prompt: Prompt }>,
    context: RunContext,
    scope: Scope,
    signal: AbortSignal,
    deadline: number | undefined,
    options: { model?: string; jsonSchema?: string; extraMessages?: proto.ChatMessage[]; displayName?: string },
  ): Promise<StepOutcome> {
    const pipeline = context.pipeline.pipeline;
    const override = context.request.promptOverrides[step.name];
    const version = override === undefined ? this.deps.prompts()?.select(pipeline.name, step.name, context.request.sessionKey || undefined) : undefined;
    const promptVersion = override !== undefined ? 'override' : version ? version.id : 'yaml';
    const text = await this.renderPrompt(override ?? version?.prompt ?? step.prompt, scope);
    const systemTemplate = version?.system ?? step.system ?? '';
    const system = systemTemplate ? renderTemplate(systemTemplate, scope) : '';
    const messages: proto.ChatMessage[] = [];
    for (const demo of version?.demos ?? []) {
      messages.push({ role: proto.Role.ROLE_USER, content: demo.input }, { role: proto.Role.ROLE_ASSISTANT, content: demo.output });
    }
    messages.push({ role: proto.Role.ROLE_USER, content: text }, ...(options.extraMessages ?? []));
    const model = options.model ?? step.model ?? pipeline.defaults.model ?? DEFAULT_ALIAS[step.type] ?? 'claude_smart';
    const preset = step.preset ?? (step.type === 'claude_smart' || step.type === 'claude_robust' ? pipeline.defaults.preset : undefined);
    const request: proto.CompleteRequest = {
      messages,
      system,
      model,
      preset: options.model ? '' : (preset ?? ''),
      stopSequences: step.stop ?? [],
      metadata: { pipeline: pipeline.name, step: step.name, run_id: context.request.runId, prompt_version: promptVersion },
      jsonSchema: options.jsonSchema ?? '',
      ...(step.temperature === undefined ? {} : { temperature: step.temperature }),
      ...(step.max_tokens === undefined ? {} : { maxTokens: step.max_tokens }),
    };
    const callOptions = deadline === undefined ? { signal } : { signal, deadline: new Date(deadline) };
    let answer: proto.CompleteResponse;
    const emit = context.request.emit;
    if (emit && !options.jsonSchema) {
      const name = options.displayName ?? step.name;
      let done: proto.CompleteResponse | undefined;
      for await (const message of this.deps.provider.streamComplete({ request }, callOptions)) {
        if (message.delta !== undefined) emit({ textDelta: { step: name, text: message.delta } });
        if (message.done) done = message.done;
      }
      if (!done) throw new ServerError(Status.UNAVAILABLE, 'the provider stream ended without its final message');
      answer = done;
    } else {
      answer = await this.deps.provider.complete(request, callOptions);
    }
    return {
      output: answer.text,
      provider: answer.provider,
      model: answer.model,
      usage: answer.usage ?? ZERO_USAGE(),
      attempts: answer.attempts,
      promptVersion,
      ...(options.jsonSchema ? { structured: { json: answer.json, error: answer.jsonError } } : {}),
    };
  }

  private async renderPrompt(source: Prompt, scope: Scope): Promise<string> {
    if (typeof source === 'string') return renderTemplate(source, scope);
    const parts: string[] = [];
    for (const part of source) {
      if ('static' in part) parts.push(renderTemplate(part.static, scope));
      else if ('file' in part) parts.push(renderTemplate(await this.deps.loader.readPromptFile(part.file), scope));
      else {
        const previous = scope.steps.get(part.previous_response);
        if (!previous) throw new TemplateError(`previous_response names step "${part.previous_response}", which has not run`);
        if (!part.extract) parts.push(previous.output);
        else {
          const source = previous.json ?? safeJson(previous.output, part.previous_response);
          parts.push(asText(walkPath(source, parsePath(part.extract), () => `previous_response ${part.previous_response} extract ${part.extract}`)));
        }
      }
    }
    return parts.join('\n\n');
  }

  private async robust(step: Extract<Step, { type: 'claude_robust' }>, context: RunContext, scope: Scope, signal: AbortSignal, deadline: number | undefined, displayName: string): Promise<StepOutcome> {
    const backoff = durationMs(step.backoff) ?? 1_000;
    let attempts = 0;
    let last: unknown;
    for (let attempt = 0; attempt <= step.retry_count; attempt += 1) {
      try {
        const outcome = await this.callModel(step, context, scope, signal, deadline, { displayName });
        return { ...outcome, attempts: attempts + (outcome.attempts ?? 1) };
      } catch (error) {
        if (signal.aborted || !(error instanceof ClientError) || !RETRYABLE.has(error.code)) throw error;
        attempts += 1;
        last = error;
        const wait = backoff * 2 ** attempt;
        if (attempt === step.retry_count || (deadline !== undefined && Date.now() + wait >= deadline)) break;
        this.deps.logger.debug({ step: step.name, attempt: attempt + 1, waitMs: wait, code: Status[error.code] }, 'retrying step');
        await sleep(wait, undefined, { signal });
      }
    }
    switch (step.fallback_action) {
      case 'skip':
        return { output: '', status: 'skipped', attempts };
      case 'default_output':
        return { output: renderTemplate(step.default_output ?? '', scope), attempts, promptVersion: 'default_output' };
      case 'fallback_model': {
        const outcome = await this.callModel(step, context, scope, signal, deadline, { model: step.fallback_model!, displayName });
        return { ...outcome, attempts: attempts + (outcome.attempts ?? 1) };
      }
      default:
        throw last;
    }
  }

  /** JSON that matches the step's schema; one repair round trip when the first answer does not. */
  private async structured(step: Extract<Step, { type: 'gemini_structured' }>, context: RunContext, scope: Scope, signal: AbortSignal, deadline: number | undefined): Promise<StepOutcome> {
    const jsonSchema = JSON.stringify(step.schema);
    const first = await this.callModel(step, context, scope, signal, deadline, { jsonSchema });
    const firstJson = first.structured!;
    if (!firstJson.error) return { ...first, output: firstJson.json, json: JSON.parse(firstJson.json) };
    if (!step.repair) throw new ServerError(Status.FAILED_PRECONDITION, `invalid_output: ${firstJson.error}`);
    const repaired = await this.callModel(step, context, scope, signal, deadline, {
      jsonSchema,
      extraMessages: [
        { role: proto.Role.ROLE_ASSISTANT, content: first.output },
        { role: proto.Role.ROLE_USER, content: `That answer is not usable: ${firstJson.error}. Reply again with only JSON that matches the schema.` },
      ],
    });
    const repairedJson = repaired.structured!;
    const usage = addUsage(first.usage ?? ZERO_USAGE(), repaired.usage ?? ZERO_USAGE());
    const attempts = (first.attempts ?? 1) + (repaired.attempts ?? 1);
    if (repairedJson.error) throw new ServerError(Status.FAILED_PRECONDITION, `invalid_output after one repair: ${repairedJson.error}`);
    return { ...repaired, output: repairedJson.json, json: JSON.parse(repairedJson.json), usage, attempts };
  }

  private async parallel(step: Extract<Step, { type: 'parallel' }>, context: RunContext, scope: MutableScope, prefix: string, signal: AbortSignal): Promise<StepOutcome> {
    // One child failing stops the others.
    using children = timeoutSignal(signal, undefined);
    const childContext = { ...context, signal: children.signal };
    await mapLimited(step.steps, step.max_parallel ?? step.steps.length, async (child) => {
      try {
        await this.runStep(child, childContext, scope, prefix);
      } catch (error) {
        children.abort();
        throw error;
      }
    });
    const outputs: Record<string, unknown> = {};
    for (const child of step.steps) {
      const value = scope.steps.get(child.name);
      outputs[child.name] = value?.json ?? value?.output ?? '';
    }
    return { output: JSON.stringify(outputs), json: outputs };
  }

  private async forEach(step: Extract<Step, { type: 'for_each' }>, context: RunContext, scope: MutableScope, prefix: string, signal: AbortSignal): Promise<StepOutcome> {
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
    using iterations = timeoutSignal(signal, undefined);
    const childContext = { ...context, signal: iterations.signal };
    const results = await mapLimited(items, step.concurrency, async (item, index) => {
      const iteration: MutableScope = { inputs: scope.inputs, steps: new Map(scope.steps), vars: { ...scope.vars }, loop: { ...scope.loop, item, index, [step.as]: item } };
      try {
        for (const child of step.steps) await this.runStep(child, childContext, iteration, `${prefix}${step.name}[${index}]/`);
      } catch (error) {
        iterations.abort();
        throw error;
      }
      const last = iteration.steps.get(step.steps.at(-1)!.name);
      return last?.json ?? last?.output ?? '';
    });
    return { output: JSON.stringify(results), json: results };
  }

  private async nestedPipeline(step: Extract<Step, { type: 'pipeline' }>, context: RunContext, scope: Scope, prefix: string, signal: AbortSignal, deadline: number | undefined): Promise<StepOutcome> {
    const child = context.pipeline.children.get(step.pipeline);
    if (!child) throw new ServerError(Status.INTERNAL, `pipeline "${step.pipeline}" was not loaded`);
    const inputs: Record<string, string> = {};
    for (const [name, template] of Object.entries(step.inputs)) inputs[name] = renderTemplate(template, scope);
    const childInputs = resolveInputs(child.name, child.pipeline.inputs, inputs);
    const childContext: RunContext = { request: { ...context.request, promptOverrides: {} }, pipeline: child, inputs: childInputs, results: [], signal, deadline, nested: true };
    const childScope: MutableScope = { inputs: childInputs, steps: new Map(), vars: {} };
    const childPrefix = `${prefix}${step.name}/`;
    for (const childStep of child.pipeline.steps) await this.runStep(childStep, childContext, childScope, childPrefix);
    context.results.push(...childContext.results);
    const outputs: Record<string, string> = {};
    for (const [name, template] of Object.entries(child.pipeline.outputs ?? {})) outputs[name] = renderTemplate(template, childScope);
    return { output: lastOutput(child.pipeline.steps, childScope), json: outputs };
  }
}

function lastOutput(steps: Step[], scope: Scope): string {
  for (let index = steps.length - 1; index >= 0; index -= 1) {
    const value = scope.steps.get(steps[index]!.name);
    if (value && value.status !== 'skipped') return value.output;
  }
  return '';
}

function findStep(steps: Step[], name: string, predicate: (step: Step) => boolean): boolean {
  return steps.some((step) => (step.name === name && predicate(step)) || ((step.type === 'parallel' || step.type === 'for_each') && findStep(step.steps, name, predicate)));
}

function minDeadline(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return Math.min(a, b);
}

function addUsage(a: proto.Usage, b: proto.Usage): proto.Usage {
  return { inputTokens: a.inputTokens + b.inputTokens, outputTokens: a.outputTokens + b.outputTokens, costUsd: a.costUsd + b.costUsd };
}

function totalUsage(results: proto.StepResult[]): proto.Usage {
  return results.reduce((sum, result) => addUsage(sum, result.usage ?? ZERO_USAGE()), ZERO_USAGE());
}

function safeJson(text: string, step: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new TemplateError(`previous_response: step "${step}" has no JSON output to extract from`);
  }
}

/** Runs `work` over `items` with at most `limit` at once; the first failure rejects (the rest are told to stop by the caller). */
async function mapLimited<T, R>(items: readonly T[], limit: number, work: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  let failure: unknown;
  const worker = async () => {
    while (next < items.length && failure === undefined) {
      const index = next;
      next += 1;
      try {
        results[index] = await work(items[index]!, index);
      } catch (error) {
        failure ??= error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(Math.max(1, limit), items.length) }, worker));
  if (failure !== undefined) throw failure;
  return results;
}

function toStepResult(step: RunCheckpoint['steps'][number]): proto.StepResult {
  return {
    name: step.name,
    type: step.type,
    output: step.output,
    provider: step.provider,
    model: step.model,
    usage: step.usage,
    durationMs: step.durationMs,
    attempts: step.attempts,
    status: step.status,
    promptVersion: step.promptVersion,
    json: step.json === undefined ? '' : JSON.stringify(step.json),
    error: '',
  };
}

function fromStepResult(result: proto.StepResult): RunCheckpoint['steps'][number] {
  return {
    name: result.name,
    type: result.type,
    status: result.status === 'skipped' ? 'skipped' : 'completed',
    output: result.output,
    ...(result.json ? { json: JSON.parse(result.json) } : {}),
    provider: result.provider,
    model: result.model,
    usage: result.usage ?? ZERO_USAGE(),
    attempts: result.attempts,
    durationMs: result.durationMs,
    promptVersion: result.promptVersion,
  };
}

