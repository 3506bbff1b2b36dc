import { CALLER_ADMIN_METADATA, CALLER_METADATA, CallMetadata, callOptions, isServiceUnreachable, ServerError, Status, type proto } from '@elexirion/kit';
import type { CallContext } from 'nice-grpc-common';
import { callerOf } from '../caller.js';
import type { GatewayDeps } from './gateway-deps.js';

type PromptCalls = Pick<
  proto.GatewayServiceImplementation,
  'getPipeline' | 'listPromptVersions' | 'publishPromptVersion' | 'setPromptRollout' | 'promotePromptVersion' | 'rollbackPrompt' | 'getPromptHistory'
>;

/** What a caller is told when the executor is down: which calls are out, not the channel's text (logged by the client policy). */
export function executorUnreachable(method: string): ServerError {
  return new ServerError(Status.UNAVAILABLE, `${method}: the executor cannot be reached (pipelines and prompt versions are unavailable until it is back)`);
}

/**
 * Who asks, for the executor: the key's name and whether it is an admin key (keys off: no name,
 * admin). Built here from the key the gateway accepted, never from the client's metadata, which
 * is not forwarded.
 */
function callerMetadata(context: CallContext): CallMetadata {
  const caller = callerOf(context);
  return new CallMetadata({ [CALLER_METADATA]: caller?.name ?? '', [CALLER_ADMIN_METADATA]: caller === undefined || caller.admin ? 'true' : 'false' });
}

/**
 * The prompt lifecycle calls and GetPipeline, which the gateway exposes (keys, scopes, limits)
 * and forwards to the executor that owns the registry and the pipelines: it checks what they
 * ask. Deadline and cancellation go along; writes carry who asks.
 */
export function promptCalls(deps: GatewayDeps): PromptCalls {
  const { executor } = deps;
  async function forward<T>(method: string, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      throw isServiceUnreachable(error) ? executorUnreachable(method) : error;
    }
  }
  const withCaller = (context: CallContext) => ({ ...callOptions(context), metadata: callerMetadata(context) });
  return {
    getPipeline: (request, context) => forward('GetPipeline', () => executor.getPipeline(request, callOptions(context))),
    listPromptVersions: (request, context) => forward('ListPromptVersions', () => executor.listPromptVersions(request, callOptions(context))),
    publishPromptVersion: (request, context) => forward('PublishPromptVersion', () => executor.publishPromptVersion(request, withCaller(context))),
    setPromptRollout: (request, context) => forward('SetPromptRollout', () => executor.setPromptRollout(request, withCaller(context))),
    promotePromptVersion: (request, context) => forward('PromotePromptVersion', () => executor.promotePromptVersion(request, withCaller(context))),
    rollbackPrompt: (request, context) => forward('RollbackPrompt', () => executor.rollbackPrompt(request, withCaller(context))),
    getPromptHistory: (request, context) => forward('GetPromptHistory', () => executor.getPromptHistory(request, callOptions(context))),
  };
}
