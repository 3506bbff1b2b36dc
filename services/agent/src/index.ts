export { agentService, agentConfigSchema, type AgentConfig } from './agent-service.js';
