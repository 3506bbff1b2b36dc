import { callOptions, type proto } from '@elexirion/kit';
import { callerOf } from '../caller.js';
import { checkMessage, checkPipelineName, checkSessionId } from '../validation.js';
import { forwardFallbackUsed } from './fallback-trailer.js';
import type { GatewayDeps } from './gateway-deps.js';
import { observedStream, withFinalAnswer } from './observed-stream.js';

/**
 * ChatStream: Chat as a stream of the run's events, passed on from the agent's HandleChatStream
 * as they arrive. The call's signal goes down with the agent call: a client that goes away
 * cancels the run down to the vendor request.
 */
export function chatStreamCalls(deps: GatewayDeps): Pick<proto.GatewayServiceImplementation, 'chatStream'> {
  const { agent } = deps;
  return {
    async *chatStream(request, callContext) {
      checkMessage(request.message);
      checkSessionId(request.sessionId);
      checkPipelineName('pipeline', request.pipeline, false);
      const started = performance.now();
      const owner = callerOf(callContext)?.keyId ?? '';
      const events = agent.handleChatStream(
        { message: request.message, sessionId: request.sessionId, pipeline: request.pipeline, owner },
        { ...callOptions(callContext), onTrailer: forwardFallbackUsed(callContext) },
      );
      const answer = (done: proto.HandleChatResponse): proto.ChatResponse => ({
        response: done.response,
        pipelineUsed: done.pipelineUsed,
        executionTimeMs: Math.round(performance.now() - started),
        fallbackUsed: done.fallbackUsed,
        jobId: done.jobId,
        usage: done.usage,
        route: done.route,
        fallback: done.fallback,
        degraded: false,
        steps: done.steps,
      });
      yield* observedStream(deps, 'ChatStream', request.pipeline, withFinalAnswer<proto.ChatStreamResponse, proto.HandleChatStreamResponse>(events, answer), (event) => ({
        jobId: event.runStarted?.runId ?? event.done?.jobId,
        route: event.route?.matchedBy,
      }));
    },
  };
}
