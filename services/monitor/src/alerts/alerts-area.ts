import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { randomUUID } from 'node:crypto';
import { ConfigError, FileWatcher, KvView, ServerError, Status, proto, registerSecret, type Problem } from '@elexirion/kit';
import { Counter } from 'prom-client';
import type { MonitorArea, MonitorContext } from '../monitor-area.js';
import { evaluateRule, judge, type AlertSources, type RuleValue } from './alert-evaluator.js';
import { deliver } from './alert-notifier.js';
import { compileAlertRules, formatProblem, rulesRevision, type AlertRule, type AlertRules } from './alert-rules.js';
import { ALERTS_BUCKET_SPEC, AlertStore, CLAIM_TIMEOUT_MS, alertKey, newNotification, type AlertRecord } from './alert-store.js';

const STATE_ORDER: Record<AlertRecord['state'], number> = { firing: 0, pending: 1, ok: 2 };
const STATE_PROTO: Record<AlertRecord['state'], proto.AlertState> = {
  ok: proto.AlertState.ALERT_STATE_OK,
  pending: proto.AlertState.ALERT_STATE_PENDING,
  firing: proto.AlertState.ALERT_STATE_FIRING,
};

function loadRules(path: string): AlertRules {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError([`MONITOR_ALERT_RULES: cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? 'error'})`]);
  }
  const compiled = compileAlertRules(basename(path), text);
  if ('problems' in compiled) throw new ConfigError(compiled.problems.map((problem) => `MONITOR_ALERT_RULES: ${formatProblem(problem)}`));
  return compiled.rules;
}

/**
 * Alerts: the rules file (reloaded when it changes; a bad version is refused, each problem at
 * file:line:column, and the rules in use stay), every rule evaluated every MONITOR_ALERT_EVAL_MS
 * by every replica, each (rule, group)'s state kept in KV (alert-store.ts: one writer per change,
 * one notification per change), notifications on NATS and to the rules file's webhooks.
 */
export interface AlertsArea extends MonitorArea<'listAlerts'> {
  /** The alerts firing at critical severity now (the health takes them as a cause). */
  criticalAlerts(): { rule: string; labels: Record<string, string> }[];
  /**
   * A rule another area decides (not in the rules file): its alerts listed by ListAlerts with the
   * file's (its name is not among the file's `rules`), never resolved nor removed by the file's
   * evaluation rounds, its states kept and its
   * notifications delivered like theirs (NATS and the webhooks).
   */
  areaRule(name: string): AreaRule;
}

/** A state change another area decided: written with compare-and-set, its notification delivered. */
export interface AreaAlertChange {
  labels: Record<string, string>;
  state: 'firing' | 'ok';
  severity: 'warning' | 'critical' | '';
  value: number | null;
  threshold: number;
  summary: string;
  /** The notification this change sends: firing or resolved. */
  transition: 'firing' | 'resolved';
}

export interface AreaRule {
  /** Writes the change as the rule's group's state and delivers its notification (by this replica, or another if this one stops first). */
  raise(change: AreaAlertChange): Promise<void>;
}

export async function alertsArea(context: MonitorContext, consumerLag: () => number | undefined): Promise<AlertsArea> {
  const { config, logger: areaLogger, nats, clients, metrics } = context;
  const logger = areaLogger.child({ area: 'alerts' });
  if (config.MONITOR_ALERT_WEBHOOK_SECRET) registerSecret(config.MONITOR_ALERT_WEBHOOK_SECRET);
  let rules = loadRules(config.MONITOR_ALERT_RULES);
  logger.info({ file: config.MONITOR_ALERT_RULES, revision: rules.revision, rules: rules.rules.length, webhooks: rules.webhooks.length }, `alert rules loaded: ${rules.rules.length}`);
  if (rules.webhooks.length > 0 && !config.MONITOR_ALERT_WEBHOOK_SECRET) logger.warn('alert webhooks are not signed: set MONITOR_ALERT_WEBHOOK_SECRET so receivers can check x-elexirion-signature');
  const replica = randomUUID();

  const notifications = new Counter({
    name: 'elexirion_monitor_alert_notifications_total',
    help: 'Alert notifications delivered by this replica (firing or resolved).',
    labelNames: ['transition'] as const,
    registers: [metrics.registry],
  });
  const rejectedReloads = new Counter({ name: 'elexirion_monitor_alert_rules_rejected_total', help: 'Reloads of the alert rules file refused (the rules in use were kept).', registers: [metrics.registry] });

  let rejectedRevision = '';
  const watcher = new FileWatcher(config.MONITOR_ALERT_RULES, {
    label: 'alert rules',
    pollMs: config.MONITOR_ALERT_RULES_POLL_MS,
    debounceMs: 100,
    logger,
    async onChange() {
      let text: string;
      try {
        text = await readFile(config.MONITOR_ALERT_RULES, 'utf8');
      } catch (error) {
        logger.error({ file: config.MONITOR_ALERT_RULES, code: (error as NodeJS.ErrnoException).code }, 'alert rules file cannot be read: keeping the rules in use');
        return;
      }
      const revision = rulesRevision(text);
      if (revision === rules.revision || revision === rejectedRevision) return;
      const compiled = compileAlertRules(basename(config.MONITOR_ALERT_RULES), text);
      if ('problems' in compiled) {
        rejectedRevision = revision;
        rejectedReloads.inc();
        logger.error({ file: config.MONITOR_ALERT_RULES, revision, problems: compiled.problems.map((problem: Problem) => formatProblem(problem)), inUse: rules.revision }, 'alert rules rejected: keeping the rules in use');
        return;
      }
      rejectedRevision = '';
      rules = compiled.rules;
      logger.info({ file: config.MONITOR_ALERT_RULES, revision: rules.revision, rules: rules.rules.length }, `alert rules reloaded: ${rules.rules.length}`);
    },
  });
  watcher.start();

  let store: AlertStore | undefined;
  let connection: Parameters<Parameters<typeof nats.use>[1]>[0] | undefined;
  const states = new KvView<AlertRecord>({ ...ALERTS_BUCKET_SPEC, logger, label: 'alert state' });
  nats.use('alert states', async (attached) => {
    store = await AlertStore.open(attached, states);
    connection = attached;
  });

  /** Rules of other areas (e.g. prompt_rollout), which the rounds leave alone. */
  const areaRules = new Set<string>();

  // The monitor's own calls, taken when a round runs: by then this service is registered in its
  // process, so the client is the in-process one (made now, it would be a gRPC client to a port
  // nothing listens on in the all-in-one process).
  const sources: AlertSources = {
    getMetrics: (request) => clients.get('monitor').getMetrics(request),
    getPromptVersionStats: (request) => clients.get('monitor').getPromptVersionStats(request),
    consumerLag: async () => consumerLag(),
  };

  const publish = async (subject: string, body: string) => {
    if (!connection) throw new Error('not connected to NATS');
    connection.publish(subject, body);
    await connection.flush();
  };

  /** One round: every rule's value, the state changes written, the notifications due delivered. */
  async function evaluate(now = new Date()): Promise<void> {
    const alertStore = store;
    if (!alertStore) return;
    const current = rules;
    const records = new Map(alertStore.all().map((entry) => [entry.key, entry]));
    const seen = new Set<string>();
    for (const rule of current.rules) {
      let values: RuleValue[];
      try {
        values = await evaluateRule(rule, sources, now);
      } catch (error) {
        // A source that cannot answer (the monitor's own area not ready, NATS away): states hold.
        logger.warn({ err: error, rule: rule.name }, 'alert rule could not be evaluated this round; its states are kept');
        for (const [key, entry] of records) if (entry.value.rule === rule.name) seen.add(key);
        continue;
      }
      const byKey = new Map(values.map((value) => [alertKey(rule.name, value.labels), value]));
      // Groups seen before and absent now have no data this round.
      for (const [key, entry] of records) if (entry.value.rule === rule.name && !byKey.has(key)) byKey.set(key, { labels: entry.value.labels, value: undefined });
      for (const [key, value] of byKey) {
        seen.add(key);
        const entry = records.get(key);
        const next = step(rule, value, entry?.value, now);
        if (next) await alertStore.change(key, next, entry?.revision);
      }
    }
    // Rules gone from the file: a firing alert of theirs is resolved, then its state removed.
    for (const [key, entry] of records) {
      if (seen.has(key) || areaRules.has(entry.value.rule) || current.rules.some((rule) => rule.name === entry.value.rule)) continue;
      if (entry.value.state === 'firing' && !entry.value.notification?.deliveredAt) continue; // its firing goes out first
      if (entry.value.state === 'firing') {
        await alertStore.change(key, { ...entry.value, state: 'ok', severity: '', since: now.toISOString(), summary: `${entry.value.rule}: rule removed`, notification: newNotification('resolved', now) }, entry.revision);
      } else if (!entry.value.notification || entry.value.notification.deliveredAt) {
        await alertStore.delete(key);
      }
    }
    await deliverDue(alertStore, current.webhooks, now);
  }

  /** Claims each notification not delivered (nor claimed by a live replica), delivers it, marks it. */
  async function deliverDue(alertStore: AlertStore, webhooks: readonly string[], now: Date): Promise<void> {
    for (const entry of alertStore.all()) {
      const notification = entry.value.notification;
      if (!notification || notification.deliveredAt) continue;
      if (notification.claimedAt && now.getTime() - Date.parse(notification.claimedAt) < CLAIM_TIMEOUT_MS) continue;
      const claimed: AlertRecord = { ...entry.value, notification: { ...notification, claimedBy: replica, claimedAt: now.toISOString() } };
      if (!(await alertStore.change(entry.key, claimed, entry.revision))) continue; // another replica has it
      try {
        await deliver(claimed, webhooks, { logger, publish, secret: config.MONITOR_ALERT_WEBHOOK_SECRET });
        notifications.inc({ transition: notification.transition });
        logger.info({ rule: claimed.rule, labels: claimed.labels, transition: notification.transition, severity: claimed.severity, value: claimed.value, deliveryId: notification.deliveryId }, `alert ${claimed.rule} ${notification.transition}`);
      } catch (error) {
        // Not marked: the claim expires and a replica tries again (same delivery id).
        logger.warn({ err: error, rule: claimed.rule, deliveryId: notification.deliveryId }, 'alert notification could not be published; it will be tried again');
        continue;
      }
      const marked = alertStore.get(entry.key);
      if (marked && marked.value.notification?.deliveryId === notification.deliveryId) {
        await alertStore.change(entry.key, { ...marked.value, notification: { ...marked.value.notification, deliveredAt: new Date().toISOString() } }, marked.revision);
      }
    }
  }

  let stopped = false;
  let round: Promise<void> = Promise.resolve();
  const timer = setInterval(() => {
    round = round.then(() => (stopped ? undefined : evaluate())).catch((error: unknown) => logger.warn({ err: error }, 'alert evaluation round failed'));
  }, config.MONITOR_ALERT_EVAL_MS);
  timer.unref();

  return {
    implementation: {
      async listAlerts(request) {
        if (!store) throw new ServerError(Status.UNAVAILABLE, 'alert states cannot be read now: the monitor is not attached to NATS');
        const wanted = new Set<proto.AlertState>(request.states.filter((state) => state !== proto.AlertState.ALERT_STATE_UNSPECIFIED));
        const alerts = store
          .all()
          .map(({ value }) => value)
          .filter((record) => wanted.size === 0 || wanted.has(STATE_PROTO[record.state]))
          .sort((a, b) => STATE_ORDER[a.state] - STATE_ORDER[b.state] || a.rule.localeCompare(b.rule))
          .map(toAlert);
        return { alerts, rules: rules.rules.map((rule) => rule.name), rulesSource: config.MONITOR_ALERT_RULES };
      },
    },
    criticalAlerts: () =>
      (store?.all() ?? [])
        .filter(({ value }) => value.state === 'firing' && value.severity === 'critical')
        .map(({ value }) => ({ rule: value.rule, labels: value.labels })),
    areaRule(name) {
      areaRules.add(name);
      return {
        async raise(change) {
          const alertStore = store;
          if (!alertStore) throw new Error('alert states cannot be written now: the monitor is not attached to NATS');
          const key = alertKey(name, change.labels);
          const now = new Date();
          const next: AlertRecord = {
            rule: name,
            labels: change.labels,
            state: change.state,
            severity: change.severity,
            value: change.value,
            threshold: change.threshold,
            since: now.toISOString(),
            summary: change.summary,
            notification: newNotification(change.transition, now),
          };
          // Over whatever the group held: the change was decided once (by the caller), so it is written whole.
          for (let attempt = 0; !(await alertStore.change(key, next, alertStore.get(key)?.revision)); attempt++) {
            if (attempt >= 20) throw new Error(`alert ${key} changed under 20 writes in a row`);
          }
          // Delivered now rather than at the next round; in turn with the rounds, never beside one.
          const delivery = round.then(() => deliverDue(alertStore, rules.webhooks, new Date()));
          round = delivery.catch((error: unknown) => logger.warn({ err: error }, 'alert notifications could not be delivered; the next round tries again'));
          await round;
        },
      };
    },
    async close() {
      stopped = true;
      clearInterval(timer);
      watcher.close();
      await round;
      await states.close();
    },
  };
}

/** The next state of one (rule, group), or undefined when nothing changes. */
export function step(rule: AlertRule, value: RuleValue, record: AlertRecord | undefined, now: Date): AlertRecord | undefined {
  const verdict = judge(rule, value.value);
  const state = record?.state ?? 'ok';
  const base = {
    rule: rule.name,
    labels: value.labels,
    value: value.value ?? null,
    summary: summaryOf(rule, value),
    ...(record?.notification ? { notification: record.notification } : {}),
  };
  if (verdict.state === 'no_data' && rule.no_data === 'keep') return undefined;
  if (verdict.state !== 'breach') {
    if (state === 'ok') return undefined;
    // Pending ends quietly; firing resolves, with a notification.
    return { ...base, state: 'ok', severity: '', threshold: record!.threshold, since: now.toISOString(), ...(state === 'firing' ? { notification: newNotification('resolved', now) } : {}) };
  }
  const sinceMs = state === 'ok' ? now.getTime() : Date.parse(record!.since);
  const held = now.getTime() - sinceMs >= rule.forMs;
  if (state === 'firing') {
    // Still firing: a change of severity is a change to tell; the value alone is not written.
    if (record!.severity === verdict.severity) return undefined;
    return { ...base, state: 'firing', severity: verdict.severity, threshold: verdict.threshold, since: record!.since, notification: newNotification('firing', now) };
  }
  if (held) return { ...base, state: 'firing', severity: verdict.severity, threshold: verdict.threshold, since: now.toISOString(), notification: newNotification('firing', now) };
  if (state === 'pending') return undefined;
  return { ...base, state: 'pending', severity: verdict.severity, threshold: verdict.threshold, since: now.toISOString() };
}

function summaryOf(rule: AlertRule, value: RuleValue): string {
  const group = Object.entries(value.labels).map(([key, label]) => `${key}=${label}`).join(', ');
  const figure = value.value === undefined ? 'no data' : `${rule.metric} ${Number(value.value.toPrecision(4))}`;
  return `${rule.summary ?? rule.name}${group ? ` (${group})` : ''}: ${figure}`;
}

function toAlert(record: AlertRecord): proto.Alert {
  return {
    rule: record.rule,
    state: STATE_PROTO[record.state],
    severity: record.severity === 'critical' ? proto.AlertSeverity.ALERT_SEVERITY_CRITICAL : record.severity === 'warning' ? proto.AlertSeverity.ALERT_SEVERITY_WARNING : proto.AlertSeverity.ALERT_SEVERITY_UNSPECIFIED,
    labels: record.labels,
    value: record.value ?? Number.NaN,
    threshold: record.threshold,
    since: new Date(record.since),
    summary: record.summary,
  };
}
