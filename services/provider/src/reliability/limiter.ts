import { AbortError } from 'abort-controller-x';
import { ConcurrencyLimiter, LimitExceededError } from '@elexirion/kit';

export { LimitExceededError };

export interface LimiterOptions {
  maxConcurrency: number;
  maxQueue: number;
  /** Token bucket: refill rate and capacity. */
  requestsPerSecond: number;
  burst: number;
  now?: () => number;
}

/**
 * Per-provider admission: a token bucket for rate, then the kit's concurrency limit with a
 * bounded queue. Never waits past the caller's deadline.
 */
export class ProviderLimiter {
  private readonly slots: ConcurrencyLimiter;
  private tokens: number;
  private refilledAt: number;
  private readonly now: () => number;

  constructor(private readonly options: LimiterOptions) {
    this.now = options.now ?? Date.now;
    this.tokens = options.burst;
    this.refilledAt = this.now();
    this.slots = new ConcurrencyLimiter({ maxConcurrency: options.maxConcurrency, maxQueue: options.maxQueue, now: this.now });
  }

  get inFlight(): number {
    return this.slots.inFlight;
  }

  get queued(): number {
    return this.slots.queued;
  }

  /** Resolves with a release function once the request may go. */
  async acquire(signal: AbortSignal, deadline: number): Promise<() => void> {
    const wait = this.takeToken(signal, deadline);
    if (wait) await wait;
    return this.slots.acquire(signal, deadline);
  }

  /** Takes a token now (undefined), or returns the wait for one; throws when it would outlast the deadline. */
  private takeToken(signal: AbortSignal, deadline: number): Promise<void> | undefined {
    const now = this.now();
    const { requestsPerSecond, burst } = this.options;
    this.tokens = Math.min(burst, this.tokens + ((now - this.refilledAt) / 1000) * requestsPerSecond);
    this.refilledAt = now;
    this.tokens -= 1; // reserve now; a negative balance is the wait of those ahead
    if (this.tokens >= 0) return undefined;
    const waitMs = (-this.tokens / requestsPerSecond) * 1000;
    if (now + waitMs > deadline) {
      this.tokens += 1;
      throw new LimitExceededError(`rate limit of ${requestsPerSecond}/s: the wait of ${Math.ceil(waitMs)} ms outlasts the deadline`);
    }
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        clearTimeout(timer);
        this.tokens += 1;
        reject(new AbortError());
      };
      const timer = setTimeout(() => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      }, waitMs);
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
    });
  }
}
