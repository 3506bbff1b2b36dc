import { durationMs } from '@elexirion/kit';
import { z } from 'zod';

/** The health monitor's settings (spread into monitor-config.ts). */
export const healthConfigShape = {
  /** How often each replica checks the services, breakers and consumer lag. */
  MONITOR_HEALTH_INTERVAL_MS: durationMs().min(100).default(5_000),
  /** How long one service's grpc.health.v1 check may take before it counts as UNREACHABLE. */
  MONITOR_HEALTH_CHECK_TIMEOUT_MS: durationMs().min(50).default(2_000),
  /**
   * Checks in a row without an answer before a service that answered before counts as UNREACHABLE:
   * one slow answer (a process catching up after a pause) does not flip the health and the
   * recovery actions back and forth. An explicit NOT_SERVING counts at once.
   */
  MONITOR_HEALTH_UNREACHABLE_AFTER: z.coerce.number({ error: 'expected a whole number' }).int().min(1).max(10).default(2),
  /**
   * How long after this monitor starts a service that has not answered yet, and that no replica
   * recorded before, is UNKNOWN (no cause, no action) rather than UNREACHABLE: services starting
   * together with the monitor (a fresh deploy) are not an outage.
   */
  MONITOR_HEALTH_STARTUP_GRACE_MS: durationMs().default(30_000),
  /** The services whose health counts (the monitor itself always serves). */
  MONITOR_HEALTH_SERVICES: z
    .string()
    .default('gateway,agent,executor,provider')
    .transform((text, context) => {
      const names = text.split(',').map((name) => name.trim()).filter(Boolean);
      const unknown = names.filter((name) => !['gateway', 'agent', 'executor', 'provider'].includes(name));
      if (unknown.length > 0) context.addIssue({ code: 'custom', message: `unknown service ${unknown.join(', ')} (known: gateway, agent, executor, provider)` });
      return names as ('gateway' | 'agent' | 'executor' | 'provider')[];
    }),
  /** A provider's breaker open (or half-open) this long is routed around. */
  MONITOR_ROUTE_AROUND_AFTER_MS: durationMs().default(30_000),
  /** A breaker reported not closed and not reported again for this long counts as closed: its provider replica is gone (providers repeat the report every PROVIDER_BREAKER_REPORT_MS). */
  MONITOR_BREAKER_STALE_MS: durationMs().min(100).default(30_000),
  /** This many RESOURCE_EXHAUSTED answers of the agent to chats within MONITOR_AGENT_REFUSALS_WINDOW_MS mean it is overloaded: bypass it. */
  MONITOR_AGENT_REFUSALS: z.coerce.number({ error: 'expected a whole number' }).int().min(1).max(1_000).default(20),
  MONITOR_AGENT_REFUSALS_WINDOW_MS: durationMs().min(1_000).default(60_000),
  /** This many providers with breakers open at once make health critical. */
  MONITOR_CRITICAL_OPEN_BREAKERS: z.coerce.number({ error: 'expected a whole number' }).int().min(1).default(2),
  /** Events the metrics consumer has not processed above which health is degraded. */
  MONITOR_DEGRADED_CONSUMER_LAG: z.coerce.number({ error: 'expected a whole number' }).int().min(1).default(10_000),
};

export type HealthConfig = z.infer<z.ZodObject<typeof healthConfigShape>>;
