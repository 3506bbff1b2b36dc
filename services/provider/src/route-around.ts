import { RecoveryActions, type Logger, type ServiceNats } from '@elexirion/kit';
import type { ProviderRuntime } from './completion-router.js';
import type { ProviderName, Target } from './provider-config.js';

/**
 * The health monitor's "route around a provider" action, honoured: while it is in force (the
 * monitor writes it to the recovery actions bucket, watched here), chains skip that provider's
 * targets as long as another target remains, so no chain is ever left empty. A routed-around
 * provider whose breaker is half-open still gets the breaker's one probe: that is how its
 * recovery is seen (the breaker closes, the monitor reverses the action).
 */
export class RouteAround {
  readonly #actions: RecoveryActions;

  constructor(
    nats: ServiceNats,
    logger: Logger,
    private readonly runtimes: Record<ProviderName, ProviderRuntime>,
  ) {
    this.#actions = new RecoveryActions({
      nats,
      logger,
      onChange: ({ key, value }) => {
        if (key.startsWith('route_around_provider.')) {
          const provider = key.slice('route_around_provider.'.length);
          if (value) logger.warn({ provider, reason: value.reason }, 'routing around provider (monitor recovery action)');
          else logger.info({ provider }, 'provider back in the chains (monitor recovery action reversed)');
        }
      },
    });
  }

  /** The chain without the targets of routed-around providers, or the chain as it is when that would leave nothing. */
  filter(targets: Target[]): Target[] {
    // On every call: the chain as it is, with no copy, while nothing is routed around.
    if (!targets.some((target) => this.#actions.routedAround(target.provider))) return targets;
    const kept = targets.filter((target) => !this.#actions.routedAround(target.provider) || this.runtimes[target.provider].breaker.current === 'half_open');
    return kept.length > 0 ? kept : targets;
  }

  close(): Promise<void> {
    return this.#actions.close();
  }
}
