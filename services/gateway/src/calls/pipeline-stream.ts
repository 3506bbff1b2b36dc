import { callOptions, type proto } from '@elexirion/kit';
import { callerOf } from '../caller.js';
import type { GatewayDeps } from './gateway-deps.js';
import { observedStream, withFinalAnswer } from './observed-stream.js';
import { checkExecutePipelineRequest } from './pipelines.js';

/**
 * ExecutePipelineStream: ExecutePipeline as a stream of the run's events, passed on from the
 * agent's RunPipelineStream as they arrive; cancelling the call cancels the run.
 */
export function pipelineStreamCalls(deps: GatewayDeps): Pick<proto.GatewayServiceImplementation, 'executePipelineStream'> {
  const { agent } = deps;
  return {
    async *executePipelineStream(request, callContext) {
      // The same limits as ExecutePipeline: the stream is that call's other form.
      checkExecutePipelineRequest(request);
      const started = performance.now();
      const owner = callerOf(callContext)?.keyId ?? '';
      const events = agent.runPipelineStream({ ...request, owner }, callOptions(callContext));
      const answer = (done: proto.RunPipelineResponse): proto.ExecutePipelineResponse => ({
        result: done.result,
        pipeline: done.pipeline,
        executionTimeMs: Math.round(performance.now() - started),
        jobId: done.jobId,
        usage: done.usage,
        steps: done.steps,
      });
      yield* observedStream(deps, 'ExecutePipelineStream', request.pipeline, withFinalAnswer<proto.ExecutePipelineStreamResponse, proto.RunPipelineStreamResponse>(events, answer), (event) => ({ jobId: event.runStarted?.runId ?? event.done?.jobId }));
    },
  };
}
