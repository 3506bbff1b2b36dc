import { GoogleGenAI, type GenerateContentParameters, type GenerateContentResponse } from '@google/genai';
import type { ProviderName } from '../provider-config.js';
import { UpstreamError } from '../upstream-error.js';
import { classifySdkError } from './classify.js';
import type { AdapterResult, FinishReason, LlmAdapter, NormalizedRequest, StreamEvent } from './types.js';
import { createUpstreamFetch } from './upstream-fetch.js';

function finishReason(reason: string | undefined): FinishReason {
  switch (reason) {
    case 'STOP':
      return 'stop';
    case 'MAX_TOKENS':
      return 'length';
    case 'SAFETY':
    case 'RECITATION':
    case 'BLOCKLIST':
    case 'PROHIBITED_CONTENT':
    case 'SPII':
      return 'content_filter';
    default:
      return 'other';
  }
}

function textOf(response: GenerateContentResponse): string {
  const parts = response.candidates?.[0]?.content?.parts ?? [];
  return parts.map((part) => (part.thought ? '' : (part.text ?? ''))).join('');
}

/** Gemini through @google/genai (the successor of the deprecated @google/generative-ai). */
export class GeminiAdapter implements LlmAdapter {
  readonly provider: ProviderName = 'gemini';
  private readonly client: GoogleGenAI;
  /** The same client for streamed calls: their answer is read as it arrives, whatever its content type. */
  private readonly streamingClient: GoogleGenAI;

  constructor(options: { apiKey: string; baseUrl?: string | undefined; timeoutMs: number }) {
    const client = (streaming: boolean) =>
      new GoogleGenAI({
        apiKey: options.apiKey,
        httpOptions: {
          ...(options.baseUrl ? { baseUrl: options.baseUrl } : {}),
          timeout: options.timeoutMs,
          // Retries are the provider service's, with its backoff, deadline and breaker.
          retryOptions: { attempts: 1 },
          fetch: createUpstreamFetch({ streaming }),
        },
      });
    this.client = client(false);
    this.streamingClient = client(true);
  }

  private params(request: NormalizedRequest, signal: AbortSignal): GenerateContentParameters {
    return {
      model: request.model,
      contents: request.messages.map((message) => ({
        role: message.role === 'assistant' ? 'model' : 'user',
        parts: [{ text: message.content }],
      })),
      config: {
        abortSignal: signal,
        maxOutputTokens: request.maxTokens,
        ...(request.system ? { systemInstruction: request.system } : {}),
        ...(request.temperature === undefined ? {} : { temperature: request.temperature }),
        ...(request.stopSequences.length > 0 ? { stopSequences: request.stopSequences } : {}),
        ...(request.jsonSchema ? { responseMimeType: 'application/json', responseJsonSchema: request.jsonSchema } : {}),
      },
    };
  }

  async complete(request: NormalizedRequest, signal: AbortSignal): Promise<AdapterResult> {
    try {
      const response = await this.client.models.generateContent(this.params(request, signal));
      return {
        text: textOf(response),
        finishReason: finishReason(response.candidates?.[0]?.finishReason),
        inputTokens: response.usageMetadata?.promptTokenCount ?? 0,
        outputTokens: response.usageMetadata?.candidatesTokenCount ?? 0,
        model: response.modelVersion ?? request.model,
      };
    } catch (error) {
      throw classifySdkError('gemini', error, signal);
    }
  }

  async *stream(request: NormalizedRequest, signal: AbortSignal): AsyncIterable<StreamEvent> {
    let text = '';
    let inputTokens = 0;
    let outputTokens = 0;
    let model = request.model;
    let reason: string | undefined;
    try {
      const chunks = await this.streamingClient.models.generateContentStream(this.params(request, signal));
      for await (const chunk of chunks) {
        const delta = textOf(chunk);
        if (delta) {
          text += delta;
          yield { type: 'delta', text: delta };
        }
        model = chunk.modelVersion ?? model;
        reason = chunk.candidates?.[0]?.finishReason ?? reason;
        if (chunk.usageMetadata) {
          inputTokens = chunk.usageMetadata.promptTokenCount ?? inputTokens;
          outputTokens = chunk.usageMetadata.candidatesTokenCount ?? outputTokens;
        }
      }
    } catch (error) {
      throw classifySdkError('gemini', error, signal);
    }
    if (!reason) throw new UpstreamError('gemini', 'connection', 'the stream ended before the answer was complete');
    yield { type: 'done', result: { text, finishReason: finishReason(reason), inputTokens, outputTokens, model } };
  }
}
