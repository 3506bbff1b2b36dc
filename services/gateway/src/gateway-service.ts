import { callOptions, defineService, proto, type ServiceContext } from '@elexirion/kit';
import { httpApi } from './http-api.js';
import { checkMessage, checkPipelineName, checkSessionId } from './validation.js';

export function createGateway(context: ServiceContext<unknown>) {
  const { clients, events } = context;
  const agent = clients.get('agent');

  /** Publishes one "request" event per public call, success or not. */
  async function observed<T extends { jobId: string }>(method: string, pipeline: string, run: () => Promise<T>): Promise<T> {
    const call = events.begin('request');
    try {
      const result = await run();
      call.succeeded({ gatewayRequest: { method, pipeline, jobId: result.jobId } });
      return result;
    } catch (error) {
      call.failed(error, (errorMessage) => ({ gatewayRequest: { method, pipeline, errorMessage } }));
      throw error;
    }
  }

  const implementation: proto.GatewayServiceImplementation = {
    async chat(request, callContext) {
      checkMessage(request.message);
      checkSessionId(request.sessionId);
      checkPipelineName('pipeline', request.pipeline, false);
      const started = performance.now();
      const answer = await observed('Chat', request.pipeline, () =>
        agent.handleChat({ message: request.message, sessionId: request.sessionId, pipeline: request.pipeline }, callOptions(callContext)),
      );
      return {
        response: answer.response,
        pipelineUsed: answer.pipelineUsed,
        executionTimeMs: Math.round(performance.now() - started),
        fallbackUsed: answer.fallbackUsed,
        jobId: answer.jobId,
        usage: answer.usage,
        route: answer.route,
        // The emergent fallback that answered when the routed pipeline failed.
        fallback: answer.fallback,
      };
    },
    async executePipeline(request, callContext) {
      checkPipelineName('pipeline', request.pipeline, true);
      const started = performance.now();
      const result = await observed('ExecutePipeline', request.pipeline, () =>
        agent.runPipeline({ pipeline: request.pipeline, inputs: request.inputs }, callOptions(callContext)),
      );
      return {
        result: result.result,
        pipeline: result.pipeline,
        executionTimeMs: Math.round(performance.now() - started),
        jobId: result.jobId,
        usage: result.usage,
        steps: result.steps,
      };
    },
  };

  return {
    implementation,
    http: [httpApi(() => clients.get('gateway'))],
  };
}

export const gatewayService = defineService({
  name: 'gateway',
  create: createGateway,
});
