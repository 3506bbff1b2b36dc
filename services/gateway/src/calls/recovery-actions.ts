import { RecoveryActions, ServerError, Status, parseEnv, type ServiceContext, type UnaryServerMiddleware } from '@elexirion/kit';
import { composeServerMiddleware, type CallContext, type ServerMiddleware, type ServerMiddlewareCall } from 'nice-grpc-common';
import { z } from 'zod';
import type { GatewayConfig } from '../gateway-config.js';

/** The header (HTTP) and metadata key (gRPC) that marks a request's priority; `low` is shed first. */
export const PRIORITY_HEADER = 'x-priority';

const emergencyConfigSchema = z.object({
  /** The retry hint (seconds) a request refused in emergency mode gets. */
  GATEWAY_EMERGENCY_RETRY_AFTER_S: z.coerce.number({ error: 'expected whole seconds' }).int('expected whole seconds').min(1).max(3_600).default(30),
});

/**
 * The health monitor's recovery actions the gateway honours, read from the recovery actions
 * bucket (a watched copy: the monitor is never called on the request path, and while NATS is away
 * the last actions seen stay in force):
 * - bypass_agent: chats go around the agent (AgentBypass.skipAgent) while it is in force;
 * - emergency_mode: requests marked `x-priority: low` are refused with RESOURCE_EXHAUSTED and a
 *   `retry-after` hint; every other request passes.
 */
export class GatewayRecovery {
  readonly #actions: RecoveryActions;
  readonly #retryAfterS: number;

  constructor(context: ServiceContext<GatewayConfig>) {
    const { logger } = context;
    this.#retryAfterS = parseEnv(emergencyConfigSchema, context.env).GATEWAY_EMERGENCY_RETRY_AFTER_S;
    this.#actions = new RecoveryActions({
      nats: context.nats,
      logger,
      onChange: ({ key, value }) => {
        if (key === 'emergency_mode') {
          if (value) logger.warn({ reason: value.reason }, `emergency mode on: refusing ${PRIORITY_HEADER}: low requests`);
          else logger.info('emergency mode off: low-priority requests pass again');
        } else if (key === 'bypass_agent') {
          if (value) logger.warn({ reason: value.reason }, 'bypassing the agent (monitor recovery action)');
          else logger.info('agent bypass action reversed');
        }
      },
    });
  }

  get bypassAgent(): boolean {
    return this.#actions.bypassAgent;
  }

  /** `inner` (the keys' middleware) behind the emergency-mode check, for gRPC calls and in-process streams. */
  middleware(inner: ServerMiddleware | undefined): ServerMiddleware {
    const shed = this.#shed.bind(this);
    const check: ServerMiddleware = async function* emergency<Request, Response>(call: ServerMiddlewareCall<Request, Response>, context: CallContext) {
      shed(context);
      return yield* call.next(call.request, context);
    };
    return inner ? composeServerMiddleware(check, inner) : check;
  }

  /**
   * The same as a plain function for in-process unary calls. Undefined when `inner` has no unary
   * form (the host then runs the generator middleware, which has the check too).
   */
  unaryMiddleware(innerMiddleware: ServerMiddleware | undefined, inner: UnaryServerMiddleware | undefined): UnaryServerMiddleware | undefined {
    if (innerMiddleware && !inner) return undefined;
    return (path, context, handle) => {
      this.#shed(context);
      return inner ? inner(path, context, handle) : handle(context);
    };
  }

  close(): Promise<void> {
    return this.#actions.close();
  }

  #shed(context: CallContext): void {
    if (!this.#actions.emergencyMode) return;
    const priority = context.metadata.get(PRIORITY_HEADER);
    if (typeof priority !== 'string' || priority.trim().toLowerCase() !== 'low') return;
    context.trailer.set('retry-after', String(this.#retryAfterS));
    throw new ServerError(Status.RESOURCE_EXHAUSTED, `the system is in emergency mode: requests marked ${PRIORITY_HEADER}: low are refused; retry after ${this.#retryAfterS} s`);
  }
}
