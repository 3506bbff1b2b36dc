/**
 * A signal that aborts when `parent` does or when `ms` pass, and that lets go of both when
 * disposed. AbortSignal.timeout() keeps its timer (and whatever hangs on the signal) alive for
 * the whole timeout even after the work is done: with two-minute LLM timeouts at hundreds of
 * calls a second, that is steady memory growth.
 */
export interface TimeoutSignal extends Disposable {
  readonly signal: AbortSignal;
  /** True when it was the timeout, not the parent, that aborted. */
  readonly timedOut: boolean;
  /** Aborts it now, with `reason` as the signal's reason (for example: one parallel child failed, the others stop). */
  abort(reason?: unknown): void;
  dispose(): void;
}

export function timeoutSignal(parent: AbortSignal, ms: number | undefined): TimeoutSignal {
  return new LinkedTimeoutSignal(parent, ms);
}

// A class with its methods on the prototype, listening through `handleEvent`: one of these lives
// per run, step and call in flight, so closures per instance would be most of its size.
class LinkedTimeoutSignal implements TimeoutSignal {
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  timedOut = false;

  constructor(private readonly parent: AbortSignal, ms: number | undefined) {
    if (parent.aborted) {
      this.controller.abort(parent.reason);
      return;
    }
    parent.addEventListener('abort', this, { once: true });
    if (ms !== undefined) this.timer = setTimeout(onTimeout, Math.max(1, Math.min(ms, 2 ** 31 - 1)), this);
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** The parent aborted. */
  handleEvent(): void {
    this.controller.abort(this.parent.reason);
  }

  expire(): void {
    this.timedOut = true;
    this.controller.abort(new DOMException('The operation timed out.', 'TimeoutError'));
  }

  abort(reason?: unknown): void {
    this.controller.abort(reason);
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.parent.removeEventListener('abort', this);
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

function onTimeout(signal: LinkedTimeoutSignal): void {
  signal.expire();
}
