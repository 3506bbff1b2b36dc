import { callOptions, defineService, proto, statusNameOf, type ServiceContext } from '@elexirion/kit';
import { registerHttpApi } from './http-api.js';
import { checkMessage, checkPipelineName, checkSessionId } from './validation.js';

export function createGateway(context: ServiceContext<unknown>) {
  const { clients, events } = context;
  const agent = clients.get('agent');

  /** Publishes one "request" event per public call, success or not. */
  async function observed<T>(method: string, pipeline: string, run: () => Promise<T & { jobId: string }>): Promise<T & { jobId: string }> {
    const started = performance.now();
    try {
      const result = await run();
      events.publish('request', { status: 'OK', durationMs: Math.round(performance.now() - started), gatewayRequest: { method, pipeline, jobId: result.jobId } });
      return result;
    } catch (error) {
      events.publish('request', {
        status: statusNameOf(error),
        durationMs: Math.round(performance.now() - started),
        gatewayRequest: { method, pipeline, errorMessage: error instanceof Error ? error.message : String(error) },
      });
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
    registerHttp: (app: Parameters<typeof registerHttpApi>[0]) => registerHttpApi(app, () => clients.get('gateway')),
  };
}

export const gatewayService = defineService({
  name: 'gateway',
  create: createGateway,
});
