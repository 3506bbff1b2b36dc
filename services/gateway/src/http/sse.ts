import { once } from 'node:events';
import type { FastifyReply } from 'fastify';
import { failureMessage, httpErrorBody, statusOf } from '@elexirion/kit';

/** One Server-Sent Event. */
export interface ServerSentEvent {
  /** The `event:` field; omitted for the default "message". */
  event?: string;
  /** The `id:` field: what a reconnecting EventSource sends back as `Last-Event-ID`. */
  id?: string;
  /** Sent as one `data:` line of JSON. */
  data?: unknown;
  /** Sent as the `data:` line as it is, instead of `data` as JSON (OpenAI's `[DONE]`); one line. */
  text?: string;
}

/** Comment lines at this interval keep proxies and load balancers from closing an idle stream. */
const HEARTBEAT_MS = 15_000;

/**
 * Answers with a Server-Sent Events stream of what `produce` yields. `produce` gets a
 * signal that aborts when the client goes away (so the call behind it is cancelled, down to the
 * vendor request). A failure before the first event is thrown, for the route's error handler to
 * answer with its HTTP status; one after it is sent as an `event: error` whose data is the
 * project's error body (`{"error":{"code","message"}}`): a stream never ends cleanly without its
 * final event. Writes wait for the socket to drain, so a slow reader holds the
 * producer back instead of buffering without bound.
 */
export async function sendEventStream(
  reply: FastifyReply,
  produce: (signal: AbortSignal) => AsyncIterable<ServerSentEvent>,
  headers: Record<string, string> = {},
): Promise<void> {
  const controller = new AbortController();
  const raw = reply.raw;
  const onClose = () => {
    if (!raw.writableFinished) controller.abort();
  };
  raw.on('close', onClose);
  const events = produce(controller.signal)[Symbol.asyncIterator]();
  // The first event decides the answer: a call refused before it (bad request, no key, over a
  // limit) is an ordinary HTTP error with its status and headers, not a 200 stream.
  let first: IteratorResult<ServerSentEvent>;
  try {
    first = await events.next();
  } catch (error) {
    raw.off('close', onClose);
    throw error;
  }
  // Headers the hooks set (CORS, security, rate limits) go out with the stream's own.
  for (const [name, value] of Object.entries(reply.getHeaders())) if (value !== undefined) raw.setHeader(name, value as string);
  reply.hijack();
  raw.writeHead(200, {
    ...headers,
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    // nginx and similar proxies: do not buffer the stream.
    'x-accel-buffering': 'no',
  });
  raw.flushHeaders();
  const write = async (text: string) => {
    if (raw.destroyed) return;
    if (!raw.write(text)) await Promise.race([once(raw, 'drain'), once(raw, 'close')]);
  };
  const heartbeat = setInterval(() => void write(': keep-alive\n\n'), HEARTBEAT_MS);
  try {
    for (let next = first; !next.done; next = await events.next()) {
      if (controller.signal.aborted) break;
      await write(formatEvent(next.value));
    }
  } catch (error) {
    if (!controller.signal.aborted) await write(formatEvent({ event: 'error', data: httpErrorBody(statusOf(error), failureMessage(error)) }));
  } finally {
    clearInterval(heartbeat);
    raw.off('close', onClose);
    // Stops the producer (and the call behind it) when the client went away mid-stream.
    if (controller.signal.aborted) await events.return?.();
    if (!raw.destroyed) raw.end();
  }
}

function formatEvent({ event, id, data, text: raw }: ServerSentEvent): string {
  let text = '';
  if (event) text += `event: ${event}\n`;
  if (id !== undefined) text += `id: ${id}\n`;
  // JSON.stringify never emits a raw newline, so one data line carries the whole event.
  return `${text}data: ${raw ?? JSON.stringify(data)}\n\n`;
}
