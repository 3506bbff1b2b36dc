import type { RecoveryActionName } from '@elexirion/kit';
import type { HealthConfig } from './health-config.js';

/**
 * A service's health check. UNKNOWN: it has not answered since this monitor started, no replica
 * recorded it before, and MONITOR_HEALTH_STARTUP_GRACE_MS has not passed (services starting
 * together with the monitor are not an outage).
 */
export type ServiceCheck = 'SERVING' | 'NOT_SERVING' | 'UNREACHABLE' | 'UNKNOWN';
export type HealthLevel = 'healthy' | 'degraded' | 'critical';

/** A provider's breaker as the monitor last heard of it (from the provider's "breaker" events). */
export interface BreakerObservation {
  state: 'closed' | 'half_open' | 'open';
  /** When it left closed (ms since the epoch); undefined while closed. */
  openSince: number | undefined;
  /** When a provider last reported it (ms since the epoch). */
  reportedAt: number;
}

/** What one evaluation looks at. */
export interface HealthObservations {
  now: number;
  services: Record<string, ServiceCheck>;
  breakers: Record<string, BreakerObservation>;
  /** When the agent refused chats (RESOURCE_EXHAUSTED), ms since the epoch, recent ones at least. */
  agentRefusals: number[];
  /** Events the metrics consumer has not processed; undefined when it does not exist (yet). */
  consumerLag: number | undefined;
  /** Alerts firing at critical severity (the alerts area's states). */
  criticalAlerts: { rule: string; labels: Record<string, string> }[];
}

export interface DesiredAction {
  action: RecoveryActionName;
  target: string;
  reason: string;
}

export interface HealthVerdict {
  status: HealthLevel;
  causes: string[];
  actions: DesiredAction[];
}

/** Services no request can do without: when one is down, nothing is answered. */
const ESSENTIAL_SERVICES = new Set(['gateway', 'executor', 'provider']);

/**
 * The health rules, all of them, in one place:
 *
 * - critical: an essential service (gateway, executor, provider) NOT_SERVING or unreachable (no
 *   request can be answered), or MONITOR_CRITICAL_OPEN_BREAKERS providers or more with breakers
 *   open at once (the chains are running out of targets).
 * - degraded: the agent NOT_SERVING or unreachable, or overloaded (MONITOR_AGENT_REFUSALS chats
 *   refused with RESOURCE_EXHAUSTED within MONITOR_AGENT_REFUSALS_WINDOW_MS; the gateway can
 *   bypass it either way), any provider's
 *   breaker open or half-open (its chains fall over to the next target; a breaker not reported
 *   for MONITOR_BREAKER_STALE_MS counts as closed: the replica that had it is gone), or the metrics
 *   consumer's lag over MONITOR_DEGRADED_CONSUMER_LAG (dashboards and alerts run late), or an
 *   alert firing at critical severity (a rule of config/alerts.yaml says so; warnings do not
 *   degrade health).
 * - healthy otherwise.
 *
 * Recovery actions, in force exactly while their condition holds (so they are reversed when it
 * stops holding):
 * - route_around_provider <name>: its breaker not closed for MONITOR_ROUTE_AROUND_AFTER_MS or
 *   longer (a short blip is the breaker's own business);
 * - bypass_agent: the agent NOT_SERVING, unreachable or overloaded (so with the agent bypassed
 *   and refusing nothing, the action is reversed after the window: the agent is tried again);
 * - emergency_mode: health critical (the gateway sheds low-priority requests).
 */
export function evaluateHealth(
  observed: HealthObservations,
  config: Pick<
    HealthConfig,
    'MONITOR_ROUTE_AROUND_AFTER_MS' | 'MONITOR_CRITICAL_OPEN_BREAKERS' | 'MONITOR_DEGRADED_CONSUMER_LAG' | 'MONITOR_BREAKER_STALE_MS' | 'MONITOR_AGENT_REFUSALS' | 'MONITOR_AGENT_REFUSALS_WINDOW_MS'
  >,
): HealthVerdict {
  const critical: string[] = [];
  const degraded: string[] = [];
  const actions: DesiredAction[] = [];

  for (const [service, check] of Object.entries(observed.services).sort(([a], [b]) => a.localeCompare(b))) {
    if (check === 'SERVING' || check === 'UNKNOWN') continue;
    const cause = `service ${service}: ${check === 'UNREACHABLE' ? 'unreachable' : 'not serving'}`;
    if (ESSENTIAL_SERVICES.has(service)) critical.push(cause);
    else degraded.push(cause);
    if (service === 'agent') actions.push({ action: 'bypass_agent', target: '', reason: cause });
  }

  const refusals = observed.agentRefusals.filter((time) => observed.now - time <= config.MONITOR_AGENT_REFUSALS_WINDOW_MS).length;
  if (refusals >= config.MONITOR_AGENT_REFUSALS) {
    // The threshold, not the count: the cause stays the same while the overload lasts.
    const cause = `agent: overloaded (${config.MONITOR_AGENT_REFUSALS} or more chats refused with RESOURCE_EXHAUSTED within ${config.MONITOR_AGENT_REFUSALS_WINDOW_MS / 1000} s)`;
    degraded.push(cause);
    if (!actions.some((action) => action.action === 'bypass_agent')) actions.push({ action: 'bypass_agent', target: '', reason: cause });
  }

  const notClosed = Object.entries(observed.breakers)
    .filter(([, breaker]) => breaker.state !== 'closed' && observed.now - breaker.reportedAt <= config.MONITOR_BREAKER_STALE_MS)
    .sort(([a], [b]) => a.localeCompare(b));
  for (const [provider, breaker] of notClosed) {
    const forMs = breaker.openSince === undefined ? 0 : Math.max(0, observed.now - breaker.openSince);
    // "since <time>", not "for N s": the cause stays the same while the breaker does, so a watcher
    // hears of changes, not of every evaluation.
    const since = breaker.openSince === undefined ? '' : ` since ${new Date(breaker.openSince).toISOString()}`;
    degraded.push(`provider ${provider}: breaker ${breaker.state.replace('_', '-')}${since}`);
    if (forMs >= config.MONITOR_ROUTE_AROUND_AFTER_MS) {
      actions.push({ action: 'route_around_provider', target: provider, reason: `provider ${provider}: breaker not closed for ${Math.round(forMs / 1000)} s (route around after ${config.MONITOR_ROUTE_AROUND_AFTER_MS / 1000} s)` });
    }
  }
  if (notClosed.length >= config.MONITOR_CRITICAL_OPEN_BREAKERS) {
    critical.push(`${notClosed.length} provider breakers open (${notClosed.map(([provider]) => provider).join(', ')}): at or over ${config.MONITOR_CRITICAL_OPEN_BREAKERS}`);
  }

  if (observed.consumerLag !== undefined && observed.consumerLag > config.MONITOR_DEGRADED_CONSUMER_LAG) {
    degraded.push(`events consumer: ${observed.consumerLag} events behind (over ${config.MONITOR_DEGRADED_CONSUMER_LAG})`);
  }

  for (const alert of [...observed.criticalAlerts].sort((a, b) => a.rule.localeCompare(b.rule))) {
    const group = Object.entries(alert.labels).map(([key, value]) => `${key}=${value}`).join(', ');
    degraded.push(`alert ${alert.rule}${group ? ` (${group})` : ''}: firing, critical`);
  }

  const status: HealthLevel = critical.length > 0 ? 'critical' : degraded.length > 0 ? 'degraded' : 'healthy';
  if (status === 'critical') actions.push({ action: 'emergency_mode', target: '', reason: critical.join('; ') });
  return { status, causes: [...critical, ...degraded], actions };
}
