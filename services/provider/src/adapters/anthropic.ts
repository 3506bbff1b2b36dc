import Anthropic from '@anthropic-ai/sdk';
import type { ProviderName } from '../provider-config.js';
import { UpstreamError } from '../upstream-error.js';
import { classifySdkError } from './classify.js';
import { jsonInstruction, type AdapterResult, type FinishReason, type LlmAdapter, type NormalizedRequest, type StreamEvent } from './types.js';
import { createUpstreamFetch } from './upstream-fetch.js';

const ERROR_CLASSES = {
  APIError: Anthropic.APIError,
  APIUserAbortError: Anthropic.APIUserAbortError,
  APIConnectionTimeoutError: Anthropic.APIConnectionTimeoutError,
  APIConnectionError: Anthropic.APIConnectionError,
};

function finishReason(stopReason: string | null | undefined): FinishReason {
  switch (stopReason) {
    case 'end_turn':
      return 'stop';
    case 'max_tokens':
      return 'length';
    case 'stop_sequence':
      return 'stop_sequence';
    case 'refusal':
      return 'content_filter';
    default:
      return 'other';
  }
}

/** Claude through the official SDK's Messages API; retries are ours, not the SDK's. */
export class AnthropicAdapter implements LlmAdapter {
  readonly provider: ProviderName = 'anthropic';
  private readonly client: Anthropic;
  /** The same client for streamed calls: their answer is read as it arrives, whatever its content type. */
  private readonly streamingClient: Anthropic;

  constructor(options: { apiKey: string; baseUrl?: string | undefined; timeoutMs: number }) {
    this.client = new Anthropic({
      apiKey: options.apiKey,
      ...(options.baseUrl ? { baseURL: options.baseUrl } : {}),
      maxRetries: 0,
      timeout: options.timeoutMs,
      fetch: createUpstreamFetch(),
    });
    this.streamingClient = this.client.withOptions({ fetch: createUpstreamFetch({ streaming: true }) });
  }

  private params(request: NormalizedRequest) {
    const system = [request.system, request.jsonSchema ? jsonInstruction(request.jsonSchema) : ''].filter(Boolean).join('\n\n');
    return {
      model: request.model,
      max_tokens: request.maxTokens,
      messages: request.messages,
      ...(system ? { system } : {}),
      ...(request.temperature === undefined ? {} : { temperature: request.temperature }),
      ...(request.stopSequences.length > 0 ? { stop_sequences: request.stopSequences } : {}),
    };
  }

  async complete(request: NormalizedRequest, signal: AbortSignal): Promise<AdapterResult> {
    try {
      const message = await this.client.messages.create(this.params(request), { signal });
      const text = message.content.map((block) => (block.type === 'text' ? block.text : '')).join('');
      return {
        text,
        finishReason: finishReason(message.stop_reason),
        inputTokens: message.usage.input_tokens,
        outputTokens: message.usage.output_tokens,
        model: message.model,
      };
    } catch (error) {
      throw classifySdkError('anthropic', error, signal, ERROR_CLASSES);
    }
  }

  async *stream(request: NormalizedRequest, signal: AbortSignal): AsyncIterable<StreamEvent> {
    let text = '';
    let inputTokens = 0;
    let outputTokens = 0;
    let model = request.model;
    let stop: string | null | undefined;
    let completed = false;
    try {
      const events = await this.streamingClient.messages.create({ ...this.params(request), stream: true }, { signal });
      for await (const event of events) {
        switch (event.type) {
          case 'message_start':
            model = event.message.model;
            inputTokens = event.message.usage.input_tokens;
            outputTokens = event.message.usage.output_tokens;
            break;
          case 'content_block_delta':
            if (event.delta.type === 'text_delta') {
              text += event.delta.text;
              yield { type: 'delta', text: event.delta.text };
            }
            break;
          case 'message_delta':
            stop = event.delta.stop_reason;
            outputTokens = event.usage.output_tokens;
            if (event.usage.input_tokens != null) inputTokens = event.usage.input_tokens;
            break;
          case 'message_stop':
            completed = true;
            break;
          default:
            break;
        }
      }
    } catch (error) {
      throw classifySdkError('anthropic', error, signal, ERROR_CLASSES);
    }
    if (!completed) throw new UpstreamError('anthropic', 'connection', 'the stream ended before the answer was complete');
    yield { type: 'done', result: { text, finishReason: finishReason(stop), inputTokens, outputTokens, model } };
  }
}
