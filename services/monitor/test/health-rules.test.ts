// The health rules (health-rules.ts) as a table: what each observation makes of the system's
// health, and which recovery actions it wants in force.
import { describe, expect, it } from 'vitest';
import { evaluateHealth, type HealthObservations } from '../src/health/health-rules.js';

const config = { MONITOR_ROUTE_AROUND_AFTER_MS: 30_000, MONITOR_CRITICAL_OPEN_BREAKERS: 2, MONITOR_DEGRADED_CONSUMER_LAG: 1_000, MONITOR_BREAKER_STALE_MS: 30_000, MONITOR_AGENT_REFUSALS: 3, MONITOR_AGENT_REFUSALS_WINDOW_MS: 60_000 };
const NOW = Date.parse('2026-12-01T12:00:00Z');
const serving = { gateway: 'SERVING', agent: 'SERVING', executor: 'SERVING', provider: 'SERVING' } as const;
const observe = (changes: Partial<HealthObservations> = {}): HealthObservations => ({ now: NOW, services: { ...serving }, breakers: {}, agentRefusals: [], consumerLag: 0, criticalAlerts: [], ...changes });

describe('health rules', () => {
  it('is healthy with every service serving, breakers closed and no lag', () => {
    expect(evaluateHealth(observe({ breakers: { anthropic: { state: 'closed', openSince: undefined, reportedAt: NOW } } }), config)).toEqual({ status: 'healthy', causes: [], actions: [] });
  });

  it('is degraded by a breaker open for a moment, and routes around it only once it stays open', () => {
    const brief = evaluateHealth(observe({ breakers: { anthropic: { state: 'open', openSince: NOW - 5_000, reportedAt: NOW } } }), config);
    expect(brief).toEqual({ status: 'degraded', causes: ['provider anthropic: breaker open since 2026-12-01T11:59:55.000Z'], actions: [] });
    const lasting = evaluateHealth(observe({ breakers: { anthropic: { state: 'half_open', openSince: NOW - 30_000, reportedAt: NOW - 1_000 } } }), config);
    expect(lasting.status).toBe('degraded');
    expect(lasting.causes).toEqual(['provider anthropic: breaker half-open since 2026-12-01T11:59:30.000Z']);
    expect(lasting.actions).toEqual([{ action: 'route_around_provider', target: 'anthropic', reason: expect.stringContaining('not closed for 30 s') }]);
  });

  it('forgets a breaker not reported for longer than MONITOR_BREAKER_STALE_MS (its provider replica is gone)', () => {
    const stale = evaluateHealth(observe({ breakers: { anthropic: { state: 'open', openSince: NOW - 120_000, reportedAt: NOW - 30_001 } } }), config);
    expect(stale).toEqual({ status: 'healthy', causes: [], actions: [] });
  });

  it('is degraded by an alert firing at critical severity, naming it (no action)', () => {
    const verdict = evaluateHealth(observe({ criticalAlerts: [{ rule: 'provider-error-rate', labels: { provider: 'anthropic' } }] }), config);
    expect(verdict).toEqual({ status: 'degraded', causes: ['alert provider-error-rate (provider=anthropic): firing, critical'], actions: [] });
  });

  it('is critical with as many open breakers as configured, and turns on emergency mode', () => {
    const verdict = evaluateHealth(observe({ breakers: { gemini: { state: 'open', openSince: NOW, reportedAt: NOW }, anthropic: { state: 'open', openSince: NOW - 60_000, reportedAt: NOW - 30_000 } } }), config);
    expect(verdict.status).toBe('critical');
    expect(verdict.causes[0]).toBe('2 provider breakers open (anthropic, gemini): at or over 2');
    expect(verdict.actions.map((action) => `${action.action}:${action.target}`)).toEqual(['route_around_provider:anthropic', 'emergency_mode:']);
  });

  it('bypasses an agent that is unreachable or not serving, degraded but not critical', () => {
    for (const check of ['UNREACHABLE', 'NOT_SERVING'] as const) {
      const verdict = evaluateHealth(observe({ services: { ...serving, agent: check } }), config);
      expect(verdict.status).toBe('degraded');
      expect(verdict.actions).toEqual([{ action: 'bypass_agent', target: '', reason: verdict.causes[0] }]);
    }
  });

  it('bypasses an agent that refused enough chats within the window, and only then', () => {
    const overloaded = evaluateHealth(observe({ agentRefusals: [NOW - 59_000, NOW - 1_000, NOW] }), config);
    expect(overloaded.status).toBe('degraded');
    expect(overloaded.causes).toEqual(['agent: overloaded (3 or more chats refused with RESOURCE_EXHAUSTED within 60 s)']);
    expect(overloaded.actions).toEqual([{ action: 'bypass_agent', target: '', reason: overloaded.causes[0] }]);
    // One of the three is out of the window.
    expect(evaluateHealth(observe({ agentRefusals: [NOW - 61_000, NOW - 1_000, NOW] }), config).status).toBe('healthy');
    // Unreachable and overloaded at once: one bypass.
    const both = evaluateHealth(observe({ services: { ...serving, agent: 'UNREACHABLE' }, agentRefusals: [NOW, NOW, NOW] }), config);
    expect(both.actions.filter((action) => action.action === 'bypass_agent')).toHaveLength(1);
  });

  it('is critical when a service no request can do without is down', () => {
    for (const service of ['gateway', 'executor', 'provider']) {
      const verdict = evaluateHealth(observe({ services: { ...serving, [service]: 'UNREACHABLE' } }), config);
      expect(verdict).toMatchObject({ status: 'critical', causes: [`service ${service}: unreachable`], actions: [{ action: 'emergency_mode' }] });
    }
  });

  it('takes a service not heard from yet (UNKNOWN: starting with the monitor) for no cause and no action', () => {
    const unknown = Object.fromEntries(Object.keys(serving).map((service) => [service, 'UNKNOWN' as const]));
    expect(evaluateHealth(observe({ services: unknown }), config)).toEqual({ status: 'healthy', causes: [], actions: [] });
  });

  it('is degraded by consumer lag over the limit, and not by a consumer that does not exist', () => {
    expect(evaluateHealth(observe({ consumerLag: 1_001 }), config)).toMatchObject({ status: 'degraded', causes: ['events consumer: 1001 events behind (over 1000)'] });
    expect(evaluateHealth(observe({ consumerLag: 1_000 }), config).status).toBe('healthy');
    expect(evaluateHealth(observe({ consumerLag: undefined }), config).status).toBe('healthy');
  });
});
