import type { LlmCallOptions, LlmStep } from '../llm-call.js';
import type { StepContext, StepHandler } from '../step-context.js';

/** claude, gemini, llm, claude_smart: one provider call with the step's prompt. */
export const runLlmStep: StepHandler<'claude' | 'gemini' | 'llm' | 'claude_smart'> = (step, context) => context.llm.call(llmCallOptions(step, context));

/** The LLM call of an LLM step in its run: its override, session key, limits, and deltas when the caller streams. */
export function llmCallOptions(step: LlmStep, context: StepContext): LlmCallOptions {
  const { request } = context.run;
  const { emit } = request;
  const name = context.name;
  return {
    pipeline: context.run.pipeline.pipeline,
    step,
    scope: context.scope,
    runId: request.runId,
    override: Object.hasOwn(request.promptOverrides, step.name) ? request.promptOverrides[step.name] : undefined,
    candidate: request.promptCandidates && Object.hasOwn(request.promptCandidates, step.name) ? request.promptCandidates[step.name] : undefined,
    sessionKey: request.sessionKey,
    signal: context.signal,
    deadline: context.deadline,
    onDelta: emit ? (text) => emit({ textDelta: { step: name, text } }) : undefined,
  };
}
