import type { ProviderName } from '../provider-config.js';

/** A request every adapter understands; roles are only user and assistant (system is separate). */
export interface NormalizedRequest {
  model: string;
  system: string;
  messages: { role: 'user' | 'assistant'; content: string }[];
  temperature?: number;
  maxTokens: number;
  stopSequences: string[];
  /** Parsed JSON Schema when structured output is asked for. */
  jsonSchema?: Record<string, unknown>;
}

export type FinishReason = 'stop' | 'length' | 'stop_sequence' | 'content_filter' | 'other';

export interface AdapterResult {
  text: string;
  finishReason: FinishReason;
  inputTokens: number;
  outputTokens: number;
  /** The model the vendor says answered. */
  model: string;
}

export type StreamEvent = { type: 'delta'; text: string } | { type: 'done'; result: AdapterResult };

/** One vendor behind one interface. Errors are thrown as UpstreamError (or an AbortError). */
export interface LlmAdapter {
  readonly provider: ProviderName;
  complete(request: NormalizedRequest, signal: AbortSignal): Promise<AdapterResult>;
  stream(request: NormalizedRequest, signal: AbortSignal): AsyncIterable<StreamEvent>;
}

/** Instruction added for vendors without a native JSON Schema mode. */
export function jsonInstruction(schema: Record<string, unknown>): string {
  return `Reply with only one JSON value, no prose and no code fences, that matches this JSON Schema:\n${JSON.stringify(schema)}`;
}
