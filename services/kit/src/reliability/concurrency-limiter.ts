import { AbortError } from 'abort-controller-x';
import { ElexirionError, Status } from '../rpc/errors.js';

/** A limiter refused: its queue is full, or the wait would outlast the caller's deadline. */
export class LimitExceededError extends ElexirionError {
  override readonly name = 'LimitExceededError';
  constructor(message: string) {
    super(Status.RESOURCE_EXHAUSTED, message);
  }
}

interface Waiter {
  resolve: () => void;
}

/**
 * At most `maxConcurrency` holders at once and a bounded FIFO queue behind them. Waits are
 * cancellable and never outlast the caller's deadline; past the queue the caller is refused at
 * once (services answer RESOURCE_EXHAUSTED).
 */
export class ConcurrencyLimiter {
  private active = 0;
  private readonly queue: Waiter[] = [];

  constructor(private readonly options: { maxConcurrency: number; maxQueue: number; now?: () => number }) {}

  get inFlight(): number {
    return this.active;
  }

  get queued(): number {
    return this.queue.length;
  }

  /** Resolves with a release function (safe to call twice) once a slot is held. */
  async acquire(signal: AbortSignal, deadline: number): Promise<() => void> {
    if (signal.aborted) throw new AbortError();
    if (this.active < this.options.maxConcurrency) {
      this.active += 1;
      return this.releaser();
    }
    if (this.queue.length >= this.options.maxQueue) {
      throw new LimitExceededError(`${this.active} in flight and ${this.queue.length} queued (the limit)`);
    }
    const now = this.options.now ?? Date.now;
    await new Promise<void>((resolve, reject) => {
      const waiter: Waiter = { resolve };
      const remove = (error: Error) => {
        const index = this.queue.indexOf(waiter);
        if (index >= 0) this.queue.splice(index, 1);
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        reject(error);
      };
      const onAbort = () => remove(new AbortError());
      const timer = setTimeout(() => remove(new LimitExceededError('no slot freed up before the deadline')), Math.max(0, Math.min(deadline - now(), 2 ** 31 - 1)));
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
}
