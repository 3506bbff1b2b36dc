import { ServerError, Status, type proto } from '@elexirion/kit';
import type { GatewayDeps } from './gateway-deps.js';

type PromptCalls = Pick<
  proto.GatewayServiceImplementation,
  'getPipeline' | 'listPromptVersions' | 'publishPromptVersion' | 'setPromptRollout' | 'promotePromptVersion' | 'rollbackPrompt' | 'getPromptHistory'
>;

/** The prompt lifecycle calls, forwarded to the executor that owns the registry (issue 15: in progress). */
export function promptCalls(_deps: GatewayDeps): PromptCalls {
  const refuse = async (): Promise<never> => {
    throw new ServerError(Status.UNIMPLEMENTED, 'the prompt lifecycle calls are not built yet');
  };
  return { getPipeline: refuse, listPromptVersions: refuse, publishPromptVersion: refuse, setPromptRollout: refuse, promotePromptVersion: refuse, rollbackPrompt: refuse, getPromptHistory: refuse };
}
