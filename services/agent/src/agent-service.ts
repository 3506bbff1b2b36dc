import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { PIPELINE_NAME, ServerError, Status, TrailerCapture, callOptions, defineService, proto, type ServiceContext } from '@elexirion/kit';
import { FallbackFailedError, recover } from './fallback/index.js';
import { createRouter, routingConfigShape } from './routing/router.js';

export const agentConfigSchema = z.object({
  AGENT_DEFAULT_PIPELINE: z.string().regex(PIPELINE_NAME, 'expected a pipeline name').default('general'),
  ...routingConfigShape,
});
export type AgentConfig = z.infer<typeof agentConfigSchema>;

export function createAgent(context: ServiceContext<AgentConfig>) {
  const { clients, events } = context;
  const executor = clients.get('executor');
  // routes.yaml (reloaded live) and the optional classifier; `router.route` also serves SubmitJob.
  const router = createRouter(context);

  /**
   * Runs a pipeline as a job and reports it, whatever the outcome. With `recovering`, a failed run
   * gets its emergent fallback (fallback/): a pipeline generated for its failure class, run once.
   */
  async function runJob(pipeline: string, inputs: Record<string, string>, sessionKey: string, callContext: Parameters<typeof callOptions>[0], recovering = false) {
    const jobId = randomUUID();
    const call = events.begin('job');
    try {
      const options = callOptions(callContext);
      let result: proto.ExecuteResponse;
      let fallback: proto.EmergentFallback | undefined;
      const trailer = recovering ? new TrailerCapture() : undefined;
      try {
        result = await executor.execute({ pipeline, inputs, jobId, sessionKey }, trailer ? { ...options, onTrailer: trailer.onTrailer } : options);
      } catch (error) {
        if (!trailer) throw error;
        ({ fallback, result } = await recover(executor, error, trailer.runFailure(), { pipeline, inputs, jobId, sessionKey }, options));
      }
      // A run used a fallback when any of its steps was served by other than its first choice, or
      // when the emergent fallback answered.
      const fallbackUsed = fallback !== undefined || result.steps.some((step) => step.fallbackUsed);
      call.succeeded({ agentJob: { jobId, pipeline: result.pipeline, fallbackUsed } });
      return { jobId, result, fallbackUsed, fallback };
    } catch (error) {
      // A fallback that failed too was still used.
      call.failed(error, (errorMessage) => ({ agentJob: { jobId, pipeline, errorMessage, fallbackUsed: error instanceof FallbackFailedError } }));
      throw error;
    }
  }

  const implementation: proto.AgentServiceImplementation = {
    async handleChat(request, callContext) {
      // An explicit pipeline wins; otherwise the route table (and the classifier, when on) decides.
      const { pipeline, inputs, decision } = await router.route(request.message, { pipeline: request.pipeline, context: callContext });
      // The chat's session is the executor's session key: a session keeps its prompt versions.
      const { jobId, result, fallbackUsed, fallback } = await runJob(pipeline, inputs, request.sessionId, callContext, true);
      return { response: result.output, pipelineUsed: result.pipeline, fallbackUsed, jobId, usage: result.usage, steps: result.steps, route: decision, fallback };
    },
    async runPipeline(request, callContext) {
      const { jobId, result } = await runJob(request.pipeline, request.inputs, '', callContext);
      return { result: result.output, pipeline: result.pipeline, jobId, usage: result.usage, steps: result.steps };
    },
    // The job calls are contracted here and built by the jobs work of this issue.
    async submitJob() { throw new ServerError(Status.UNIMPLEMENTED, 'Agent/SubmitJob is not built yet'); },
    async getJob() { throw new ServerError(Status.UNIMPLEMENTED, 'Agent/GetJob is not built yet'); },
    async *watchJob() { throw new ServerError(Status.UNIMPLEMENTED, 'Agent/WatchJob is not built yet'); },
    async cancelJob() { throw new ServerError(Status.UNIMPLEMENTED, 'Agent/CancelJob is not built yet'); },
    async listJobs() { throw new ServerError(Status.UNIMPLEMENTED, 'Agent/ListJobs is not built yet'); },
  };
  return { implementation, route: router.route, close: async () => router.close() };
}

export const agentService = defineService({
  name: 'agent',
  configSchema: agentConfigSchema,
  create: createAgent,
});
