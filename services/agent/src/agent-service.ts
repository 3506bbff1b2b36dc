import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { PIPELINE_NAME, ServerError, Status, callOptions, defineService, proto, type ServiceContext } from '@elexirion/kit';
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

  /** Runs a pipeline as a job and reports it, whatever the outcome. */
  async function runJob(pipeline: string, inputs: Record<string, string>, sessionKey: string, callContext: Parameters<typeof callOptions>[0]) {
    const jobId = randomUUID();
    const call = events.begin('job');
    try {
      const result = await executor.execute({ pipeline, inputs, jobId, sessionKey }, callOptions(callContext));
      // A run used a fallback when any of its steps was served by other than its first choice.
      const fallbackUsed = result.steps.some((step) => step.fallbackUsed);
      call.succeeded({ agentJob: { jobId, pipeline: result.pipeline, fallbackUsed } });
      return { jobId, result, fallbackUsed };
    } catch (error) {
      call.failed(error, (errorMessage) => ({ agentJob: { jobId, pipeline, errorMessage } }));
      throw error;
    }
  }

  const implementation: proto.AgentServiceImplementation = {
    async handleChat(request, callContext) {
      // An explicit pipeline wins; otherwise the route table (and the classifier, when on) decides.
      const { pipeline, inputs, decision } = await router.route(request.message, { pipeline: request.pipeline, context: callContext });
      // The chat's session is the executor's session key: a session keeps its prompt versions.
      const { jobId, result, fallbackUsed } = await runJob(pipeline, inputs, request.sessionId, callContext);
      return { response: result.output, pipelineUsed: result.pipeline, fallbackUsed, jobId, usage: result.usage, steps: result.steps, route: decision };
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
