import type { proto } from '@elexirion/kit';
import type { GatewayDeps } from './gateway-deps.js';
import { unimplemented } from './unimplemented.js';

/** Complete, CompleteStream, ListModels: plain LLM calls through the provider. */
export function modelCalls(_deps: GatewayDeps): Pick<proto.GatewayServiceImplementation, 'complete' | 'completeStream' | 'listModels'> {
  return {
    async complete() {
      unimplemented('Complete');
    },
    async *completeStream() {
      unimplemented('CompleteStream');
    },
    async listModels() {
      unimplemented('ListModels');
    },
  };
}
