import {
  bearerToken,
  contentText,
  firstHeader,
  sseFrame,
  startFakeUpstream,
  type FakeUpstream,
  type FakeUpstreamOptions,
  type ReplyContext,
  type VendorProtocol,
} from './common.js';

const ERROR_TYPES: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  402: 'billing_error',
  403: 'permission_error',
  404: 'not_found_error',
  413: 'request_too_large',
  429: 'rate_limit_error',
  500: 'api_error',
  504: 'timeout_error',
  529: 'overloaded_error',
};

const DEFAULT_MESSAGES: Record<string, string> = {
  rate_limit_error: 'Number of request tokens has exceeded your per-minute rate limit',
  overloaded_error: 'Overloaded',
  api_error: 'Internal server error',
  timeout_error: 'Request timed out',
};

function errorType(status: number): string {
  return ERROR_TYPES[status] ?? (status >= 500 ? 'api_error' : 'invalid_request_error');
}

function usage(input: number, output: number) {
  // Every field the SDK's `Usage` type declares, with the values a plain text call reports.
  return {
    input_tokens: input,
    output_tokens: output,
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: 0,
    cache_creation: { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 0 },
    server_tool_use: null,
    service_tier: 'standard',
    inference_geo: null,
    output_tokens_details: null,
    speed: null,
  };
}

function message(ctx: ReplyContext, content: unknown[], stopReason: string | null, outputTokens: number) {
  return {
    id: ctx.id,
    type: 'message',
    role: 'assistant',
    model: ctx.model,
    content,
    stop_reason: stopReason,
    stop_sequence: stopSequence(ctx, stopReason),
    stop_details: null,
    container: null,
    diagnostics: null,
    usage: usage(ctx.usage.inputTokens, outputTokens),
  };
}

/** With `finishReason: 'stop_sequence'`, report the first stop sequence the caller asked for. */
function stopSequence(ctx: ReplyContext, stopReason: string | null): string | null {
  return stopReason === 'stop_sequence' ? (ctx.body.stop_sequences?.[0] ?? null) : null;
}

export const anthropicProtocol: VendorProtocol = {
  vendor: 'anthropic',
  basePath: '',
  idPrefix: 'msg_fake_',

  route: (method, url) => (method === 'POST' && url.pathname === '/v1/messages' ? {} : null),

  // SDK v1.x sends the key as `Authorization: Bearer`; the API (and older SDKs, curl) use `x-api-key`.
  authorized: (req, _url, apiKey) => firstHeader(req, 'x-api-key') === apiKey || bearerToken(req) === apiKey,

  parse(body) {
    const messages: any[] = Array.isArray(body.messages) ? body.messages : [];
    const lastUser = messages.findLast((m) => m?.role === 'user');
    return {
      model: typeof body.model === 'string' ? body.model : 'claude-fake',
      stream: body.stream === true,
      lastUserText: contentText(lastUser?.content),
      promptText: [contentText(body.system), ...messages.map((m) => contentText(m?.content))].join(''),
    };
  },

  errorBody(status, message) {
    const type = errorType(status);
    return { type: 'error', error: { type, message: message ?? DEFAULT_MESSAGES[type] ?? type }, request_id: null };
  },

  messages: {
    notFound: (method, path) => `Not found: ${method} ${path}`,
    unauthorized: 'invalid x-api-key',
    badJson: 'There was an error parsing the body of your request as JSON.',
  },

  responseHeaders: (id) => ({ 'request-id': `req_${id}` }),

  // The API reports a failure after its 200 as `event: error` with the error body it would have answered.
  streamErrorFrame: (body) => sseFrame(body, 'error'),

  unary: (ctx) =>
    message(ctx, [{ type: 'text', text: ctx.text, citations: null }], ctx.finishReason ?? 'end_turn', ctx.usage.outputTokens),

  stream(ctx) {
    const stopReason = ctx.finishReason ?? 'end_turn';
    return {
      // Every frame carries `event:`: the SDK ignores SSE messages without one.
      head: [
        sseFrame({ type: 'message_start', message: message(ctx, [], null, 1) }, 'message_start'),
        sseFrame({ type: 'content_block_start', index: 0, content_block: { type: 'text', text: '', citations: null } }, 'content_block_start'),
        sseFrame({ type: 'ping' }, 'ping'),
      ],
      chunk: (text) =>
        sseFrame({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text } }, 'content_block_delta'),
      tail: [
        sseFrame({ type: 'content_block_stop', index: 0 }, 'content_block_stop'),
        sseFrame(
          {
            type: 'message_delta',
            delta: { stop_reason: stopReason, stop_sequence: stopSequence(ctx, stopReason), stop_details: null, container: null },
            // Cumulative totals, as the API sends them (the SDK overwrites its snapshot with these).
            usage: {
              input_tokens: ctx.usage.inputTokens,
              output_tokens: ctx.usage.outputTokens,
              cache_creation_input_tokens: 0,
              cache_read_input_tokens: 0,
              server_tool_use: null,
              output_tokens_details: null,
            },
          },
          'message_delta',
        ),
        sseFrame({ type: 'message_stop' }, 'message_stop'),
      ],
    };
  },
};

/** A fake Anthropic Messages API; give `url` to the SDK as `baseURL`. */
export function startFakeAnthropic(options?: FakeUpstreamOptions): Promise<FakeUpstream> {
  return startFakeUpstream(anthropicProtocol, options);
}
