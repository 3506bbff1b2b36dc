import { SpanKind, SpanStatusCode, context as otelContext, trace, type Span } from '@opentelemetry/api';
import { AbortError, isAbortError } from 'abort-controller-x';
import { ServerError, Status, proto, retry, timeoutSignal, tracer, type Logger } from '@elexirion/kit';
import type { AdapterResult, LlmAdapter, NormalizedRequest, StreamEvent } from './adapters/types.js';
import { costOf, targetName, type ProviderFileConfig, type ProviderName, type ProviderSettings, type Target } from './provider-config.js';
import type { ProviderMetrics } from './provider-metrics.js';
import type { CircuitBreaker } from './reliability/circuit-breaker.js';
import { LimitExceededError, type ProviderLimiter } from './reliability/limiter.js';
import { UpstreamError } from './upstream-error.js';

/** One provider as the router sees it; `adapter` is absent when it has no credentials. */
export interface ProviderRuntime {
  name: ProviderName;
  adapter: LlmAdapter | undefined;
  settings: ProviderSettings;
  breaker: CircuitBreaker;
  limiter: ProviderLimiter;
  /** For logs and ListModels: the base URL with any credentials in it hidden. */
  baseUrl: string;
}

/** What to call, in which order, with which limits. */
export interface Plan {
  alias: string;
  targets: Target[];
  request: Omit<NormalizedRequest, 'model'>;
}

export interface Outcome {
  result: AdapterResult;
  target: Target;
  attempts: number;
  failedTargets: string[];
  costUsd: number;
  latencyMs: number;
}

/** Why one target could not serve; the router moves on to the next. */
class TargetFailure extends Error {
  override readonly name = 'TargetFailure';
  constructor(
    readonly target: Target,
    readonly reason: 'breaker_open' | 'rejected' | 'upstream',
    readonly attempts: number,
    message: string,
    readonly upstream?: UpstreamError,
  ) {
    super(message);
  }

  get overloaded(): boolean {
    return this.reason !== 'upstream' || (this.upstream?.kind === 'http' && OVERLOAD_STATUSES.has(this.upstream.status ?? 0));
  }
}

/** Upstream statuses that say "too much now" rather than "broken": rate limited, Anthropic's overloaded. */
const OVERLOAD_STATUSES = new Set([429, 529]);

/**
 * Every target of a chain failed. `overloaded`: each was overloaded or rate limited (429, 529,
 * over this provider's limits, breaker open), which the status alone does not say (529 and a
 * breaker are UNAVAILABLE, as a 5xx is); the handler tells the caller in a trailer.
 */
export class ChainExhaustedError extends ServerError {
  constructor(code: Status, details: string, readonly overloaded: boolean) {
    super(code, details);
  }
}

/** One attempt's work, given the adapter, the attempt's signal and span, and a lease that a stream keeps past the attempt. */
type AttemptRun<T> = (adapter: LlmAdapter, attemptSignal: AbortSignal, span: Span, lease: { keep(span: Span): (error?: unknown) => void }) => Promise<T>;

/** Without a caller deadline, waits are still bounded. */
const NO_DEADLINE_MS = 10 * 60 * 1000;

/**
 * Runs a completion against an alias's fallback chain: per target, admission (breaker, rate,
 * concurrency), attempts with exponential backoff and full jitter honouring retry-after, all
 * bounded by the caller's deadline and cancelled with the caller.
 */
export class CompletionRouter {
  constructor(
    private readonly config: ProviderFileConfig,
    private readonly runtimes: Record<ProviderName, ProviderRuntime>,
    private readonly offline: boolean,
    private readonly metrics: ProviderMetrics,
    private readonly logger: Logger,
    /** The monitor's route-around action; none in tests of the router alone. */
    private readonly routeAround?: { filter(targets: Target[]): Target[] },
  ) {}

  get isOffline(): boolean {
    return this.offline;
  }

  /** Resolves model alias, preset and limits; INVALID_ARGUMENT or FAILED_PRECONDITION when it can't. */
  plan(request: proto.CompleteRequest): Plan {
    const modelName = request.model || this.config.default_alias;
    let alias = modelName;
    let targets: Target[];
    let maxTokens = this.config.default_max_tokens;
    let temperature: number | undefined;
    if (modelName.includes('/')) {
      const slash = modelName.indexOf('/');
      const provider = modelName.slice(0, slash);
      const model = modelName.slice(slash + 1);
      if (!(provider in this.runtimes) || !/^[\w.:-]+$/.test(model)) {
        throw new ServerError(Status.INVALID_ARGUMENT, `model: "${modelName}" is not "<provider>/<model>" with provider anthropic, gemini, openai or mock`);
      }
      if (request.preset) throw new ServerError(Status.INVALID_ARGUMENT, `preset: presets belong to aliases, and "${modelName}" is an explicit target`);
      targets = [{ provider: provider as ProviderName, model }];
    } else {
      const entry = this.config.aliases[modelName];
      if (!entry) {
        throw new ServerError(
          Status.INVALID_ARGUMENT,
          `model: "${modelName}" is neither an alias (${Object.keys(this.config.aliases).join(', ')}) nor "<provider>/<model>"`,
        );
      }
      const presetName = request.preset || entry.default_preset;
      const preset = presetName ? entry.presets[presetName] : undefined;
      if (presetName && !preset) {
        const known = Object.keys(entry.presets);
        throw new ServerError(Status.INVALID_ARGUMENT, `preset: alias "${modelName}" has no preset "${presetName}"${known.length ? ` (known: ${known.join(', ')})` : ' (it has none)'}`);
      }
      targets = (preset?.targets ?? entry.targets).map((text) => {
        const slash = text.indexOf('/');
        return { provider: text.slice(0, slash) as ProviderName, model: text.slice(slash + 1) };
      });
      if (preset) {
        maxTokens = preset.max_tokens;
        temperature = preset.temperature;
      }
    }
    if (this.offline) {
      // No vendor key anywhere: the product runs offline and the mock serves every model.
      targets = [{ provider: 'mock', model: 'mock' }];
    } else {
      const usable = targets.filter((target) => this.runtimes[target.provider].adapter);
      if (usable.length === 0) {
        const wanted = [...new Set(targets.map((target) => `${target.provider.toUpperCase()}_API_KEY`))].join(' or ');
        throw new ServerError(Status.FAILED_PRECONDITION, `model "${modelName}": no configured provider among ${targets.map(targetName).join(', ')} (set ${wanted})`);
      }
      targets = this.routeAround ? this.routeAround.filter(usable) : usable;
    }
    const system = [request.system, ...request.messages.filter((message) => message.role === proto.Role.ROLE_SYSTEM).map((message) => message.content)]
      .filter(Boolean)
      .join('\n\n');
    return {
      alias,
      targets,
      request: {
        system,
        messages: request.messages
          .filter((message) => message.role !== proto.Role.ROLE_SYSTEM)
          .map((message) => ({ role: message.role === proto.Role.ROLE_ASSISTANT ? ('assistant' as const) : ('user' as const), content: message.content })),
        maxTokens: request.maxTokens ?? maxTokens,
        ...(request.temperature !== undefined ? { temperature: request.temperature } : temperature !== undefined ? { temperature } : {}),
        stopSequences: request.stopSequences,
      },
    };
  }

  async complete(plan: Plan, signal: AbortSignal, deadline: Date | undefined, jsonSchema?: Record<string, unknown>): Promise<Outcome> {
    const started = performance.now();
    const until = deadline?.getTime() ?? Date.now() + NO_DEADLINE_MS;
    const failedTargets: string[] = [];
    let attempts = 0;
    let last: TargetFailure | undefined;
    // Every target so far was overloaded or rate limited (the caller may try another chain).
    let overloaded = true;
    for (const target of plan.targets) {
      const request: NormalizedRequest = { ...plan.request, model: target.model, ...(jsonSchema ? { jsonSchema } : {}) };
      try {
        const { value, attempts: made } = await this.withRetries(target, signal, until, (adapter, attemptSignal, span) =>
          adapter.complete(request, attemptSignal).then((result) => {
            recordUsage(span, result);
            return result;
          }),
        );
        attempts += made;
        return this.finish(plan, target, value, attempts, failedTargets, started);
      } catch (error) {
        last = this.targetFailed(error, until, failedTargets);
        attempts += last.attempts;
        overloaded &&= last.overloaded;
      }
    }
    throw this.exhausted(plan, failedTargets, last, overloaded);
  }

  /** Books a target that could not serve, or rethrows what ends the whole call. */
  private targetFailed(error: unknown, until: number, failedTargets: string[]): TargetFailure {
    if (!(error instanceof TargetFailure)) throw error;
    this.stopIfFinal(error, until);
    failedTargets.push(`${targetName(error.target)}: ${error.message}`);
    return error;
  }

  /**
   * Streams from the first target that produces a first event. A failure before that falls
   * over; a failure after it ends the stream with UNAVAILABLE, never a stream that looks complete.
   */
  async *stream(plan: Plan, signal: AbortSignal, deadline: Date | undefined): AsyncGenerator<{ delta: string } | { done: Outcome }> {
    const started = performance.now();
    const until = deadline?.getTime() ?? Date.now() + NO_DEADLINE_MS;
    const failedTargets: string[] = [];
    let attempts = 0;
    let last: TargetFailure | undefined;
    // Every target so far was overloaded or rate limited (the caller may try another chain).
    let overloaded = true;
    for (const target of plan.targets) {
      const request: NormalizedRequest = { ...plan.request, model: target.model };
      let opened: { iterator: AsyncIterator<StreamEvent>; first: IteratorResult<StreamEvent>; span: Span; finish(error?: unknown): void } | undefined;
      try {
        const { value, attempts: made } = await this.withRetries(
          target,
          signal,
          until,
          async (adapter, attemptSignal, span, lease) => {
            const iterator = adapter.stream(request, attemptSignal)[Symbol.asyncIterator]();
            const first = await iterator.next();
            // The attempt succeeded in starting; the lease and span now last as long as the stream.
            return { iterator, first, span, finish: lease.keep(span) };
          },
        );
        attempts += made;
        opened = value;
      } catch (error) {
        last = this.targetFailed(error, until, failedTargets);
        attempts += last.attempts;
        overloaded &&= last.overloaded;
        continue;
      }
      let delivered = 0;
      try {
        let step = opened.first;
        while (!step.done) {
          const event = step.value;
          if (event.type === 'delta') {
            delivered += event.text.length;
            yield { delta: event.text };
          } else {
            recordUsage(opened.span, event.result);
            opened.finish();
            yield { done: this.finish(plan, target, event.result, attempts, failedTargets, started) };
            return;
          }
          step = await opened.iterator.next();
        }
        throw new UpstreamError(target.provider, 'connection', 'the stream ended without its final message');
      } catch (error) {
        opened.finish(error);
        if (signal.aborted || isAbortError(error)) throw new AbortError();
        const reason = error instanceof UpstreamError ? error.describe() : String(error);
        throw new ServerError(Status.UNAVAILABLE, `the stream from ${targetName(target)} broke after ${delivered} characters: ${reason}`);
      } finally {
        void opened.iterator.return?.();
      }
    }
    throw this.exhausted(plan, failedTargets, last, overloaded);
  }

  /** Attempts on one target until success, a final error, or the budget runs out (the kit's one retry). */
  private async withRetries<T>(target: Target, signal: AbortSignal, until: number, run: AttemptRun<T>): Promise<{ value: T; attempts: number }> {
    const runtime = this.runtimes[target.provider];
    const { settings } = runtime;
    let attempts = 0;
    try {
      const value = await retry(
        (attempt) =>
          this.attempt(runtime, target, attempt, signal, until, run, () => {
            attempts += 1;
          }),
        {
          maxAttempts: settings.max_attempts,
          baseMs: settings.backoff_base_ms,
          maxMs: settings.backoff_max_ms,
          signal,
          deadline: until,
          // Leave the next attempt some time to do its work inside the deadline.
          minAttemptMs: 50,
          retryable: isRetryableUpstream,
          retryAfterMs: upstreamRetryAfter,
          onRetry: ({ attempt, delayMs, error }) =>
            this.logger.debug({ provider: target.provider, model: target.model, attempt, waitMs: delayMs, error: (error as UpstreamError).describe() }, 'retrying upstream call'),
        },
      );
      return { value, attempts };
    } catch (error) {
      if (signal.aborted) throw new AbortError();
      if (error instanceof UpstreamError) throw new TargetFailure(target, 'upstream', attempts, `${error.describe()}, ${attempts} attempt${attempts === 1 ? '' : 's'}`, error);
      if (error instanceof TargetFailure) throw new TargetFailure(error.target, error.reason, attempts, error.message, error.upstream);
      throw error;
    }
  }

  /** One attempt: admission (breaker, limits), the call under its timeout and span, its outcome recorded. */
  private async attempt<T>(
    runtime: ProviderRuntime,
    target: Target,
    attempt: number,
    signal: AbortSignal,
    until: number,
    run: AttemptRun<T>,
    admitted: () => void,
  ): Promise<T> {
    const { settings } = runtime;
    if (!runtime.breaker.tryAcquire()) {
      this.metrics.attempts.inc({ provider: target.provider, outcome: 'breaker_open' });
      throw new TargetFailure(target, 'breaker_open', 0, `circuit breaker open (retry in ${Math.ceil(runtime.breaker.retryInMs() / 1000)} s)`);
    }
    let release: () => void;
    try {
      release = await runtime.limiter.acquire(signal, until);
    } catch (error) {
      runtime.breaker.recordNeutral();
      if (error instanceof LimitExceededError) {
        this.metrics.attempts.inc({ provider: target.provider, outcome: 'rejected' });
        throw new TargetFailure(target, 'rejected', 0, `over the provider's limits: ${error.message}`);
      }
      throw error;
    }
    admitted();
    const timeout = timeoutSignal(signal, Math.min(settings.timeout_ms, until - Date.now()));
    const span = tracer.startSpan(`chat ${target.model}`, {
      kind: SpanKind.CLIENT,
      attributes: {
        'gen_ai.operation.name': 'chat',
        'gen_ai.provider.name': target.provider,
        'gen_ai.request.model': target.model,
        'elexirion.attempt': attempt,
      },
    });
    const started = performance.now();
    let kept = false;
    const settle = (error?: unknown) => {
      timeout.dispose();
      release();
        const errorType = error === undefined ? '' : error instanceof UpstreamError ? String(error.status ?? error.kind) : 'cancelled';
      this.metrics.operationDuration.observe(
        { gen_ai_operation_name: 'chat', gen_ai_provider_name: target.provider, gen_ai_request_model: target.model, error_type: errorType },
        (performance.now() - started) / 1000,
      );
      if (error === undefined) {
        runtime.breaker.recordSuccess();
        this.metrics.attempts.inc({ provider: target.provider, outcome: 'ok' });
      } else if (error instanceof UpstreamError) {
        if (error.countsAgainstProvider) runtime.breaker.recordFailure();
        else runtime.breaker.recordSuccess();
        this.metrics.attempts.inc({ provider: target.provider, outcome: error.retryable ? 'retryable_error' : 'error' });
        span.setAttribute('error.type', errorType);
        span.setStatus({ code: SpanStatusCode.ERROR, message: error.describe() });
      } else {
        runtime.breaker.recordNeutral();
        this.metrics.attempts.inc({ provider: target.provider, outcome: 'cancelled' });
      }
      span.end();
    };
    try {
      const value = await otelContext.with(trace.setSpan(otelContext.active(), span), () =>
        run(runtime.adapter!, timeout.signal, span, {
          keep: () => {
            kept = true;
            return settle;
          },
        }),
      );
      if (!kept) settle();
      return value;
    } catch (caught) {
      let error = caught;
      if (!signal.aborted && timeout.timedOut && !(error instanceof UpstreamError)) {
        error = new UpstreamError(target.provider, 'timeout', `no answer within ${Math.round(Math.min(settings.timeout_ms, until - started))} ms`);
      }
      settle(error);
      if (signal.aborted) throw new AbortError();
      throw error;
    }
  }

  /** Errors that end the whole call instead of moving to the next target. */
  private stopIfFinal(failure: TargetFailure, until: number): void {
    const upstream = failure.upstream;
    if (upstream?.kind === 'http' && (upstream.status === 400 || upstream.status === 413 || upstream.status === 422)) {
      throw new ServerError(Status.INVALID_ARGUMENT, `${targetName(failure.target)} rejected the request: ${upstream.message} (${upstream.status})`);
    }
    if (Date.now() >= until) throw new ServerError(Status.DEADLINE_EXCEEDED, `deadline passed; last failure: ${targetName(failure.target)}: ${failure.message}`);
  }

  private exhausted(plan: Plan, failedTargets: string[], last: TargetFailure | undefined, overloaded: boolean): ChainExhaustedError {
    const summary = `every target of "${plan.alias}" failed: ${failedTargets.join('; ')}`;
    const failed = (code: Status) => new ChainExhaustedError(code, summary, last !== undefined && overloaded);
    if (!last) return failed(Status.UNAVAILABLE);
    if (last.reason === 'rejected') return failed(Status.RESOURCE_EXHAUSTED);
    const status = last.upstream?.status;
    if (status === 429) return failed(Status.RESOURCE_EXHAUSTED);
    if (status === 404) return failed(Status.NOT_FOUND);
    if (status === 401 || status === 403) return failed(Status.FAILED_PRECONDITION);
    return failed(Status.UNAVAILABLE);
  }

  private finish(plan: Plan, target: Target, result: AdapterResult, attempts: number, failedTargets: string[], started: number): Outcome {
    const { usd, known } = costOf(this.config, target, result.inputTokens, result.outputTokens);
    if (!known) this.logger.warn({ target: targetName(target) }, 'no price for this model: its cost is reported as 0');
    const labels = { gen_ai_operation_name: 'chat', gen_ai_provider_name: target.provider, gen_ai_request_model: target.model, gen_ai_response_model: result.model };
    this.metrics.tokenUsage.observe({ ...labels, gen_ai_token_type: 'input' }, result.inputTokens);
    this.metrics.tokenUsage.observe({ ...labels, gen_ai_token_type: 'output' }, result.outputTokens);
    this.metrics.costUsd.inc({ provider: target.provider, model: target.model }, usd);
    if (failedTargets.length > 0) this.metrics.fallbacks.inc({ alias: plan.alias });
    return { result, target, attempts, failedTargets, costUsd: usd, latencyMs: Math.round(performance.now() - started) };
  }
}

function isRetryableUpstream(error: unknown): boolean {
  return error instanceof UpstreamError && error.retryable;
}

function upstreamRetryAfter(error: unknown): number | undefined {
  return (error as UpstreamError).retryAfterMs;
}

function recordUsage(span: Span, result: AdapterResult): void {
  span.setAttributes({
    'gen_ai.response.model': result.model,
    'gen_ai.usage.input_tokens': result.inputTokens,
    'gen_ai.usage.output_tokens': result.outputTokens,
    'gen_ai.response.finish_reasons': [result.finishReason],
  });
}
