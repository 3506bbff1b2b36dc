// A stream that should never end (the system health, the telemetry events): kept open, and opened
// again with a growing pause when it drops or the monitor is not ready yet.
import { ApiError, events, type CallOptions } from '../../api.js';

export type LiveState = 'connecting' | 'live' | 'reconnecting' | 'stopped';

/** Failures that pass by themselves: the network, a restart, a monitor that has not computed health yet. */
function passing(error: unknown): boolean {
  return error instanceof ApiError && ['NETWORK', 'UNAVAILABLE', 'DEADLINE_EXCEEDED', 'INTERNAL', 'UNKNOWN'].includes(error.code);
}

/**
 * Reads `path`'s events until `signal` aborts. `query` is asked for anew on every connection (a
 * `since` that moves on). A refusal that will not pass by waiting (no key, no scope) stops it:
 * `onState('stopped', error)`.
 */
export async function keepStreaming<T>(
  path: string,
  handlers: { onEvent(data: T): void; onState(state: LiveState, error?: unknown): void; onConnected?(): void },
  options: { signal: AbortSignal; query?: () => CallOptions['query'] },
): Promise<void> {
  let delayMs = 500;
  for (let attempt = 0; !options.signal.aborted; attempt++) {
    handlers.onState(attempt === 0 ? 'connecting' : 'reconnecting');
    let failure: unknown;
    try {
      let first = true;
      for await (const event of events<T>(path, { signal: options.signal, query: options.query?.() })) {
        if (first) {
          first = false;
          delayMs = 500;
          handlers.onState('live');
          handlers.onConnected?.();
        }
        handlers.onEvent(event.data);
      }
    } catch (error) {
      if (options.signal.aborted) return;
      if (!passing(error)) {
        handlers.onState('stopped', error);
        return;
      }
      failure = error;
    }
    if (options.signal.aborted) return;
    handlers.onState('reconnecting', failure);
    await new Promise((resolve) => setTimeout(resolve, delayMs));
    delayMs = Math.min(delayMs * 2, 10_000);
  }
}
