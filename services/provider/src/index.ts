export { providerService } from './provider-service.js';
export { MockAdapter, estimateTokens, valueFor } from './adapters/mock.js';
export { CircuitBreaker, type BreakerState } from './reliability/circuit-breaker.js';
export { ProviderLimiter, LimitExceededError } from './reliability/limiter.js';
export { parseRetryAfter } from './upstream-error.js';
export { parseProviderConfig } from './provider-config.js';
export { JsonSchemaError, compileSchema, parseStructured } from './structured-output.js';
