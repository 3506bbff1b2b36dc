import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { z } from 'zod';

const responseTableSchema = z.object({
  responses: z
    .array(z.object({ pattern: z.string().min(1), response: z.string() }))
    .default([]),
});

export interface MockAnswer {
  text: string;
  inputTokens: number;
  outputTokens: number;
  /** The pattern that matched, or undefined for a synthetic answer. */
  pattern: string | undefined;
}

/** Rough token count (about four characters a token), stable across runs. */
export function estimateTokens(text: string): number {
  return text.length === 0 ? 0 : Math.ceil(text.length / 4);
}

/**
 * Deterministic, offline model for local runs, demos and tests: answers from a pattern table
 * (longest match wins), else a clearly labelled synthetic answer derived from the prompt.
 */
export class MockProvider {
  private readonly table: { pattern: string; needle: string; response: string }[];

  constructor(entries: { pattern: string; response: string }[]) {
    this.table = entries
      .map((entry) => ({ ...entry, needle: entry.pattern.toLowerCase() }))
      .sort((a, b) => b.needle.length - a.needle.length);
  }

  static fromFile(path: string): MockProvider {
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
    return new MockProvider(parsed.data.responses);
  }

  answer(prompt: string, context: string): MockAnswer {
    const haystack = prompt.toLowerCase();
    const match = this.table.find((entry) => haystack.includes(entry.needle));
    const text = match ? match.response : synthesize(prompt);
    return { text, inputTokens: estimateTokens(context), outputTokens: estimateTokens(text), pattern: match?.pattern };
  }
}

function synthesize(prompt: string): string {
  const words = prompt.trim().split(/\s+/).filter(Boolean);
  const excerpt = words.slice(0, 24).join(' ');
  return `[mock answer] You asked about: "${excerpt}${words.length > 24 ? ' …' : ''}" (${words.length} words). ` +
    'This is a synthetic reply from the offline mock provider; set a provider API key for a real model.';
}
