import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { ServerError, Status, defineService, proto, registerSecret, type ServiceContext } from '@elexirion/kit';
import { MockProvider } from './mock-provider.js';

const defaultMockResponses = fileURLToPath(new URL('../../../config/mock-responses.yaml', import.meta.url));

export const providerConfigSchema = z.object({
  PROVIDER_MOCK_RESPONSES: z.string().min(1).default(defaultMockResponses),
  ANTHROPIC_API_KEY: z.string().min(1).optional(),
  GEMINI_API_KEY: z.string().min(1).optional(),
  OPENAI_API_KEY: z.string().min(1).optional(),
  /** Simulated model latency of the mock, for demos, drain tests and benchmarks. */
  PROVIDER_MOCK_LATENCY_MS: z.coerce.number().int().min(0).max(600_000).default(0),
});
export type ProviderConfig = z.infer<typeof providerConfigSchema>;

const MAX_PROMPT_CHARS = 2_000_000;

function validate(request: proto.CompleteRequest): void {
  if (request.messages.length === 0) {
    throw new ServerError(Status.INVALID_ARGUMENT, 'messages: at least one message is required');
  }
  let total = request.system.length;
  request.messages.forEach((message, index) => {
    if (message.role === proto.Role.ROLE_UNSPECIFIED) {
      throw new ServerError(Status.INVALID_ARGUMENT, `messages[${index}].role: must be set (user, assistant or system)`);
    }
    total += message.content.length;
  });
  if (total > MAX_PROMPT_CHARS) {
    throw new ServerError(Status.INVALID_ARGUMENT, `messages: ${total} characters is over the limit of ${MAX_PROMPT_CHARS}`);
  }
}

export function createProvider(context: ServiceContext<ProviderConfig>) {
  const { config, logger, events } = context;
  for (const key of [config.ANTHROPIC_API_KEY, config.GEMINI_API_KEY, config.OPENAI_API_KEY]) registerSecret(key);
  const mock = MockProvider.fromFile(config.PROVIDER_MOCK_RESPONSES);
  const vendorKeys = [config.ANTHROPIC_API_KEY, config.GEMINI_API_KEY, config.OPENAI_API_KEY].filter(Boolean);
  if (vendorKeys.length === 0) {
    logger.info({ responses: config.PROVIDER_MOCK_RESPONSES }, 'no provider API key set: every model is served by the offline mock provider');
  } else {
    logger.warn('provider API keys are set, but vendor adapters are not built yet: the mock provider serves every model');
  }

  const implementation: proto.ProviderServiceImplementation = {
    async complete(request, callContext) {
      const started = performance.now();
      validate(request);
      if (config.PROVIDER_MOCK_LATENCY_MS > 0) await delay(config.PROVIDER_MOCK_LATENCY_MS, undefined, { signal: callContext.signal });
      const lastUser = [...request.messages].reverse().find((message) => message.role === proto.Role.ROLE_USER);
      const allText = [request.system, ...request.messages.map((message) => message.content)].join('\n');
      const answer = mock.answer(lastUser?.content ?? allText, allText);
      const model = request.model || 'mock';
      const usage = { inputTokens: answer.inputTokens, outputTokens: answer.outputTokens, costUsd: 0 };
      const latencyMs = Math.round(performance.now() - started);
      events.publish('completion', {
        status: 'OK',
        durationMs: latencyMs,
        providerCompletion: { provider: 'mock', model, usage, attempts: 1, finishReason: 'stop' },
      });
      return { text: answer.text, finishReason: 'stop', usage, provider: 'mock', model, attempts: 1, latencyMs };
    },
  };
  return { implementation };
}

export const providerService = defineService({
  name: 'provider',
  configSchema: providerConfigSchema,
  create: createProvider,
});
