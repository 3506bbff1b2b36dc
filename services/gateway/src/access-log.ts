import { statusNameOf, traceIds, type AccessLogLevel, type Logger, type UnaryServerMiddleware } from '@elexirion/kit';
import type { CallContext, ServerMiddleware, ServerMiddlewareCall } from 'nice-grpc-common';
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
  if (level === 'off') return undefined;
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
 * The context with `extra` added. Its fields are copied, not spread: the in-process call context
 * makes `header` and `trailer` on first use through getters, which a spread would drop.
 */
export function extendContext<Extra extends object>(context: CallContext, extra: Extra): CallContext & Extra {
  return {
    ...(context as object),
    metadata: context.metadata,
    peer: context.peer,
    signal: context.signal,
    header: context.header,
    trailer: context.trailer,
    sendHeader: () => context.sendHeader(),
    ...extra,
  } as CallContext & Extra;
}
