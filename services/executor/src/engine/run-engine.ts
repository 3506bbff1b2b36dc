import { isAbortError } from 'abort-controller-x';
import { ClientError, ServerError, Status, proto, timeoutSignal, toServerError, type Logger, type ServiceClient, type ServiceEvents } from '@elexirion/kit';
import { evaluateCondition } from '../pipeline/conditions.js';
import { isLlmStep, type LoadedPipeline, type PipelineLoader } from '../pipeline/loader.js';
import { durationMs, type Step } from '../pipeline/schema.js';
import { TemplateError, renderTemplate, type Scope, type StepValue } from '../pipeline/templates.js';
import { appendCheckpointSteps, toStepResult } from '../state/checkpoint-steps.js';
import type { RunCheckpoint } from '../state/checkpoint-store.js';
import type { CheckpointWriter } from '../state/checkpoint-writer.js';
import type { PromptTemplateRecord } from '../state/prompt-entry.js';
import type { PromptRegistry } from '../state/prompt-registry.js';
import { StepFailure, classifyStepFailure } from './failure-class.js';
import { resolveInputs } from './inputs.js';
import { stepScope, templateProblems } from '../pipeline/step-scope.js';
import { LlmCaller, promptVersionOfFailure } from './llm-call.js';
import { StoppedBySibling } from './map-until-failure.js';
import type { MutableScope, RunContext, StepContext } from './step-context.js';
import { SKIPPED, failedStepResult, lastOutput, stepResult } from './step-outcome.js';
import { runHandler } from './steps/index.js';
import { totalUsage } from './usage.js';

export interface EngineDependencies {
  provider: ServiceClient<'provider'>;
  loader: PipelineLoader;
  prompts: () => PromptRegistry | undefined;
  /** Undefined when checkpoints are off. */
  checkpoints: CheckpointWriter | undefined;
  events: ServiceEvents;
  logger: Logger;
}

export interface RunRequest {
  runId: string;
  jobId: string;
  source: RunCheckpoint['source'];
  inputs: Record<string, string>;
  promptOverrides: Record<string, string>;
  /** Whole prompts (template, system, demos) per LLM step for this run; its steps report prompt_version "candidate". */
  promptCandidates?: Readonly<Record<string, PromptTemplateRecord>>;
  sessionKey: string;
  signal: AbortSignal;
  /**
   * Where the run's step results go as steps end (children's included); given, the caller still
   * has them when the run fails (the failed run's event carries them).
   */
  results?: proto.StepResult[];
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

/**
 * Runs a loaded pipeline: its inputs, its run timeout, its steps in order under supervision (each
 * through its type's handler, see steps/index.ts), a checkpoint after each, and the result.
 */
export class RunEngine {
  private readonly llm: LlmCaller;
  /** Handlers run their children through this; bound once, not per step. */
  private readonly runChild: StepContext['runChild'] = (step, run, scope, prefix) => this.runStep(step, run, scope, prefix);

  constructor(private readonly deps: EngineDependencies) {
    this.llm = new LlmCaller({ provider: deps.provider, prompts: deps.prompts, loader: deps.loader });
  }

  async run(loaded: LoadedPipeline, request: RunRequest): Promise<RunResult> {
    const started = performance.now();
    const { pipeline } = loaded;
    const inputs = resolveInputs(pipeline.name, pipeline.inputs, request.resume ? request.resume.inputs : request.inputs);
    for (const name of Object.keys(request.promptOverrides)) {
      if (!findStep(pipeline.steps, name, isLlmStep)) {
        throw new ServerError(Status.INVALID_ARGUMENT, `${pipeline.name}: prompt_overrides.${name}: no LLM step is named "${name}"`);
      }
    }
    for (const name of Object.keys(request.promptCandidates ?? {})) {
      const scope = stepScope(pipeline, name);
      if (!scope || !isLlmStep(scope.step)) {
        throw new ServerError(Status.INVALID_ARGUMENT, `${pipeline.name}: prompt_candidates.${name}: no LLM step is named "${name}"`);
      }
      // A resumed run's candidates were checked when it started.
      const candidate = request.resume ? undefined : request.promptCandidates![name]!;
      for (const [field, text] of candidate ? ([['prompt', candidate.prompt], ['system', candidate.system ?? '']] as const) : []) {
        const problems = templateProblems(text, scope);
        if (problems.length > 0) throw new ServerError(Status.INVALID_ARGUMENT, `${pipeline.name}: prompt_candidates.${name}.${field}: ${problems.join('; ')}`);
      }
      if (Object.hasOwn(request.promptOverrides, name)) {
        throw new ServerError(Status.INVALID_ARGUMENT, `${pipeline.name}: prompt_candidates.${name}: step "${name}" is in prompt_overrides too; give one or the other`);
      }
    }
    const runTimeout = durationMs(pipeline.defaults.run_timeout);
    using runLimit = timeoutSignal(request.signal, runTimeout);
    const deadline = minDeadline(request.deadline, runTimeout ? Date.now() + runTimeout : undefined);
    const scope: MutableScope = { inputs, steps: new Map(), vars: {} };
    const results: proto.StepResult[] = request.results ?? [];
    const restored = request.resume ? restore(request.resume, loaded, scope, results) : undefined;
    const resumed = restored?.topLevelDone ?? 0;
    const run: RunContext = { request, pipeline: loaded, results, signal: runLimit.signal, deadline, ...(restored ? { resumed: restored.steps } : {}) };
    request.emit?.({ runStarted: { runId: request.runId, pipeline: pipeline.name } });
    const checkpoint: RunCheckpoint = {
      runId: request.runId,
      jobId: request.jobId,
      pipeline: pipeline.name,
      source: request.source,
      inputs: request.resume?.inputs ?? request.inputs,
      promptOverrides: request.promptOverrides,
      ...(request.promptCandidates && Object.keys(request.promptCandidates).length > 0 ? { promptCandidates: { ...request.promptCandidates } } : {}),
      sessionKey: request.sessionKey,
      steps: request.resume ? [...request.resume.steps] : [],
      vars: scope.vars,
      status: 'running',
      startedAt: request.resume?.startedAt ?? new Date().toISOString(),
      updatedAt: new Date().toISOString(),
    };
    let writing: Promise<boolean> | undefined;
    try {
      // A checkpoint after every step but the last; a run that has one gets its final state too
      // (completed), which a resume gives back without running anything. A one-step run (the chat
      // route) writes none: it has nothing to resume, and a KV write per chat costs NATS and process
      // CPU the benchmark sees. A step's checkpoint is written while the next step runs (the store encodes it when the
      // write starts, and writes land in order: each waits for the one before). A process that
      // dies meanwhile may lose it; the resume then runs that step again, as after a skipped write.
      let saved = request.resume !== undefined;
      const last = pipeline.steps.length - 1;
      for (const [index, step] of pipeline.steps.entries()) {
        if (index < resumed) continue;
        await this.runStep(step, run, scope, '');
        if (index < last) {
          if (writing) saved = (await writing) || saved;
          writing = this.saveCheckpoint(checkpoint, run);
        }
      }
      if (writing) saved = (await writing) || saved;
      writing = undefined;
      const output = lastOutput(pipeline.steps, scope);
      const outputs: Record<string, string> = {};
      for (const [name, template] of Object.entries(pipeline.outputs ?? {})) outputs[name] = renderOutput(template, scope, `${pipeline.name}: outputs.${name}`);
      checkpoint.status = 'completed';
      if (saved) await this.saveCheckpoint(checkpoint, run);
      return {
        pipeline: pipeline.name,
        output,
        outputs,
        steps: run.results,
        usage: totalUsage(run.results),
        durationMs: Math.round(performance.now() - started),
        resumedSteps: resumed,
        inputs,
      };
    } catch (error) {
      await writing?.catch(() => false);
      checkpoint.status = 'failed';
      checkpoint.error = error instanceof Error ? error.message : String(error);
      await this.saveCheckpoint(checkpoint, run);
      if (request.signal.aborted) throw new ServerError(Status.CANCELLED, `${pipeline.name}: the run was cancelled`);
      if (runLimit.timedOut && !(error instanceof ServerError && error.code !== Status.CANCELLED)) {
        throw new ServerError(Status.DEADLINE_EXCEEDED, `${pipeline.name}: the run went over its run_timeout of ${runTimeout} ms`);
      }
      throw error;
    }
  }

  /** Writes the run's state, unless checkpoints are off; a write that cannot be made is skipped, never waited out. */
  private async saveCheckpoint(checkpoint: RunCheckpoint, run: RunContext): Promise<boolean> {
    const writer = this.deps.checkpoints;
    if (!writer) return false;
    // Results only grow and the first failed one ends the run, so the checkpoint holds the first
    // steps.length of them already: each is converted once.
    appendCheckpointSteps(checkpoint.steps, run.results, checkpoint.steps.length);
    checkpoint.updatedAt = new Date().toISOString();
    return writer.save(checkpoint, run.deadline);
  }

  /**
   * One step under supervision: its `when:`, its timeout, its handler, its result (in the run's
   * results, the stream and an event) and, when it fails, one status error naming pipeline and step.
   */
  private async runStep(step: Step, run: RunContext, scope: MutableScope, prefix: string): Promise<void> {
    const name = prefix + step.name;
    const resumed = run.resumed?.get(name);
    if (resumed) {
      // Done before the run was resumed: its result is among the run's already. A variable it
      // set is set again, as a loop iteration's own variables are not in the checkpoint.
      scope.steps.set(step.name, resumed);
      if (step.type === 'set_variable') scope.vars[step.variable] = resumed.json !== undefined ? resumed.json : resumed.output;
      return;
    }
    const pipelineName = run.pipeline.name;
    const started = performance.now();

    if (step.when && !whenHolds(step, name, pipelineName, scope)) {
      scope.steps.set(step.name, SKIPPED);
      this.finishStep(run, stepResult(name, step.type, SKIPPED, 0));
      return;
    }

    run.request.emit?.({ stepStarted: { step: name, type: step.type } });
    const stepTimeout = durationMs(step.timeout ?? run.pipeline.pipeline.defaults.step_timeout);
    using stepLimit = timeoutSignal(run.signal, stepTimeout);
    const deadline = minDeadline(run.deadline, stepTimeout ? Date.now() + stepTimeout : undefined);
    try {
      const context: StepContext = { run, scope, signal: stepLimit.signal, deadline, name, prefix, llm: this.llm, logger: this.deps.logger, runChild: this.runChild };
      const outcome = await runHandler(step, context);
      scope.steps.set(step.name, outcome);
      this.finishStep(run, stepResult(name, step.type, outcome, Math.round(performance.now() - started)));
    } catch (caught) {
      // The provider may answer DEADLINE_EXCEEDED a moment before our own timer fires: it is
      // still this step's timeout.
      const deadlineHit = caught instanceof ClientError && caught.code === Status.DEADLINE_EXCEEDED && stepTimeout !== undefined && performance.now() >= started + stepTimeout - 50;
      const timedOut = stepLimit.timedOut || deadlineHit;
      const told = stepError(caught, name, run, timedOut, stepTimeout);
      const failureClass = classifyStepFailure(caught, told.code, timedOut);
      const error = StepFailure.of(told, name, failureClass);
      const failed = failedStepResult(name, step.type, error.details, Math.round(performance.now() - started), promptVersionOfFailure(caught));
      run.results.push(failed);
      run.request.emit?.({ stepFailed: { step: name, code: Status[error.code], message: error.details, failureClass } });
      this.publishStep(run, failed);
      throw error;
    }
  }

  private finishStep(run: RunContext, result: proto.StepResult): void {
    run.results.push(result);
    run.request.emit?.({ stepFinished: result });
    this.publishStep(run, result);
  }

  private publishStep(run: RunContext, result: proto.StepResult): void {
    this.deps.events.publish('step', {
      status: result.status === 'failed' ? 'FAILED' : 'OK',
      durationMs: result.durationMs,
      executorStep: { runId: run.request.runId, pipeline: run.pipeline.name, step: result },
    });
  }
}

/**
 * Takes the completed steps of a checkpoint into the run's results and scope: every one by its
 * name, and how many top-level steps are done.
 */
function restore(saved: RunCheckpoint, loaded: LoadedPipeline, scope: MutableScope, results: proto.StepResult[]): { steps: Map<string, StepValue>; topLevelDone: number } {
  const steps = new Map<string, StepValue>();
  for (const step of saved.steps) {
    results.push(toStepResult(step));
    // A stored step is what templates read of it: output, json, status.
    steps.set(step.name, step);
    if (!step.name.includes('/')) scope.steps.set(step.name, step);
  }
  Object.assign(scope.vars, saved.vars);
  let topLevelDone = 0;
  for (const step of loaded.pipeline.steps) {
    if (!scope.steps.has(step.name)) break;
    topLevelDone += 1;
  }
  return { steps, topLevelDone };
}

/** Whether a step's `when:` holds; a condition that cannot be evaluated fails the run. */
function whenHolds(step: Step, name: string, pipeline: string, scope: Scope): boolean {
  try {
    return evaluateCondition(step.when!, scope);
  } catch (error) {
    if (error instanceof TemplateError) throw toServerError(error, `${pipeline}: step "${name}" when`);
    throw error;
  }
}

/** The one error of a failed step: its status, and a message that names pipeline and step. */
function stepError(error: unknown, name: string, run: RunContext, timedOut: boolean, timeoutMs: number | undefined): ServerError {
  const pipeline = run.pipeline.name;
  // A child step's failure, already told.
  if (error instanceof ServerError && error.details.startsWith(`${pipeline}: `)) return error;
  if (run.request.signal.aborted) return new ServerError(Status.CANCELLED, `${pipeline}: step "${name}": the run was cancelled`);
  if (timedOut) return new ServerError(Status.DEADLINE_EXCEEDED, `${pipeline}: step "${name}" went over its timeout of ${timeoutMs} ms`);
  if (isAbortError(error)) {
    // Stopped as a sibling under the same parallel step or loop failed: not a matter of time.
    const reason: unknown = run.signal.reason;
    if (reason instanceof StoppedBySibling) return new ServerError(Status.CANCELLED, `${pipeline}: step "${name}" was stopped: step "${reason.failed}" failed`);
    // Aborted from above while the caller is still there: a run or parent step timeout.
    return new ServerError(Status.DEADLINE_EXCEEDED, `${pipeline}: step "${name}": the run's time ran out`);
  }
  return toServerError(error, `${pipeline}: step "${name}"`);
}

function renderOutput(template: string, scope: Scope, where: string): string {
  try {
    return renderTemplate(template, scope);
  } catch (error) {
    throw error instanceof TemplateError ? toServerError(error, where) : error;
  }
}

function findStep(steps: Step[], name: string, predicate: (step: Step) => boolean): boolean {
  return steps.some((step) => (step.name === name && predicate(step)) || ((step.type === 'parallel' || step.type === 'for_each') && findStep(step.steps, name, predicate)));
}

function minDeadline(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return Math.min(a, b);
}
