import OpenAI from 'openai';
import type { ProviderName } from '../provider-config.js';
import { UpstreamError } from '../upstream-error.js';
import { classifySdkError } from './classify.js';
import type { AdapterResult, FinishReason, LlmAdapter, NormalizedRequest, StreamEvent } from './types.js';
import { createUpstreamFetch } from './upstream-fetch.js';

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
 * Chat Completions through the official SDK: OpenAI itself, or any compatible server (Ollama,
 * vLLM, LM Studio) by base URL.
 */
export class OpenAiAdapter implements LlmAdapter {
  readonly provider: ProviderName = 'openai';
  private readonly client: OpenAI;
  /** The same client for streamed calls: their answer is read as it arrives, whatever its content type. */
  private readonly streamingClient: OpenAI;

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
      const completion = await this.client.chat.completions.create(this.params(request), { signal });
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
