// Live updates for the prompts page from the gateway's telemetry stream (StreamTelemetry, SSE):
// a prompt change (anyone's, the guard's too) or a guard decision re-reads the registry and the
// history (and the change is handed over to be announced); a finished run or a piece of feedback
// re-reads the comparison. Bursts are coalesced.
import { useEffect, useState } from 'preact/hooks';
import { ApiError, follow } from '../../api.js';
import type { PromptChange } from './prompt-types.js';

export type LiveState = 'connecting' | 'live' | 'reconnecting' | 'off';

interface TelemetryEventJson {
  kind?: string;
  executorPrompt?: { change?: PromptChange };
}

const REGISTRY_KINDS = ['prompt', 'rollout'];
const FIGURE_KINDS = ['run', 'feedback'];
const REGISTRY_DELAY_MS = 300;
// Runs come in bursts under load: the comparison is read at most this often.
const FIGURES_DELAY_MS = 2_000;

/**
 * Follows the events about `pipeline` while it is shown (the stream's pipeline filter reads prompt
 * changes, rollout decisions, runs and feedback alike). `off` carries why (e.g. a key without the
 * telemetry scope).
 */
export function useLiveUpdates(
  pipeline: string,
  handlers: { onRegistryChange(): void; onFiguresChange(): void; onPromptChange(change: PromptChange): void },
): { state: LiveState; reason: string } {
  const [live, setLive] = useState<{ state: LiveState; reason: string }>({ state: 'connecting', reason: '' });

  useEffect(() => {
    if (!pipeline) return;
    const abort = new AbortController();
    const timers = new Map<string, ReturnType<typeof setTimeout>>();
    const soon = (name: string, delayMs: number, action: () => void) => {
      if (timers.has(name)) return;
      timers.set(
        name,
        setTimeout(() => {
          timers.delete(name);
          action();
        }, delayMs),
      );
    };
    let state: LiveState = 'connecting';
    follow<{ event?: TelemetryEventJson }>(
      '/v1/telemetry/events',
      {
        onEvent({ data }) {
          const event = data?.event ?? {};
          if (event.executorPrompt?.change) handlers.onPromptChange(event.executorPrompt.change);
          if (REGISTRY_KINDS.includes(event.kind ?? '')) soon('registry', REGISTRY_DELAY_MS, handlers.onRegistryChange);
          else soon('figures', FIGURES_DELAY_MS, handlers.onFiguresChange);
        },
        finished: () => false,
        onState(next) {
          // Back after a drop: what happened meanwhile was missed, so read it all again.
          if (next === 'live' && state === 'reconnecting') soon('registry', REGISTRY_DELAY_MS, handlers.onRegistryChange);
          if (next !== state && next !== 'ended') {
            state = next;
            setLive({ state: next, reason: '' });
          }
        },
      },
      { signal: abort.signal, query: { kinds: [...REGISTRY_KINDS, ...FIGURE_KINDS], pipeline } },
    ).catch((error: unknown) => {
      if (abort.signal.aborted) return;
      setLive({ state: 'off', reason: error instanceof ApiError ? error.message : String(error) });
    });
    return () => {
      abort.abort();
      for (const timer of timers.values()) clearTimeout(timer);
    };
    // The handlers only set state: following anew on each render would drop the stream.
  }, [pipeline]);

  return live;
}
