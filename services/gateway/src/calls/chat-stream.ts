import type { proto } from '@elexirion/kit';
import type { GatewayDeps } from './gateway-deps.js';
import { unimplemented } from './unimplemented.js';

/** ChatStream: Chat as a stream of the run's events. */
export function chatStreamCalls(_deps: GatewayDeps): Pick<proto.GatewayServiceImplementation, 'chatStream'> {
  return {
    // eslint-disable-next-line require-yield
    async *chatStream() {
      unimplemented('ChatStream');
    },
  };
}
