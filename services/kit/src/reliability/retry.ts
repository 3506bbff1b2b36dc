import { setTimeout as sleep } from 'node:timers/promises';
import { AbortError } from 'abort-controller-x';

/**
 * The one way Elexirion retries: exponential backoff with full jitter, capped, never past a
 * deadline, stopped by an AbortSignal. Provider calls, `claude_robust` steps, NATS connects and KV
 * watchers all retry through `retry()`; calls between services retry in the gRPC channel with the
 * same formula (`grpcRetryPolicy`).
 */
export interface RetryPolicy {
  /** Attempts in all, the first included; `Infinity` retries until the deadline or the signal. */
  maxAttempts: number;
  /** The ceiling of the first retry's wait; it doubles with every retry after it. */
  baseMs: number;
  /** No wait is longer than this. */
  maxMs: number;
}

/**
 * The wait before retry number `retry` (1 for the first retry): uniform in
 * [0, min(maxMs, baseMs * 2^(retry-1))], "full jitter" (AWS Architecture Blog, "Exponential
 * Backoff And Jitter"), which spreads the retries of many callers best.
 */
export function backoffDelay(retry: number, policy: Pick<RetryPolicy, 'baseMs' | 'maxMs'>, random: () => number = Math.random): number {
  const ceiling = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.max(0, retry - 1));
  return Math.floor(random() * ceiling);
}

export interface RetryOptions extends RetryPolicy {
  /** Aborting it stops the retries at once, during a wait too (the wait rejects with an AbortError). */
  signal?: AbortSignal | undefined;
  /** Epoch ms: no retry starts after it. */
  deadline?: number | undefined;
  /** Time a retry needs to do its work: none starts later than `deadline - minAttemptMs`. */
  minAttemptMs?: number;
  /** Whether a failure is worth another attempt; every failure is by default. */
  retryable?(error: unknown): boolean;
  /** A wait the failure itself asks for (Retry-After), used instead of the backoff. */
  retryAfterMs?(error: unknown): number | undefined;
  /** Told before each wait: for logs and metrics. */
  onRetry?(retry: { attempt: number; delayMs: number; error: unknown }): void;
  /** Background loops let the process exit during a wait. */
  unref?: boolean;
  random?: () => number;
}

/**
 * Runs `attempt` (numbered from 1) until it succeeds; rethrows its last failure when that failure
 * is not retryable, the attempts are spent, the signal aborted, or the next wait would end too
 * close to the deadline.
 */
export async function retry<T>(attempt: (number: number) => Promise<T>, options: RetryOptions): Promise<T> {
  const { signal, deadline, minAttemptMs = 0 } = options;
  for (let number = 1; ; number += 1) {
    if (signal?.aborted) throw new AbortError();
    try {
      return await attempt(number);
    } catch (error) {
      if (signal?.aborted || number >= options.maxAttempts || (options.retryable && !options.retryable(error))) throw error;
      const delayMs = options.retryAfterMs?.(error) ?? backoffDelay(number, options, options.random);
      if (deadline !== undefined && Date.now() + delayMs + minAttemptMs >= deadline) throw error;
      options.onRetry?.({ attempt: number, delayMs, error });
      await sleep(delayMs, undefined, { signal, ref: !options.unref });
    }
  }
}

/**
 * A policy as a gRPC service config `retryPolicy` (gRFC A6), whose backoff is the same full
 * jitter: retry n waits uniform in [0, min(maxBackoff, initialBackoff * 2^(n-1))].
 */
export function grpcRetryPolicy(policy: RetryPolicy, retryableStatusCodes: string[]): Record<string, unknown> {
  if (!Number.isFinite(policy.maxAttempts) || policy.maxAttempts < 2) throw new RangeError('a gRPC retry policy needs 2 to 5 attempts');
  return {
    maxAttempts: policy.maxAttempts,
    initialBackoff: `${policy.baseMs / 1000}s`,
    maxBackoff: `${policy.maxMs / 1000}s`,
    backoffMultiplier: 2,
    retryableStatusCodes,
  };
}
