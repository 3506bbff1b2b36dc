/**
 * The executor's prompt lifecycle calls (prompts.proto): list, publish, set a rollout, promote,
 * roll back, history. Requests are checked here (names, the pipeline and its LLM step, the
 * template's placeholders against what the step can see), changes are applied by the pure
 * functions of state/prompt-changes.ts and written by the registry with compare-and-set, and each
 * change is published as a telemetry event of kind "prompt".
 *
 * Who asks comes from the metadata the gateway sets from the caller's API key
 * (`x-elexirion-caller`, `x-elexirion-caller-admin: true`); the monitor sends "monitor".
 */
import { CALLER_ADMIN_METADATA, CALLER_METADATA, GUARD_METADATA, ServerError, Status, type proto, type Logger, type ServiceEvents } from '@elexirion/kit';
import type { CallContext } from 'nice-grpc-common';
import type { PipelineLoader } from './pipeline/loader.js';
import { PIPELINE_NAME, STEP_NAME } from './pipeline/schema.js';
import { isLlmStepOf, stepScope, templateProblems, type StepScope } from './pipeline/step-scope.js';
import {
  checkRolloutWeight,
  checkScores,
  checkTemplate,
  checkText,
  checkVersionId,
  emptyEntry,
  promoteVersion,
  publishVersion,
  rollbackPrompt,
  setRollout,
  type ChangeActor,
  type GuardInput,
} from './state/prompt-changes.js';
import type { PromptChangeRecord, PromptEntry, PromptRolloutRecord, PromptTemplateRecord, PromptVersionRecord } from './state/prompt-entry.js';
import { readHistory } from './state/prompt-history.js';
import type { PromptRegistry } from './state/prompt-registry.js';


const DEFAULT_HISTORY_PAGE = 100;
/** How long a call waits for the registry to load from NATS before it is UNAVAILABLE. */
const ATTACH_WAIT_MS = 5_000;
const MAX_HISTORY_PAGE = 1000;

type PromptLifecycleCalls = Pick<
  proto.ExecutorServiceImplementation,
  'listPromptVersions' | 'publishPromptVersion' | 'setPromptRollout' | 'promotePromptVersion' | 'rollbackPrompt' | 'getPromptHistory'
>;

export interface PromptCallDependencies {
  /** Undefined when the registry is off (EXECUTOR_PROMPT_REGISTRY=false). */
  registry: PromptRegistry | undefined;
  loader: PipelineLoader;
  events: ServiceEvents;
  logger: Logger;
}

function invalid(message: string): ServerError {
  return new ServerError(Status.INVALID_ARGUMENT, message);
}

function checkNames(pipeline: string, step: string, stepRequired: boolean): void {
  if (!pipeline) throw invalid('pipeline: required');
  if (!PIPELINE_NAME.test(pipeline)) throw invalid(`pipeline: "${pipeline.slice(0, 80)}" is not a pipeline name (lowercase letters, digits, _ and -, at most 64)`);
  if (!step) {
    if (stepRequired) throw invalid('step: required');
    return;
  }
  if (!STEP_NAME.test(step) || step.length > 128) throw invalid(`step: "${step.slice(0, 80)}" is not a step name (letters, digits, _ and -, not starting with a digit or -)`);
}

/** Who asks, from the metadata the gateway (or the monitor) set. */
export function actorOf(context: CallContext): ChangeActor {
  const name = context.metadata.get(CALLER_METADATA) ?? '';
  const by = name.trim() === '' ? 'anonymous' : name.slice(0, 128);
  return { by, admin: context.metadata.get(CALLER_ADMIN_METADATA) === 'true', guard: context.metadata.get(GUARD_METADATA) === 'true', now: new Date().toISOString() };
}

function date(iso: string | undefined): Date | undefined {
  return iso ? new Date(iso) : undefined;
}

export function rolloutToProto(rollout: PromptRolloutRecord): proto.PromptRollout {
  return {
    baseline: rollout.baseline,
    weights: { ...rollout.weights },
    candidate: rollout.candidate,
    guard: rollout.guard
      ? { metric: rollout.guard.metric, scoreName: rollout.guard.scoreName, minRuns: rollout.guard.minRuns, significance: rollout.guard.significance, maxRuns: rollout.guard.maxRuns }
      : undefined,
    baselineProtected: rollout.baselineProtected,
    startedAt: date(rollout.startedAt),
  };
}

function templateToProto(template: PromptTemplateRecord): proto.PromptTemplate {
  return { prompt: template.prompt, system: template.system ?? '', demos: (template.demos ?? []).map((demo) => ({ input: demo.input, output: demo.output })) };
}

function versionToProto(version: PromptVersionRecord): proto.PromptVersion {
  return {
    id: version.id,
    template: templateToProto(version.template),
    source: version.source,
    description: version.description,
    scores: { ...version.scores },
    createdAt: date(version.createdAt),
    createdBy: version.createdBy,
  };
}

export function stepToProto(entry: PromptEntry, revision: number): proto.PromptStep {
  return {
    pipeline: entry.pipeline,
    step: entry.step,
    versions: entry.versions.map(versionToProto),
    rollout: rolloutToProto(entry.rollout),
    revision,
    updatedAt: date(entry.updatedAt),
  };
}

export function changeToProto(pipeline: string, step: string, change: PromptChangeRecord, revision: number): proto.PromptChange {
  return {
    pipeline,
    step,
    action: change.action,
    time: date(change.time),
    by: change.by,
    reason: change.reason,
    before: rolloutToProto(change.before),
    after: rolloutToProto(change.after),
    version: change.version,
    revision,
  };
}

function guardInput(guard: proto.PromptRolloutGuard | undefined): GuardInput | undefined {
  return guard ? { metric: guard.metric, scoreName: guard.scoreName, minRuns: guard.minRuns, significance: guard.significance, maxRuns: guard.maxRuns } : undefined;
}

function checkRevision(revision: number): number {
  if (!Number.isSafeInteger(revision) || revision < 0) throw invalid(`expected_revision: must be a revision (0 for any), got ${revision}`);
  return revision;
}

export function promptLifecycleCalls(deps: PromptCallDependencies): PromptLifecycleCalls {
  const { loader, events, logger } = deps;

  /** The registry once it has loaded; a call just after the start waits for it a little. */
  async function registry(context: CallContext): Promise<PromptRegistry> {
    const prompts = deps.registry;
    if (!prompts) throw new ServerError(Status.FAILED_PRECONDITION, 'the prompt registry is off on this executor (EXECUTOR_PROMPT_REGISTRY=false)');
    if (!(await prompts.whenAttached(ATTACH_WAIT_MS, context.signal))) {
      throw new ServerError(Status.UNAVAILABLE, `the prompt registry has not loaded from NATS (waited ${ATTACH_WAIT_MS} ms); try again`);
    }
    return prompts;
  }

  /** The step of a named pipeline a change is about: NOT_FOUND when missing, INVALID_ARGUMENT when it has no prompt. */
  async function llmStep(pipeline: string, step: string): Promise<StepScope> {
    checkNames(pipeline, step, true);
    const loaded = await loader.loadNamed(pipeline);
    const scope = stepScope(loaded.pipeline, step);
    if (!scope) throw new ServerError(Status.NOT_FOUND, `step: pipeline "${pipeline}" has no step "${step}"`);
    if (!isLlmStepOf(loaded.pipeline, step)) throw invalid(`step: "${step}" of pipeline "${pipeline}" is a ${scope.step.type} step, not an LLM step (it has no prompt)`);
    return scope;
  }

  /** The template, checked: bounds, and placeholders that parse and name only what the step sees. */
  function checkedTemplate(template: proto.PromptTemplate | undefined, scope: StepScope): PromptTemplateRecord {
    const checked = checkTemplate(template && { prompt: template.prompt, system: template.system, demos: template.demos });
    for (const [field, text] of [['template.prompt', checked.prompt], ['template.system', checked.system ?? '']] as const) {
      const problems = templateProblems(text, scope);
      if (problems.length > 0) throw invalid(`${field}: ${problems.join('; ')}`);
    }
    return checked;
  }

  /** After a change is written: its telemetry event and a log line. */
  function told(written: { entry: PromptEntry; revision: number }): void {
    const change = written.entry.lastChange;
    if (!change) return;
    logger.info({ pipeline: written.entry.pipeline, step: written.entry.step, action: change.action, version: change.version, by: change.by, revision: written.revision }, 'prompt registry changed');
    events.publish('prompt', { status: 'OK', executorPrompt: { change: changeToProto(written.entry.pipeline, written.entry.step, change, written.revision) } });
  }

  /** A write the KV refuses as too large: said in terms of the step's entry. */
  async function written<T>(write: () => Promise<T>): Promise<T> {
    try {
      return await write();
    } catch (error) {
      if (error instanceof ServerError || !(error instanceof Error) || (error as { code?: unknown }).code !== Status.INVALID_ARGUMENT) throw error;
      throw invalid(`the step's prompt entry cannot be stored: ${error.message}`);
    }
  }

  return {
    async listPromptVersions(request, context) {
      if (request.step && !request.pipeline) throw invalid('pipeline: required with step');
      if (request.pipeline) checkNames(request.pipeline, request.step, false);
      const steps = (await registry(context))
        .list()
        .filter(({ entry }) => (!request.pipeline || entry.pipeline === request.pipeline) && (!request.step || entry.step === request.step))
        .sort((a, b) => a.entry.pipeline.localeCompare(b.entry.pipeline) || a.entry.step.localeCompare(b.entry.step));
      return { steps: steps.map(({ entry, revision }) => stepToProto(entry, revision)) };
    },

    async publishPromptVersion(request, context) {
      const actor = actorOf(context);
      const prompts = await registry(context);
      if (request.versionId) checkVersionId(request.versionId);
      checkText('source', request.source, 256);
      checkText('description', request.description);
      checkText('reason', request.reason);
      checkScores(request.scores);
      const guard = guardInput(request.guard);
      checkRolloutWeight(request.rolloutWeight, guard);
      const expected = checkRevision(request.expectedRevision);
      const scope = await llmStep(request.pipeline, request.step);
      const template = checkedTemplate(request.template, scope);
      let published: PromptVersionRecord | undefined;
      const result = await written(() =>
        prompts.change(request.pipeline, request.step, expected, (current) => {
          const next = publishVersion(current ?? emptyEntry(request.pipeline, request.step, actor.now), {
            versionId: request.versionId,
            template,
            source: request.source,
            description: request.description,
            scores: request.scores,
            rolloutWeight: request.rolloutWeight,
            guard,
            reason: request.reason,
          }, actor);
          published = next.version;
          return next.entry;
        }),
      );
      told(result);
      return { step: stepToProto(result.entry, result.revision), version: versionToProto(published!) };
    },

    async setPromptRollout(request, context) {
      const actor = actorOf(context);
      const prompts = await registry(context);
      checkText('reason', request.reason);
      const expected = checkRevision(request.expectedRevision);
      await llmStep(request.pipeline, request.step);
      const result = await written(() =>
        prompts.change(request.pipeline, request.step, expected, (current) =>
          setRollout(current ?? emptyEntry(request.pipeline, request.step, actor.now), {
            weights: request.weights,
            candidate: request.candidate,
            guard: guardInput(request.guard),
            baselineProtected: request.baselineProtected,
            reason: request.reason,
          }, actor),
        ),
      );
      told(result);
      return { step: stepToProto(result.entry, result.revision) };
    },

    async promotePromptVersion(request, context) {
      const actor = actorOf(context);
      const prompts = await registry(context);
      checkText('reason', request.reason);
      const expected = checkRevision(request.expectedRevision);
      await llmStep(request.pipeline, request.step);
      const result = await prompts.change(request.pipeline, request.step, expected, (current) =>
        promoteVersion(current ?? emptyEntry(request.pipeline, request.step, actor.now), request.versionId, request.reason, actor),
      );
      told(result);
      return { step: stepToProto(result.entry, result.revision) };
    },

    async rollbackPrompt(request, context) {
      const actor = actorOf(context);
      const prompts = await registry(context);
      checkText('reason', request.reason);
      const expected = checkRevision(request.expectedRevision);
      await llmStep(request.pipeline, request.step);
      const result = await prompts.change(request.pipeline, request.step, expected, (current) => {
        if (!current) throw new ServerError(Status.NOT_FOUND, `${request.pipeline}.${request.step} has no prompt versions: nothing to roll back`);
        return rollbackPrompt(current, request.toVersion, request.reason, actor);
      });
      told(result);
      return { step: stepToProto(result.entry, result.revision) };
    },

    async getPromptHistory(request, context) {
      checkNames(request.pipeline, request.step, false);
      if (!Number.isInteger(request.pageSize) || request.pageSize < 0) throw invalid(`page_size: must be 0 (the default ${DEFAULT_HISTORY_PAGE}) or more, got ${request.pageSize}`);
      const pageSize = Math.min(request.pageSize || DEFAULT_HISTORY_PAGE, MAX_HISTORY_PAGE);
      let before: number | undefined;
      if (request.pageToken) {
        before = /^\d{1,15}$/.test(request.pageToken) ? Number(request.pageToken) : NaN;
        if (!Number.isSafeInteger(before) || before < 1) throw invalid('page_token: not a token from a previous answer');
      }
      const prompts = await registry(context);
      if (!prompts.historyStream) throw new ServerError(Status.FAILED_PRECONDITION, 'the prompt history is off on this executor');
      if (!prompts.historyReady) throw new ServerError(Status.UNAVAILABLE, 'the prompt history stream could not be set up on NATS (see the executor log); try again later');
      const connection = prompts.connection;
      if (!connection || connection.isClosed()) throw new ServerError(Status.UNAVAILABLE, 'NATS is not connected: the prompt history cannot be read now; try again');
      const page = await readHistory(connection, { stream: prompts.historyStream, bucket: prompts.bucket, pipeline: request.pipeline, step: request.step, pageSize, before });
      return {
        changes: page.items.map((item) => changeToProto(item.pipeline, item.step, item.change, item.revision)),
        nextPageToken: page.nextBefore === undefined ? '' : String(page.nextBefore),
      };
    },
  };
}
