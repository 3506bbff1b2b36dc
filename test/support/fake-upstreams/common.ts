import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export type Vendor = 'anthropic' | 'gemini' | 'openai';

/** What the fake does for one incoming model call. Every field is optional; `{}` is a plain success. */
export interface ScriptedReply {
  /** Non-2xx: answer with the vendor's error JSON body for that status. */
  status?: number;
  /** Extra response headers (success or error), e.g. `{ 'retry-after': '1' }`. */
  headers?: Record<string, string>;
  errorMessage?: string;
  /** Wait before answering; stops waiting if the client disconnects. */
  delayMs?: number;
  /** Success text; default `fake <vendor> reply to: <last user message>`. */
  text?: string;
  /** Default: ~4 characters per token of the prompt text / the reply text (at least 1). */
  usage?: { inputTokens: number; outputTokens: number };
  /** Model reported back; default the requested model. */
  model?: string;
  /** Vendor-native finish/stop reason override. */
  finishReason?: string;
  /** Streaming: explicit text chunks; default the text split into ~3 pieces. */
  chunks?: string[];
  /** Streaming: delay between chunks. */
  chunkDelayMs?: number;
  /**
   * Streaming: after `afterChunks` text chunks are on the wire, send nothing more until `until`
   * settles (a test sees the first tokens arrive while the rest is held back) or the client goes away.
   */
  holdAfterChunks?: { afterChunks: number; until: Promise<unknown> };
  /** Streaming: after N text chunks destroy the socket, with no terminal event. */
  breakAfterChunks?: number;
  /**
   * Streaming: after `afterChunks` text chunks (0: before the first), the vendor's in-stream error
   * for `status` and the end of the stream, all under HTTP 200 (Anthropic's `event: error` with
   * `overloaded_error` for 529, OpenAI's and Gemini's `data: {"error": ...}`).
   */
  streamError?: { afterChunks: number; status: number; message?: string };
  /** Streaming: the Content-Type of the stream; null sends none, as some compatible servers do. */
  streamContentType?: string | null;
  /** Never answer until the client disconnects. */
  hang?: boolean;
  /** Answer once this settles (a test changes something while the call is in flight); stops waiting if the client disconnects. */
  until?: Promise<unknown>;
  /** Destroy the socket at once (a connection error for the client). */
  dropConnection?: boolean;
  /** A whole answer: this text as the body, under `status` (default 200), instead of the vendor's JSON (a broken compatible server). */
  rawBody?: string;
}

export interface RecordedRequest {
  method: string;
  path: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  /** Parsed JSON body; the raw text when it was not JSON; undefined when empty. */
  body: any;
  stream: boolean;
  /** The client closed the connection before the response was complete (not counting fake-side drops). */
  abortedByClient: boolean;
  /** When the response finished or the connection closed (ms since epoch). */
  finishedAt?: number;
  receivedAt: number;
}

export interface FakeUpstream {
  vendor: Vendor;
  /** Base URL to give the SDK. */
  url: string;
  port: number;
  requests: RecordedRequest[];
  /** Queue replies, one consumed per model call, in order. */
  script(...replies: ScriptedReply[]): void;
  /** Used when the queue is empty. */
  setDefault(reply: ScriptedReply): void;
  /** Clears queue, default and recorded requests. */
  reset(): void;
  /** Resolves when request #index (in `requests`) was aborted by its client. */
  waitForAbort(index: number, timeoutMs?: number): Promise<void>;
  /** Closes the server and every open socket. */
  close(): Promise<void>;
}

export interface FakeUpstreamOptions {
  /** Default 0: a random free port on 127.0.0.1. */
  port?: number;
  /** When set, calls without this key get the vendor's 401. */
  apiKey?: string;
}

/** The request facts a vendor extracts from a routed, parsed call. */
export interface ParsedCall {
  model: string;
  stream: boolean;
  lastUserText: string;
  /** All prompt text (system + messages), for the default input token count. */
  promptText: string;
}

/** A scripted reply resolved against the request: everything a vendor renderer needs. */
export interface ReplyContext {
  /** Per-request id, unique within this fake. */
  id: string;
  model: string;
  text: string;
  chunks: string[];
  usage: { inputTokens: number; outputTokens: number };
  /** Undefined: the vendor's normal "done" value. */
  finishReason: string | undefined;
  /** Seconds since epoch, for vendors that report it. */
  created: number;
  body: any;
}

/** A streamed reply as SSE frames: `head`, one `chunk` per text piece, then `tail`. */
export interface StreamPlan {
  head: string[];
  chunk(text: string, index: number, isLast: boolean): string;
  tail: string[];
}

export interface RouteMatch {
  /** Model named in the path (Gemini), else taken from the body. */
  model?: string;
  /** Streaming decided by the path (Gemini), else taken from the body. */
  stream?: boolean;
}

/** Everything vendor-specific; the shared server does the HTTP, scripting and recording. */
export interface VendorProtocol {
  vendor: Vendor;
  /** Appended to the server root to form `FakeUpstream.url`. */
  basePath: string;
  idPrefix: string;
  route(method: string, url: URL): RouteMatch | null;
  authorized(req: IncomingMessage, url: URL, apiKey: string): boolean;
  parse(body: any, route: RouteMatch): ParsedCall;
  /** Error JSON for a status; `message` undefined means the vendor's usual wording for it. */
  errorBody(status: number, message: string | undefined, replyHeaders: Record<string, string>): unknown;
  messages: { notFound(method: string, path: string): string; unauthorized: string; badJson: string };
  /** Headers the vendor puts on every response (e.g. a request id). */
  responseHeaders(id: string): Record<string, string>;
  unary(ctx: ReplyContext): unknown;
  stream(ctx: ReplyContext): StreamPlan;
  /** An error body (from `errorBody`) as the frame the vendor sends inside a stream. */
  streamErrorFrame(body: unknown): string;
}

/** ~4 characters per token, at least 1: deterministic and good enough for accounting tests. */
export function estimateTokens(text: string): number {
  return Math.max(1, Math.ceil(text.length / 4));
}

/** Splits text into ~3 pieces (fewer for very short text, none for empty). */
export function splitIntoChunks(text: string, pieces = 3): string[] {
  if (!text) return [];
  const size = Math.ceil(text.length / pieces);
  const chunks: string[] = [];
  for (let i = 0; i < text.length; i += size) chunks.push(text.slice(i, i + size));
  return chunks;
}

/** Text of an OpenAI/Anthropic-style message content: a string or an array of `{type:'text', text}` parts. */
export function contentText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content
    .map((part) => (part && typeof part === 'object' && typeof part.text === 'string' ? part.text : ''))
    .join('');
}

export function sseFrame(data: unknown, event?: string): string {
  return `${event ? `event: ${event}\n` : ''}data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`;
}

export function firstHeader(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

export function bearerToken(req: IncomingMessage): string | undefined {
  return /^Bearer\s+(.+)$/i.exec(firstHeader(req, 'authorization') ?? '')?.[1];
}

const JSON_TYPE = 'application/json; charset=utf-8';
const SSE_TYPE = 'text/event-stream; charset=utf-8';

/** Starts one fake vendor endpoint on loopback. */
export async function startFakeUpstream(protocol: VendorProtocol, options: FakeUpstreamOptions = {}): Promise<FakeUpstream> {
  const requests: RecordedRequest[] = [];
  let queue: ScriptedReply[] = [];
  let fallback: ScriptedReply = {};
  let sequence = 0;
  let closing = false;
  const sockets = new Set<Socket>();
  const abortListeners = new Set<() => void>();

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      // A bug in the fake must not hang the test: answer 500 if we still can, else drop.
      if (!res.headersSent && !res.destroyed) sendJson(res, 500, {}, { error: String(error) });
      else res.destroy();
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const record: RecordedRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      url: req.url ?? '/',
      headers: req.headers,
      body: undefined,
      stream: false,
      abortedByClient: false,
      receivedAt: Date.now(),
    };
    requests.push(record);

    // The one place that decides "aborted by client": the connection closed before we finished,
    // and neither a scripted drop nor close() did it.
    let destroyedByFake = false;
    let closed = false;
    const closedSignal = new Promise<void>((resolve) =>
      res.once('close', () => {
        closed = true;
        record.finishedAt = Date.now();
        if (!res.writableFinished && !destroyedByFake && !closing) {
          record.abortedByClient = true;
          for (const listener of abortListeners) listener();
        }
        resolve();
      }),
    );
    const destroy = () => {
      destroyedByFake = true;
      res.destroy();
      req.socket.destroy();
    };
    /** Sleeps unless the client goes away first; false if it did. */
    const wait = async (ms: number): Promise<boolean> => {
      if (ms > 0 && !closed) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([new Promise((resolve) => (timer = setTimeout(resolve, ms))), closedSignal]);
        clearTimeout(timer);
      }
      return !closed;
    };

    let raw: string;
    try {
      raw = await readBody(req);
    } catch {
      return; // the client went away mid-upload; the close handler records it
    }

    const id = `${protocol.idPrefix}${String(++sequence).padStart(6, '0')}`;
    const vendorHeaders = protocol.responseHeaders(id);
    const sendError = (status: number, message: string | undefined, extra: Record<string, string> = {}) =>
      sendJson(res, status, { ...vendorHeaders, ...extra }, protocol.errorBody(status, message, extra));

    const route = protocol.route(record.method, url);
    let body: any;
    try {
      body = raw ? JSON.parse(raw) : undefined;
    } catch {
      body = undefined;
    }
    record.body = body ?? (raw || undefined);

    // Protocol errors are answered at once and don't consume a scripted reply, so a script
    // lines up with the model calls the code under test makes.
    if (!route) return sendError(404, protocol.messages.notFound(record.method, url.pathname));
    if (options.apiKey !== undefined && !protocol.authorized(req, url, options.apiKey)) {
      return sendError(401, protocol.messages.unauthorized);
    }
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      return sendError(400, protocol.messages.badJson);
    }

    const call = protocol.parse(body, route);
    record.stream = call.stream;
    const reply = queue.shift() ?? fallback;

    if (!(await wait(reply.delayMs ?? 0))) return;
    if (reply.until) await Promise.race([reply.until.catch(() => undefined), closedSignal]);
    if (closed) return;
    if (reply.dropConnection) return destroy();
    if (reply.hang) return; // answer nothing; the close handler records the client's abort

    const status = reply.status ?? 200;
    if (reply.rawBody !== undefined && !call.stream) {
      res.writeHead(status, { 'content-type': 'text/html', ...reply.headers });
      return void res.end(reply.rawBody);
    }
    if (status < 200 || status >= 300) return sendError(status, reply.errorMessage, reply.headers);

    const text = reply.text ?? `fake ${protocol.vendor} reply to: ${call.lastUserText}`;
    const ctx: ReplyContext = {
      id,
      model: reply.model ?? call.model,
      text,
      chunks: reply.chunks ?? splitIntoChunks(text),
      usage: reply.usage ?? { inputTokens: estimateTokens(call.promptText), outputTokens: estimateTokens(text) },
      finishReason: reply.finishReason,
      created: Math.floor(Date.now() / 1000),
      body,
    };
    const headers = { ...vendorHeaders, ...reply.headers };
    if (!call.stream) return sendJson(res, status, headers, protocol.unary(ctx));

    const plan = protocol.stream(ctx);
    const contentType = reply.streamContentType === undefined ? { 'content-type': SSE_TYPE } : reply.streamContentType === null ? {} : { 'content-type': reply.streamContentType };
    res.writeHead(status, { ...contentType, 'cache-control': 'no-cache', ...headers });
    // Each write resolves once handed to the socket; a scripted break must wait for that, since
    // Node corks response writes until the next tick and destroy() would discard them.
    const write = (data: string) => new Promise<void>((resolve) => res.write(data, () => resolve()));
    let written = write(plan.head.join(''));
    const sendCount = Math.min(ctx.chunks.length, reply.breakAfterChunks ?? Infinity, reply.streamError?.afterChunks ?? Infinity);
    for (let i = 0; i < sendCount; i++) {
      if (i > 0 && !(await wait(reply.chunkDelayMs ?? 0))) return;
      if (reply.holdAfterChunks && i === reply.holdAfterChunks.afterChunks) {
        await written;
        await Promise.race([reply.holdAfterChunks.until.catch(() => undefined), closedSignal]);
        if (closed) return;
      }
      written = write(plan.chunk(ctx.chunks[i]!, i, i === ctx.chunks.length - 1));
    }
    if (reply.breakAfterChunks !== undefined) {
      await written;
      return destroy();
    }
    if (reply.streamError) {
      const { status: errorStatus, message } = reply.streamError;
      return void res.end(protocol.streamErrorFrame(protocol.errorBody(errorStatus, message, {})));
    }
    res.end(plan.tail.join(''));
  }

  const port = await new Promise<number>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });

  return {
    vendor: protocol.vendor,
    url: `http://127.0.0.1:${port}${protocol.basePath}`,
    port,
    requests,
    script: (...replies) => void queue.push(...replies),
    setDefault: (reply) => void (fallback = reply),
    reset() {
      queue = [];
      fallback = {};
      requests.length = 0; // keep the array identity: callers may hold `fake.requests`
    },
    waitForAbort(index, timeoutMs = 10_000) {
      return new Promise<void>((resolve, reject) => {
        const check = () => {
          if (!requests[index]?.abortedByClient) return;
          cleanup();
          resolve();
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`${protocol.vendor} fake: request #${index} was not aborted by its client within ${timeoutMs} ms`));
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          abortListeners.delete(check);
        };
        abortListeners.add(check);
        check();
      });
    },
    async close() {
      closing = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function sendJson(res: ServerResponse, status: number, headers: Record<string, string>, body: unknown): void {
  if (res.destroyed) return;
  const payload = JSON.stringify(body);
  res.writeHead(status, { 'content-type': JSON_TYPE, 'content-length': Buffer.byteLength(payload), ...headers });
  res.end(payload);
}
