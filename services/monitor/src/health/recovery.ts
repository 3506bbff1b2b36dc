import { KvRevisionConflictError, recoveryActionKey, type KvStore, type KvView, type Logger, type RecoveryActionRecord, type ServiceEvents } from '@elexirion/kit';
import type { DesiredAction } from './health-rules.js';

/**
 * Brings the actions in force (the recovery actions bucket) to what the rules want: applies the
 * missing ones (create: only if absent) and reverses the others (delete at the revision seen).
 * Both are compare-and-set, so when several replicas decide the same change one of them makes
 * it, and only that one logs it and publishes its "recovery" event.
 */
export async function applyActions(
  store: KvStore<RecoveryActionRecord>,
  inForce: KvView<RecoveryActionRecord>,
  desired: DesiredAction[],
  options: { events: ServiceEvents; logger: Logger; now: number },
): Promise<void> {
  const { events, logger, now } = options;
  const wanted = new Map(desired.map((action) => [recoveryActionKey(action.action, action.target), action]));
  for (const [key, action] of wanted) {
    if (inForce.get(key)) continue;
    const record: RecoveryActionRecord = { action: action.action, target: action.target, reason: action.reason, since: new Date(now).toISOString() };
    try {
      await store.create(key, record);
    } catch (error) {
      if (error instanceof KvRevisionConflictError) continue; // another replica applied it
      throw error;
    }
    logger.warn({ action: action.action, target: action.target, reason: action.reason }, `recovery action applied: ${key}`);
    events.publish('recovery', { monitorRecovery: { action: action.action, target: action.target, reason: action.reason, applied: true } });
  }
  for (const [key, action] of inForce.entries()) {
    if (wanted.has(key)) continue;
    const revision = inForce.revision(key);
    if (revision === undefined) continue;
    try {
      await store.delete(key, revision);
    } catch (error) {
      if (error instanceof KvRevisionConflictError) continue; // another replica reversed or renewed it
      throw error;
    }
    const reason = `its condition no longer holds (applied since ${action.since} for: ${action.reason})`;
    logger.info({ action: action.action, target: action.target, reason }, `recovery action reversed: ${key}`);
    events.publish('recovery', { monitorRecovery: { action: action.action, target: action.target, reason, applied: false } });
  }
}
