import { isAbortError } from 'abort-controller-x';
import { ClientError, ServerError, Status, type CallContext } from 'nice-grpc-common';
import type { Logger } from './logger.js';
import { redactSecrets } from './secrets.js';
import { traceIds } from './tracing.js';

export { ClientError, ServerError, Status } from 'nice-grpc-common';

/** gRPC retry throttling trailer; a negative value tells the client's channel not to retry. */
export const RETRY_PUSHBACK_KEY = 'grpc-retry-pushback-ms';

/**
 * The status a server answers for a failure: a downstream ClientError keeps its code and details
 * (INVALID_ARGUMENT from the executor reaches the gateway's caller as INVALID_ARGUMENT),
 * cancellation becomes CANCELLED, and anything unexpected is logged with its stack and answered
 * as INTERNAL without internals. Details never carry a secret.
 */
export function mapServerError(error: unknown, path: string, context: Pick<CallContext, 'trailer'>, logger: Logger): ServerError {
  if (error instanceof ServerError || error instanceof ClientError) {
    // An UNAVAILABLE a handler answers (a downstream's, or every LLM target failing) is final
    // here: without this, each hop's channel would retry it and multiply upstream attempts.
    // Channels still retry UNAVAILABLE raised by the transport (connection refused, draining).
    if (error.code === Status.UNAVAILABLE) context.trailer.set(RETRY_PUSHBACK_KEY, '-1');
    return new ServerError(error.code, redactSecrets(error.details));
  }
  if (isAbortError(error)) return new ServerError(Status.CANCELLED, `${path} was cancelled by its caller`);
  const { traceId } = traceIds();
  logger.error({ err: error, method: path }, 'unhandled error in handler');
  return new ServerError(Status.INTERNAL, `internal error in ${path} (trace ${traceId || 'none'})`);
}

/** The gRPC status name of a failure, for events and logs ("NOT_FOUND"; "INTERNAL" when unknown). */
export function statusNameOf(error: unknown): string {
  if (error instanceof ServerError || error instanceof ClientError) return Status[error.code];
  if (isAbortError(error)) return 'CANCELLED';
  return 'INTERNAL';
}

/** HTTP status that best matches a gRPC status (as grpc-gateway maps them). */
export function httpStatusFromGrpc(code: Status): number {
  switch (code) {
    case Status.OK: return 200;
    case Status.CANCELLED: return 499;
    case Status.INVALID_ARGUMENT:
    case Status.OUT_OF_RANGE: return 400;
    case Status.FAILED_PRECONDITION: return 400;
    case Status.DEADLINE_EXCEEDED: return 504;
    case Status.NOT_FOUND: return 404;
    case Status.ALREADY_EXISTS:
    case Status.ABORTED: return 409;
    case Status.PERMISSION_DENIED: return 403;
    case Status.UNAUTHENTICATED: return 401;
    case Status.RESOURCE_EXHAUSTED: return 429;
    case Status.UNIMPLEMENTED: return 501;
    case Status.UNAVAILABLE: return 503;
    default: return 500;
  }
}
