import type { proto } from '@elexirion/kit';
import type { GatewayDeps } from './gateway-deps.js';
import { unimplemented } from './unimplemented.js';

/** StreamTelemetry: the services' telemetry events as they are published, filtered. */
export function telemetryCalls(_deps: GatewayDeps): Pick<proto.GatewayServiceImplementation, 'streamTelemetry'> {
  return {
    async *streamTelemetry() {
      unimplemented('StreamTelemetry');
    },
  };
}
