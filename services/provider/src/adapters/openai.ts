import OpenAI from 'openai';
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import { request as undiciRequest, type Dispatcher } from 'undici';
import type { ProviderName } from '../provider-config.js';
import { UpstreamError } from '../upstream-error.js';
import { classifySdkError } from './classify.js';
import type { AdapterResult, FinishReason, LlmAdapter, NormalizedRequest, StreamEvent } from './types.js';
import { sharedConnections, webHeaders } from './upstream-fetch.js';

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
 * Each call is one POST of the SDK's request JSON over the shared keep-alive connections; a whole
 * answer is parsed as the SDK's ChatCompletion, a stream's server-sent events as its chunks, and
 * failures are thrown as the SDK's own error classes (APIError.generate for a refusal, APIError
 * without a status for an error inside a stream), so they are classified exactly as before. The
 * SDK client itself only resolves the settings (base URL, organization and project, from its
 * defaults and environment variables).
 *
 * Why not the SDK's request path: its machinery (headers built and validated per call, log
 * details formatted even with logging off, URL redaction, composite abort signals, its SSE
 * decoders) cost about 210 µs of CPU a whole-answer call against about 86 µs this way (a loopback
 * microbenchmark), and was the largest single item of the request path's profile (20% inclusive;
 * 25% on the streaming path).
 */
export class OpenAiAdapter implements LlmAdapter {
  readonly provider: ProviderName = 'openai';
  /** The chat completions URL under the SDK's base URL (its default, OPENAI_BASE_URL, or ours). */
  private readonly completionsUrl: string;
  private readonly headers: Record<string, string>;
  private readonly timeoutMs: number;
  private readonly connections: Dispatcher = sharedConnections();

  constructor(options: { apiKey?: string | undefined; baseUrl?: string | undefined; timeoutMs: number }) {
    const settings = new OpenAI({
      // Local OpenAI-compatible servers accept any key; the SDK insists on one.
      apiKey: options.apiKey ?? 'unused',
      ...(options.baseUrl ? { baseURL: options.baseUrl } : {}),
    });
    this.completionsUrl = `${settings.baseURL.replace(/\/+$/, '')}/chat/completions`;
    this.headers = {
      authorization: `Bearer ${settings.apiKey}`,
      'content-type': 'application/json',
      accept: 'application/json',
      'user-agent': 'elexirion',
      // As the SDK sends them (from OPENAI_ORG_ID and OPENAI_PROJECT_ID when set).
      ...(settings.organization ? { 'openai-organization': settings.organization } : {}),
      ...(settings.project ? { 'openai-project': settings.project } : {}),
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
   * POST /chat/completions: the answer's status and headers once they come, or the SDK's error for
   * a refusal (APIError.generate: the parsed body when it is JSON, else the text as the message).
   * The timeout holds for the headers (a whole answer's come once it is generated, a stream's at
   * its start) and again for each pause in the body.
   */
  private async post(params: OpenAI.Chat.ChatCompletionCreateParams, signal: AbortSignal): Promise<Dispatcher.ResponseData> {
    const response = await undiciRequest(this.completionsUrl, {
      method: 'POST',
      headers: this.headers,
      body: JSON.stringify(params),
      signal,
      dispatcher: this.connections,
      headersTimeout: this.timeoutMs,
      bodyTimeout: this.timeoutMs,
    });
    if (response.statusCode >= 200 && response.statusCode < 300) return response;
    const text = await response.body.text();
    let body: object | undefined;
    try {
      body = JSON.parse(text) as object;
    } catch {
      body = undefined;
    }
    throw OpenAI.APIError.generate(response.statusCode, body, body ? undefined : text, webHeaders(response.headers));
  }

  private async postCompletion(params: OpenAI.Chat.ChatCompletionCreateParamsNonStreaming, signal: AbortSignal): Promise<OpenAI.Chat.ChatCompletion> {
    const response = await this.post(params, signal);
    const text = await response.body.text();
    try {
      return JSON.parse(text) as OpenAI.Chat.ChatCompletion;
    } catch {
      throw new UpstreamError('openai', 'connection', `unexpected failure: the answer is not JSON (HTTP ${response.statusCode}, ${text.length} bytes)`);
    }
  }

  /**
   * The answer's chunks as the server sends them (server-sent events, whatever its content type
   * says), up to `[DONE]`. An error the server puts in the stream is thrown as the SDK throws it
   * (an APIError without a status). Leaving early (the caller stopped reading) destroys the
   * body, which aborts the vendor request.
   */
  private async *postStream(params: OpenAI.Chat.ChatCompletionCreateParamsStreaming, signal: AbortSignal): AsyncGenerator<OpenAI.Chat.ChatCompletionChunk> {
    const response = await this.post(params, signal);
    const events: EventSourceMessage[] = [];
    const parser = createParser({ onEvent: (event) => events.push(event) });
    const decoder = new TextDecoder();
    let ended = false;
    try {
      for await (const bytes of response.body as AsyncIterable<Uint8Array>) {
        parser.feed(decoder.decode(bytes, { stream: true }));
        for (let index = 0; index < events.length && !ended; index += 1) {
          const { data } = events[index]!;
          // After [DONE] the body is still read to its end, so the connection can be used again.
          if (data.startsWith('[DONE]')) {
            ended = true;
            break;
          }
          let chunk: OpenAI.Chat.ChatCompletionChunk & { error?: unknown };
          try {
            chunk = JSON.parse(data) as typeof chunk;
          } catch {
            throw new UpstreamError('openai', 'connection', `unexpected failure: an event of the stream is not JSON (${data.length} bytes)`);
          }
          if (chunk.error) throw new OpenAI.APIError(undefined, chunk.error, undefined, webHeaders(response.headers));
          yield chunk;
        }
        events.length = 0;
      }
    } finally {
      if (!response.body.readableEnded) response.body.destroy();
    }
  }

  async *stream(request: NormalizedRequest, signal: AbortSignal): AsyncIterable<StreamEvent> {
    let text = '';
    let inputTokens = 0;
    let outputTokens = 0;
    let model = request.model;
    let reason: string | null | undefined;
    try {
      for await (const chunk of this.postStream({ ...this.params(request), stream: true, stream_options: { include_usage: true } }, signal)) {
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
