import { FALLBACK_USED_TRAILER } from '@elexirion/kit';
import type { CallContext, Metadata } from 'nice-grpc-common';

/**
 * An agent call's `onTrailer` that passes the agent's "fallback tried" mark on in this call's
 * trailer, so a failed chat's answer (gRPC or the design's HTTP JSON) can say `fallback_used`.
 */
export function forwardFallbackUsed(callContext: CallContext): (trailer: Metadata) => void {
  return (trailer) => {
    const mark = trailer.get(FALLBACK_USED_TRAILER);
    if (typeof mark === 'string') callContext.trailer.set(FALLBACK_USED_TRAILER, mark);
  };
}
