import type { RunEvent } from './execute-streaming.js';
import { Handoff } from './handoff.js';

/**
 * A run as a stream: yields the events `run` forwards, as it forwards them, and returns what
 * the run answers (or throws its failure, after the events before it). A reader that stops early
 * refuses the run's next event, which fails the run; its caller's cancel has stopped it already.
 */
export async function* streamRun<R>(run: (forward: (event: RunEvent) => Promise<void>) => Promise<R>): AsyncGenerator<RunEvent, R, undefined> {
  const handoff = new Handoff<RunEvent>();
  const running = run((event) => handoff.put(event)).finally(() => handoff.close());
  // Awaited below; a reader that went away early never gets there.
  running.catch(() => {});
  for await (const event of handoff) yield event;
  return await running;
}
