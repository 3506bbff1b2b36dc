/**
 * The LLM call of a pipeline step, on its own so LLM steps, the optimizer's checks and agentic
 * steps share one path: which prompt (the caller's override, else a registry version chosen by
 * weight and sticky per session key, else the YAML prompt, the last known good), rendering it
 * (prompt parts included), demos as message pairs, the provider request, and text deltas while it
 * streams.
 */
import { isAbortError } from 'abort-controller-x';
import { ClientError, ServerError, Status, TrailerCapture, proto, type ServiceClient } from '@elexirion/kit';
import type { PipelineLoader } from '../pipeline/loader.js';
import { stepModel, stepPreset } from '../pipeline/models.js';
import type { Pipeline, Prompt, Step } from '../pipeline/schema.js';
import { TemplateError, asText, parsePath, renderTemplate, walkPath, type Scope } from '../pipeline/templates.js';
import type { PromptDemoRecord, PromptTemplateRecord } from '../state/prompt-entry.js';
import type { PromptRegistry } from '../state/prompt-registry.js';
import type { StepOutcome } from './step-outcome.js';
import { zeroUsage } from './usage.js';
import { ProviderOverloadedError } from './failure-class.js';

/** A step that calls a model: the YAML fields the call reads. */
export type LlmStep = Extract<Step, { prompt: Prompt }>;

export type PromptDemo = PromptDemoRecord;

/** The prompt a call uses, and the version tag its step is recorded with. */
export interface SelectedPrompt {
  prompt: Prompt;
  /** A template; undefined for none. */
  system: string | undefined;
  /** Example exchanges sent before the prompt, as user/assistant pairs. */
  demos: readonly PromptDemo[];
  /** "override", "candidate", the registry version's id, or "yaml". */
  version: string;
}

export interface LlmCallOptions {
  /** The step's pipeline: its name keys the registry and the metadata, its defaults fill model and preset. */
  pipeline: Pipeline;
  step: LlmStep;
  /** What the prompt's templates read. */
  scope: Scope;
  /** Sent as metadata with the request. */
  runId: string;
  /** A prompt that wins over the registry and the YAML (ExecuteRequest.prompt_overrides). */
  override?: string | undefined;
  /** A whole prompt (template, system, demos) that wins over the registry and the YAML (ExecuteRequest.prompt_candidates). */
  candidate?: PromptTemplateRecord | undefined;
  /** The same key gets the same registry version while the weights hold; empty draws by weight. */
  sessionKey?: string | undefined;
  signal: AbortSignal;
  /** Epoch ms; the provider call's deadline. */
  deadline: number | undefined;
  /** Given, the call streams and hands over each text delta (not with `jsonSchema`). */
  onDelta?: ((text: string) => void) | undefined;
  /** Another model than the step's, without a preset (claude_robust's fallback_model). */
  model?: string;
  /** A JSON Schema (as JSON text) the answer must match; the outcome then has `structured`. */
  jsonSchema?: string;
  /** Messages after the prompt (gemini_structured's repair turn). */
  extraMessages?: readonly proto.ChatMessage[];
}

/** The answer as a completed step outcome. */
export interface LlmOutcome extends StepOutcome {
  provider: string;
  model: string;
  usage: proto.Usage;
  /** Upstream attempts the provider made. */
  attempts: number;
  promptVersion: string;
  /** With `jsonSchema`: the provider's validated JSON as text, or why the answer is not valid. */
  structured?: { json: string; error: string };
}

export interface LlmCallDependencies {
  provider: ServiceClient<'provider'>;
  /** The registry while it is attached; without one, the YAML prompt. */
  prompts: () => Pick<PromptRegistry, 'select'> | undefined;
  /** Reads prompt parts' `file`s. */
  loader: Pick<PipelineLoader, 'readPromptFile'>;
}

const NO_DEMOS: readonly PromptDemo[] = Object.freeze([]);

/**
 * The prompt version a failed call used, by its error: the failed step's result reports it, so
 * the monitor can count a version's failures. A WeakMap, as the errors are anyone's.
 */
const failedCallVersions = new WeakMap<object, string>();

/** The prompt version of the LLM call that threw `error`; undefined when it is not such an error. */
export function promptVersionOfFailure(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null ? failedCallVersions.get(error) : undefined;
}

/** Makes LLM calls for steps; one per engine, as it holds nothing of a call. */
export class LlmCaller {
  constructor(private readonly deps: LlmCallDependencies) {}

  /**
   * One provider call for `options.step`: its prompt selected and rendered, demos first, and the
   * provider's answer as the step's outcome, tagged with the prompt version. Fails with the
   * provider's ClientError, or a TemplateError when a template cannot be rendered.
   */
  async call(options: LlmCallOptions): Promise<LlmOutcome> {
    const selected = selectPrompt(this.deps.prompts(), options.pipeline.name, options.step, options.override, options.sessionKey, options.candidate);
    try {
      return await this.#call(options, selected);
    } catch (error) {
      if (typeof error === 'object' && error !== null) failedCallVersions.set(error, selected.version);
      throw error;
    }
  }

  async #call(options: LlmCallOptions, selected: SelectedPrompt): Promise<LlmOutcome> {
    // A prompt without file parts renders without waiting: most calls take no extra turn here.
    const rendered = renderPrompt(selected.prompt, options.scope, this.deps.loader);
    const request = completeRequest(options, selected, typeof rendered === 'string' ? rendered : await rendered);
    // The provider's trailer says when every target was overloaded, which its status cannot.
    const trailer = new TrailerCapture();
    const callOptions = { signal: options.signal, onTrailer: trailer.onTrailer, ...(options.deadline === undefined ? {} : { deadline: new Date(options.deadline) }) };
    let answer: proto.CompleteResponse;
    try {
      if (options.onDelta && !options.jsonSchema) {
        let done: proto.CompleteResponse | undefined;
        try {
          for await (const message of this.deps.provider.streamComplete({ request }, callOptions)) {
            if (message.delta !== undefined) options.onDelta(message.delta);
            if (message.done) done = message.done;
          }
        } catch (error) {
          // The answer is in: a cancel that lands before the stream's end (the provider's
          // trailers) does not undo the step, which then gets its checkpoint; called again on
          // the resume, it would be paid for twice.
          if (!done || !isCancel(error)) throw error;
        }
        if (!done) throw new ServerError(Status.UNAVAILABLE, 'the provider stream ended without its final message');
        answer = done;
      } else {
        answer = await this.deps.provider.complete(request, callOptions);
      }
    } catch (error) {
      throw error instanceof ClientError && trailer.providerOverloaded() ? new ProviderOverloadedError(error) : error;
    }
    const outcome: LlmOutcome = {
      output: answer.text,
      status: 'completed',
      provider: answer.provider,
      model: answer.model,
      usage: answer.usage ?? zeroUsage(),
      attempts: answer.attempts,
      promptVersion: selected.version,
    };
    if (answer.fallbackUsed) {
      outcome.fallbackUsed = true;
      outcome.failedTargets = answer.failedTargets;
    }
    if (options.jsonSchema) outcome.structured = { json: answer.json, error: answer.jsonError };
    return outcome;
  }
}

/** The call was cancelled by its own signal (the run's caller went away) or by the provider's side. */
function isCancel(error: unknown): boolean {
  return isAbortError(error) || (error instanceof ClientError && error.code === Status.CANCELLED);
}

/** The caller's override or candidate, else the registry's version for (pipeline, step), else the step's YAML prompt. */
export function selectPrompt(
  registry: Pick<PromptRegistry, 'select'> | undefined,
  pipeline: string,
  step: LlmStep,
  override: string | undefined,
  sessionKey: string | undefined,
  candidate?: PromptTemplateRecord,
): SelectedPrompt {
  if (override !== undefined) return { prompt: override, system: step.system, demos: NO_DEMOS, version: 'override' };
  if (candidate !== undefined) return { prompt: candidate.prompt, system: candidate.system || step.system, demos: candidate.demos ?? NO_DEMOS, version: 'candidate' };
  const version = registry?.select(pipeline, step.name, sessionKey || undefined);
  if (version) return { prompt: version.prompt, system: version.system ?? step.system, demos: version.demos ?? NO_DEMOS, version: version.id };
  return { prompt: step.prompt, system: step.system, demos: NO_DEMOS, version: 'yaml' };
}

/**
 * The prompt's text: a template, or parts joined by blank lines (static text, a file's text, a
 * previous step's output or a path into its JSON). Text at once when no part reads a file.
 */
export function renderPrompt(prompt: Prompt, scope: Scope, loader: Pick<PipelineLoader, 'readPromptFile'>): string | Promise<string> {
  if (typeof prompt === 'string') return renderTemplate(prompt, scope);
  if (!prompt.some((part) => 'file' in part)) return prompt.map((part) => renderPart(part, scope, undefined)).join('\n\n');
  return (async () => {
    const parts: string[] = [];
    for (const part of prompt) parts.push(renderPart(part, scope, 'file' in part ? await loader.readPromptFile(part.file) : undefined));
    return parts.join('\n\n');
  })();
}

function renderPart(part: Exclude<Prompt, string>[number], scope: Scope, fileText: string | undefined): string {
  if ('static' in part) return renderTemplate(part.static, scope);
  if ('file' in part) return renderTemplate(fileText!, scope);
  const previous = scope.steps.get(part.previous_response);
  if (!previous) throw new TemplateError(`previous_response names step "${part.previous_response}", which has not run`);
  if (!part.extract) return previous.output;
  const source = previous.json ?? parseOutput(previous.output, part.previous_response);
  return asText(walkPath(source, parsePath(part.extract), () => `previous_response ${part.previous_response} extract ${part.extract}`));
}

function parseOutput(text: string, step: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new TemplateError(`previous_response: step "${step}" has no JSON output to extract from`);
  }
}

/** The conversation: each demo as a user/assistant pair, then the prompt, then any extra turns. */
export function chatMessages(demos: readonly PromptDemo[], prompt: string, extra?: readonly proto.ChatMessage[]): proto.ChatMessage[] {
  const messages: proto.ChatMessage[] = [];
  for (const demo of demos) messages.push({ role: proto.Role.ROLE_USER, content: demo.input }, { role: proto.Role.ROLE_ASSISTANT, content: demo.output });
  messages.push({ role: proto.Role.ROLE_USER, content: prompt });
  if (extra) messages.push(...extra);
  return messages;
}

/** The provider request for a rendered prompt: model and preset from the step, else the pipeline's defaults, else the step type's alias. */
export function completeRequest(options: LlmCallOptions, selected: SelectedPrompt, prompt: string): proto.CompleteRequest {
  const { pipeline, step, scope } = options;
  const preset = stepPreset(pipeline, step);
  const request: proto.CompleteRequest = {
    messages: chatMessages(selected.demos, prompt, options.extraMessages),
    system: selected.system ? renderTemplate(selected.system, scope) : '',
    model: options.model ?? stepModel(pipeline, step),
    preset: options.model ? '' : (preset ?? ''),
    stopSequences: step.stop ?? [],
    metadata: { pipeline: pipeline.name, step: step.name, run_id: options.runId, prompt_version: selected.version },
    jsonSchema: options.jsonSchema ?? '',
  };
  if (step.temperature !== undefined) request.temperature = step.temperature;
  if (step.max_tokens !== undefined) request.maxTokens = step.max_tokens;
  return request;
}
