export { agentService } from './agent-service.js';
export * from './fallback/index.js';
