import OpenAI from 'openai';
import { request as undiciRequest, type Dispatcher } from 'undici';
import type { ProviderName } from '../provider-config.js';
import { UpstreamError } from '../upstream-error.js';
import { classifySdkError } from './classify.js';
import type { AdapterResult, FinishReason, LlmAdapter, NormalizedRequest, StreamEvent } from './types.js';
import { createUpstreamFetch, sharedConnections, webHeaders } from './upstream-fetch.js';

/** undici's codes for no answer (or no further body byte) within the call's timeout. */
const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

const ERROR_CLASSES = {
  APIError: OpenAI.APIError,
  APIUserAbortError: OpenAI.APIUserAbortError,
  APIConnectionTimeoutError: OpenAI.APIConnectionTimeoutError,
  APIConnectionError: OpenAI.APIConnectionError,
};

function finishReason(reason: string | null | undefined): FinishReason {
  switch (reason) {
    case 'stop':
      return 'stop';
    case 'length':
      return 'length';
    case 'content_filter':
      return 'content_filter';
    default:
      return 'other';
  }
}

/**
 * Chat Completions: OpenAI itself, or any compatible server (Ollama, vLLM, LM Studio) by base URL.
 *
 * Streamed calls go through the official SDK. A whole-answer call is one POST of the same JSON
 * over the same keep-alive connections, its answer parsed as the SDK's ChatCompletion and its
 * failures thrown as the SDK's own error classes (APIError.generate), so both are classified
 * alike. Why not the SDK there too: its request machinery (headers built and validated, log
 * details formatted, URL redaction, abort wiring) cost about 210 µs of CPU a call against 120 µs
 * for the HTTP call itself (a loopback microbenchmark), the largest single item of the request
 * path's profile.
 */
export class OpenAiAdapter implements LlmAdapter {
  readonly provider: ProviderName = 'openai';
  private readonly client: OpenAI;
  /** The same client for streamed calls: their answer is read as it arrives, whatever its content type. */
  private readonly streamingClient: OpenAI;
  /** The chat completions URL under the SDK's base URL (its default, OPENAI_BASE_URL, or ours). */
  private readonly completionsUrl: string;
  private readonly headers: Record<string, string>;
  private readonly timeoutMs: number;
  private readonly connections: Dispatcher = sharedConnections();

  constructor(options: { apiKey?: string | undefined; baseUrl?: string | undefined; timeoutMs: number }) {
    this.client = new OpenAI({
      // Local OpenAI-compatible servers accept any key; the SDK insists on one.
      apiKey: options.apiKey ?? 'unused',
      ...(options.baseUrl ? { baseURL: options.baseUrl } : {}),
      maxRetries: 0,
      timeout: options.timeoutMs,
      fetch: createUpstreamFetch(),
    });
    this.streamingClient = this.client.withOptions({ fetch: createUpstreamFetch({ streaming: true }) });
    this.completionsUrl = `${this.client.baseURL.replace(/\/+$/, '')}/chat/completions`;
    this.headers = {
      authorization: `Bearer ${this.client.apiKey}`,
      'content-type': 'application/json',
      accept: 'application/json',
      'user-agent': 'elexirion',
      // As the SDK sends them (from OPENAI_ORG_ID and OPENAI_PROJECT_ID when set).
      ...(this.client.organization ? { 'openai-organization': this.client.organization } : {}),
      ...(this.client.project ? { 'openai-project': this.client.project } : {}),
    };
    this.timeoutMs = options.timeoutMs;
  }

  private params(request: NormalizedRequest) {
    const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [
      ...(request.system ? [{ role: 'system' as const, content: request.system }] : []),
      ...request.messages,
    ];
    return {
      model: request.model,
      messages,
      max_completion_tokens: request.maxTokens,
      ...(request.temperature === undefined ? {} : { temperature: request.temperature }),
      ...(request.stopSequences.length > 0 ? { stop: request.stopSequences } : {}),
      ...(request.jsonSchema
        ? { response_format: { type: 'json_schema' as const, json_schema: { name: 'response', schema: request.jsonSchema, strict: false } } }
        : {}),
    };
  }

  async complete(request: NormalizedRequest, signal: AbortSignal): Promise<AdapterResult> {
    try {
      const completion = await this.postCompletion(this.params(request), signal);
      const choice = completion.choices[0];
      return {
        text: choice?.message.content ?? '',
        finishReason: finishReason(choice?.finish_reason),
        inputTokens: completion.usage?.prompt_tokens ?? 0,
        outputTokens: completion.usage?.completion_tokens ?? 0,
        model: completion.model,
      };
    } catch (error) {
      throw classifySdkError('openai', error, signal, ERROR_CLASSES);
    }
  }

  /**
   * POST /chat/completions and its parsed answer. The timeout holds for the answer's headers (a
   * whole answer's come once it is generated) and again for each pause in its body.
   */
  private async postCompletion(params: OpenAI.Chat.ChatCompletionCreateParamsNonStreaming, signal: AbortSignal): Promise<OpenAI.Chat.ChatCompletion> {
    let response: Dispatcher.ResponseData;
    let text: string;
    try {
      response = await undiciRequest(this.completionsUrl, {
        method: 'POST',
        headers: this.headers,
        body: JSON.stringify(params),
        signal,
        dispatcher: this.connections,
        headersTimeout: this.timeoutMs,
        bodyTimeout: this.timeoutMs,
      });
      text = await response.body.text();
    } catch (error) {
      if (TIMEOUT_CODES.has((error as { code?: string }).code ?? '')) throw new OpenAI.APIConnectionTimeoutError();
      throw error;
    }
    if (response.statusCode < 200 || response.statusCode >= 300) {
      let body: object | undefined;
      try {
        body = JSON.parse(text) as object;
      } catch {
        body = undefined;
      }
      // As the SDK makes it: the parsed body when it is JSON, else the text as the message.
      throw OpenAI.APIError.generate(response.statusCode, body, body ? undefined : text, webHeaders(response.headers));
    }
    try {
      return JSON.parse(text) as OpenAI.Chat.ChatCompletion;
    } catch {
      throw new UpstreamError('openai', 'connection', `unexpected failure: the answer is not JSON (HTTP ${response.statusCode}, ${text.length} bytes)`);
    }
  }

  async *stream(request: NormalizedRequest, signal: AbortSignal): AsyncIterable<StreamEvent> {
    let text = '';
    let inputTokens = 0;
    let outputTokens = 0;
    let model = request.model;
    let reason: string | null | undefined;
    try {
      const chunks = await this.streamingClient.chat.completions.create(
        { ...this.params(request), stream: true, stream_options: { include_usage: true } },
        { signal },
      );
      for await (const chunk of chunks) {
        model = chunk.model || model;
        const choice = chunk.choices[0];
        const delta = choice?.delta?.content;
        if (delta) {
          text += delta;
          yield { type: 'delta', text: delta };
        }
        if (choice?.finish_reason) reason = choice.finish_reason;
        if (chunk.usage) {
          inputTokens = chunk.usage.prompt_tokens;
          outputTokens = chunk.usage.completion_tokens;
        }
      }
    } catch (error) {
      throw classifySdkError('openai', error, signal, ERROR_CLASSES);
    }
    // A stream cut before its finish_reason is a broken answer, never a complete one.
    if (!reason) throw new UpstreamError('openai', 'connection', 'the stream ended before the answer was complete');
    yield { type: 'done', result: { text, finishReason: finishReason(reason), inputTokens, outputTokens, model } };
  }
}
