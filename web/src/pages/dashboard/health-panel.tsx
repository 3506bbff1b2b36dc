// The system health as the monitor streams it (WatchSystemHealth), and the providers' breakers
// as their "breaker" telemetry events say.
import { enumLabel, formatCount, formatTime } from '../../ui/format.js';

export interface SystemHealth {
  status?: string;
  causes?: string[];
  actions?: Array<{ action?: string; target?: string; reason?: string; since?: string }>;
  services?: Record<string, string>;
  consumerLag?: string;
  updatedAt?: string;
}

const STATUS_BADGE: Record<string, string> = { HEALTH_STATUS_HEALTHY: 'ok', HEALTH_STATUS_DEGRADED: 'warn', HEALTH_STATUS_CRITICAL: 'bad' };

export function HealthPanel({ health }: { health: SystemHealth | null }) {
  if (!health) return <p class="muted">Waiting for the monitor's first health report…</p>;
  const services = Object.entries(health.services ?? {}).sort(([a], [b]) => a.localeCompare(b));
  return (
    <div class="health">
      <p>
        System: <span class={`badge ${STATUS_BADGE[health.status ?? ''] ?? ''}`}>{enumLabel(health.status, 'HEALTH_STATUS_')}</span>{' '}
        <span class="muted">as of {formatTime(health.updatedAt)}</span>
      </p>
      {health.causes?.length ? (
        <>
          <h3>Degraded parts</h3>
          <ul class="causes">
            {health.causes.map((cause) => (
              <li key={cause}>{cause}</li>
            ))}
          </ul>
        </>
      ) : (
        <p class="muted">Nothing degraded.</p>
      )}
      {health.actions?.length ? (
        <>
          <h3>Recovery actions in force</h3>
          <ul>
            {health.actions.map((action) => (
              <li key={`${action.action}/${action.target}`}>
                <strong>{action.action?.replaceAll('_', ' ')}</strong>
                {action.target ? ` ${action.target}` : ''}: {action.reason} <span class="muted">(since {formatTime(action.since)})</span>
              </li>
            ))}
          </ul>
        </>
      ) : null}
      <table aria-label="Services">
        <thead>
          <tr>
            <th scope="col">Service</th>
            <th scope="col">Health check</th>
          </tr>
        </thead>
        <tbody>
          {services.map(([name, check]) => (
            <tr key={name}>
              <th scope="row">{name}</th>
              <td>
                <span class={`badge ${check === 'SERVING' ? 'ok' : check === 'UNKNOWN' ? '' : 'bad'}`}>{check.toLowerCase().replaceAll('_', ' ')}</span>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <p class="muted">
        NATS events the monitor has not processed yet: <span class="mono">{formatCount(health.consumerLag ?? '0')}</span>
      </p>
    </div>
  );
}

export interface BreakerState {
  state: string;
  /** When its provider said so. */
  at: string;
}

const BREAKER_BADGE: Record<string, string> = { closed: 'ok', half_open: 'warn', open: 'bad' };

/**
 * One row per provider that served calls in the range or reported its breaker: a breaker nobody
 * reported is closed (breakers start closed and report every change).
 */
export function BreakersTable({ providers, breakers }: { providers: string[]; breakers: Record<string, BreakerState> }) {
  const names = [...new Set([...providers, ...Object.keys(breakers)])].sort();
  if (names.length === 0) return <p class="muted">No provider has been called in this range yet.</p>;
  return (
    <table aria-label="Provider breakers">
      <thead>
        <tr>
          <th scope="col">Provider</th>
          <th scope="col">Breaker</th>
          <th scope="col">Last report</th>
        </tr>
      </thead>
      <tbody>
        {names.map((name) => {
          const breaker = breakers[name];
          const state = breaker?.state ?? 'closed';
          return (
            <tr key={name}>
              <th scope="row">{name}</th>
              <td>
                <span class={`badge ${BREAKER_BADGE[state] ?? ''}`}>{state.replace('_', '-')}</span>
              </td>
              <td class="muted">{breaker ? formatTime(breaker.at) : '-'}</td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}
