import type { proto } from '@elexirion/kit';
import type { GatewayDeps } from './gateway-deps.js';
import { unimplemented } from './unimplemented.js';

/** ExecutePipelineStream: ExecutePipeline as a stream of the run's events. */
export function pipelineStreamCalls(_deps: GatewayDeps): Pick<proto.GatewayServiceImplementation, 'executePipelineStream'> {
  return {
    async *executePipelineStream() {
      unimplemented('ExecutePipelineStream');
    },
  };
}
