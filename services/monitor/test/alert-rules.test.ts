import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { compileAlertRules, formatProblem, type AlertRule } from '../src/alerts/alert-rules.js';
import { step } from '../src/alerts/alerts-area.js';
import type { AlertRecord } from '../src/alerts/alert-store.js';

const problemsOf = (text: string) => {
  const compiled = compileAlertRules('alerts.yaml', text);
  return 'problems' in compiled ? compiled.problems.map(formatProblem) : [];
};

function rule(text: string): AlertRule {
  const compiled = compileAlertRules('alerts.yaml', text);
  if ('problems' in compiled) throw new Error(compiled.problems.map(formatProblem).join('\n'));
  return compiled.rules.rules[0]!;
}

describe('alert rules file', () => {
  it('loads the shipped config/alerts.yaml', () => {
    const compiled = compileAlertRules('alerts.yaml', readFileSync(new URL('../../../config/alerts.yaml', import.meta.url), 'utf8'));
    expect('problems' in compiled ? compiled.problems.map(formatProblem) : []).toEqual([]);
    if ('rules' in compiled) expect(compiled.rules.rules.map((one) => one.name)).toContain('provider-error-rate');
  });

  it('applies defaults and parses durations', () => {
    const parsed = rule('rules:\n  - name: errors\n    metric: error_rate\n    warning: 0.1\n');
    expect(parsed).toMatchObject({ kind: 'run', window: '5m', windowMs: 300_000, forMs: 0, no_data: 'ok', min_count: 1, group_by: [] });
  });

  it('says what is wrong and where: unknown fields and metrics, thresholds, names, windows', () => {
    expect(problemsOf('rules:\n  - name: a\n    metric: error_rat\n    warning: 1\n')[0]).toMatch(/^alerts\.yaml:3:13: rules\.0\.metric: .*error_rate/);
    expect(problemsOf('rules:\n  - name: a\n    metric: error_rate\n    warning: 0.5\n    critical: 0.1\n')).toEqual([
      'alerts.yaml:5:15: rules.0.critical: 0.1 is below warning (0.5); alerts fire when the value reaches a threshold',
    ]);
    expect(problemsOf('rules:\n  - name: a\n    metric: error_rate\n    warning: 1\n  - name: a\n    metric: error_rate\n    warning: 1\n')).toEqual([
      'alerts.yaml:5:11: rules.1.name: "a" is the name of rules.0 too',
    ]);
    expect(problemsOf('rules:\n  - name: a\n    metric: error_rate\n    warning: 1\n    window: 30s\n')).toEqual(['alerts.yaml:5:13: rules.0.window: at least 1m (the aggregates are per minute)']);
    expect(problemsOf('rules:\n  - name: a\n    metric: error_rate\n    warning: 1\n    windwo: 5m\n')[0]).toMatch(/^alerts\.yaml:5:5: .*windwo/);
    expect(problemsOf('rules:\n  - name: a\n    metric: score_drop\n    warning: 1\n')).toEqual([
      "alerts.yaml:3:13: rules.0.filter.pipeline: score_drop compares a pipeline's prompt versions; name the pipeline",
    ]);
    // The guarded rollouts' own rule: not a name the file may take.
    expect(problemsOf('rules:\n  - name: prompt_rollout\n    metric: error_rate\n    warning: 1\n')).toEqual([
      'alerts.yaml:2:11: rules.0.name: "prompt_rollout" is the monitor\'s own rule (guarded rollouts\' decisions); name this rule otherwise',
    ]);
    expect(problemsOf('webhooks:\n  - url: ftp://x\nrules: []\n')[0]).toMatch(/^alerts\.yaml:2:10: .*http\(s\) URL/);
    expect(problemsOf('rules: [\n')[0]).toMatch(/^alerts\.yaml:\d+:\d+: malformed YAML/);
  });
});

describe('alert state changes', () => {
  const errors = rule('rules:\n  - name: errors\n    metric: error_rate\n    warning: 0.1\n    critical: 0.5\n    for: 1m\n');
  const at = (seconds: number) => new Date(Date.UTC(2026, 11, 1, 12, 0, seconds));
  const value = (figure: number | undefined) => ({ labels: { provider: 'openai' }, value: figure });

  it('goes pending, then firing once the value has held for `for`, with one notification', () => {
    const pending = step(errors, value(0.2), undefined, at(0))!;
    expect(pending).toMatchObject({ state: 'pending', severity: 'warning', threshold: 0.1 });
    expect(pending.notification).toBeUndefined();
    expect(step(errors, value(0.2), pending, at(30))).toBeUndefined();
    const firing = step(errors, value(0.3), pending, at(60))!;
    expect(firing).toMatchObject({ state: 'firing', severity: 'warning' });
    expect(firing.notification).toMatchObject({ transition: 'firing' });
    // Still firing at the same severity: nothing to write, nothing to tell.
    expect(step(errors, value(0.4), firing, at(90))).toBeUndefined();
  });

  it('tells a change of severity and the resolution, each once', () => {
    const firing: AlertRecord = { ...step(errors, value(0.2), undefined, at(0))!, state: 'firing', notification: { deliveryId: 'd1', transition: 'firing', at: at(0).toISOString(), deliveredAt: at(1).toISOString() } };
    const critical = step(errors, value(0.9), firing, at(30))!;
    expect(critical).toMatchObject({ state: 'firing', severity: 'critical', threshold: 0.5 });
    expect(critical.notification?.deliveryId).not.toBe('d1');
    const resolved = step(errors, value(0.01), critical, at(60))!;
    expect(resolved).toMatchObject({ state: 'ok', severity: '' });
    expect(resolved.notification).toMatchObject({ transition: 'resolved' });
    expect(step(errors, value(0.01), resolved, at(90))).toBeUndefined();
  });

  it('ends a pending alert quietly, and treats no data as the rule says', () => {
    const pending = step(errors, value(0.2), undefined, at(0))!;
    const back = step(errors, value(0.0), pending, at(10))!;
    expect(back.state).toBe('ok');
    expect(back.notification).toBeUndefined();
    expect(step(errors, value(undefined), pending, at(10))?.state).toBe('ok');
    const keep = rule('rules:\n  - name: lag\n    metric: consumer_lag\n    warning: 10\n    no_data: keep\n');
    expect(step(keep, value(undefined), pending, at(10))).toBeUndefined();
    const alert = rule('rules:\n  - name: lag\n    metric: consumer_lag\n    warning: 10\n    no_data: alert\n');
    expect(step(alert, value(undefined), undefined, at(10))).toMatchObject({ state: 'firing', severity: 'warning' });
  });
});
