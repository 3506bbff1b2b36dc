import { isAbortError } from 'abort-controller-x';
import { ClientError, ServerError, Status, type CallContext } from 'nice-grpc-common';
import type { Logger } from '../telemetry/logger.js';
import { redactSecrets } from '../secrets.js';
import { traceIds } from '../telemetry/tracing.js';

export { ClientError, ServerError, Status } from 'nice-grpc-common';

// One vocabulary for failures: a failure is a gRPC status. Handlers throw ServerError (nice-grpc)
// or a named error that extends ElexirionError and says which status it stands for; calls to other
// services fail with ClientError. `toServerError` is the one translation of anything thrown into
// what a caller is answered, and `httpStatusFromGrpc` the one mapping from there to HTTP.

/** A named failure that knows the gRPC status it stands for (as connect-es's ConnectError). */
export class ElexirionError extends Error {
  override readonly name: string = 'ElexirionError';
  constructor(
    readonly code: Status,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** gRPC retry throttling trailer; a negative value tells the client's channel not to retry. */
export const RETRY_PUSHBACK_KEY = 'grpc-retry-pushback-ms';

const INTERNAL_MESSAGE = 'internal error';

/** The status a failure stands for: its own code, CANCELLED for an abort, INTERNAL for anything unexpected. */
export function statusOf(error: unknown): Status {
  if (error instanceof ServerError || error instanceof ClientError || error instanceof ElexirionError) return error.code;
  if (isAbortError(error)) return Status.CANCELLED;
  return Status.INTERNAL;
}

/** The status name of a failure, for events and logs ("NOT_FOUND"). */
export function statusNameOf(error: unknown): string {
  return Status[statusOf(error)] ?? 'UNKNOWN';
}

/** What a failure says to whoever called: its details, or nothing of an unexpected error's internals. */
export function failureMessage(error: unknown): string {
  if (error instanceof ServerError || error instanceof ClientError) return redactSecrets(error.details);
  if (error instanceof ElexirionError) return redactSecrets(error.message);
  if (isAbortError(error)) return 'cancelled by its caller';
  return INTERNAL_MESSAGE;
}

/**
 * The one translation of a failure into the status a caller gets: a status error keeps its code
 * and details (INVALID_ARGUMENT from the executor reaches the gateway's caller as
 * INVALID_ARGUMENT), an abort is CANCELLED, anything else is INTERNAL and says nothing of its
 * internals. `context` goes before the message ("triage: step \"plan\""). The original is kept
 * as the result's `cause`; details never carry a secret.
 */
export function toServerError(error: unknown, context?: string): ServerError {
  if (error instanceof ServerError && context === undefined) {
    const details = redactSecrets(error.details);
    return details === error.details ? error : withCause(new ServerError(error.code, details), error);
  }
  const message = failureMessage(error);
  return withCause(new ServerError(statusOf(error), context ? `${context}: ${message}` : message), error);
}

/** `error` with `cause` attached, not enumerable (it stays out of logs' own fields and of the wire). */
export function withCause<E extends Error>(error: E, cause: unknown): E {
  if (cause !== error) Object.defineProperty(error, 'cause', { value: cause, enumerable: false, configurable: true, writable: true });
  return error;
}

/** The first cause in a chain that is not a status error: where an unexpected failure began. */
function rootCause(error: unknown): unknown {
  let current = error;
  for (let depth = 0; depth < 8 && (current instanceof ServerError || current instanceof ClientError); depth += 1) {
    const cause = (current as { cause?: unknown }).cause;
    if (cause === undefined) break;
    current = cause;
  }
  return current;
}

/**
 * What a server answers for a failure (`toServerError`), as its call policy sends it: an
 * unexpected one is logged with its stack and answered as INTERNAL with the trace id, and an
 * UNAVAILABLE a handler answers tells the caller's channel not to retry it.
 */
export function mapServerError(error: unknown, path: string, context: Pick<CallContext, 'trailer'>, logger: Logger): ServerError {
  if (isAbortError(error)) return withCause(new ServerError(Status.CANCELLED, `${path} was cancelled by its caller`), error);
  let mapped = toServerError(error);
  if (mapped.code === Status.INTERNAL || mapped.code === Status.UNKNOWN || mapped.code === Status.DATA_LOSS) {
    const cause = rootCause(mapped);
    if (!(cause instanceof ServerError) && !(cause instanceof ClientError)) {
      const { traceId } = traceIds();
      logger.error({ err: cause, method: path }, 'unhandled error in handler');
      mapped = withCause(new ServerError(mapped.code, `${mapped.details === INTERNAL_MESSAGE ? `internal error in ${path}` : mapped.details} (trace ${traceId || 'none'})`), cause);
    }
  }
  // An UNAVAILABLE a handler answers (a downstream's, or every LLM target failing) is final here:
  // without this, each hop's channel would retry it and multiply upstream attempts. Channels
  // still retry UNAVAILABLE raised by the transport (connection refused, draining).
  if (mapped.code === Status.UNAVAILABLE) context.trailer.set(RETRY_PUSHBACK_KEY, '-1');
  return mapped;
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
