import { registerSecret, type UnaryServerMiddleware } from '@elexirion/kit';
import { composeServerMiddleware, type ServerMiddleware } from 'nice-grpc-common';
import { accessLogMiddleware } from '../access-log.js';
import type { GatewayDeps } from '../calls/gateway-deps.js';
import { authMiddleware, unaryAuth } from './auth-middleware.js';
import { KeyLimits } from './key-limits.js';
import { KeyRegistry } from './key-registry.js';

/** The gateway's keys area: the key store and limits, and the middleware every gateway call runs under. */
export interface GatewayKeys {
  /** Undefined when keys are off. */
  registry: KeyRegistry | undefined;
  limits: KeyLimits | undefined;
  /** Access log, then auth (when keys are on); undefined when neither is on. */
  middleware: ServerMiddleware | undefined;
  /** The same, as a plain async function for in-process unary calls. */
  unaryMiddleware: UnaryServerMiddleware | undefined;
  close(): Promise<void>;
}

export function gatewayKeys(context: GatewayDeps['context']): GatewayKeys {
  const { config, logger, nats } = context;
  const accessLog = accessLogMiddleware(logger, config.GATEWAY_ACCESS_LOG_LEVEL);
  if (config.GATEWAY_AUTH === 'off') {
    logger.warn('API keys are OFF (GATEWAY_AUTH=off): every caller may use every call without a key; set GATEWAY_AUTH=on for anything reachable by others');
    return { registry: undefined, limits: undefined, middleware: accessLog?.middleware as ServerMiddleware | undefined, unaryMiddleware: accessLog?.unary, close: async () => {} };
  }
  // Scrubbed from anything logged or answered, should it ever be quoted.
  registerSecret(config.GATEWAY_ADMIN_KEY);
  const registry = new KeyRegistry({ logger, adminKey: config.GATEWAY_ADMIN_KEY });
  const limits = new KeyLimits({ logger });
  nats.use('API keys and their limits', async (connection) => {
    await registry.attach(connection);
    await limits.attach(connection);
  });
  if (!config.GATEWAY_ADMIN_KEY) logger.info('API keys are on; GATEWAY_ADMIN_KEY is not set, so keys are created with an existing admin key');
  const auth = authMiddleware(registry, limits) as ServerMiddleware;
  const authUnary = unaryAuth(registry, limits);
  const logUnary = accessLog?.unary;
  return {
    registry,
    limits,
    middleware: accessLog ? composeServerMiddleware(accessLog.middleware as ServerMiddleware, auth) : auth,
    unaryMiddleware: logUnary ? (path, context, handle) => logUnary(path, context, (logged = context) => authUnary(path, logged, handle)) : authUnary,
    async close() {
      await limits.close();
      await registry.close();
    },
  };
}
