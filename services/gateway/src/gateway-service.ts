import { defineService, proto, type ServiceContext } from '@elexirion/kit';
import { chatCalls } from './calls/chat.js';
import { chatStreamCalls } from './calls/chat-stream.js';
import type { GatewayDeps } from './calls/gateway-deps.js';
import { jobCalls } from './calls/jobs.js';
import { modelCalls } from './calls/models.js';
import { pipelineCalls } from './calls/pipelines.js';
import { pipelineStreamCalls } from './calls/pipeline-stream.js';
import { telemetryCalls } from './calls/telemetry.js';
import { gatewayConfigSchema, type GatewayConfig } from './gateway-config.js';
import { httpApi } from './http/rest-api.js';
import { gatewayKeys } from './keys/gateway-keys.js';
import { keyCalls } from './keys/key-calls.js';

export function createGateway(context: ServiceContext<GatewayConfig>) {
  const { clients } = context;
  const deps: GatewayDeps = { context, agent: clients.get('agent'), executor: clients.get('executor'), provider: clients.get('provider') };
  const keys = gatewayKeys(context);

  // One module per area of the public API (calls/, keys/); each answers its calls.
  const implementation: proto.GatewayServiceImplementation = {
    ...chatCalls(deps),
    ...chatStreamCalls(deps),
    ...pipelineCalls(deps),
    ...pipelineStreamCalls(deps),
    ...jobCalls(deps),
    ...modelCalls(deps),
    ...telemetryCalls(deps),
    ...keyCalls(deps, keys),
  };

  return {
    implementation,
    http: [httpApi(() => clients.get('gateway'))],
    // API keys, scopes, limits and the access log, on gRPC and on the HTTP routes' in-process calls.
    serverMiddleware: keys.middleware,
    unaryServerMiddleware: keys.unaryMiddleware,
    close: () => keys.close(),
  };
}

export const gatewayService = defineService({
  name: 'gateway',
  configSchema: gatewayConfigSchema,
  create: createGateway,
});
