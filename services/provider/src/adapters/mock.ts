import { readFileSync } from 'node:fs';
import { setTimeout as delay } from 'node:timers/promises';
import { parse } from 'yaml';
import { formatProblem, parseYamlDocument, validateYamlDocument } from '@elexirion/kit';
import { z } from 'zod';
import type { ProviderName } from '../provider-config.js';
import { UpstreamError } from '../upstream-error.js';
import type { AdapterResult, LlmAdapter, NormalizedRequest, StreamEvent } from './types.js';

/** One row of the mock's pattern table (config/mock-responses.yaml). */
export interface MockResponseEntry {
  /** Case-insensitive substring of the last user message. */
  pattern: string;
  /** Case-insensitive substring that must also be in the system text or an earlier message (the prompt's instructions or demos). */
  context?: string;
  /** The answer; absent when the entry answers with `status`. */
  response?: string;
  /** An upstream HTTP error status to fail with instead of answering (429, 529, 5xx, 4xx). */
  status?: number;
  /** The error's message; a vendor-like default per status otherwise. */
  message?: string;
}

const entrySchema = z
  .strictObject({
    pattern: z.string().min(1, 'must not be empty'),
    context: z.string().min(1, 'must not be empty (leave it out to match any context)').optional(),
    response: z.string().optional(),
    status: z.number().int('must be a whole number').min(400, 'must be an HTTP error status (400-599)').max(599, 'must be an HTTP error status (400-599)').optional(),
    message: z.string().min(1, 'must not be empty').optional(),
  })
  .superRefine((entry, context) => {
    if (entry.response === undefined && entry.status === undefined) context.addIssue({ code: 'custom', path: [], message: 'needs a response (or a status, to fail with that upstream error)' });
    if (entry.response !== undefined && entry.status !== undefined) context.addIssue({ code: 'custom', path: ['status'], message: 'an entry answers with a response or fails with a status, not both' });
    if (entry.message !== undefined && entry.status === undefined) context.addIssue({ code: 'custom', path: ['message'], message: 'is the error message of a status entry; this entry has no status' });
  });

const responseTableSchema = z.strictObject({
  responses: z.array(entrySchema).default([]),
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

/** The table in `text` (a mock-responses file); throws one error listing each problem at file:line:column. */
export function parseMockResponses(file: string, text: string): MockResponseEntry[] {
  const read = parseYamlDocument(file, text, 'expected a mapping with "responses" (a list of pattern entries)');
  // An empty file (or one of comments only) is an empty table, as it always was.
  if ('problems' in read && isEmptyYaml(text)) return [];
  const checked = 'problems' in read ? read : validateYamlDocument(responseTableSchema, read.document);
  if ('problems' in checked) throw new Error(`invalid mock responses: ${checked.problems.map(formatProblem).join('; ')}`);
  return checked.data.responses;
}

export function loadMockResponses(path: string): MockResponseEntry[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new Error(`cannot read mock responses ${path}: ${(error as Error).message}`);
  }
  return parseMockResponses(path, text);
}

/** A table entry with its lower-cased needles, ready to match. */
interface CompiledEntry extends MockResponseEntry {
  needle: string;
  contextNeedle: string | undefined;
}

/** What a status entry fails with when it gives no message: the words vendors use. */
function defaultStatusMessage(status: number): string {
  if (status === 529) return 'overloaded';
  if (status === 429) return 'rate limit exceeded';
  if (status >= 500) return 'internal server error';
  return 'invalid request';
}

/**
 * Deterministic, offline model: answers from a pattern table, else a clearly labelled synthetic
 * answer derived from the prompt; for a structured request, JSON that fits the schema; for a DSPy
 * adapter's request, its output format. Goes through the same retries, breakers and limits as a
 * vendor, so its error knobs and its status entries exercise them.
 *
 * An entry matches when its pattern is in the last user message and its context (if any) is in
 * the system text or a message before it: the same input can thus get another answer when the
 * prompt's instructions or demos change, as a real model's would. Among matching entries those
 * with a context win (the longer context first), then the longer pattern, then the earlier one.
 */
export class MockAdapter implements LlmAdapter {
  readonly provider: ProviderName = 'mock';
  private readonly table: CompiledEntry[];
  private readonly hasContexts: boolean;
  private requests = 0;

  constructor(entries: readonly MockResponseEntry[], private readonly knobs: MockKnobs) {
    this.table = entries
      .map((entry) => ({ ...entry, needle: entry.pattern.toLowerCase(), contextNeedle: entry.context?.toLowerCase() }))
      // Array.prototype.sort is stable: equal entries keep the file's order.
      .sort((a, b) => (b.contextNeedle?.length ?? -1) - (a.contextNeedle?.length ?? -1) || b.needle.length - a.needle.length);
    this.hasContexts = this.table.some((entry) => entry.contextNeedle !== undefined);
  }

  /** The table's entry for a request: undefined when none matches. */
  match(request: NormalizedRequest): MockResponseEntry | undefined {
    const lastUserIndex = request.messages.findLastIndex((message) => message.role === 'user');
    const lastUser = (request.messages[lastUserIndex]?.content ?? '').toLowerCase();
    // What came before the question: the instructions and the demos (built only if a context can need it).
    let before: string | undefined;
    const context = () => (before ??= [request.system, ...request.messages.slice(0, Math.max(0, lastUserIndex)).map((message) => message.content)].join('\n').toLowerCase());
    return this.table.find(
      (entry) => lastUser.includes(entry.needle) && (entry.contextNeedle === undefined || (this.hasContexts && context().includes(entry.contextNeedle))),
    );
  }

  /**
   * The answer for a request, without latency or injected failures. Throws the upstream error of
   * a matching status entry.
   */
  answer(request: NormalizedRequest): AdapterResult {
    const lastUser = request.messages.findLast((message) => message.role === 'user')?.content ?? '';
    const match = this.match(request);
    if (match?.status !== undefined) throw new UpstreamError('mock', 'http', match.message ?? defaultStatusMessage(match.status), match.status);
    const tableAnswer = match?.response;
    const dspy = dspyRequest(lastUser);
    let text: string;
    if (dspy) text = dspyAnswer(dspy, tableAnswer, lastUser, request.jsonSchema);
    else {
      text = tableAnswer ?? synthesize(lastUser);
      if (request.jsonSchema && !(tableAnswer !== undefined && isJson(tableAnswer))) text = JSON.stringify(valueFor(request.jsonSchema, lastUser));
    }
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

// DSPy's adapters (dspy 3.4, dspy/adapters/chat_adapter.py and json_adapter.py) end the last user
// message with the output fields they will parse. Answering in that format lets DSPy parse every
// mock answer, so an optimizer run against the mock sees the table's answers, not parse errors.

/** One output field DSPy asks for: its name and, when not str, its Python type. */
export interface DspyOutputField {
  name: string;
  type: string;
}

/** A DSPy adapter's request: which format and which output fields, in order. */
export interface DspyRequest {
  format: 'chat' | 'json';
  fields: DspyOutputField[];
}

const CHAT_REQUIREMENTS = /Respond with the corresponding output fields, starting with the field (.+?), and then ending with the marker for `\[\[ ## completed ## \]\]`\./s;
const JSON_REQUIREMENTS = /Respond with a JSON object in the following order of fields: (.+?)\.(?:\n|$)/;
/** A field in either list: `[[ ## name ## ]]` (chat) or `name` (JSON), then its type when not str. */
const REQUIRED_FIELD = /`(?:\[\[ ## )?(\w+)(?: ## \]\])?`(?: \(must be formatted as a valid Python ([^\n]+?)\)(?=, then |$))?/g;

/** The output fields a DSPy ChatAdapter or JSONAdapter asks for in `lastUser`, if it is one. */
export function dspyRequest(lastUser: string): DspyRequest | undefined {
  const chat = CHAT_REQUIREMENTS.exec(lastUser);
  const json = chat ? undefined : JSON_REQUIREMENTS.exec(lastUser);
  const list = (chat ?? json)?.[1];
  if (list === undefined) return undefined;
  const fields = [...list.matchAll(REQUIRED_FIELD)].map((field) => ({ name: field[1]!, type: field[2] ?? 'str' }));
  return fields.length > 0 ? { format: chat ? 'chat' : 'json', fields } : undefined;
}

/**
 * The answer in the adapter's format: the table's answer (else the synthetic one) in the last
 * field that is not `reasoning` and can hold it (a text answer needs a str or Literal field; a
 * JSON one fits any), a short labelled text for `reasoning`, and a value of its type for any
 * other field (from the JSON Schema when the request has one), so DSPy parses every field.
 */
function dspyAnswer(request: DspyRequest, tableAnswer: string | undefined, lastUser: string, jsonSchema: Record<string, unknown> | undefined): string {
  const answer = tableAnswer ?? synthesize(lastUser);
  const takesText = (field: DspyOutputField) => isTextType(field.type) || /^Literal\[/.test(field.type);
  const holds = (field: DspyOutputField) => takesText(field) || (tableAnswer !== undefined && isJson(tableAnswer));
  const answers = request.fields.filter((field) => field.name !== 'reasoning');
  const answerField = answers.findLast(holds) ?? answers.at(-1) ?? request.fields.at(-1)!;
  const reasoning = tableAnswer !== undefined ? "[mock reasoning] The answer comes from the mock provider's pattern table." : "[mock reasoning] No pattern of the mock provider's table matched; the answer is synthetic.";
  const properties = (jsonSchema?.properties ?? {}) as Record<string, unknown>;
  /** A field's value: text for a text field, else a JSON value. */
  const valueOf = (field: DspyOutputField): unknown => {
    if (field === answerField && holds(field)) return takesText(field) || !isJson(answer) ? answer : JSON.parse(answer);
    if (field !== answerField && field.name === 'reasoning') return reasoning;
    if (properties[field.name] !== undefined) return valueFor(properties[field.name], field.name);
    return isTextType(field.type) ? `[mock ${field.name}]` : valueOfType(field.type);
  };
  if (request.format === 'json') return JSON.stringify(Object.fromEntries(request.fields.map((field) => [field.name, valueOf(field)])));
  const text = (value: unknown) => (typeof value === 'string' ? value : JSON.stringify(value));
  return `${request.fields.map((field) => `[[ ## ${field.name} ## ]]\n${text(valueOf(field))}`).join('\n\n')}\n\n[[ ## completed ## ]]`;
}

/** Types whose value DSPy takes as the text itself. */
function isTextType(type: string): boolean {
  return type === 'str' || type.startsWith('Optional[str') || type === 'str | None';
}

/** A value of a Python type (as DSPy names it) that DSPy parses into that type. */
function valueOfType(type: string): unknown {
  const base = type.replace(/^Optional\[(.*)\]$/, '$1').replace(/ \| None$/, '');
  const literal = /^Literal\[(.+)\]$/.exec(base);
  if (literal) {
    const first = literal[1]!.split(',')[0]!.trim();
    return /^['"]/.test(first) ? first.slice(1, -1) : isJson(first) ? JSON.parse(first) : first;
  }
  if (base === 'int' || base === 'float') return 0;
  if (base === 'bool') return false;
  if (/^(list|List|tuple|set)\b/.test(base)) return [];
  if (/^(dict|Dict)\b/.test(base)) return {};
  return `[mock ${type}]`;
}

function isEmptyYaml(text: string): boolean {
  try {
    return parse(text) == null;
  } catch {
    return false;
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
