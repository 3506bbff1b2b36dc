import { readFileSync } from 'node:fs';
import { setTimeout as delay } from 'node:timers/promises';
import { parse } from 'yaml';
import { z } from 'zod';
import type { ProviderName } from '../provider-config.js';
import { UpstreamError } from '../upstream-error.js';
import type { AdapterResult, LlmAdapter, NormalizedRequest, StreamEvent } from './types.js';

const responseTableSchema = z.object({
  responses: z.array(z.object({ pattern: z.string().min(1), response: z.string() })).default([]),
});

/** Knobs for demos, benchmarks and fault tests. */
export interface MockKnobs {
  latencyMs: number;
  /** Fraction of requests (0..1) that fail with `errorStatus`, spread evenly and deterministically. */
  errorRate: number;
  errorStatus: number;
  /** Delay between streamed chunks, and the size of a chunk in characters. */
  streamChunkDelayMs: number;
  streamChunkChars: number;
}

/** Rough token count (about four characters a token), stable across runs. */
export function estimateTokens(text: string): number {
  return text.length === 0 ? 0 : Math.ceil(text.length / 4);
}

export function loadMockResponses(path: string): { pattern: string; response: string }[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new Error(`cannot read mock responses ${path}: ${(error as Error).message}`);
  }
  const parsed = responseTableSchema.safeParse(parse(text) ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`mock responses ${path}: ${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`);
  }
  return parsed.data.responses;
}

/**
 * Deterministic, offline model: answers from a pattern table (longest match in the last user
 * message wins), else a clearly labelled synthetic answer derived from the prompt; for a
 * structured request, JSON that fits the schema. Goes through the same retries, breakers and
 * limits as a vendor, so its error knobs exercise them.
 */
export class MockAdapter implements LlmAdapter {
  readonly provider: ProviderName = 'mock';
  private readonly table: { pattern: string; needle: string; response: string }[];
  private requests = 0;

  constructor(entries: { pattern: string; response: string }[], private readonly knobs: MockKnobs) {
    this.table = entries
      .map((entry) => ({ ...entry, needle: entry.pattern.toLowerCase() }))
      .sort((a, b) => b.needle.length - a.needle.length);
  }

  /** The answer for a request, without latency or failures. */
  answer(request: NormalizedRequest): AdapterResult {
    const lastUser = [...request.messages].reverse().find((message) => message.role === 'user')?.content ?? '';
    const match = this.table.find((entry) => lastUser.toLowerCase().includes(entry.needle));
    let text = match ? match.response : synthesize(lastUser);
    if (request.jsonSchema && !(match && isJson(match.response))) text = JSON.stringify(valueFor(request.jsonSchema, lastUser));
    const context = [request.system, ...request.messages.map((message) => message.content)].join('\n');
    let finishReason: AdapterResult['finishReason'] = 'stop';
    const maxChars = request.maxTokens * 4;
    if (text.length > maxChars) {
      text = text.slice(0, maxChars);
      finishReason = 'length';
    }
    return { text, finishReason, inputTokens: estimateTokens(context), outputTokens: estimateTokens(text), model: request.model };
  }

  private async beforeAnswer(signal: AbortSignal): Promise<void> {
    this.requests += 1;
    if (this.knobs.latencyMs > 0) await delay(this.knobs.latencyMs, undefined, { signal });
    // Fails exactly errorRate of requests: the n-th fails when floor(n*rate) steps up.
    const rate = this.knobs.errorRate;
    if (rate > 0 && Math.floor(this.requests * rate) > Math.floor((this.requests - 1) * rate)) {
      throw new UpstreamError('mock', 'http', 'injected failure', this.knobs.errorStatus);
    }
  }

  async complete(request: NormalizedRequest, signal: AbortSignal): Promise<AdapterResult> {
    await this.beforeAnswer(signal);
    return this.answer(request);
  }

  async *stream(request: NormalizedRequest, signal: AbortSignal): AsyncIterable<StreamEvent> {
    await this.beforeAnswer(signal);
    const result = this.answer(request);
    const size = Math.max(1, this.knobs.streamChunkChars);
    for (let offset = 0; offset < result.text.length; offset += size) {
      if (offset > 0 && this.knobs.streamChunkDelayMs > 0) await delay(this.knobs.streamChunkDelayMs, undefined, { signal });
      signal.throwIfAborted();
      yield { type: 'delta', text: result.text.slice(offset, offset + size) };
    }
    yield { type: 'done', result };
  }
}

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

function synthesize(prompt: string): string {
  const words = prompt.trim().split(/\s+/).filter(Boolean);
  const excerpt = words.slice(0, 24).join(' ');
  return (
    `[mock answer] You asked about: "${excerpt}${words.length > 24 ? ' …' : ''}" (${words.length} words). ` +
    'This is a synthetic reply from the offline mock provider; set a provider API key for a real model.'
  );
}

/** A small value that satisfies common JSON Schema keywords, derived from the schema alone. */
export function valueFor(schema: unknown, hint: string, depth = 0): unknown {
  if (!schema || typeof schema !== 'object' || depth > 8) return null;
  const s = schema as Record<string, any>;
  if ('const' in s) return s.const;
  if (Array.isArray(s.enum) && s.enum.length > 0) return s.enum[0];
  if (Array.isArray(s.oneOf) && s.oneOf.length > 0) return valueFor(s.oneOf[0], hint, depth + 1);
  if (Array.isArray(s.anyOf) && s.anyOf.length > 0) return valueFor(s.anyOf[0], hint, depth + 1);
  const type = Array.isArray(s.type) ? s.type.find((t: string) => t !== 'null') ?? s.type[0] : s.type;
  switch (type ?? (s.properties ? 'object' : s.items ? 'array' : 'string')) {
    case 'object': {
      const out: Record<string, unknown> = {};
      const properties = (s.properties ?? {}) as Record<string, unknown>;
      for (const [key, sub] of Object.entries(properties)) out[key] = valueFor(sub, key, depth + 1);
      return out;
    }
    case 'array': {
      const count = Math.max(1, s.minItems ?? 1);
      return Array.from({ length: count }, () => valueFor(s.items ?? {}, hint, depth + 1));
    }
    case 'integer':
      return Math.max(s.minimum ?? 0, Math.min(s.maximum ?? 1, 1));
    case 'number':
      return Math.max(s.minimum ?? 0, Math.min(s.maximum ?? 1, 1));
    case 'boolean':
      return true;
    case 'null':
      return null;
    default: {
      const base = `mock ${hint}`.trim();
      const min = s.minLength ?? 0;
      return base.length >= min ? base.slice(0, s.maxLength ?? base.length) : base.padEnd(min, '.');
    }
  }
}
