import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { BreakerState } from './reliability/circuit-breaker.js';

const TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304];
const DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92];

export const BREAKER_STATE_VALUE: Record<BreakerState, number> = { closed: 0, half_open: 1, open: 2 };

export interface ProviderAdmission {
  provider: string;
  inFlight: number;
  queued: number;
}

/**
 * The provider's metrics: the OpenTelemetry GenAI client metrics under their Prometheus names
 * (gen_ai.client.token.usage, gen_ai.client.operation.duration), plus cost, attempts, breakers
 * and admission.
 */
export class ProviderMetrics {
  readonly tokenUsage: Histogram<'gen_ai_operation_name' | 'gen_ai_provider_name' | 'gen_ai_request_model' | 'gen_ai_response_model' | 'gen_ai_token_type'>;
  readonly operationDuration: Histogram<'gen_ai_operation_name' | 'gen_ai_provider_name' | 'gen_ai_request_model' | 'error_type'>;
  readonly costUsd: Counter<'provider' | 'model'>;
  readonly attempts: Counter<'provider' | 'outcome'>;
  readonly fallbacks: Counter<'alias'>;
  readonly breakerState: Gauge<'provider'>;
  readonly inFlight: Gauge<'provider'>;
  readonly queued: Gauge<'provider'>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.tokenUsage = new Histogram({
      name: 'gen_ai_client_token_usage',
      help: 'Tokens used per LLM call (OpenTelemetry gen_ai.client.token.usage).',
      labelNames: ['gen_ai_operation_name', 'gen_ai_provider_name', 'gen_ai_request_model', 'gen_ai_response_model', 'gen_ai_token_type'],
      buckets: TOKEN_BUCKETS,
      registers,
    });
    this.operationDuration = new Histogram({
      name: 'gen_ai_client_operation_duration_seconds',
      help: 'Duration of LLM calls (OpenTelemetry gen_ai.client.operation.duration).',
      labelNames: ['gen_ai_operation_name', 'gen_ai_provider_name', 'gen_ai_request_model', 'error_type'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.costUsd = new Counter({ name: 'elexirion_provider_cost_usd_total', help: 'Spend in USD, from the price table.', labelNames: ['provider', 'model'], registers });
    this.attempts = new Counter({
      name: 'elexirion_provider_attempts_total',
      help: 'Upstream attempts by outcome (ok, retryable_error, error, breaker_open, rejected, cancelled).',
      labelNames: ['provider', 'outcome'],
      registers,
    });
    this.fallbacks = new Counter({ name: 'elexirion_provider_fallbacks_total', help: 'Calls served by a target other than the first.', labelNames: ['alias'], registers });
    this.breakerState = new Gauge({ name: 'elexirion_provider_breaker_state', help: 'Circuit breaker state: 0 closed, 1 half-open, 2 open.', labelNames: ['provider'], registers });
    // Read from the limiters when scraped (see readAdmission), not set on every call.
    const admission = () => this.#admission?.() ?? [];
    this.inFlight = new Gauge({
      name: 'elexirion_provider_in_flight',
      help: 'Upstream requests in flight.',
      labelNames: ['provider'],
      registers,
      collect(this: Gauge<'provider'>) {
        for (const { provider, inFlight } of admission()) this.set({ provider }, inFlight);
      },
    });
    this.queued = new Gauge({
      name: 'elexirion_provider_queued',
      help: 'Requests waiting for a concurrency slot.',
      labelNames: ['provider'],
      registers,
      collect(this: Gauge<'provider'>) {
        for (const { provider, queued } of admission()) this.set({ provider }, queued);
      },
    });
  }

  #admission: (() => Iterable<ProviderAdmission>) | undefined;

  /** Where the in-flight and queued gauges are read from when scraped. */
  readAdmission(read: () => Iterable<ProviderAdmission>): void {
    this.#admission = read;
  }
}
