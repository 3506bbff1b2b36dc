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

/**
 * What a call's "request" event says of what answered it: the job, the run (the agent runs a job
 * under its job id, so the run id is the job id unless said otherwise) and how the pipeline was
 * routed (RouteDecision.matched_by).
 */
export interface RequestFacts {
  jobId?: string;
  runId?: string;
  route?: string;
}

/** The event's fields for `facts`: a job's run id is its job id when no other is known. */
export function requestFields(facts: RequestFacts): { jobId: string; runId: string; route: string } {
  const jobId = facts.jobId ?? '';
  return { jobId, runId: facts.runId || jobId, route: facts.route ?? '' };
}

/** Publishes one "request" telemetry event per public call, success or not. */
export async function observed<T>(deps: GatewayDeps, method: string, pipeline: string, run: () => Promise<T>, factsOf: (result: T) => RequestFacts = () => ({})): Promise<T> {
  const call = deps.context.events.begin('request');
  try {
    const result = await run();
    call.succeeded({ gatewayRequest: { method, pipeline, ...requestFields(factsOf(result)) } });
    return result;
  } catch (error) {
    call.failed(error, (errorMessage) => ({ gatewayRequest: { method, pipeline, errorMessage } }));
    throw error;
  }
}
