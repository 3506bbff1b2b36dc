// The alert rules' states (ListAlerts): what is firing or pending, and which rules are loaded.
import { enumLabel, formatTime } from '../../ui/format.js';

export interface Alert {
  rule?: string;
  state?: string;
  severity?: string;
  labels?: Record<string, string>;
  value?: number | string;
  threshold?: number;
  since?: string;
  summary?: string;
}

export interface AlertsResponse {
  alerts?: Alert[];
  rules?: string[];
  rulesSource?: string;
}

function figure(value: number | string | undefined): string {
  if (value === undefined) return '0';
  // NaN (no data) comes as the string "NaN" in proto3 JSON.
  const number = Number(value);
  return Number.isFinite(number) ? String(Math.round(number * 1000) / 1000) : 'no data';
}

export function AlertsPanel({ alerts }: { alerts: AlertsResponse }) {
  const active = (alerts.alerts ?? []).filter((alert) => alert.state === 'ALERT_STATE_FIRING' || alert.state === 'ALERT_STATE_PENDING');
  const rules = alerts.rules ?? [];
  return (
    <div>
      {active.length === 0 ? (
        <p>No alert is firing or pending.</p>
      ) : (
        <table aria-label="Active alerts">
          <thead>
            <tr>
              <th scope="col">Rule</th>
              <th scope="col">State</th>
              <th scope="col">Severity</th>
              <th scope="col">Group</th>
              <th scope="col" class="num">Value</th>
              <th scope="col" class="num">Threshold</th>
              <th scope="col">Since</th>
            </tr>
          </thead>
          <tbody>
            {active.map((alert) => {
              const group = Object.entries(alert.labels ?? {}).map(([key, value]) => `${key}=${value}`).join(', ');
              return (
                <tr key={`${alert.rule}/${group}`}>
                  <th scope="row">
                    {alert.rule}
                    {alert.summary ? <div class="muted">{alert.summary}</div> : null}
                  </th>
                  <td>
                    <span class={`badge ${alert.state === 'ALERT_STATE_FIRING' ? 'bad' : 'warn'}`}>{enumLabel(alert.state, 'ALERT_STATE_')}</span>
                  </td>
                  <td>{enumLabel(alert.severity, 'ALERT_SEVERITY_')}</td>
                  <td>{group || 'all'}</td>
                  <td class="num">{figure(alert.value)}</td>
                  <td class="num">{figure(alert.threshold)}</td>
                  <td>{formatTime(alert.since)}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      <p class="muted">
        {rules.length} {rules.length === 1 ? 'rule' : 'rules'} loaded{alerts.rulesSource ? ` from ${alerts.rulesSource}` : ''}
        {rules.length ? `: ${rules.join(', ')}` : ''}.
      </p>
    </div>
  );
}
