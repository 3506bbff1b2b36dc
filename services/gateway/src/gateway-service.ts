import { defineService, proto, type ServiceContext } from '@elexirion/kit';
import { chatCalls } from './calls/chat.js';
import { chatStreamCalls } from './calls/chat-stream.js';
import { AgentBypass } from './calls/degraded-chat.js';
import { GatewayRecovery } from './calls/recovery-actions.js';
import type { GatewayDeps } from './calls/gateway-deps.js';
import { jobCalls } from './calls/jobs.js';
import { modelCalls } from './calls/models.js';
import { monitorCalls } from './calls/monitor.js';
import { promptCalls } from './calls/prompts.js';
import { pipelineCalls } from './calls/pipelines.js';
import { pipelineStreamCalls } from './calls/pipeline-stream.js';
import { telemetryCalls } from './calls/telemetry.js';
import { gatewayConfigSchema, type GatewayConfig } from './gateway-config.js';
import { agentChatApi } from './http/agent-chat-api.js';
import { agentJobsApi } from './http/agent-jobs-api.js';
import { openAiApi } from './http/openai/api.js';
import { httpApi } from './http/rest-api.js';
import { DEFAULT_WEB_DIR, webPages } from './http/web-pages.js';
import { gatewayServerOptions } from './http/request-limits.js';
import { gatewayKeys } from './keys/gateway-keys.js';
import { keyCalls } from './keys/key-calls.js';

export function createGateway(context: ServiceContext<GatewayConfig>) {
  const { clients } = context;
  const deps: GatewayDeps = { context, agent: clients.get('agent'), executor: clients.get('executor'), provider: clients.get('provider'), monitor: clients.get('monitor') };
  // Chat around an agent that cannot be reached (calls/degraded-chat.ts).
  // The health monitor's recovery actions: agent bypass and emergency mode (calls/recovery-actions.ts).
  const recovery = new GatewayRecovery(context);
  const bypass = new AgentBypass(deps, recovery);
  // API keys, scopes, limits and budgets, and the gRPC access log (keys/).
  const keys = gatewayKeys(context);
  const registry = keys.registry;
  const serverOptions = gatewayServerOptions(context.config);

  // One module per area of the public API (calls/, keys/); each answers its calls.
  const implementation: proto.GatewayServiceImplementation = {
    ...chatCalls(deps, bypass),
    ...chatStreamCalls(deps),
    ...pipelineCalls(deps),
    ...pipelineStreamCalls(deps),
    ...jobCalls(deps),
    ...modelCalls(deps),
    ...telemetryCalls(deps),
    ...keyCalls(deps, keys),
    ...monitorCalls(deps),
    ...promptCalls(deps),
  };

  return {
    implementation,
    http: [
      httpApi(() => clients.get('gateway'), context.config),
      agentChatApi(() => clients.get('gateway')),
      agentJobsApi(() => clients.get('gateway')),
      openAiApi(() => clients.get('gateway'), () => clients.get('executor'), context.logger),
      ...(context.config.GATEWAY_WEB === 'on' ? [webPages(context.config.GATEWAY_WEB_DIR || DEFAULT_WEB_DIR)] : []),
    ],
    // Each call's request size limit, CORS and the access log (http/), which names a request's key.
    maxRequestBytes: serverOptions.maxRequestBytes,
    httpServer: registry ? { ...serverOptions.httpServer, keyNameOf: (authorization: string | undefined) => registry.nameOf(authorization) } : serverOptions.httpServer,
    // API keys, scopes, limits and the access log, on gRPC and on the HTTP routes' in-process calls.
    serverMiddleware: recovery.middleware(keys.middleware),
    unaryServerMiddleware: recovery.unaryMiddleware(keys.middleware, keys.unaryMiddleware),
    degradation: () => bypass.degradation(),
    async close() {
      bypass.close();
      await Promise.all([keys.close(), recovery.close()]);
    },
  };
}

export const gatewayService = defineService({
  name: 'gateway',
  configSchema: gatewayConfigSchema,
  create: createGateway,
});
