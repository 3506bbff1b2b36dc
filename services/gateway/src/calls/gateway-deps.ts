import type { ServiceContext, ServiceClient } from '@elexirion/kit';
import type { GatewayConfig } from '../gateway-config.js';

/** What the gateway's call implementations share: its context and its clients. */
export interface GatewayDeps {
  context: ServiceContext<GatewayConfig>;
  agent: ServiceClient<'agent'>;
  executor: ServiceClient<'executor'>;
  provider: ServiceClient<'provider'>;
  monitor: ServiceClient<'monitor'>;
}

/** Publishes one "request" telemetry event per public call, success or not. */
export async function observed<T>(deps: GatewayDeps, method: string, pipeline: string, run: () => Promise<T>, jobIdOf: (result: T) => string = () => ''): Promise<T> {
  const call = deps.context.events.begin('request');
  try {
    const result = await run();
    call.succeeded({ gatewayRequest: { method, pipeline, jobId: jobIdOf(result) } });
    return result;
  } catch (error) {
    call.failed(error, (errorMessage) => ({ gatewayRequest: { method, pipeline, errorMessage } }));
    throw error;
  }
}
