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
  data: unknown;
}

/** Comment lines at this interval keep proxies and load balancers from closing an idle stream. */
const HEARTBEAT_MS = 15_000;

/**
 * Answers `request` with a Server-Sent Events stream of what `produce` yields. `produce` gets a
 * signal that aborts when the client goes away (so the call behind it is cancelled, down to the
 * vendor request). A failure, before or after the first event, is sent as an `event: error` whose
 * data is the project's error body (`{"error":{"code","message"}}`): a stream never ends cleanly
 * without its final event. Writes wait for the socket to drain, so a slow reader holds the
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
    for await (const each of produce(controller.signal)) {
      if (controller.signal.aborted) break;
      await write(formatEvent(each));
    }
  } catch (error) {
    if (!controller.signal.aborted) await write(formatEvent({ event: 'error', data: httpErrorBody(statusOf(error), failureMessage(error)) }));
  } finally {
    clearInterval(heartbeat);
    raw.off('close', onClose);
    if (!raw.destroyed) raw.end();
  }
}

function formatEvent({ event, id, data }: ServerSentEvent): string {
  let text = '';
  if (event) text += `event: ${event}\n`;
  if (id !== undefined) text += `id: ${id}\n`;
  // JSON.stringify never emits a raw newline, so one data line carries the whole event.
  return `${text}data: ${JSON.stringify(data)}\n\n`;
}
