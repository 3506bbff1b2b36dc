import type { FastifyReply, FastifyRequest } from 'fastify';
import type { CallContext, Metadata } from 'nice-grpc-common';
import { CallMetadata, injectRequestTrace, spansRecorded } from '@elexirion/kit';

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
  const metadata = new CallMetadata();
  const authorization = request.headers.authorization;
  if (typeof authorization === 'string') metadata.set('authorization', authorization);
  // Its priority: emergency mode refuses `x-priority: low` (calls/recovery-actions.ts).
  const priority = request.headers['x-priority'];
  if (typeof priority === 'string') metadata.set('x-priority', priority);
  // The call continues the HTTP request's trace (the access log's trace id): through the metadata
  // when spans are recorded (the call starts its own span from it); otherwise the in-process call
  // runs in the request's async context already, and the metadata would be read by no one.
  if (spansRecorded()) injectRequestTrace(request, metadata);
  return metadata;
}

/**
 * Response metadata the gateway's middleware sets in the call's trailer (so in-process calls get
 * it too) that HTTP answers carry as headers: rate-limit state and the retry hint.
 */
export function isHttpForwardedTrailer(name: string): boolean {
  return name === 'retry-after' || name.startsWith('x-ratelimit-');
}

/**
 * Options for an HTTP route's in-process call into the gateway: the request's key as metadata, a
 * signal that aborts when the client goes away (cancelling the call down to the vendor request),
 * and the trailer's rate-limit headers copied onto the reply.
 */
export function httpCallOptions(request: FastifyRequest, reply: FastifyReply): { metadata: Metadata; signal: AbortSignal; onTrailer(trailer: Metadata): void } {
  const controller = new AbortController();
  reply.raw.on('close', () => {
    if (!reply.raw.writableFinished) controller.abort();
  });
  return {
    metadata: metadataOf(request),
    signal: controller.signal,
    onTrailer(trailer) {
      if (reply.sent || reply.raw.headersSent) return;
      for (const [name, values] of trailer) if (isHttpForwardedTrailer(name)) void reply.header(name, values.join(', '));
    },
  };
}
