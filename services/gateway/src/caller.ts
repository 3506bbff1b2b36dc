import type { FastifyRequest } from 'fastify';
import { Metadata, type CallContext } from 'nice-grpc-common';

/**
 * Who is calling: the API key the gateway's auth middleware accepted for this call. Handlers read
 * it with `callerOf(context)`; it is undefined when keys are off (GATEWAY_AUTH=off).
 */
export interface Caller {
  /** The key's id: public, safe to log and to store as a job's owner. */
  keyId: string;
  /** The key's name, for logs and `requested_by`. */
  name: string;
  scopes: readonly string[];
  /** An admin key may call anything and sees every key's jobs. */
  admin: boolean;
}

/** The CallContext extension the auth middleware passes to handlers. */
export interface CallerContext {
  caller?: Caller;
}

export function callerOf(context: CallContext): Caller | undefined {
  return (context as CallContext & CallerContext).caller;
}

/** Whether the caller may use `scope` (no caller: keys are off, everything is allowed). */
export function hasScope(caller: Caller | undefined, scope: string): boolean {
  return caller === undefined || caller.admin || scope === '' || caller.scopes.includes(scope);
}

/**
 * The gRPC metadata an HTTP request carries into the gateway's own calls (the HTTP routes call
 * the gRPC implementation in-process): its key, so the same auth, scopes and limits apply.
 */
export function metadataOf(request: FastifyRequest): Metadata {
  const metadata = new Metadata();
  const authorization = request.headers.authorization;
  if (typeof authorization === 'string') metadata.set('authorization', authorization);
  return metadata;
}
