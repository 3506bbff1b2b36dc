import type { CallOptions, Metadata } from 'nice-grpc-common';
import { RunFailure } from '../generated/elexirion/v1/common.js';

// Structured failures travel in trailers, beside the status: a caller classifies a failure from
// these fields, never from its message. Over gRPC nice-grpc sends a handler's trailer with its
// error status; in-process calls hand the trailer to `onTrailer` the same way (rpc/clients.ts).

/** The executor's account of a failed run (`elexirion.v1.RunFailure`, binary), on Execute and ExecuteStream. */
export const RUN_FAILURE_TRAILER = 'elexirion-run-failure-bin';

/**
 * Set by the provider when every target of a chain was overloaded or rate limited (429, 529, over
 * its limits, breaker open): the status alone (UNAVAILABLE) does not tell that from a vendor's 5xx.
 */
export const PROVIDER_OVERLOADED_TRAILER = 'elexirion-provider-overloaded';

/**
 * Set by the agent on a failed chat whose emergent fallback was tried and failed too: the design's
 * chat answer says `fallback_used` on errors as well, which a status cannot carry.
 */
export const FALLBACK_USED_TRAILER = 'elexirion-fallback-used';

/** Puts a run's failure in a handler's trailer (`CallContext.trailer`). */
export function setRunFailure(trailer: Metadata, failure: RunFailure): void {
  trailer.set(RUN_FAILURE_TRAILER, RunFailure.encode(failure).finish());
}

/** The run failure in a call's trailer; undefined when there is none or it does not decode. */
export function runFailureOf(trailer: Metadata): RunFailure | undefined {
  const value = trailer.get(RUN_FAILURE_TRAILER);
  if (!(value instanceof Uint8Array)) return undefined;
  try {
    return RunFailure.decode(value);
  } catch {
    return undefined;
  }
}

/** A call's trailer as it arrives: pass `onTrailer` in the call's options, read `trailer` once the call has ended. */
export class TrailerCapture {
  trailer: Metadata | undefined;
  readonly onTrailer: NonNullable<CallOptions['onTrailer']> = (trailer) => {
    this.trailer = trailer;
  };

  /** The run failure the call's trailer carried, if any. */
  runFailure(): RunFailure | undefined {
    return this.trailer ? runFailureOf(this.trailer) : undefined;
  }

  /** Whether the provider said every target was overloaded. */
  providerOverloaded(): boolean {
    return this.trailer?.get(PROVIDER_OVERLOADED_TRAILER) === '1';
  }
}
