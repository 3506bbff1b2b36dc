export { providerService, providerConfigSchema, type ProviderConfig } from './provider-service.js';
export { MockProvider, estimateTokens } from './mock-provider.js';
