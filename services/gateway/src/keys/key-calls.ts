import { ElexirionError, Status, proto } from '@elexirion/kit';
import type { CallContext } from 'nice-grpc-common';
import { callerOf } from '../caller.js';
import type { GatewayDeps } from '../calls/gateway-deps.js';
import type { GatewayKeys } from './gateway-keys.js';
import type { KeyLimits } from './key-limits.js';
import type { KeyRegistry, StoredKey } from './key-registry.js';

/** CreateKey, ListKeys, RevokeKey: API keys managed at runtime (admin scope); GetCaller (any key). */
export function keyCalls(_deps: GatewayDeps, keys: GatewayKeys): Pick<proto.GatewayServiceImplementation, 'createKey' | 'listKeys' | 'revokeKey' | 'getCaller'> {
  const enabled = (): { registry: KeyRegistry; limits: KeyLimits } => {
    if (!keys.registry || !keys.limits) throw new ElexirionError(Status.FAILED_PRECONDITION, 'API keys are off on this gateway (GATEWAY_AUTH=off): there are no keys to manage');
    return { registry: keys.registry, limits: keys.limits };
  };
  return {
    async getCaller(_request, context: CallContext) {
      const caller = callerOf(context);
      if (!keys.registry || !keys.limits || !caller) return { keysEnabled: false, key: undefined, name: '', scopes: [], admin: false };
      const stored = caller.keyId ? keys.registry.stored(caller.keyId) : undefined;
      return { keysEnabled: true, key: stored ? toApiKey(stored, keys.limits) : undefined, name: caller.name, scopes: [...caller.scopes], admin: caller.admin };
    },
    async createKey(request, context: CallContext) {
      const { registry, limits } = enabled();
      const { key, secret } = await registry.create(request, callerOf(context)?.name ?? 'unknown');
      return { key: toApiKey(key, limits), secret };
    },
    async listKeys(request) {
      const { registry, limits } = enabled();
      return { keys: registry.list(request.includeInactive).map((key) => toApiKey(key, limits)) };
    },
    async revokeKey(request) {
      const { registry, limits } = enabled();
      return { key: toApiKey(await registry.revoke(request.keyId), limits) };
    },
  };
}

function toApiKey(key: StoredKey, limits: KeyLimits): proto.ApiKey {
  const usage = limits.usage(key.keyId);
  return {
    keyId: key.keyId,
    name: key.name,
    scopes: [...key.scopes],
    createdAt: new Date(key.createdAt),
    expiresAt: key.expiresAt ? new Date(key.expiresAt) : undefined,
    revokedAt: key.revokedAt ? new Date(key.revokedAt) : undefined,
    createdBy: key.createdBy,
    limits: { ...key.limits },
    usage: {
      requestsThisMinute: usage.requests,
      tokensThisMinute: usage.tokens,
      spentTodayUsd: usage.spentDay,
      spentThisMonthUsd: usage.spentMonth,
    },
  };
}
