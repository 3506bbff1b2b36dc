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
  /** Aborts it now (for example: one parallel child failed, the others stop). */
  abort(): void;
  dispose(): void;
}

export function timeoutSignal(parent: AbortSignal, ms: number | undefined): TimeoutSignal {
  const controller = new AbortController();
  let timedOut = false;
  const onParentAbort = () => controller.abort(parent.reason);
  let timer: NodeJS.Timeout | undefined;
  if (parent.aborted) controller.abort(parent.reason);
  else {
    parent.addEventListener('abort', onParentAbort, { once: true });
    if (ms !== undefined) {
      timer = setTimeout(() => {
        timedOut = true;
        controller.abort(new DOMException('The operation timed out.', 'TimeoutError'));
      }, Math.max(1, Math.min(ms, 2 ** 31 - 1)));
    }
  }
  const dispose = () => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    parent.removeEventListener('abort', onParentAbort);
  };
  return {
    signal: controller.signal,
    get timedOut() {
      return timedOut;
    },
    abort: () => controller.abort(),
    dispose,
    [Symbol.dispose]: dispose,
  };
}
