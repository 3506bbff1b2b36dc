/**
 * The health monitor's recovery actions as the services read them: one KV bucket the monitor
 * writes (compare-and-set, so one replica applies a change) and the provider and gateway watch
 * with a KvView. Services never call the monitor for them: it is not on the request path, and
 * while the bucket is unreachable a view keeps the last actions it saw.
 */
import { z } from 'zod';
import type { ServiceNats } from '../host/shared-nats-connection.js';
import type { KvBucketSpec } from './kv-store.js';
import { KvView, type KvViewChange, type KvViewLogger } from './kv-view.js';

export const RECOVERY_ACTION_NAMES = ['route_around_provider', 'bypass_agent', 'emergency_mode'] as const;
export type RecoveryActionName = (typeof RECOVERY_ACTION_NAMES)[number];

export const recoveryActionSchema = z.object({
  action: z.enum(RECOVERY_ACTION_NAMES),
  /** A provider's name for route_around_provider; empty for the whole system. */
  target: z.string().max(64).regex(/^[A-Za-z0-9_-]*$/),
  reason: z.string().max(1_000),
  /** When it was applied (ISO 8601). */
  since: z.iso.datetime(),
});
export type RecoveryActionRecord = z.infer<typeof recoveryActionSchema>;

/** The key of an action: `<action>` or `<action>.<target>`. */
export function recoveryActionKey(action: RecoveryActionName, target = ''): string {
  return target ? `${action}.${target}` : action;
}

export const RECOVERY_ACTIONS_BUCKET: KvBucketSpec<RecoveryActionRecord> = {
  bucket: 'elexirion_recovery_actions',
  schema: recoveryActionSchema,
  key: { pattern: /^[a-z_]+(\.[A-Za-z0-9_-]{1,64})?$/, description: '<action> or <action>.<target>', name: 'recovery action' },
  check: (key, value) => (key === recoveryActionKey(value.action, value.target) ? undefined : `the key must be ${recoveryActionKey(value.action, value.target)}`),
  description: 'Recovery actions in force, written by the monitor, read by the provider and gateway',
};

/**
 * A service's watched copy of the recovery actions in force, answered from memory. Attaches on
 * the process's NATS connection (again after it is replaced); until then no action is in force.
 */
export class RecoveryActions {
  readonly #view: KvView<RecoveryActionRecord>;

  constructor(options: { nats: ServiceNats; logger: KvViewLogger; onChange?: (change: KvViewChange<RecoveryActionRecord>) => void }) {
    this.#view = new KvView({ ...RECOVERY_ACTIONS_BUCKET, logger: options.logger, label: 'recovery action', ...(options.onChange ? { onChange: options.onChange } : {}) });
    options.nats.use('recovery actions', (connection) => this.#view.attach(connection));
  }

  /** The action in force, if it is. */
  get(action: RecoveryActionName, target = ''): RecoveryActionRecord | undefined {
    return this.#view.get(recoveryActionKey(action, target));
  }

  /** Whether the monitor has taken `provider` out of the alias chains. */
  routedAround(provider: string): boolean {
    return this.get('route_around_provider', provider) !== undefined;
  }

  get bypassAgent(): boolean {
    return this.get('bypass_agent') !== undefined;
  }

  get emergencyMode(): boolean {
    return this.get('emergency_mode') !== undefined;
  }

  close(): Promise<void> {
    return this.#view.close();
  }
}
