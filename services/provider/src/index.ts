export { providerService } from './provider-service.js';
export { MockAdapter, dspyRequest, estimateTokens, loadMockResponses, parseMockResponses, valueFor, type DspyRequest, type MockResponseEntry } from './adapters/mock.js';
export { CircuitBreaker, type BreakerState } from './reliability/circuit-breaker.js';
export { ProviderLimiter, LimitExceededError } from './reliability/limiter.js';
export { UpstreamError, parseRetryAfter } from './upstream-error.js';
export { parseProviderConfig } from './provider-config.js';
export { JsonSchemaError, compileSchema, parseStructured } from './structured-output.js';
