export { agentService } from './agent-service.js';
