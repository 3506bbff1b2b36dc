import {
  bearerToken,
  contentText,
  sseFrame,
  startFakeUpstream,
  type FakeUpstream,
  type FakeUpstreamOptions,
  type ReplyContext,
  type VendorProtocol,
} from './common.js';

// OpenAI's `error.type` / `error.code` by status, as the API sends them.
function errorShape(status: number): { type: string; code: string | null; message: string } {
  if (status === 401) return { type: 'invalid_request_error', code: 'invalid_api_key', message: 'Incorrect API key provided.' };
  if (status === 429) {
    return { type: 'requests', code: 'rate_limit_exceeded', message: 'Rate limit reached for requests. Please try again later.' };
  }
  if (status === 503) return { type: 'server_error', code: null, message: 'The server is overloaded or not ready yet.' };
  if (status >= 500) return { type: 'server_error', code: null, message: 'The server had an error while processing your request.' };
  return { type: 'invalid_request_error', code: null, message: 'Invalid request.' };
}

function usage(ctx: ReplyContext) {
  const { inputTokens, outputTokens } = ctx.usage;
  return { prompt_tokens: inputTokens, completion_tokens: outputTokens, total_tokens: inputTokens + outputTokens };
}

export const openaiProtocol: VendorProtocol = {
  vendor: 'openai',
  // The SDK's baseURL includes the version: https://api.openai.com/v1.
  basePath: '/v1',
  idPrefix: 'chatcmpl-fake-',

  route: (method, url) => (method === 'POST' && url.pathname === '/v1/chat/completions' ? {} : null),

  authorized: (req, _url, apiKey) => bearerToken(req) === apiKey,

  parse(body) {
    const messages: any[] = Array.isArray(body.messages) ? body.messages : [];
    const lastUser = messages.findLast((m) => m?.role === 'user');
    return {
      model: typeof body.model === 'string' ? body.model : 'gpt-fake',
      stream: body.stream === true,
      lastUserText: contentText(lastUser?.content),
      promptText: messages.map((m) => contentText(m?.content)).join(''),
    };
  },

  errorBody(status, message) {
    const shape = errorShape(status);
    return { error: { message: message ?? shape.message, type: shape.type, param: null, code: shape.code } };
  },

  messages: {
    notFound: (method, path) => `Invalid URL (${method} ${path})`,
    unauthorized: 'Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.',
    badJson:
      "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly.)",
  },

  responseHeaders: (id) => ({ 'x-request-id': `req_${id}` }),

  // A failure after the 200 is a data event holding the error body (the SDK throws on `data.error`).
  streamErrorFrame: (body) => sseFrame(body),

  unary: (ctx) => ({
    id: ctx.id,
    object: 'chat.completion',
    created: ctx.created,
    model: ctx.model,
    choices: [
      {
        index: 0,
        message: { role: 'assistant', content: ctx.text, refusal: null, annotations: [] },
        logprobs: null,
        finish_reason: ctx.finishReason ?? 'stop',
      },
    ],
    usage: usage(ctx),
    service_tier: 'default',
    system_fingerprint: null,
  }),

  stream(ctx) {
    const includeUsage = ctx.body.stream_options?.include_usage === true;
    const chunk = (choices: unknown[], extra: object = {}) =>
      sseFrame({
        id: ctx.id,
        object: 'chat.completion.chunk',
        created: ctx.created,
        model: ctx.model,
        service_tier: 'default',
        system_fingerprint: null,
        choices,
        // With include_usage the API puts `usage: null` on every chunk but the last.
        ...(includeUsage && { usage: null }),
        ...extra,
      });
    const choice = (delta: object, finishReason: string | null = null) => ({ index: 0, delta, logprobs: null, finish_reason: finishReason });
    return {
      head: [chunk([choice({ role: 'assistant', content: '', refusal: null })])],
      chunk: (text) => chunk([choice({ content: text })]),
      tail: [
        chunk([choice({}, ctx.finishReason ?? 'stop')]),
        ...(includeUsage ? [chunk([], { usage: usage(ctx) })] : []),
        sseFrame('[DONE]'),
      ],
    };
  },
};

/** A fake OpenAI Chat Completions API; `url` already ends in `/v1`, give it to the SDK as `baseURL`. */
export function startFakeOpenAI(options?: FakeUpstreamOptions): Promise<FakeUpstream> {
  return startFakeUpstream(openaiProtocol, options);
}
