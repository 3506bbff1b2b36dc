import { callOptions, type proto } from '@elexirion/kit';
import { checkMessage, checkPipelineName, checkSessionId } from '../validation.js';
import { callerOf } from '../caller.js';
import { forwardFallbackUsed } from './fallback-trailer.js';
import { observed, type GatewayDeps } from './gateway-deps.js';

/** Chat: the agent routes the message and runs the pipeline. */
export function chatCalls(deps: GatewayDeps): Pick<proto.GatewayServiceImplementation, 'chat'> {
  const { agent } = deps;
  return {
    async chat(request, callContext) {
      checkMessage(request.message);
      checkSessionId(request.sessionId);
      checkPipelineName('pipeline', request.pipeline, false);
      const started = performance.now();
      const owner = callerOf(callContext)?.keyId ?? '';
      const answer = await observed(deps, 'Chat', request.pipeline, () =>
        agent.handleChat({ message: request.message, sessionId: request.sessionId, pipeline: request.pipeline, owner }, { ...callOptions(callContext), onTrailer: forwardFallbackUsed(callContext) }),
        (result) => result.jobId,
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
        degraded: false,
        steps: answer.steps,
      };
    },
  };
}
