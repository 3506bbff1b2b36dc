import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { PROVIDER_OVERLOADED_TRAILER, ServerError, Status, defineService, incomingDeadline, proto, redactUrlCredentials, type ServiceContext } from '@elexirion/kit';
import { AnthropicAdapter } from './adapters/anthropic.js';
import { GeminiAdapter } from './adapters/gemini.js';
import { MockAdapter, loadMockResponses } from './adapters/mock.js';
import { OpenAiAdapter } from './adapters/openai.js';
import type { LlmAdapter } from './adapters/types.js';
import { ChainExhaustedError, CompletionRouter, type Outcome, type Plan, type ProviderRuntime } from './completion-router.js';
import { isConfigured, readCredentials } from './credentials.js';
import { PROVIDER_NAMES, loadProviderConfig, targetName, type ProviderName } from './provider-config.js';
import { BREAKER_STATE_VALUE, ProviderMetrics } from './provider-metrics.js';
import { CircuitBreaker } from './reliability/circuit-breaker.js';
import { ProviderLimiter } from './reliability/limiter.js';
import { RouteAround } from './route-around.js';
import { reportBreakers } from './breaker-reports.js';
import { compileSchema, parseStructured } from './structured-output.js';

const configDir = fileURLToPath(new URL('../../../config/', import.meta.url));

export const providerConfigSchema = z.object({
  PROVIDER_CONFIG: z.string().min(1).default(`${configDir}providers.yaml`),
  PROVIDER_SECRETS_DIR: z.string().min(1).optional(),
  PROVIDER_MOCK_RESPONSES: z.string().min(1).default(`${configDir}mock-responses.yaml`),
  PROVIDER_MOCK_LATENCY_MS: z.coerce.number().int().min(0).max(600_000).default(0),
  PROVIDER_MOCK_ERROR_RATE: z.coerce.number().min(0).max(1).default(0),
  PROVIDER_MOCK_ERROR_STATUS: z.coerce.number().int().min(400).max(599).default(503),
  PROVIDER_MOCK_STREAM_CHUNK_DELAY_MS: z.coerce.number().int().min(0).max(60_000).default(0),
  PROVIDER_MOCK_STREAM_CHUNK_CHARS: z.coerce.number().int().min(1).max(100_000).default(24),
  // Credentials are read by readCredentials (environment or PROVIDER_SECRETS_DIR); listed here
  // so a malformed base URL stops the service at start-up.
  ANTHROPIC_BASE_URL: z.url().optional(),
  GEMINI_BASE_URL: z.url().optional(),
  OPENAI_BASE_URL: z.url().optional(),
});
export type ProviderConfig = z.infer<typeof providerConfigSchema>;

const MAX_PROMPT_CHARS = 2_000_000;

function validate(request: proto.CompleteRequest): void {
  if (request.messages.length === 0) throw new ServerError(Status.INVALID_ARGUMENT, 'messages: at least one message is required');
  let total = request.system.length;
  request.messages.forEach((message, index) => {
    // Decoding keeps an enum number it does not know (99), so the known values are listed, not the unknown.
    if (message.role !== proto.Role.ROLE_USER && message.role !== proto.Role.ROLE_ASSISTANT && message.role !== proto.Role.ROLE_SYSTEM) {
      throw new ServerError(Status.INVALID_ARGUMENT, `messages[${index}].role: ${message.role === proto.Role.ROLE_UNSPECIFIED ? 'not set' : `${message.role} is not a role`}; expected ROLE_USER (1), ROLE_ASSISTANT (2) or ROLE_SYSTEM (3)`);
    }
    total += message.content.length;
  });
  if (!request.messages.some((message) => message.role === proto.Role.ROLE_USER)) {
    throw new ServerError(Status.INVALID_ARGUMENT, 'messages: at least one user message is required');
  }
  if (total > MAX_PROMPT_CHARS) throw new ServerError(Status.INVALID_ARGUMENT, `messages: ${total} characters is over the limit of ${MAX_PROMPT_CHARS}`);
  if (request.maxTokens !== undefined && (request.maxTokens < 1 || request.maxTokens > 1_000_000)) {
    throw new ServerError(Status.INVALID_ARGUMENT, `max_tokens: ${request.maxTokens} is not between 1 and 1000000`);
  }
  if (request.temperature !== undefined && !(request.temperature >= 0 && request.temperature <= 2)) {
    throw new ServerError(Status.INVALID_ARGUMENT, `temperature: ${request.temperature} is not between 0 and 2`);
  }
}

export function createProvider(context: ServiceContext<ProviderConfig>) {
  const { config, logger, events, metrics: hostMetrics, env } = context;
  const fileConfig = loadProviderConfig(config.PROVIDER_CONFIG);
  const credentials = readCredentials(env, config.PROVIDER_SECRETS_DIR);
  const metrics = new ProviderMetrics(hostMetrics.registry);
  const mock = new MockAdapter(loadMockResponses(config.PROVIDER_MOCK_RESPONSES), {
    latencyMs: config.PROVIDER_MOCK_LATENCY_MS,
    errorRate: config.PROVIDER_MOCK_ERROR_RATE,
    errorStatus: config.PROVIDER_MOCK_ERROR_STATUS,
    streamChunkDelayMs: config.PROVIDER_MOCK_STREAM_CHUNK_DELAY_MS,
    streamChunkChars: config.PROVIDER_MOCK_STREAM_CHUNK_CHARS,
  });

  const runtimes = {} as Record<ProviderName, ProviderRuntime>;
  for (const name of PROVIDER_NAMES) {
    const settings = fileConfig.providers[name];
    const creds = name === 'mock' ? undefined : credentials[name];
    let adapter: LlmAdapter | undefined;
    if (name === 'mock') adapter = mock;
    else if (isConfigured(name, creds)) {
      const options = { apiKey: creds!.apiKey!, baseUrl: creds!.baseUrl, timeoutMs: settings.timeout_ms };
      adapter = name === 'anthropic' ? new AnthropicAdapter(options) : name === 'gemini' ? new GeminiAdapter(options) : new OpenAiAdapter(options);
    }
    runtimes[name] = {
      name,
      adapter,
      settings,
      baseUrl: redactUrlCredentials(creds?.baseUrl ?? ''),
      breaker: new CircuitBreaker({
        windowMs: settings.breaker.window_ms,
        minRequests: settings.breaker.min_requests,
        failureRate: settings.breaker.failure_rate,
        cooldownMs: settings.breaker.cooldown_ms,
        onStateChange: (state) => {
          metrics.breakerState.set({ provider: name }, BREAKER_STATE_VALUE[state]);
          logger[state === 'open' ? 'warn' : 'info']({ provider: name, breaker: state }, `circuit breaker ${state}`);
          // The monitor's health and its route-around action (route-around.ts) follow these (and
          // breaker-reports.ts repeats a breaker's state while it is not closed).
          events.publish('breaker', { providerBreaker: { provider: name, state } });
        },
      }),
      limiter: new ProviderLimiter({
        maxConcurrency: settings.max_concurrency,
        maxQueue: settings.max_queue,
        requestsPerSecond: settings.requests_per_second,
        burst: settings.burst,
      }),
    };
    metrics.breakerState.set({ provider: name }, 0);
  }
  metrics.readAdmission(function* admission() {
    for (const runtime of Object.values(runtimes)) {
      if (runtime.adapter) yield { provider: runtime.name, inFlight: runtime.limiter.inFlight, queued: runtime.limiter.queued };
    }
  });

  const vendors = PROVIDER_NAMES.filter((name) => name !== 'mock' && runtimes[name].adapter);
  const offline = vendors.length === 0;
  if (offline) logger.info({ responses: config.PROVIDER_MOCK_RESPONSES }, 'no provider API key set: every model is served by the offline mock provider');
  else logger.info({ providers: vendors.map((name) => ({ name, baseUrl: runtimes[name].baseUrl || 'default' })) }, 'providers configured');
  const routeAround = new RouteAround(context.nats, logger, runtimes);
  const breakerReports = reportBreakers(runtimes, events, env);
  const router = new CompletionRouter(fileConfig, runtimes, offline, metrics, logger, routeAround);

  function prepare(request: proto.CompleteRequest) {
    validate(request);
    const structured = request.jsonSchema ? compileSchema(request.jsonSchema) : undefined;
    return { plan: router.plan(request), structured };
  }

  function response(plan: { alias: string }, outcome: Outcome, structured: ReturnType<typeof compileSchema> | undefined): proto.CompleteResponse {
    const parsed = structured ? parseStructured(outcome.result.text, structured.validator) : { json: '', error: '' };
    return {
      text: outcome.result.text,
      finishReason: outcome.result.finishReason,
      usage: { inputTokens: outcome.result.inputTokens, outputTokens: outcome.result.outputTokens, costUsd: outcome.costUsd },
      provider: outcome.target.provider,
      model: outcome.result.model,
      attempts: outcome.attempts,
      latencyMs: outcome.latencyMs,
      json: parsed.json,
      jsonError: parsed.error,
      fallbackUsed: outcome.failedTargets.length > 0,
      failedTargets: outcome.failedTargets,
      alias: plan.alias,
    };
  }

  /** The completion event: who answered and at what cost, or what failed. */
  const completion = (answer: proto.CompleteResponse) => ({
    providerCompletion: { provider: answer.provider, model: answer.model, usage: answer.usage, attempts: answer.attempts, finishReason: answer.finishReason },
  });
  // The provider is the plan's first choice, when the request got as far as a plan: the monitor's
  // error rates by provider (and the alerts on them) need failures named as successes are.
  const failedCompletion = (requested: string, plan: Plan | undefined) => (errorMessage: string) => ({
    providerCompletion: { provider: plan?.targets[0]?.provider ?? '', model: requested, errorMessage },
  });

  const implementation: proto.ProviderServiceImplementation = {
    async complete(request, callContext) {
      const observation = events.begin('completion');
      let plan: Plan | undefined;
      try {
        const prepared = prepare(request);
        plan = prepared.plan;
        const outcome = await router.complete(plan, callContext.signal, incomingDeadline(callContext), prepared.structured?.schema);
        const answer = response(plan, outcome, prepared.structured);
        observation.succeeded(completion(answer));
        return answer;
      } catch (error) {
        observation.failed(error, failedCompletion(request.model, plan));
        if (error instanceof ChainExhaustedError && error.overloaded) callContext.trailer.set(PROVIDER_OVERLOADED_TRAILER, '1');
        throw error;
      }
    },

    async *streamComplete(wrapper, callContext) {
      const request = wrapper.request;
      if (!request) throw new ServerError(Status.INVALID_ARGUMENT, 'request: required');
      const observation = events.begin('completion');
      let plan: Plan | undefined;
      try {
        const prepared = prepare(request);
        plan = prepared.plan;
        const { structured } = prepared;
        if (structured) throw new ServerError(Status.INVALID_ARGUMENT, 'json_schema: structured output is not streamed; use Complete');
        for await (const event of router.stream(plan, callContext.signal, incomingDeadline(callContext))) {
          if ('delta' in event) {
            yield { delta: event.delta };
          } else {
            const answer = response(plan, event.done, undefined);
            observation.succeeded(completion(answer));
            yield { done: answer };
          }
        }
      } catch (error) {
        observation.failed(error, failedCompletion(request.model, plan));
        if (error instanceof ChainExhaustedError && error.overloaded) callContext.trailer.set(PROVIDER_OVERLOADED_TRAILER, '1');
        throw error;
      }
    },

    async listModels() {
      return {
        offline,
        aliases: Object.entries(fileConfig.aliases).map(([name, alias]) => ({
          name,
          targets: offline ? ['mock/mock'] : alias.targets.filter((text) => runtimes[text.split('/')[0] as ProviderName].adapter),
          presets: Object.keys(alias.presets),
        })),
        providers: PROVIDER_NAMES.map((name) => {
          const runtime = runtimes[name];
          return {
            name,
            configured: Boolean(runtime.adapter),
            breakerState: runtime.breaker.current,
            failureRate: runtime.breaker.failureRate(),
            inFlight: runtime.limiter.inFlight,
            queued: runtime.limiter.queued,
            baseUrl: runtime.baseUrl,
          };
        }),
      };
    },
  };
  return {
    implementation,
    close: () => {
      breakerReports.close();
      return routeAround.close();
    },
  };
}

export const providerService = defineService({
  name: 'provider',
  configSchema: providerConfigSchema,
  create: createProvider,
});

export { targetName };
