import {
  firstHeader,
  startFakeUpstream,
  type FakeUpstream,
  type FakeUpstreamOptions,
  type ReplyContext,
  type VendorProtocol,
} from './common.js';

// google.rpc.Code names by HTTP status, as the Gemini API reports them in `error.status`.
const STATUS_NAMES: Record<number, string> = {
  400: 'INVALID_ARGUMENT',
  401: 'UNAUTHENTICATED',
  403: 'PERMISSION_DENIED',
  404: 'NOT_FOUND',
  409: 'ABORTED',
  429: 'RESOURCE_EXHAUSTED',
  499: 'CANCELLED',
  500: 'INTERNAL',
  501: 'NOT_IMPLEMENTED',
  503: 'UNAVAILABLE',
  504: 'DEADLINE_EXCEEDED',
};

const DEFAULT_MESSAGES: Record<string, string> = {
  RESOURCE_EXHAUSTED: 'Resource has been exhausted (e.g. check quota).',
  UNAVAILABLE: 'The model is overloaded. Please try again later.',
  INTERNAL: 'An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting',
  DEADLINE_EXCEEDED: 'The request timed out. Please try again.',
};

// The SDK (v3) calls `/v1/...` by default; `/v1beta` and `/v1alpha` are what `apiVersion` can select.
const ROUTE = /^\/(v1|v1beta|v1alpha)\/(?:models|tunedModels)\/([^/:]+):(generateContent|streamGenerateContent)$/;

interface Content {
  role?: string;
  parts?: Array<{ text?: string }>;
}

function partsText(content: Content | undefined): string {
  return (content?.parts ?? []).map((part) => (typeof part?.text === 'string' ? part.text : '')).join('');
}

function response(ctx: ReplyContext, text: string, final: boolean) {
  const { inputTokens, outputTokens } = ctx.usage;
  return {
    candidates: [
      {
        content: { role: 'model', parts: [{ text }] },
        ...(final ? { finishReason: ctx.finishReason ?? 'STOP' } : {}),
        index: 0,
      },
    ],
    // Like the API, non-final stream chunks carry the prompt count only; the final one has it all.
    usageMetadata: final
      ? { promptTokenCount: inputTokens, candidatesTokenCount: outputTokens, totalTokenCount: inputTokens + outputTokens }
      : { promptTokenCount: inputTokens, totalTokenCount: inputTokens },
    modelVersion: ctx.model,
    responseId: ctx.id,
  };
}

export const geminiProtocol: VendorProtocol = {
  vendor: 'gemini',
  basePath: '',
  idPrefix: 'fake-gemini-',

  route(method, url) {
    const match = method === 'POST' ? ROUTE.exec(url.pathname) : null;
    return match ? { model: decodeURIComponent(match[2]!), stream: match[3] === 'streamGenerateContent' } : null;
  },

  authorized: (req, url, apiKey) => firstHeader(req, 'x-goog-api-key') === apiKey || url.searchParams.get('key') === apiKey,

  parse(body, route) {
    const contents: Content[] = Array.isArray(body.contents) ? body.contents : [];
    // A content without a role is a user turn.
    const lastUser = contents.findLast((c) => c?.role !== 'model');
    return {
      model: route.model ?? 'gemini-fake',
      stream: route.stream ?? false,
      lastUserText: partsText(lastUser),
      promptText: [partsText(body.systemInstruction), ...contents.map(partsText)].join(''),
    };
  },

  errorBody(status, message, replyHeaders) {
    const name = STATUS_NAMES[status] ?? (status >= 500 ? 'INTERNAL' : 'INVALID_ARGUMENT');
    // The API's retry hint lives in the body (google.rpc.RetryInfo); mirror a scripted retry-after there,
    // since the SDK's ApiError exposes the body text but not the response headers.
    const retryAfter = Number(replyHeaders['retry-after']);
    const details = Number.isFinite(retryAfter)
      ? [{ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: `${retryAfter}s` }]
      : undefined;
    return { error: { code: status, message: message ?? DEFAULT_MESSAGES[name] ?? name, status: name, ...(details && { details }) } };
  },

  messages: {
    notFound: (method, path) => `The requested URL ${method} ${path} was not found on this server.`,
    unauthorized: 'API key not valid. Please pass a valid API key.',
    badJson: 'Invalid JSON payload received.',
  },

  responseHeaders: () => ({}),

  // A failure after the 200 is a data chunk holding the error body (the SDK throws on `error.code`).
  streamErrorFrame: (body) => `data: ${JSON.stringify(body)}\r\n\r\n`,

  unary: (ctx) => response(ctx, ctx.text, true),

  stream(ctx) {
    // The SDK splits events on blank lines and accepts \n\n or \r\n\r\n; the API sends \r\n.
    const frame = (data: unknown) => `data: ${JSON.stringify(data)}\r\n\r\n`;
    return {
      head: [],
      chunk: (text, _index, isLast) => frame(response(ctx, text, isLast)),
      // Empty text: one final, empty chunk so the client still gets finishReason and usage.
      tail: ctx.chunks.length === 0 ? [frame(response(ctx, '', true))] : [],
    };
  },
};

/** A fake Gemini API; give `url` to the SDK as `httpOptions.baseUrl`. */
export function startFakeGemini(options?: FakeUpstreamOptions): Promise<FakeUpstream> {
  return startFakeUpstream(geminiProtocol, options);
}
