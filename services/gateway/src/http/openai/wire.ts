// OpenAI's Chat Completions wire format (as the official `openai` SDK's types define it), and its
// translation to and from the gateway's Complete calls.
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { httpStatusFromGrpc, proto, Status } from '@elexirion/kit';

/** `pipeline/<name>` runs a pipeline as if it were a model. */
export const PIPELINE_MODEL_PREFIX = 'pipeline/';

const textPart = z.looseObject({ type: z.string(), text: z.string().optional() });

const message = z.looseObject({
  role: z.enum(['system', 'developer', 'user', 'assistant', 'tool', 'function']),
  content: z.union([z.string(), z.array(textPart), z.null()]).optional(),
  name: z.string().optional(),
  tool_calls: z.array(z.unknown()).nullish(),
});

/**
 * The request body. Every field OpenAI defines is named so its type is checked (a 400 naming it);
 * what the platform cannot honour is refused by `unsupportedParameter`; fields OpenAI does not
 * define are ignored, as many OpenAI-compatible servers do.
 */
export const chatCompletionBody = z.looseObject({
  model: z.string().min(1).describe('A model alias (GET /v1/models), "<provider>/<model>", or "pipeline/<name>" to run a pipeline.'),
  messages: z.array(message).min(1),
  stream: z.boolean().nullish(),
  stream_options: z.looseObject({ include_usage: z.boolean().optional(), include_obfuscation: z.boolean().optional() }).nullish(),
  temperature: z.number().nullish(),
  max_tokens: z.number().int().nullish(),
  max_completion_tokens: z.number().int().nullish(),
  stop: z.union([z.string(), z.array(z.string())]).nullish(),
  response_format: z
    .looseObject({
      type: z.enum(['text', 'json_object', 'json_schema']),
      json_schema: z.looseObject({ name: z.string(), schema: z.record(z.string(), z.unknown()).optional(), strict: z.boolean().nullish(), description: z.string().optional() }).optional(),
    })
    .optional(),
  user: z.string().optional(),
  metadata: z.record(z.string(), z.string()).nullish(),
  n: z.number().int().nullish(),
  top_p: z.number().nullish(),
  frequency_penalty: z.number().nullish(),
  presence_penalty: z.number().nullish(),
  seed: z.number().int().nullish(),
  logit_bias: z.record(z.string(), z.number()).nullish(),
  logprobs: z.boolean().nullish(),
  top_logprobs: z.number().int().nullish(),
  tools: z.array(z.unknown()).optional(),
  tool_choice: z.unknown().optional(),
  parallel_tool_calls: z.boolean().optional(),
  functions: z.array(z.unknown()).optional(),
  function_call: z.unknown().optional(),
  audio: z.unknown().optional(),
  modalities: z.array(z.string()).nullish(),
  prediction: z.unknown().optional(),
  web_search_options: z.unknown().optional(),
});
export type ChatCompletionBody = z.infer<typeof chatCompletionBody>;

/** A 4xx/5xx in OpenAI's error shape, which OpenAI clients parse (and raise as their errors). */
export class OpenAiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly param: string | null,
    readonly code: string | null,
  ) {
    super(message);
  }

  body(): OpenAiErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export interface OpenAiErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

function unsupported(param: string, why: string): OpenAiError {
  return new OpenAiError(400, `${param}: ${why}`, 'invalid_request_error', param, 'unsupported_parameter');
}

export function badRequest(param: string | null, message: string): OpenAiError {
  return new OpenAiError(400, message, 'invalid_request_error', param, 'INVALID_ARGUMENT');
}

/**
 * A failure of the gateway's call in OpenAI's shape: the HTTP status the gRPC status maps to, the
 * type OpenAI uses for it, and as `code` OpenAI's own where one applies, else the gRPC status name.
 */
export function openAiErrorOf(code: Status, message: string): OpenAiError {
  const status = httpStatusFromGrpc(code);
  const name = Status[code] ?? 'UNKNOWN';
  switch (code) {
    case Status.NOT_FOUND:
      // What a chat completion does not find is its model: an alias, a provider or a pipeline.
      return new OpenAiError(404, message, 'invalid_request_error', 'model', 'model_not_found');
    case Status.UNAUTHENTICATED:
      return new OpenAiError(status, message, 'invalid_request_error', null, 'invalid_api_key');
    case Status.PERMISSION_DENIED:
      return new OpenAiError(status, message, 'permission_error', null, name);
    case Status.RESOURCE_EXHAUSTED:
      return new OpenAiError(status, message, 'rate_limit_error', null, 'rate_limit_exceeded');
    default:
      return new OpenAiError(status, message, status < 500 ? 'invalid_request_error' : 'server_error', null, name);
  }
}

/** The first OpenAI parameter the platform cannot honour, as a 400 naming it; undefined when none. */
export function unsupportedParameter(body: ChatCompletionBody): OpenAiError | undefined {
  if (body.n !== undefined && body.n !== null && body.n !== 1) return unsupported('n', 'one choice per request is supported (n=1)');
  if (body.tools?.length) return unsupported('tools', 'tool calls are not supported');
  if (body.tool_choice !== undefined && body.tool_choice !== 'none') return unsupported('tool_choice', 'tool calls are not supported');
  if (body.functions?.length) return unsupported('functions', 'function calls are not supported');
  if (body.function_call !== undefined && body.function_call !== 'none') return unsupported('function_call', 'function calls are not supported');
  if (body.logprobs) return unsupported('logprobs', 'log probabilities are not supported');
  if (body.top_logprobs) return unsupported('top_logprobs', 'log probabilities are not supported');
  if (body.audio !== undefined && body.audio !== null) return unsupported('audio', 'audio output is not supported');
  if (body.modalities?.some((modality) => modality !== 'text')) return unsupported('modalities', 'text is the only modality supported');
  if (body.prediction !== undefined && body.prediction !== null) return unsupported('prediction', 'predicted outputs are not supported');
  if (body.web_search_options !== undefined && body.web_search_options !== null) return unsupported('web_search_options', 'web search is not supported');
  // Sampling settings the providers are not sent: accepted only at their no-op values, so a
  // client never believes they applied.
  if (body.top_p !== undefined && body.top_p !== null && body.top_p !== 1) return unsupported('top_p', 'only 1 (the default) is supported');
  if (body.frequency_penalty) return unsupported('frequency_penalty', 'only 0 (the default) is supported');
  if (body.presence_penalty) return unsupported('presence_penalty', 'only 0 (the default) is supported');
  if (body.seed !== undefined && body.seed !== null) return unsupported('seed', 'seeded sampling is not supported');
  if (body.logit_bias && Object.keys(body.logit_bias).length > 0) return unsupported('logit_bias', 'logit bias is not supported');
  return undefined;
}

function messageText(content: ChatCompletionBody['messages'][number]['content'], index: number): string {
  if (content === undefined || content === null) return '';
  if (typeof content === 'string') return content;
  return content
    .map((part, partIndex) => {
      if (part.type !== 'text' || typeof part.text !== 'string') throw unsupported(`messages[${index}].content[${partIndex}].type`, `"${part.type}" parts are not supported (text only)`);
      return part.text;
    })
    .join('');
}

const ROLE = { user: proto.Role.ROLE_USER, assistant: proto.Role.ROLE_ASSISTANT, system: proto.Role.ROLE_SYSTEM, developer: proto.Role.ROLE_SYSTEM } as const;

/** The conversation as the platform's messages (tool and function turns refused). */
export function chatMessages(body: ChatCompletionBody): proto.ChatMessage[] {
  return body.messages.map((each, index) => {
    if (each.role === 'tool' || each.role === 'function') throw unsupported(`messages[${index}].role`, `"${each.role}" messages are not supported (no tool calls)`);
    if (each.tool_calls?.length) {
      throw unsupported(`messages[${index}].tool_calls`, 'tool calls are not supported');
    }
    return { role: ROLE[each.role], content: messageText(each.content, index) };
  });
}

/** The output token limit: max_completion_tokens, or the older max_tokens. */
function maxTokensOf(body: ChatCompletionBody): number | undefined {
  const completion = body.max_completion_tokens ?? undefined;
  const legacy = body.max_tokens ?? undefined;
  if (completion !== undefined && legacy !== undefined && completion !== legacy) {
    throw badRequest('max_tokens', 'max_tokens and max_completion_tokens disagree; send one');
  }
  return completion ?? legacy;
}

/** response_format as a JSON Schema for the provider's structured output ('' for plain text). */
export function jsonSchemaOf(body: ChatCompletionBody): string {
  const format = body.response_format;
  if (!format || format.type === 'text') return '';
  if (format.type === 'json_object') return JSON.stringify({ type: 'object' });
  if (!format.json_schema?.schema) throw badRequest('response_format.json_schema.schema', 'response_format.json_schema.schema: required for type json_schema');
  return JSON.stringify(format.json_schema.schema);
}

/** The Complete request for a model call. Leading system and developer messages become `system`. */
export function completeRequest(body: ChatCompletionBody): proto.CompleteRequest {
  const messages = chatMessages(body);
  let leading = 0;
  while (leading < messages.length && messages[leading]!.role === proto.Role.ROLE_SYSTEM) leading += 1;
  const metadata: Record<string, string> = { ...(body.metadata ?? {}) };
  if (body.user) metadata.user = body.user;
  const maxTokens = maxTokensOf(body);
  return {
    model: body.model,
    preset: '',
    system: messages
      .slice(0, leading)
      .map((each) => each.content)
      .join('\n\n'),
    messages: messages.slice(leading),
    ...(body.temperature !== undefined && body.temperature !== null ? { temperature: body.temperature } : {}),
    ...(maxTokens !== undefined ? { maxTokens } : {}),
    stopSequences: body.stop === undefined || body.stop === null ? [] : typeof body.stop === 'string' ? [body.stop] : body.stop,
    metadata,
    jsonSchema: jsonSchemaOf(body),
  };
}

/** The text a pipeline run gets: the last user message's. */
export function lastUserText(body: ChatCompletionBody): string {
  const messages = chatMessages(body);
  const last = messages.findLast((each) => each.role === proto.Role.ROLE_USER);
  if (!last) throw badRequest('messages', 'messages: a pipeline model needs a user message');
  return last.content;
}

/** Settings a pipeline cannot take from a request (its steps choose their own models and formats). */
export function pipelineUnsupported(body: ChatCompletionBody): OpenAiError | undefined {
  if (body.response_format && body.response_format.type !== 'text') return unsupported('response_format', 'a pipeline model answers with its own output format');
  if (body.stop !== undefined && body.stop !== null && body.stop.length > 0) return unsupported('stop', 'a pipeline model stops where its steps do');
  return undefined;
}

/** OpenAI's finish_reason for the platform's. */
export function finishReason(reason: string): 'stop' | 'length' | 'content_filter' {
  return reason === 'length' ? 'length' : reason === 'content_filter' ? 'content_filter' : 'stop';
}

export interface CompletionUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export function usageOf(usage: proto.Usage | undefined): CompletionUsage {
  const input = Number(usage?.inputTokens ?? 0);
  const output = Number(usage?.outputTokens ?? 0);
  return { prompt_tokens: input, completion_tokens: output, total_tokens: input + output };
}

export function completionId(): string {
  // randomUUID draws from a pooled buffer: a fresh randomBytes per request showed in profiles.
  return `chatcmpl-${randomUUID().replaceAll('-', '')}`;
}

/** A whole chat.completion. */
export function chatCompletion(id: string, model: string, content: string, reason: string, usage: proto.Usage | undefined) {
  return {
    id,
    object: 'chat.completion' as const,
    created: Math.floor(Date.now() / 1000),
    model,
    choices: [{ index: 0, message: { role: 'assistant' as const, content, refusal: null, annotations: [] }, logprobs: null, finish_reason: finishReason(reason) }],
    usage: usageOf(usage),
    system_fingerprint: null,
  };
}

/** Makes the chat.completion.chunk objects of one streamed answer. */
export class ChunkWriter {
  readonly id = completionId();
  private readonly created = Math.floor(Date.now() / 1000);

  constructor(
    private readonly model: string,
    /** With stream_options.include_usage every chunk carries `usage: null` but the last, which carries the usage. */
    private readonly includeUsage: boolean,
  ) {}

  private chunk(choices: unknown[], usage?: CompletionUsage) {
    return {
      id: this.id,
      object: 'chat.completion.chunk' as const,
      created: this.created,
      model: this.model,
      system_fingerprint: null,
      choices,
      ...(this.includeUsage ? { usage: usage ?? null } : {}),
    };
  }

  /** The first chunk: the assistant's role. */
  role() {
    return this.chunk([{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]);
  }

  delta(text: string) {
    return this.chunk([{ index: 0, delta: { content: text }, logprobs: null, finish_reason: null }]);
  }

  finish(reason: string) {
    return this.chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: finishReason(reason) }]);
  }

  /** Only with include_usage: empty choices and the usage of the whole request. */
  usage(usage: proto.Usage | undefined) {
    return this.chunk([], usageOf(usage));
  }
}

/** GET /v1/models' list. */
export function modelList(aliases: readonly string[], pipelines: readonly string[], created: number) {
  return {
    object: 'list' as const,
    data: [
      ...aliases.map((id) => ({ id, object: 'model' as const, created, owned_by: 'elexirion' })),
      ...pipelines.map((name) => ({ id: `${PIPELINE_MODEL_PREFIX}${name}`, object: 'model' as const, created, owned_by: 'elexirion-pipeline' })),
    ],
  };
}
