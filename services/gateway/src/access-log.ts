import { statusNameOf, traceIds, type AccessLogLevel, type Logger, type UnaryServerMiddleware } from '@elexirion/kit';
import type { CallContext, Metadata, ServerMiddleware, ServerMiddlewareCall } from 'nice-grpc-common';
import type { Caller } from './caller.js';
import { gatewayMethodByPath } from './method-options.js';

/** The peer of an in-process call (the kit's in-process client): an HTTP route calling the gateway. */
const IN_PROCESS_PEER = 'in-process';

/** What the access log passes down: the auth middleware writes the key's name into it. */
export interface AccessLogContext {
  accessLogEntry?: { key: string };
}

/**
 * One structured line per gRPC call to the gateway, success or failure: method, status name,
 * duration, the key's name (never its secret; "-" when keys are off or no key was accepted) and
 * the trace id. It wraps the auth middleware, so refused calls are logged too. Calls the HTTP
 * routes make in-process are not logged here: the HTTP server logs each request once, with its
 * route, status and key.
 */
export function accessLogMiddleware(logger: Logger, level: AccessLogLevel): { middleware: ServerMiddleware<AccessLogContext>; unary: UnaryServerMiddleware } | undefined {
  // Decided once: no middleware at all when the logger's level drops the lines.
  if (level === 'off' || !logger.isLevelEnabled(level)) return undefined;
  const write = logger[level].bind(logger);
  const log = (path: string, started: number, status: string, key: string) => {
    const method = gatewayMethodByPath.get(path)?.name ?? path;
    const { traceId } = traceIds();
    write({ access: 'grpc', method, status, durationMs: Math.round((performance.now() - started) * 100) / 100, key, ...(traceId ? { traceId } : {}) }, `${method} ${status}`);
  };
  return {
    middleware: async function* accessLog<Request, Response>(call: ServerMiddlewareCall<Request, Response, AccessLogContext>, context: CallContext) {
      if (context.peer === IN_PROCESS_PEER) return yield* call.next(call.request, context);
      const started = performance.now();
      const entry = { key: '-' };
      let status = 'OK';
      try {
        return yield* call.next(call.request, extendContext(context, { accessLogEntry: entry }));
      } catch (error) {
        status = statusNameOf(error);
        throw error;
      } finally {
        log(call.method.path, started, status, entry.key);
      }
    },
    // The same for in-process unary calls (the HTTP routes'), as a plain async function.
    async unary(path, context, handle) {
      if (context.peer === IN_PROCESS_PEER) return handle(context);
      const started = performance.now();
      const entry = { key: '-' };
      let status = 'OK';
      try {
        return await handle(extendContext(context, { accessLogEntry: entry }));
      } catch (error) {
        status = statusNameOf(error);
        throw error;
      } finally {
        log(path, started, status, entry.key);
      }
    },
  };
}

/**
 * The context with `extra` (the caller, the access-log entry) added, as a small class whose
 * `header` and `trailer` read the original's on use: the in-process call context makes them on
 * first use, and a copy of its fields would make both on every call (most calls use neither).
 */
export function extendContext<Extra extends ExtendedFields>(context: CallContext, extra: Extra): CallContext & Extra {
  return new ExtendedCallContext(context, extra) as unknown as CallContext & Extra;
}

/** What the gateway's middleware adds to a call's context. */
interface ExtendedFields {
  caller?: Caller;
  accessLogEntry?: { key: string };
}

class ExtendedCallContext implements CallContext, ExtendedFields {
  readonly metadata: Metadata;
  readonly peer: string;
  readonly signal: AbortSignal;
  readonly caller: Caller | undefined;
  readonly accessLogEntry: { key: string } | undefined;
  readonly #base: CallContext;

  constructor(base: CallContext & ExtendedFields, extra: ExtendedFields) {
    this.#base = base;
    this.metadata = base.metadata;
    this.peer = base.peer;
    this.signal = base.signal;
    // What an outer middleware added stays (the access log's entry under the auth's caller).
    this.caller = extra.caller ?? base.caller;
    this.accessLogEntry = extra.accessLogEntry ?? base.accessLogEntry;
  }

  get header(): Metadata {
    return this.#base.header;
  }

  get trailer(): Metadata {
    return this.#base.trailer;
  }

  sendHeader(): void {
    this.#base.sendHeader();
  }
}
