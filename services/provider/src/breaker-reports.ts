import { parseEnv, type ServiceEvents } from '@elexirion/kit';
import { z } from 'zod';
import type { ProviderRuntime } from './completion-router.js';
import type { ProviderName } from './provider-config.js';

const breakerReportsConfigSchema = z.object({
  /** How often a breaker that is not closed is reported again (the monitor forgets reports older than MONITOR_BREAKER_STALE_MS). */
  PROVIDER_BREAKER_REPORT_MS: z.coerce.number({ error: 'expected milliseconds' }).int('expected whole milliseconds').min(50).max(600_000).default(10_000),
});

/**
 * The providers' breakers as the health monitor hears of them: a "breaker" event on every change
 * (published by the breaker's onStateChange), and again every PROVIDER_BREAKER_REPORT_MS while a
 * breaker is not closed. The repeats let the monitor forget a breaker whose replica was killed or
 * restarted while it was open (nothing would ever report it closed), and report the half-open
 * state an open breaker reaches when its cooldown is over (the breaker changes to it lazily).
 */
export function reportBreakers(runtimes: Record<ProviderName, ProviderRuntime>, events: ServiceEvents, env: NodeJS.ProcessEnv): { close(): void } {
  const { PROVIDER_BREAKER_REPORT_MS } = parseEnv(breakerReportsConfigSchema, env);
  const timer = setInterval(() => {
    for (const runtime of Object.values(runtimes)) {
      const state = runtime.breaker.current;
      if (runtime.adapter && state !== 'closed') events.publish('breaker', { providerBreaker: { provider: runtime.name, state } });
    }
  }, PROVIDER_BREAKER_REPORT_MS);
  timer.unref();
  return { close: () => clearInterval(timer) };
}
