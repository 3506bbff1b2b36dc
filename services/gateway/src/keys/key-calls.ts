import type { proto } from '@elexirion/kit';
import type { GatewayDeps } from '../calls/gateway-deps.js';
import { unimplemented } from '../calls/unimplemented.js';

/** CreateKey, ListKeys, RevokeKey: API keys managed at runtime (admin scope). */
export function keyCalls(_deps: GatewayDeps): Pick<proto.GatewayServiceImplementation, 'createKey' | 'listKeys' | 'revokeKey'> {
  return {
    async createKey() {
      unimplemented('CreateKey');
    },
    async listKeys() {
      unimplemented('ListKeys');
    },
    async revokeKey() {
      unimplemented('RevokeKey');
    },
  };
}
