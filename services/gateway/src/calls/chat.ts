import { callOptions, type proto } from '@elexirion/kit';
import type { CallContext } from 'nice-grpc-common';
import { checkMessage, checkPipelineName, checkSessionId } from '../validation.js';
import { callerOf } from '../caller.js';
import type { AgentBypass, DegradedAnswer } from './degraded-chat.js';
import { forwardFallbackUsed } from './fallback-trailer.js';
import { requestFields, type GatewayDeps } from './gateway-deps.js';

/**
 * Chat: the agent routes the message and runs the pipeline; while the agent cannot be reached,
 * the bypass runs it on the executor with the gateway's route table, marked degraded.
 */
export function chatCalls(deps: GatewayDeps, bypass: AgentBypass): Pick<proto.GatewayServiceImplementation, 'chat'> {
  const { agent } = deps;

  async function answer(request: proto.ChatRequest, callContext: CallContext, owner: string, via: { bypass: boolean }): Promise<DegradedAnswer> {
    if (bypass.skipAgent && bypass.canServe(request)) {
      via.bypass = true;
      return bypass.chat(request, callContext);
    }
    try {
      const answered = await agent.handleChat(
        { message: request.message, sessionId: request.sessionId, pipeline: request.pipeline, owner },
        { ...callOptions(callContext), onTrailer: forwardFallbackUsed(callContext) },
      );
      bypass.agentAnswered();
      return { ...answered, degraded: false };
    } catch (error) {
      // Only "the agent cannot be reached" goes around it; any answer of the agent's stands.
      if (!bypass.agentFailed(error) || !bypass.canServe(request) || callContext.signal.aborted) throw error;
      via.bypass = true;
      return bypass.chat(request, callContext);
    }
  }

  return {
    async chat(request, callContext) {
      checkMessage(request.message);
      checkSessionId(request.sessionId);
      checkPipelineName('pipeline', request.pipeline, false);
      const started = performance.now();
      const owner = callerOf(callContext)?.keyId ?? '';
      // One "request" event per call, saying whether the bypass answered it.
      const call = deps.context.events.begin('request');
      const via = { bypass: false };
      let result: DegradedAnswer;
      try {
        result = await answer(request, callContext, owner, via);
      } catch (error) {
        call.failed(error, (errorMessage) => ({ gatewayRequest: { method: 'Chat', pipeline: request.pipeline, errorMessage, degraded: via.bypass } }));
        throw error;
      }
      call.succeeded({
        gatewayRequest: { method: 'Chat', pipeline: result.pipelineUsed, ...requestFields({ jobId: result.jobId, runId: result.runId, route: result.route?.matchedBy }), degraded: result.degraded },
      });
      return {
        response: result.response,
        pipelineUsed: result.pipelineUsed,
        executionTimeMs: Math.round(performance.now() - started),
        fallbackUsed: result.fallbackUsed,
        jobId: result.jobId,
        usage: result.usage,
        route: result.route,
        // The emergent fallback that answered when the routed pipeline failed (the agent's; never on the bypass).
        fallback: result.fallback,
        degraded: result.degraded,
        steps: result.steps,
      };
    },
  };
}
