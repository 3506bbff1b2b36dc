import type { IncomingHttpHeaders } from 'node:http';
import { Readable, type Duplex } from 'node:stream';
import { Client, Dispatcher, request } from 'undici';

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
 *
 * With `streaming`, for the SDK calls that ask for a stream, every body is handed on as it
 * arrives, whatever its content type: the SDKs read a streamed request's answer as events
 * because they asked for them, and an OpenAI-compatible server may not say `text/event-stream`.
 * Otherwise only a body that says it is server-sent events is; the rest is read whole.
 */
export function createUpstreamFetch(options: { streaming?: boolean; dispatcher?: Dispatcher } = {}): typeof fetch {
  const dispatcher = options.dispatcher ?? sharedConnections();
  const streaming = options.streaming ?? false;
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
    const headers = webHeaders(response.headers);
    const status = response.statusCode;
    if (NULL_BODY_STATUSES.has(status)) {
      response.body.resume();
      return new Response(null, { status, headers });
    }
    const streamed = streaming || (headers.get('content-type')?.includes('text/event-stream') ?? false);
    if (streamed) return new Response(Readable.toWeb(response.body) as ReadableStream<Uint8Array>, { status, headers });
    return new BufferedResponse(Buffer.from(await response.body.arrayBuffer()), { status, headers }) as unknown as Response;
  } as typeof fetch;
}

/**
 * A Response whose whole body is already in memory. `text()`, `json()` and `arrayBuffer()` read
 * the bytes directly: a plain Response copies them and hands them through a web ReadableStream,
 * which was a visible share of an SDK call's CPU in the benchmark's profile. Whoever asks for
 * `body` gets a real stream of the bytes, and the other readers then read that stream.
 */
// TypeScript's DOM types declare Response's members as properties, so they cannot be overridden
// with methods in a subclass of the typed class; at run time they are prototype methods as usual.
const ResponseClass = Response as unknown as new (body: null, init: ResponseInit) => Pick<Response, 'headers' | 'status' | 'statusText'>;

/** Whether a web stream has been read from or cancelled (Node accepts web streams here; its types say Readable). */
const isDisturbed = (stream: ReadableStream) => Readable.isDisturbed(stream as unknown as NodeJS.ReadableStream);

class BufferedResponse extends ResponseClass {
  #bytes: Buffer | undefined;
  #stream: ReadableStream<Uint8Array> | null = null;

  constructor(bytes: Buffer, init: ResponseInit) {
    super(null, init);
    this.#bytes = bytes;
  }

  get body(): ReadableStream<Uint8Array> | null {
    if (this.#bytes) {
      this.#stream = new Response(this.#bytes).body;
      this.#bytes = undefined;
    }
    return this.#stream;
  }

  get bodyUsed(): boolean {
    return this.#bytes === undefined && (this.#stream === null || isDisturbed(this.#stream));
  }

  async arrayBuffer(): Promise<ArrayBuffer> {
    const bytes = await this.#take();
    return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  }

  async bytes(): Promise<Uint8Array<ArrayBuffer>> {
    return new Uint8Array(await this.arrayBuffer());
  }

  async text(): Promise<string> {
    return (await this.#take()).toString('utf8');
  }

  async json(): Promise<any> {
    return JSON.parse(await this.text());
  }

  async blob(): Promise<Blob> {
    return new Blob([await this.arrayBuffer()], { type: this.headers.get('content-type') ?? '' });
  }

  clone(): Response {
    if (this.bodyUsed) throw new TypeError('Response.clone: Body has already been consumed.');
    if (this.#bytes) return new BufferedResponse(this.#bytes, { status: this.status, statusText: this.statusText, headers: this.headers }) as unknown as Response;
    const [mine, theirs] = this.#stream!.tee();
    this.#stream = mine;
    return new Response(theirs, { status: this.status, statusText: this.statusText, headers: this.headers });
  }

  async #take(): Promise<Buffer> {
    if (this.#bytes) {
      const bytes = this.#bytes;
      this.#bytes = undefined;
      return bytes;
    }
    if (this.#stream && !this.bodyUsed) return Buffer.from(await new Response(this.#stream).arrayBuffer());
    throw new TypeError('Body is unusable: Body has already been read');
  }
}

/** undici's plain response headers as a WHATWG Headers. */
export function webHeaders(raw: IncomingHttpHeaders): Headers {
  const headers = new Headers();
  for (const [name, value] of Object.entries(raw)) {
    if (Array.isArray(value)) for (const item of value) headers.append(name, item);
    else if (value !== undefined) headers.set(name, value);
  }
  return headers;
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

let connections: UpstreamConnections | undefined;

/** One keep-alive connection set per process for every upstream origin. */
export function sharedConnections(): Dispatcher {
  connections ??= new UpstreamConnections();
  return connections;
}

/**
 * Keep-alive HTTP/1.1 connections per upstream origin, an idle one found in O(1).
 *
 * Why not undici's Agent: its Pool looks for a free connection by scanning all of them on every
 * request. A vendor call holds its connection for seconds, so thousands are open at once, and
 * with 10,000 runs in flight that scan was the largest item in the provider's CPU profile.
 */
export class UpstreamConnections extends Dispatcher {
  private readonly origins = new Map<string, OriginConnections>();

  override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const origin = String(options.origin);
    let connections = this.origins.get(origin);
    if (!connections) {
      connections = new OriginConnections(origin);
      this.origins.set(origin, connections);
    }
    connections.dispatch(options, handler);
    // Never asks the caller to wait for 'drain': a new connection is opened instead.
    return true;
  }

  override async close(): Promise<void> {
    await Promise.all([...this.origins.values()].map((connections) => connections.close()));
  }

  override async destroy(): Promise<void> {
    await Promise.all([...this.origins.values()].map((connections) => connections.destroy()));
  }
}

class OriginConnections {
  /** Connections with nothing running, most recently used last. */
  private readonly idle: Client[] = [];
  private readonly open = new Set<Client>();

  constructor(private readonly origin: string) {}

  dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): void {
    const client = this.take();
    // Back on the idle list once its response has ended or failed: an HTTP/1.1 connection
    // carries one request at a time.
    client.dispatch(options, new ReleasingHandler(handler, () => {
      if (!client.closed && !client.destroyed) this.idle.push(client);
    }));
  }

  private take(): Client {
    for (let client = this.idle.pop(); client; client = this.idle.pop()) {
      if (!client.closed && !client.destroyed) return client;
    }
    const client = new Client(this.origin, { keepAliveTimeout: 30_000 });
    this.open.add(client);
    // A connection the server closed is not kept: the next request opens a new one.
    client.on('disconnect', () => {
      this.open.delete(client);
      void client.close().catch(() => {});
      if (this.idle.length > 2 * this.open.size + 64) this.prune();
    });
    return client;
  }

  private prune(): void {
    const usable = this.idle.filter((client) => !client.closed && !client.destroyed);
    this.idle.length = 0;
    this.idle.push(...usable);
  }

  async close(): Promise<void> {
    await Promise.all([...this.open].map((client) => client.close()));
  }

  async destroy(): Promise<void> {
    await Promise.all([...this.open].map((client) => client.destroy()));
  }
}

/** Passes every callback on to the request's own handler, and calls `release` once at its end. */
class ReleasingHandler implements Dispatcher.DispatchHandler {
  private released = false;

  constructor(
    private readonly inner: Dispatcher.DispatchHandler,
    private readonly onRelease: () => void,
  ) {}

  private release(): void {
    if (this.released) return;
    this.released = true;
    this.onRelease();
  }

  onRequestStart(controller: Dispatcher.DispatchController, context: unknown): void {
    this.inner.onRequestStart?.(controller, context);
  }

  onRequestUpgrade(controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders, socket: Duplex): void {
    this.inner.onRequestUpgrade?.(controller, statusCode, headers, socket);
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders, statusMessage?: string): void {
    this.inner.onResponseStart?.(controller, statusCode, headers, statusMessage);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.inner.onResponseData?.(controller, chunk);
  }

  onResponseEnd(controller: Dispatcher.DispatchController, trailers: IncomingHttpHeaders): void {
    try {
      this.inner.onResponseEnd?.(controller, trailers);
    } finally {
      this.release();
    }
  }

  onResponseError(controller: Dispatcher.DispatchController, error: Error): void {
    try {
      this.inner.onResponseError?.(controller, error);
    } finally {
      this.release();
    }
  }
}
