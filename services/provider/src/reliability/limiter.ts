import { AbortError } from 'abort-controller-x';

/** The limiter refused: queue full, or the wait would outlast the caller's deadline. */
export class LimitExceededError extends Error {
  override readonly name = 'LimitExceededError';
}

export interface LimiterOptions {
  maxConcurrency: number;
  maxQueue: number;
  /** Token bucket: refill rate and capacity. */
  requestsPerSecond: number;
  burst: number;
  now?: () => number;
}

interface Waiter {
  resolve: () => void;
  reject: (error: Error) => void;
}

/**
 * Per-provider admission: a token bucket for rate, then a concurrency limit with a bounded FIFO
 * queue. Waits are cancellable and never outlast the caller's deadline; past the queue the
 * caller is refused at once (the service answers RESOURCE_EXHAUSTED).
 */
export class ProviderLimiter {
  private active = 0;
  private readonly queue: Waiter[] = [];
  private tokens: number;
  private refilledAt: number;
  private readonly now: () => number;

  constructor(private readonly options: LimiterOptions) {
    this.now = options.now ?? Date.now;
    this.tokens = options.burst;
    this.refilledAt = this.now();
  }

  get inFlight(): number {
    return this.active;
  }

  get queued(): number {
    return this.queue.length;
  }

  /** Resolves with a release function once the request may go. */
  async acquire(signal: AbortSignal, deadline: number): Promise<() => void> {
    const wait = this.takeToken(signal, deadline);
    if (wait) await wait;
    if (signal.aborted) throw new AbortError();
    if (this.active < this.options.maxConcurrency) {
      this.active += 1;
      return this.releaser();
    }
    if (this.queue.length >= this.options.maxQueue) {
      throw new LimitExceededError(`${this.active} requests in flight and ${this.queue.length} queued (the limit)`);
    }
    await new Promise<void>((resolve, reject) => {
      const waiter: Waiter = { resolve, reject };
      const remove = (error: Error) => {
        const index = this.queue.indexOf(waiter);
        if (index >= 0) this.queue.splice(index, 1);
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        reject(error);
      };
      const onAbort = () => remove(new AbortError());
      const timer = setTimeout(() => remove(new LimitExceededError('no slot freed up before the deadline')), Math.max(0, deadline - this.now()));
      waiter.resolve = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.queue.push(waiter);
    });
    return this.releaser();
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.queue.shift();
      if (next) next.resolve(); // the slot passes straight to the next waiter
      else this.active -= 1;
    };
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
