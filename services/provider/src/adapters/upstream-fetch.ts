import { Readable } from 'node:stream';
import { Agent, request, type Dispatcher } from 'undici';

/**
 * A `fetch` for the vendors' SDKs built on undici's `request` API instead of WHATWG fetch.
 *
 * Why: on this path fetch's Request/Response/web-stream machinery was about 40% of the CPU of an
 * SDK call (the benchmark's profile: undici fetch and web streams were the largest package after
 * V8 itself). The SDKs only need what this gives them: status, headers, a body they read whole,
 * or an SSE body they read as a stream, and abort through `signal`.
 *
 * Bodies other than text and bytes (uploads as streams or forms, which no adapter sends) go to
 * the platform's fetch unchanged.
 */
export function createUpstreamFetch(dispatcher: Dispatcher = sharedAgent()): typeof fetch {
  return async function upstreamFetch(input: string | URL | Request, init: RequestInit = {}): Promise<Response> {
    const body = init.body;
    if (input instanceof Request || (body != null && typeof body !== 'string' && !(body instanceof Uint8Array))) {
      return fetch(input, init);
    }
    const url = input instanceof URL ? input.href : input;
    const response = await request(url, {
      method: (init.method ?? 'GET') as Dispatcher.HttpMethod,
      headers: plainHeaders(init.headers),
      body: body ?? null,
      signal: init.signal ?? undefined,
      dispatcher,
    });
    const headers = new Headers();
    for (const [name, value] of Object.entries(response.headers)) {
      if (Array.isArray(value)) for (const item of value) headers.append(name, item);
      else if (value !== undefined) headers.set(name, value);
    }
    const status = response.statusCode;
    if (NULL_BODY_STATUSES.has(status)) {
      response.body.resume();
      return new Response(null, { status, headers });
    }
    // Server-sent events are read as they arrive; anything else is read whole, as the SDKs do.
    const streamed = headers.get('content-type')?.includes('text/event-stream') ?? false;
    const payload = streamed ? (Readable.toWeb(response.body) as ReadableStream<Uint8Array>) : await response.body.arrayBuffer();
    return new Response(payload, { status, headers });
  } as typeof fetch;
}

const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);

function plainHeaders(headers: RequestInit['headers']): Record<string, string> {
  const out: Record<string, string> = {};
  if (!headers) return out;
  if (headers instanceof Headers || Array.isArray(headers)) {
    for (const [name, value] of headers instanceof Headers ? headers.entries() : headers) out[name.toLowerCase()] = value!;
    return out;
  }
  for (const [name, value] of Object.entries(headers)) if (value !== undefined) out[name.toLowerCase()] = String(value);
  return out;
}

let agent: Agent | undefined;

/** One keep-alive connection pool per process for every upstream origin. */
function sharedAgent(): Agent {
  agent ??= new Agent({ keepAliveTimeout: 30_000 });
  return agent;
}
