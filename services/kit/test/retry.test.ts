import { describe, expect, it } from 'vitest';
import { isAbortError } from 'abort-controller-x';
import { backoffDelay, grpcRetryPolicy, retry } from '@elexirion/kit';

const quick = { maxAttempts: 5, baseMs: 1, maxMs: 4 };

class Flaky extends Error {
  constructor(readonly retryable = true, readonly retryAfterMs?: number) {
    super('flaky');
  }
}

describe('backoffDelay', () => {
  it('draws full jitter between zero and the capped exponential ceiling', () => {
    const policy = { baseMs: 100, maxMs: 1_000 };
    expect(backoffDelay(1, policy, () => 0.999)).toBe(99);
    expect(backoffDelay(3, policy, () => 0.5)).toBe(200);
    expect(backoffDelay(10, policy, () => 0.999)).toBe(999);
    expect(backoffDelay(2, policy, () => 0)).toBe(0);
  });
});

describe('retry', () => {
  it('returns the first success, numbering attempts from 1', async () => {
    const seen: number[] = [];
    const result = await retry(async (attempt) => {
      seen.push(attempt);
      if (attempt < 3) throw new Flaky();
      return 'done';
    }, quick);
    expect(result).toBe('done');
    expect(seen).toEqual([1, 2, 3]);
  });

  it('rethrows the last failure once the attempts are spent', async () => {
    let calls = 0;
    const failure = new Flaky();
    await expect(
      retry(async () => {
        calls += 1;
        throw failure;
      }, { ...quick, maxAttempts: 3 }),
    ).rejects.toBe(failure);
    expect(calls).toBe(3);
  });

  it('never retries a failure that is not retryable', async () => {
    let calls = 0;
    await expect(
      retry(
        async () => {
          calls += 1;
          throw new Flaky(false);
        },
        { ...quick, retryable: (error) => (error as Flaky).retryable },
      ),
    ).rejects.toBeInstanceOf(Flaky);
    expect(calls).toBe(1);
  });

  it('waits what the failure asks for instead of the backoff, and tells onRetry', async () => {
    const waits: number[] = [];
    const started = Date.now();
    await retry(
      async (attempt) => {
        if (attempt === 1) throw new Flaky(true, 120);
        return 'ok';
      },
      { ...quick, retryAfterMs: (error) => (error as Flaky).retryAfterMs, onRetry: ({ delayMs }) => waits.push(delayMs) },
    );
    expect(waits).toEqual([120]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(110);
  });

  it('gives up rather than start a retry that would end past the deadline', async () => {
    let calls = 0;
    // An hour's wait against a 10 s deadline: a retry that waited first would outlast the test.
    const failure = new Flaky(true, 3_600_000);
    await expect(
      retry(
        async () => {
          calls += 1;
          throw failure;
        },
        { ...quick, deadline: Date.now() + 10_000, retryAfterMs: (error) => (error as Flaky).retryAfterMs },
      ),
    ).rejects.toBe(failure);
    expect(calls).toBe(1);
  });

  it('keeps minAttemptMs of the deadline for the next attempt', async () => {
    let calls = 0;
    await expect(
      retry(
        async () => {
          calls += 1;
          throw new Flaky();
        },
        { maxAttempts: 10, baseMs: 1, maxMs: 1, deadline: Date.now() + 100, minAttemptMs: 150 },
      ),
    ).rejects.toBeInstanceOf(Flaky);
    expect(calls).toBe(1);
  });

  it('stops at once when the signal aborts during a wait', async () => {
    const controller = new AbortController();
    let calls = 0;
    const outcome = await retry(
      async () => {
        calls += 1;
        throw new Flaky(true, 3_600_000); // an hour: only the abort can end the wait within the test
      },
      // onRetry runs just before the wait begins; the abort comes once it has.
      { ...quick, signal: controller.signal, retryAfterMs: (error) => (error as Flaky).retryAfterMs, onRetry: () => queueMicrotask(() => controller.abort()) },
    ).catch((error: unknown) => error);
    expect(isAbortError(outcome)).toBe(true);
    expect(calls).toBe(1);
  });

  it('does not start when the signal has already aborted', async () => {
    const controller = new AbortController();
    controller.abort();
    let calls = 0;
    const outcome = await retry(async () => (calls += 1), { ...quick, signal: controller.signal }).catch((error: unknown) => error);
    expect(isAbortError(outcome)).toBe(true);
    expect(calls).toBe(0);
  });

  it('retries for ever with maxAttempts Infinity until it succeeds', async () => {
    const result = await retry(async (attempt) => {
      if (attempt < 20) throw new Flaky();
      return attempt;
    }, { maxAttempts: Infinity, baseMs: 0, maxMs: 0 });
    expect(result).toBe(20);
  });
});

describe('grpcRetryPolicy', () => {
  it('states the same policy as a gRPC service config retryPolicy', () => {
    expect(grpcRetryPolicy({ maxAttempts: 3, baseMs: 50, maxMs: 500 }, ['UNAVAILABLE'])).toEqual({
      maxAttempts: 3,
      initialBackoff: '0.05s',
      maxBackoff: '0.5s',
      backoffMultiplier: 2,
      retryableStatusCodes: ['UNAVAILABLE'],
    });
  });
});
