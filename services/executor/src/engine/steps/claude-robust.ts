import { ClientError, Status, retry } from '@elexirion/kit';
import { stepModel } from '../../pipeline/models.js';
import { durationMs } from '../../pipeline/schema.js';
import { renderTemplate } from '../../pipeline/templates.js';
import type { StepHandler } from '../step-context.js';
import { llmCallOptions } from './llm.js';

/** Codes worth another try: the provider or the network may do better next time. */
const RETRYABLE = new Set<Status>([Status.UNAVAILABLE, Status.RESOURCE_EXHAUSTED, Status.DEADLINE_EXCEEDED, Status.ABORTED, Status.INTERNAL, Status.UNKNOWN]);
const DEFAULT_BACKOFF_MS = 1_000;
/** No wait between tries is longer, unless the step's own backoff is. */
export const ROBUST_MAX_BACKOFF_MS = 30_000;

function isRetryable(error: unknown): boolean {
  return error instanceof ClientError && RETRYABLE.has(error.code);
}

/**
 * An LLM call retried on the failures another try may fix (the kit's retry: full jitter from
 * `backoff`, doubling, capped, never past the step's deadline); when every try failed, the step's
 * `fallback_action`. `attempts` counts the failed tries plus the provider's attempts of the last.
 */
export const runClaudeRobust: StepHandler<'claude_robust'> = async (step, context) => {
  const options = llmCallOptions(step, context);
  const backoffMs = durationMs(step.backoff) ?? DEFAULT_BACKOFF_MS;
  let tries = 0;
  try {
    const outcome = await retry(
      (attempt) => {
        tries = attempt;
        return context.llm.call(options);
      },
      {
        maxAttempts: step.retry_count + 1,
        baseMs: backoffMs,
        maxMs: Math.max(backoffMs, ROBUST_MAX_BACKOFF_MS),
        signal: context.signal,
        deadline: context.deadline,
        retryable: isRetryable,
        onRetry: ({ attempt, delayMs, error }) =>
          context.logger.debug({ step: context.name, attempt, waitMs: delayMs, code: Status[(error as ClientError).code] }, 'retrying step'),
      },
    );
    return { ...outcome, attempts: tries - 1 + outcome.attempts };
  } catch (error) {
    // Cancelled, out of time, or a failure no retry fixes: no fallback either.
    if (context.signal.aborted || !isRetryable(error)) throw error;
    switch (step.fallback_action) {
      case 'skip':
        return { output: '', status: 'skipped', attempts: tries };
      case 'default_output':
        return { output: renderTemplate(step.default_output ?? '', context.scope), status: 'completed', attempts: tries, promptVersion: 'default_output' };
      case 'fallback_model': {
        const outcome = await context.llm.call({ ...options, model: step.fallback_model! });
        const failure = error as ClientError; // isRetryable said so
        const primaryFailure = `${stepModel(options.pipeline, step)}: ${Status[failure.code]}: ${failure.details}, ${tries} ${tries === 1 ? 'try' : 'tries'}`;
        return { ...outcome, attempts: tries + outcome.attempts, fallbackUsed: true, failedTargets: [primaryFailure, ...(outcome.failedTargets ?? [])] };
      }
      default:
        throw error;
    }
  }
};
