import { RECOVERY_ACTIONS_BUCKET, KvRevisionConflictError, KvStore, KvView, ServerError, Status, proto, type RecoveryActionRecord } from '@elexirion/kit';
import type { MonitorArea, MonitorContext } from '../monitor-area.js';
import { readAgentRefusals } from './agent-refusals-reader.js';
import { readBreakerEvents } from './breaker-reader.js';
import { AGENT_REFUSALS_KEY, HEALTH_BUCKET, SYSTEM_KEY, type HealthBucketRecord, type SystemHealthRecord } from './health-bucket.js';
import { HealthObserver } from './health-observer.js';
import { evaluateHealth, type BreakerObservation, type HealthObservations, type HealthVerdict } from './health-rules.js';
import { applyActions } from './recovery.js';

const STATUS_OF: Record<SystemHealthRecord['status'], proto.HealthStatus> = {
  healthy: proto.HealthStatus.HEALTH_STATUS_HEALTHY,
  degraded: proto.HealthStatus.HEALTH_STATUS_DEGRADED,
  critical: proto.HealthStatus.HEALTH_STATUS_CRITICAL,
};

/** How long a call made just after start waits for the first evaluation before answering UNAVAILABLE. */
const FIRST_HEALTH_WAIT_MS = 10_000;

/** A record whose only change is the consumer lag is written again at most this often (ticks). */
const LAG_REFRESH_TICKS = 6;

/**
 * System health (healthy / degraded / critical), its watch stream, and the recovery actions.
 * Every replica observes (services' grpc.health.v1, breakers from the health bucket, the metrics
 * consumer's lag) and evaluates the rules (health-rules.ts) on an interval; the health record and
 * the actions live in JetStream KV written with compare-and-set, so when replicas agree one of
 * them applies each change, and the calls answer from watched copies of both buckets.
 */
/** What the health takes from the other areas: the metrics consumer's lag, the alerts firing at critical severity. */
export interface HealthSources {
  consumerLag(): number | undefined;
  criticalAlerts(): HealthObservations['criticalAlerts'];
}

export async function healthArea(context: MonitorContext, sources: HealthSources): Promise<MonitorArea<'getSystemHealth' | 'watchSystemHealth'>> {
  const { config, logger, nats, host } = context;
  const listeners = new Set<() => void>();
  const changed = () => {
    for (const listener of listeners) listener();
  };
  const healthView = new KvView<HealthBucketRecord>({ ...HEALTH_BUCKET, logger, label: 'health', onChange: changed });
  const actionsView = new KvView<RecoveryActionRecord>({ ...RECOVERY_ACTIONS_BUCKET, logger, label: 'recovery action', onChange: changed });
  let stores: { health: KvStore<HealthBucketRecord>; actions: KvStore<RecoveryActionRecord> } | undefined;
  const observer = new HealthObserver(context, () => sources.consumerLag());

  nats.use('health and recovery actions', async (connection) => {
    const health = await KvStore.open(connection, HEALTH_BUCKET);
    const actions = await KvStore.open(connection, RECOVERY_ACTIONS_BUCKET);
    await healthView.attach(connection);
    await actionsView.attach(connection);
    stores = { health, actions };
  });
  // Uses of their own: health is evaluated (services, lag) while the events stream does not exist yet.
  nats.use('provider breaker events', async (connection, signal) => {
    await readBreakerEvents(connection, await KvStore.open(connection, HEALTH_BUCKET), { stream: host.TELEMETRY_STREAM, logger, signal });
  });
  nats.use('agent refusals', async (connection, signal) => {
    await readAgentRefusals(connection, await KvStore.open(connection, HEALTH_BUCKET), { stream: host.TELEMETRY_STREAM, windowMs: config.MONITOR_AGENT_REFUSALS_WINDOW_MS, logger, signal });
  });

  let ticks = 0;
  let running = false;
  let lastFailure = '';
  async function tick(): Promise<void> {
    if (running || !stores || context.draining.aborted) return;
    running = true;
    try {
      const now = Date.now();
      const stored = healthView.get(SYSTEM_KEY);
      const observed = await observer.observe(breakersOf(healthView), agentRefusalsOf(healthView), sources.criticalAlerts(), now, stored?.kind === 'system' ? stored.services : {});
      const verdict = evaluateHealth(observed, config);
      await writeRecord(stores.health, verdict, observed.services, observed.consumerLag ?? 0, now);
      await applyActions(stores.actions, actionsView, verdict.actions, { events: context.events, logger, now });
      lastFailure = '';
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      // Logged once per distinct failure (NATS away fails every tick the same way).
      if (message !== lastFailure) logger.warn({ err: error }, 'health evaluation failed; keeping the last health and actions');
      lastFailure = message;
    } finally {
      running = false;
      ticks += 1;
    }
  }

  async function writeRecord(store: KvStore<HealthBucketRecord>, verdict: HealthVerdict, services: Record<string, SystemHealthRecord['services'][string]>, consumerLag: number, now: number): Promise<void> {
    const current = healthView.get(SYSTEM_KEY);
    const previous = current?.kind === 'system' ? current : undefined;
    const record: SystemHealthRecord = { kind: 'system', status: verdict.status, causes: verdict.causes, services, consumerLag, updatedAt: new Date(now).toISOString() };
    if (previous && sameHealth(previous, record) && (previous.consumerLag === consumerLag || ticks % LAG_REFRESH_TICKS !== 0)) return;
    const revision = healthView.revision(SYSTEM_KEY);
    try {
      if (revision === undefined) await store.create(SYSTEM_KEY, record);
      else await store.update(SYSTEM_KEY, record, revision);
    } catch (error) {
      // Another replica wrote first: its record stands, this one reads it from the view.
      if (error instanceof KvRevisionConflictError) return;
      throw error;
    }
    if (!previous || previous.status !== record.status) {
      logger[record.status === 'healthy' ? 'info' : 'warn']({ status: record.status, causes: record.causes, was: previous?.status }, `system health ${record.status}`);
    }
  }

  const interval = setInterval(() => void tick(), config.MONITOR_HEALTH_INTERVAL_MS);
  interval.unref();
  // The first evaluation soon after start, not a whole interval later.
  const first = setTimeout(() => void tick(), 200);
  first.unref();

  function current(): proto.SystemHealth {
    const record = healthView.get(SYSTEM_KEY);
    if (record?.kind !== 'system') {
      throw new ServerError(Status.UNAVAILABLE, healthView.attached ? 'system health has not been computed yet: retry in a few seconds' : 'the health bucket is not reachable yet (NATS): retry in a few seconds');
    }
    return {
      status: STATUS_OF[record.status],
      causes: record.causes,
      // In key order (action, then target), so equal sets of actions read the same.
      actions: actionsView
        .entries()
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([, action]) => ({ action: action.action, target: action.target, reason: action.reason, since: new Date(action.since) })),
      services: record.services,
      consumerLag: record.consumerLag,
      updatedAt: new Date(record.updatedAt),
    };
  }

  /**
   * The current health; just after start, once the first evaluation is in (a start-up check of
   * the services takes up to MONITOR_HEALTH_CHECK_TIMEOUT_MS), rather than an error.
   */
  async function firstHealth(signal: AbortSignal): Promise<proto.SystemHealth> {
    if (healthView.get(SYSTEM_KEY)?.kind === 'system') return current();
    const waited = AbortSignal.any([signal, AbortSignal.timeout(FIRST_HEALTH_WAIT_MS)]);
    await new Promise<void>((resolve) => {
      const done = () => {
        listeners.delete(check);
        waited.removeEventListener('abort', done);
        resolve();
      };
      const check = () => {
        if (healthView.get(SYSTEM_KEY)?.kind === 'system') done();
      };
      listeners.add(check);
      waited.addEventListener('abort', done);
      check();
    });
    return current();
  }

  return {
    implementation: {
      getSystemHealth: async (_request, callContext) => ({ health: await firstHealth(callContext.signal) }),
      watchSystemHealth: async function* (_request, callContext) {
        let wake: (() => void) | undefined;
        let pending = true;
        const listener = () => {
          pending = true;
          wake?.();
        };
        const stop = () => wake?.();
        listeners.add(listener);
        context.draining.addEventListener('abort', stop);
        callContext.signal.addEventListener('abort', stop);
        try {
          let last = '';
          while (!context.draining.aborted && !callContext.signal.aborted) {
            if (!pending) {
              await new Promise<void>((resolve) => {
                wake = resolve;
              });
              wake = undefined;
              continue;
            }
            pending = false;
            let health: proto.SystemHealth;
            try {
              health = current();
            } catch (error) {
              // Nothing computed yet: the first message is the first health there is, unless the view cannot be reached at all.
              if (last === '' && !healthView.attached) throw error;
              continue;
            }
            const { updatedAt: _updatedAt, ...compared } = health;
            const text = JSON.stringify(compared);
            if (text === last) continue;
            last = text;
            yield { health };
          }
        } finally {
          listeners.delete(listener);
          context.draining.removeEventListener('abort', stop);
          callContext.signal.removeEventListener('abort', stop);
        }
      },
    },
    close: async () => {
      clearInterval(interval);
      clearTimeout(first);
      observer.close();
      await Promise.allSettled([healthView.close(), actionsView.close()]);
    },
  };
}

function breakersOf(view: KvView<HealthBucketRecord>): Record<string, BreakerObservation> {
  const breakers: Record<string, BreakerObservation> = {};
  for (const [, record] of view.entries()) {
    if (record.kind === 'breaker') {
      breakers[record.provider] = { state: record.state, openSince: record.openSince ? Date.parse(record.openSince) : undefined, reportedAt: Date.parse(record.changedAt) };
    }
  }
  return breakers;
}

function agentRefusalsOf(view: KvView<HealthBucketRecord>): number[] {
  const record = view.get(AGENT_REFUSALS_KEY);
  return record?.kind === 'agent_refusals' ? record.times.map((time) => Date.parse(time)) : [];
}

function sameHealth(a: SystemHealthRecord, b: SystemHealthRecord): boolean {
  return a.status === b.status && JSON.stringify(a.causes) === JSON.stringify(b.causes) && JSON.stringify(a.services) === JSON.stringify(b.services);
}
