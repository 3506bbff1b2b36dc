// The gateway's HTTP API as the pages use it: JSON calls and Server-Sent Event streams, with the
// API key (when keys are on) asked for once and kept in sessionStorage for the tab's session.
import { EventSourceParserStream } from 'eventsource-parser/stream';

const KEY_STORAGE = 'elexirion.apiKey';

/** The key this tab's session uses, or null (keys off, or not given yet). */
export function apiKey(): string | null {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function setApiKey(key: string | null): void {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

/** Fired on window when a call was refused for want of a (valid) key: the shell asks for one. */
export const KEY_NEEDED_EVENT = 'elexirion:key-needed';

/** A refused or failed call: the HTTP status, the gRPC status name and the gateway's message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  /** What the user can do about it, in a sentence. */
  get advice(): string {
    switch (this.code) {
      case 'UNAUTHENTICATED':
        return 'Give an API key (the key button at the top).';
      case 'PERMISSION_DENIED':
        return 'This key may not do that: use a key with the scope the message names.';
      case 'RESOURCE_EXHAUSTED':
        return 'A limit or budget was reached: wait a little, or ask for a higher limit.';
      case 'UNAVAILABLE':
        return 'A service is unreachable or overloaded: try again in a moment (the dashboard shows system health).';
      case 'DEADLINE_EXCEEDED':
        return 'It took too long: try again, or a shorter request.';
      case 'INVALID_ARGUMENT':
      case 'FAILED_PRECONDITION':
        return 'Change the request as the message says.';
      case 'NETWORK':
        return 'The gateway cannot be reached: check that it runs, then try again.';
      default:
        return 'Try again; if it keeps failing, the dashboard and the logs say more.';
    }
  }
}

function headers(extra: Record<string, string> = {}): Record<string, string> {
  const key = apiKey();
  return key ? { ...extra, authorization: `Bearer ${key}` } : extra;
}

async function errorOf(response: Response): Promise<ApiError> {
  let code = 'UNKNOWN';
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = (await response.json()) as { error?: { code?: string; message?: string } };
    if (body.error?.code) code = body.error.code;
    if (body.error?.message) message = body.error.message;
  } catch {
    // Not the gateway's error body (a proxy's page): the status line says what there is.
  }
  if (response.status === 401) window.dispatchEvent(new CustomEvent(KEY_NEEDED_EVENT, { detail: message }));
  return new ApiError(response.status, code, message);
}

function networkError(error: unknown): ApiError {
  return new ApiError(0, 'NETWORK', `the gateway did not answer (${error instanceof Error ? error.message : String(error)})`);
}

export interface CallOptions {
  signal?: AbortSignal;
  /** Query parameters; undefined and empty values are left out, arrays repeat the name. */
  query?: Record<string, string | number | boolean | readonly string[] | undefined>;
}

/** The path with its query string. */
export function withQuery(path: string, query: CallOptions['query']): string {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query ?? {})) {
    if (value === undefined || value === '') continue;
    if (Array.isArray(value)) for (const item of value) params.append(name, item);
    else params.set(name, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

/** One JSON call: the answer's body, or an ApiError. */
export async function call<T>(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown, options: CallOptions = {}): Promise<T> {
  let response: Response;
  try {
    response = await fetch(withQuery(path, options.query), {
      method,
      headers: headers(body === undefined ? {} : { 'content-type': 'application/json' }),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: options.signal,
    });
  } catch (error) {
    if (options.signal?.aborted) throw error;
    throw networkError(error);
  }
  if (!response.ok) throw await errorOf(response);
  return (await response.json()) as T;
}

/** One Server-Sent Event, its data parsed as JSON. */
export interface StreamEvent<T = unknown> {
  event: string;
  id?: string;
  data: T;
}

/**
 * One stream's events, as they come. Refused before the first event: an ApiError (the HTTP
 * status). An `event: error` mid-stream: an ApiError from its body. Ends when the server ends it.
 */
export async function* events<T = unknown>(path: string, options: CallOptions & { lastEventId?: string; method?: 'GET' | 'POST'; body?: unknown } = {}): AsyncGenerator<StreamEvent<T>> {
  let response: Response;
  try {
    response = await fetch(withQuery(path, options.query), {
      method: options.method ?? 'GET',
      headers: headers({
        accept: 'text/event-stream',
        ...(options.lastEventId ? { 'last-event-id': options.lastEventId } : {}),
        ...(options.body === undefined ? {} : { 'content-type': 'application/json' }),
      }),
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      signal: options.signal,
    });
  } catch (error) {
    if (options.signal?.aborted) throw error;
    throw networkError(error);
  }
  if (!response.ok) throw await errorOf(response);
  if (!response.body) throw new ApiError(response.status, 'UNKNOWN', 'the stream had no body');
  const reader = response.body.pipeThrough(new TextDecoderStream()).pipeThrough(new EventSourceParserStream()).getReader();
  try {
    for (;;) {
      let next: ReadableStreamReadResult<{ event?: string; id?: string; data: string }>;
      try {
        next = await reader.read();
      } catch (error) {
        if (options.signal?.aborted) throw error;
        throw networkError(error);
      }
      if (next.done) return;
      const { event = 'message', id, data } = next.value;
      const parsed = data === '' ? null : (JSON.parse(data) as unknown);
      if (event === 'error') {
        const body = parsed as { error?: { code?: string; message?: string } } | null;
        throw new ApiError(200, body?.error?.code ?? 'UNKNOWN', body?.error?.message ?? 'the stream failed');
      }
      yield { event, id, data: parsed as T };
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

export type StreamState = 'connecting' | 'live' | 'reconnecting' | 'ended';

/**
 * Follows a resumable stream (a job's events: the SSE id is the sequence) until `finished` says
 * an event was its last: when the connection drops, it reconnects with `Last-Event-ID` so no
 * event is lost or repeated. An ApiError from the server (not the network) ends it.
 */
export async function follow<T>(
  path: string,
  handlers: {
    onEvent(event: StreamEvent<T>): void;
    finished(event: StreamEvent<T>): boolean;
    onState?(state: StreamState, detail?: string): void;
  },
  options: { signal?: AbortSignal; lastEventId?: string; query?: CallOptions['query'] } = {},
): Promise<void> {
  let lastEventId = options.lastEventId;
  let delayMs = 250;
  for (let attempt = 0; ; attempt++) {
    handlers.onState?.(attempt === 0 ? 'connecting' : 'reconnecting');
    try {
      for await (const event of events<T>(path, { signal: options.signal, lastEventId, query: options.query })) {
        handlers.onState?.('live');
        delayMs = 250;
        if (event.id) lastEventId = event.id;
        handlers.onEvent(event);
        if (handlers.finished(event)) {
          handlers.onState?.('ended');
          return;
        }
      }
      // Ended without its last event: the connection was cut (a proxy, a gateway restart).
    } catch (error) {
      if (options.signal?.aborted) return;
      if (!(error instanceof ApiError) || error.code !== 'NETWORK') throw error;
      handlers.onState?.('reconnecting', error.message);
    }
    if (options.signal?.aborted) return;
    await new Promise((resolve) => setTimeout(resolve, delayMs));
    delayMs = Math.min(delayMs * 2, 5_000);
  }
}
