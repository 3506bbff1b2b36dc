import { ServerError, Status, type UnaryServerMiddleware } from '@elexirion/kit';
import type { CallContext, ServerMiddleware, ServerMiddlewareCall } from 'nice-grpc-common';
import { extendContext, type AccessLogContext } from '../access-log.js';
import { hasScope, type CallerContext } from '../caller.js';
import { gatewayMethodByPath, type GatewayMethodName } from '../method-options.js';
import { bearerSecret } from './api-key-secret.js';
import type { KeyRegistry } from './key-registry.js';
import { KeyLimits, type CallUsage } from './key-limits.js';

/** A call auth let through: the handler's context (with `caller`), and the key whose usage it adds to, if it spends. */
interface Authorized {
  context: CallContext & CallerContext;
  spendsFor: string | undefined;
}

/**
 * The gateway's auth: the call's `authorization: Bearer <key>` (HTTP routes pass the request's
 * header as metadata) must be a valid key (else UNAUTHENTICATED) holding the call's required
 * scope (else PERMISSION_DENIED), within its limits (else RESOURCE_EXHAUSTED). The handler gets
 * the key as `caller`; the usage a call reports (its response, or its stream's final message)
 * is added to the key's counters.
 */
async function authorize(registry: KeyRegistry, limits: KeyLimits, path: string, context: CallContext & AccessLogContext): Promise<Authorized> {
  const method = gatewayMethodByPath.get(path);
  if (!method) throw new ServerError(Status.UNIMPLEMENTED, `${path} is not a Gateway call`);
  const { caller, key } = await registry.authenticate(bearerSecret(context.metadata.get('authorization')));
  if (context.accessLogEntry) context.accessLogEntry.key = caller.name;
  if (!hasScope(caller, method.requiredScope)) {
    throw new ServerError(Status.PERMISSION_DENIED, `API key "${caller.name}" lacks the "${method.requiredScope}" scope ${method.name} needs`);
  }
  if (key !== undefined && KeyLimits.limited(key.limits)) await limits.admit(key, context.trailer);
  return { context: extendContext(context, { caller }), spendsFor: key && SPENDING_CALLS.has(method.key) ? key.keyId : undefined };
}

/** Auth as nice-grpc server middleware: gRPC calls and in-process streams. */
export function authMiddleware(registry: KeyRegistry, limits: KeyLimits): ServerMiddleware<CallerContext, AccessLogContext> {
  return async function* auth<Request, Response>(call: ServerMiddlewareCall<Request, Response, CallerContext>, context: CallContext & AccessLogContext) {
    const authorized = await authorize(registry, limits, call.method.path, context);
    const keyId = authorized.spendsFor;
    if (keyId === undefined) return yield* call.next(call.request, authorized.context);
    if (!call.responseStream) {
      const response = (yield* call.next(call.request, authorized.context)) as Response;
      limits.record(keyId, usageIn(response));
      return response;
    }
    for await (const message of call.next(call.request, authorized.context)) {
      const usage = usageIn(message);
      if (usage.tokens > 0 || usage.costUsd > 0) limits.record(keyId, usage);
      yield message;
    }
    return;
  };
}

/** The same auth as a plain async function, for in-process unary calls (the HTTP routes'). */
export function unaryAuth(registry: KeyRegistry, limits: KeyLimits): UnaryServerMiddleware {
  return async (path, context, handle) => {
    const authorized = await authorize(registry, limits, path, context);
    const response = await handle(authorized.context);
    if (authorized.spendsFor !== undefined) limits.record(authorized.spendsFor, usageIn(response));
    return response;
  };
}

/**
 * The calls whose answer reports what they spent (their usage, or their stream's `done`). A job's
 * spend is not counted against its key: it runs after SubmitJob answered, and WatchJob may be
 * watched many times.
 */
const SPENDING_CALLS: ReadonlySet<string> = new Set<GatewayMethodName>(['chat', 'chatStream', 'executePipeline', 'executePipelineStream', 'complete', 'completeStream']);

interface HasUsage {
  usage?: { inputTokens?: number; outputTokens?: number; costUsd?: number };
}

/** A response's tokens and cost: its own `usage`, or the final event's (`done`) of a stream. */
export function usageIn(message: unknown): CallUsage {
  const holder = message as (HasUsage & { done?: HasUsage }) | undefined;
  const usage = holder?.usage ?? holder?.done?.usage;
  if (!usage) return { tokens: 0, costUsd: 0 };
  return { tokens: (usage.inputTokens ?? 0) + (usage.outputTokens ?? 0), costUsd: usage.costUsd ?? 0 };
}
