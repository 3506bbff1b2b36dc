import { callOptions, proto } from '@elexirion/kit';
import type { CallContext } from 'nice-grpc-common';
import { callerOf, hasScope } from '../caller.js';
import { invalid } from '../validation.js';
import { observed, type GatewayDeps } from './gateway-deps.js';
import { ModelCatalog } from './model-catalog.js';
import { observedStream } from './observed-stream.js';

// What one public LLM call may carry: generous for the optimizer's prompts (demos included),
// small enough that one request cannot hold the gateway's memory (the provider allows 2M).
export const MAX_COMPLETE_MESSAGES = 2_000;
export const MAX_COMPLETE_CHARS = 1_000_000;
const MAX_STOP_SEQUENCES = 16;
const MAX_STOP_CHARS = 256;
const MAX_JSON_SCHEMA_CHARS = 100_000;
const MAX_METADATA_ENTRIES = 16;
const MAX_METADATA_KEY_CHARS = 64;
const MAX_METADATA_VALUE_CHARS = 512;
const MAX_MAX_TOKENS = 1_000_000;

/** An alias ("claude_smart") or an explicit target ("openai/gpt-4.1"), as the provider names them. */
const ALIAS_NAME = /^[A-Za-z0-9][\w.-]{0,63}$/;
const TARGET_NAME = /^[a-z][a-z0-9_-]{0,31}\/[\w.:-]{1,128}$/;
const PRESET_NAME = /^[A-Za-z0-9][\w-]{0,63}$/;

/** The metadata key the gateway sets to the caller's key id (a caller's own value is replaced). */
export const KEY_ID_METADATA = 'key_id';

const ROLES: ReadonlySet<proto.Role> = new Set([proto.Role.ROLE_USER, proto.Role.ROLE_ASSISTANT, proto.Role.ROLE_SYSTEM]);

/** Checks a Complete/CompleteStream request; INVALID_ARGUMENT names the field. */
export function checkCompleteRequest(request: proto.CompleteRequest, stream: boolean): void {
  const { messages } = request;
  if (messages.length === 0) throw invalid('messages: at least one message is required');
  if (messages.length > MAX_COMPLETE_MESSAGES) throw invalid(`messages: ${messages.length} messages is over the limit of ${MAX_COMPLETE_MESSAGES}`);
  let chars = request.system.length;
  messages.forEach((message, index) => {
    // Decoding keeps an enum number it does not know, so the known values are listed.
    if (!ROLES.has(message.role)) {
      throw invalid(`messages[${index}].role: ${message.role === proto.Role.ROLE_UNSPECIFIED ? 'not set' : `${message.role} is not a role`}; expected ROLE_USER, ROLE_ASSISTANT or ROLE_SYSTEM`);
    }
    chars += message.content.length;
  });
  if (!messages.some((message) => message.role === proto.Role.ROLE_USER)) throw invalid('messages: at least one user message is required');
  if (chars > MAX_COMPLETE_CHARS) throw invalid(`messages: ${chars} characters (system included) is over the limit of ${MAX_COMPLETE_CHARS}`);
  if (request.model !== '' && !ALIAS_NAME.test(request.model) && !TARGET_NAME.test(request.model)) {
    throw invalid(`model: "${request.model.slice(0, 80)}" is neither an alias name nor "<provider>/<model>"`);
  }
  if (request.preset !== '' && !PRESET_NAME.test(request.preset)) throw invalid(`preset: "${request.preset.slice(0, 80)}" is not a preset name`);
  if (request.temperature !== undefined && !(request.temperature >= 0 && request.temperature <= 2)) {
    throw invalid(`temperature: ${request.temperature} is not between 0 and 2`);
  }
  if (request.maxTokens !== undefined && (request.maxTokens < 1 || request.maxTokens > MAX_MAX_TOKENS)) {
    throw invalid(`max_tokens: ${request.maxTokens} is not between 1 and ${MAX_MAX_TOKENS}`);
  }
  if (request.stopSequences.length > MAX_STOP_SEQUENCES) throw invalid(`stop_sequences: at most ${MAX_STOP_SEQUENCES}`);
  request.stopSequences.forEach((stop, index) => {
    if (stop === '' || stop.length > MAX_STOP_CHARS) throw invalid(`stop_sequences[${index}]: 1 to ${MAX_STOP_CHARS} characters`);
  });
  const entries = Object.entries(request.metadata);
  if (entries.length > MAX_METADATA_ENTRIES) throw invalid(`metadata: at most ${MAX_METADATA_ENTRIES} entries`);
  for (const [key, value] of entries) {
    if (key === '' || key.length > MAX_METADATA_KEY_CHARS) throw invalid(`metadata: keys are 1 to ${MAX_METADATA_KEY_CHARS} characters`);
    if (value.length > MAX_METADATA_VALUE_CHARS) throw invalid(`metadata.${key}: at most ${MAX_METADATA_VALUE_CHARS} characters`);
  }
  if (request.jsonSchema !== '') {
    if (stream) throw invalid('json_schema: structured output is not streamed; use Complete');
    if (request.jsonSchema.length > MAX_JSON_SCHEMA_CHARS) throw invalid(`json_schema: at most ${MAX_JSON_SCHEMA_CHARS} characters`);
    let schema: unknown;
    try {
      schema = JSON.parse(request.jsonSchema);
    } catch (error) {
      throw invalid(`json_schema: not JSON (${(error as Error).message})`);
    }
    if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) throw invalid('json_schema: must be a JSON object (a JSON Schema)');
  }
}

/** The request as the provider gets it: the caller's key id in its metadata. */
function forwarded(request: proto.CompleteRequest, callContext: CallContext): proto.CompleteRequest {
  const keyId = callerOf(callContext)?.keyId;
  if (keyId === undefined) {
    // Keys off: nobody to name, and a caller may not claim a key id of its own.
    if (!(KEY_ID_METADATA in request.metadata)) return request;
    const { [KEY_ID_METADATA]: _claimed, ...metadata } = request.metadata;
    return { ...request, metadata };
  }
  return { ...request, metadata: { ...request.metadata, [KEY_ID_METADATA]: keyId } };
}

/** Complete, CompleteStream, ListModels: plain LLM calls through the provider. */
export function modelCalls(deps: GatewayDeps): Pick<proto.GatewayServiceImplementation, 'complete' | 'completeStream' | 'listModels'> {
  const { provider } = deps;
  const catalog = new ModelCatalog(provider);
  return {
    async complete(request, callContext) {
      checkCompleteRequest(request, false);
      return observed(deps, 'Complete', '', async () => {
        await catalog.check(request.model);
        return provider.complete(forwarded(request, callContext), callOptions(callContext));
      });
    },

    async *completeStream(request, callContext) {
      checkCompleteRequest(request, true);
      // The provider's stream as it comes: deltas, then `done`, or its error status after a
      // delta. Cancelling this call (the client went away) cancels the provider's call, which
      // aborts the vendor request.
      async function* streamed() {
        await catalog.check(request.model);
        yield* provider.streamComplete({ request: forwarded(request, callContext) }, callOptions(callContext));
      }
      yield* observedStream(deps, 'CompleteStream', '', streamed(), () => ({}));
    },

    async listModels(_request, callContext) {
      const answer = await observed(deps, 'ListModels', '', () => provider.listModels({}, callOptions(callContext)));
      // Where each vendor is reached is the operators' business: admin keys (or keys off) see it.
      if (hasScope(callerOf(callContext), 'admin')) return answer;
      return { ...answer, providers: answer.providers.map((each) => ({ ...each, baseUrl: '' })) };
    },
  };
}
