import {
  ClientError,
  Status,
  type CallContext,
  type CallOptions,
  type ClientMiddleware,
  type Metadata,
  type ServerMiddleware,
} from 'nice-grpc-common';
import type { DeadlineOptions } from 'nice-grpc-client-middleware-deadline';
import { budgetMetadata } from './deadline.js';
import { RETRY_PUSHBACK_KEY, mapServerError, statusOf, withCause } from './errors.js';
import { UndecodableRequest } from './undecodable-requests.js';
import type { Logger } from '../telemetry/logger.js';
import {
  RpcSeriesTable,
  grpcTypeOf,
  recordClientCall,
  recordServerCall,
  type GrpcType,
  type Metrics,
  type RpcSeries,
} from '../telemetry/metrics.js';

// What every call between services goes through, one policy per side. Each policy comes in two
// forms with the same behaviour: nice-grpc middleware (an async generator whose frame lives as long
// as the call) for gRPC calls and streams, and a plain async function for unary calls between
// services hosted in one process. With thousands of calls in flight, generator frames and the
// promises stepping through them were the largest share of the heap per call.

/** A client policy: as nice-grpc middleware, and around one in-process unary call. */
export interface ClientCallPolicy {
  middleware: ClientMiddleware<DeadlineOptions>;
  /** `send` is told whether `options.metadata` is a copy made for this call, which it may change. */
  unary<T>(path: string, options: CallOptions & DeadlineOptions, send: (options: CallOptions, ownsMetadata: boolean) => Promise<T>): Promise<T>;
}

/** A server policy: as nice-grpc middleware, and around one in-process unary handler call. */
export interface ServerCallPolicy {
  middleware: ServerMiddleware;
  unary<T>(path: string, context: CallContext, handle: () => Promise<T>): Promise<T>;
}

/** What a client policy is for: who calls whom, and how. */
export interface ClientPolicyOptions {
  /** The calling service (or tool), for metrics. */
  caller: string;
  /** The service called, named in what its callers are told when it cannot be reached. */
  callee: string;
  transport: 'grpc' | 'in_process';
  metrics: Metrics;
  /** Where to log why a service could not be reached; nowhere when absent (tools). */
  logger?: Logger;
}

/**
 * Client side, outermost first: counts and times the call (`grpc_client_*`); sends the remaining
 * budget as `elexirion-timeout-ms` and fails at once when it is spent; enforces the deadline
 * locally (DEADLINE_EXCEEDED, the call aborted), as nice-grpc's deadline middleware does; and
 * answers a service that cannot be reached as "the <callee> service is unavailable", logging what
 * grpc-js said (addresses and connection errors are for operators, not for callers).
 */
export function clientCallPolicy(options: ClientPolicyOptions): ClientCallPolicy {
  const { metrics, transport } = options;
  const series = new RpcSeriesTable(metrics, 'client', options.caller, transport);
  const unreachable = transport === 'grpc' ? new UnreachableService(options.callee, options.logger) : undefined;
  const begin = (path: string, type: GrpcType, callOptions: CallOptions & DeadlineOptions) => new ClientCall(series.start(path, type), callOptions, unreachable);
  const end = (call: ClientCall) => {
    call.release();
    recordClientCall(metrics, call.series, call.code, performance.now() - call.started);
  };
  return {
    middleware: async function* clientPolicy(call, callOptions) {
      const clientCall = begin(call.method.path, grpcTypeOf(call.requestStream, call.responseStream), callOptions);
      try {
        const result = yield* call.next(call.request, clientCall.bind());
        clientCall.checkDeadline();
        return result;
      } catch (error) {
        throw clientCall.failed(error);
      } finally {
        end(clientCall);
      }
    },
    async unary(path, callOptions, send) {
      const clientCall = begin(path, 'unary', callOptions);
      try {
        const result = await send(clientCall.bind(), clientCall.ownsMetadata);
        clientCall.checkDeadline();
        return result;
      } catch (error) {
        throw clientCall.failed(error);
      } finally {
        end(clientCall);
      }
    },
  };
}

/**
 * Over gRPC, an UNAVAILABLE that no handler answered (the channel's own: no connection, name
 * resolution failed, connection dropped) carries grpc-js text with internal addresses
 * ("No connection established. Last error: connect ECONNREFUSED 10.0.3.7:50054"). The caller is
 * told only which service is unavailable; the text goes to the log, at most once a second, so an
 * outage does not flood it. A handler's own UNAVAILABLE ("every target failed: ...") is kept: it
 * carries the `grpc-retry-pushback-ms` trailer its server's call policy sets (`mapServerError`).
 */
class UnreachableService {
  /** The errors it made: a caller can tell "no connection" from a handler's UNAVAILABLE. */
  static readonly made = new WeakSet<ClientError>();

  private readonly message: string;
  private lastLoggedAt = -Infinity;

  constructor(
    private readonly callee: string,
    private readonly logger: Logger | undefined,
  ) {
    this.message = `the ${callee} service is unavailable`;
  }

  translate(error: ClientError): ClientError {
    const now = performance.now();
    if (this.logger && now - this.lastLoggedAt >= 1_000) {
      this.lastLoggedAt = now;
      this.logger.warn({ callee: this.callee, method: error.path, detail: error.details }, this.message);
    }
    const unreachable = withCause(new ClientError(error.path, Status.UNAVAILABLE, this.message), error);
    UnreachableService.made.add(unreachable);
    return unreachable;
  }
}

/**
 * True when a call failed because the service could not be reached (no connection, connection
 * refused or dropped), not because its handler answered UNAVAILABLE: what a caller with another
 * way to serve (the gateway's agent bypass) takes as "that service is down".
 */
export function isServiceUnreachable(error: unknown): boolean {
  return error instanceof ClientError && UnreachableService.made.has(error);
}

/** One call as the client policy sees it: its deadline, and the status it ended with. */
class ClientCall {
  readonly started = performance.now();
  code = Status.OK;
  private bound: BoundDeadline | undefined;
  /** The server answered through a handler's call policy (its trailer says so). */
  private handlerAnswered = false;

  constructor(
    readonly series: RpcSeries,
    private readonly options: CallOptions & DeadlineOptions,
    private readonly unreachable: UnreachableService | undefined,
  ) {}

  get path(): string {
    return this.series.path;
  }

  /** The options for the next layer; throws DEADLINE_EXCEEDED when the budget is already spent. */
  bind(): CallOptions {
    this.bound = bindDeadline(this.path, this.options);
    if (!this.unreachable) return this.bound.options;
    const callerOnTrailer = this.bound.options.onTrailer;
    return {
      ...this.bound.options,
      onTrailer: (trailer) => {
        this.handlerAnswered = trailer.has(RETRY_PUSHBACK_KEY);
        callerOnTrailer?.(trailer);
      },
    };
  }

  get ownsMetadata(): boolean {
    return this.bound?.ownsMetadata ?? false;
  }

  /** A call that answered after its deadline passed still failed. */
  checkDeadline(): void {
    if (this.bound?.timedOut) throw deadlineExceeded(this.path);
  }

  /** What to throw for `error`: DEADLINE_EXCEEDED when the deadline aborted the call. */
  failed(error: unknown): unknown {
    let thrown = this.bound?.timedOut ? deadlineExceeded(this.path) : error;
    if (this.unreachable && !this.handlerAnswered && thrown instanceof ClientError && thrown.code === Status.UNAVAILABLE) {
      thrown = this.unreachable.translate(thrown);
    }
    this.code = statusOf(thrown);
    return thrown;
  }

  /** Ends the deadline's timer; call once, when the call is over. */
  release(): void {
    this.bound?.release();
  }
}

/**
 * Server side, outermost first: answers an undecodable request with INVALID_ARGUMENT, counts and
 * times the call (`grpc_server_*`, failures that are the server's fault logged), and gives every
 * failure a meaningful status (`mapServerError`).
 */
export function serverCallPolicy(service: string, metrics: Metrics, logger: Logger): ServerCallPolicy {
  const series = new RpcSeriesTable(metrics, 'server', service);
  return {
    middleware: async function* serverPolicy(call, context) {
      const started = performance.now();
      const calls = series.start(call.method.path, grpcTypeOf(call.requestStream, call.responseStream));
      let code = Status.OK;
      try {
        if (!call.requestStream && call.request instanceof UndecodableRequest) throw call.request.toError();
        return yield* call.next(call.request, context);
      } catch (error) {
        const mapped = mapServerError(error, call.method.path, context, logger);
        code = mapped.code;
        throw mapped;
      } finally {
        recordServerCall(metrics, logger, calls, code, performance.now() - started);
      }
    },
    async unary(path, context, handle) {
      const started = performance.now();
      const calls = series.start(path, 'unary');
      let code = Status.OK;
      try {
        return await handle();
      } catch (error) {
        const mapped = mapServerError(error, path, context, logger);
        code = mapped.code;
        throw mapped;
      } finally {
        recordServerCall(metrics, logger, calls, code, performance.now() - started);
      }
    },
  };
}

interface BoundDeadline {
  /** What the next layer is called with: the budget in the metadata, a signal the deadline aborts. */
  readonly options: CallOptions;
  /** The deadline passed before the call ended. */
  readonly timedOut: boolean;
  /** `options.metadata` is a copy made for this call. */
  readonly ownsMetadata: boolean;
  release(): void;
}

const UNBOUNDED = { timedOut: false, ownsMetadata: false, release() {} };

/** The call's deadline turned into a budget header and a timer that aborts the call when it passes. */
function bindDeadline(path: string, options: CallOptions & DeadlineOptions): BoundDeadline {
  const { deadline, signal: callerSignal, ...rest } = options;
  if (deadline === undefined) return { ...UNBOUNDED, options };
  const { metadata, remainingMs } = budgetMetadata(path, deadline, options.metadata);
  if (callerSignal?.aborted) return { ...UNBOUNDED, ownsMetadata: true, options: { ...rest, metadata, signal: callerSignal } };
  return new DeadlineTimer(rest, metadata, callerSignal, remainingMs);
}

// A class listening through `handleEvent`, not closures: one lives per call in flight.
class DeadlineTimer implements BoundDeadline {
  readonly options: CallOptions;
  readonly ownsMetadata = true;
  timedOut = false;
  private readonly controller = new AbortController();
  private readonly timer: NodeJS.Timeout;

  constructor(rest: CallOptions, metadata: Metadata, private readonly callerSignal: AbortSignal | undefined, remainingMs: number) {
    this.options = { ...rest, metadata, signal: this.controller.signal };
    callerSignal?.addEventListener('abort', this);
    this.timer = setTimeout(expire, remainingMs, this);
  }

  /** The caller aborted. */
  handleEvent(): void {
    this.controller.abort();
  }

  expire(): void {
    this.timedOut = true;
    this.controller.abort();
  }

  release(): void {
    clearTimeout(this.timer);
    this.callerSignal?.removeEventListener('abort', this);
  }
}

function expire(timer: DeadlineTimer): void {
  timer.expire();
}

function deadlineExceeded(path: string): ClientError {
  return new ClientError(path, Status.DEADLINE_EXCEEDED, 'Deadline exceeded');
}
