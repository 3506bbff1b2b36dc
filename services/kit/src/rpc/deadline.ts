import { Metadata as GrpcMetadata, ServerInterceptingCall, type ServerInterceptor } from '@grpc/grpc-js';
import { ClientError, Status, type CallContext, type Metadata } from 'nice-grpc-common';
import { CallMetadata } from './call-metadata.js';

/**
 * Deadline propagation across hops.
 *
 * nice-grpc clients enforce deadlines locally but do not put them on the wire, so kit clients
 * send the remaining budget as `elexirion-timeout-ms`. A server interceptor merges it with the
 * standard `grpc-timeout` (sent by grpcurl, Python and other clients) into one absolute
 * deadline on the local clock, `elexirion-deadline-at`, that handlers read with
 * `incomingDeadline()` and hand on with `callOptions()`.
 */
export const TIMEOUT_METADATA_KEY = 'elexirion-timeout-ms';
export const DEADLINE_METADATA_KEY = 'elexirion-deadline-at';

export type Deadline = Date | number;

/** Absolute epoch ms of the tighter of a wire deadline and a relative budget; Infinity for none. */
export function mergeDeadline(wireDeadline: number, timeoutHeader: string | undefined, now = Date.now()): number {
  let at = wireDeadline;
  const relative = timeoutHeader === undefined || timeoutHeader.trim() === '' ? NaN : Number(timeoutHeader);
  if (Number.isFinite(relative) && relative >= 0) at = Math.min(at, now + relative);
  return at;
}

export const deadlineServerInterceptor: ServerInterceptor = (_method, call) =>
  new ServerInterceptingCall(call, {
    start(next) {
      next({
        onReceiveMetadata(metadata: GrpcMetadata, nextMetadata) {
          const wire = call.getDeadline();
          const wireMs = wire instanceof Date ? wire.getTime() : wire;
          const header = metadata.get(TIMEOUT_METADATA_KEY)[0];
          const at = mergeDeadline(wireMs, header === undefined ? undefined : String(header));
          // Never trust a caller-supplied absolute deadline: only this interceptor sets it.
          metadata.remove(TIMEOUT_METADATA_KEY);
          metadata.remove(DEADLINE_METADATA_KEY);
          if (Number.isFinite(at)) metadata.set(DEADLINE_METADATA_KEY, String(Math.round(at)));
          nextMetadata(metadata);
        },
      });
    },
  });

/** The deadline of the incoming call, if its caller set one. */
export function incomingDeadline(context: Pick<CallContext, 'metadata'>): Date | undefined {
  const raw = context.metadata.get(DEADLINE_METADATA_KEY);
  if (raw === undefined) return undefined;
  const at = Number(raw);
  return Number.isFinite(at) ? new Date(at) : undefined;
}

export interface PropagatedCallOptions {
  signal: AbortSignal;
  deadline?: Date;
}

/**
 * Options for an outgoing call made while serving `context`: cancelled with it, and bounded by
 * its deadline (and by `timeoutMs` from now, when tighter).
 */
export function callOptions(context: Pick<CallContext, 'metadata' | 'signal'>, options: { timeoutMs?: number } = {}): PropagatedCallOptions {
  let deadline = incomingDeadline(context);
  if (options.timeoutMs !== undefined) {
    const own = new Date(Date.now() + options.timeoutMs);
    if (!deadline || own < deadline) deadline = own;
  }
  return deadline ? { signal: context.signal, deadline } : { signal: context.signal };
}

export function deadlineToMs(deadline: Deadline, now = Date.now()): number {
  return deadline instanceof Date ? deadline.getTime() - now : deadline;
}

/**
 * A copy of `metadata` (callers may reuse theirs) carrying the budget left until `deadline` as
 * `elexirion-timeout-ms`, and that budget in ms; DEADLINE_EXCEEDED when it is already spent.
 */
export function budgetMetadata(path: string, deadline: Deadline, metadata: Metadata | undefined): { metadata: Metadata; remainingMs: number } {
  const remainingMs = Math.floor(deadlineToMs(deadline));
  if (remainingMs <= 0) throw new ClientError(path, Status.DEADLINE_EXCEEDED, 'Deadline exceeded before the call started');
  const copy = new CallMetadata(metadata);
  copy.set(TIMEOUT_METADATA_KEY, String(remainingMs));
  return { metadata: copy, remainingMs };
}
