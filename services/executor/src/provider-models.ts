import { abortable } from 'abort-controller-x';
import type { Logger, ServiceClient } from '@elexirion/kit';
import type { ModelCatalog } from './pipeline/models.js';

/** A catalog this old is still used, and asked for again in the background. */
const MAX_AGE_MS = 30_000;
/** A catalog younger than this is not asked for again to re-check a failing pipeline. */
const RECHECK_AFTER_MS = 1_000;
/** How long one ListModels may take; it is shared by every caller waiting for it. */
const LIST_TIMEOUT_MS = 5_000;

/**
 * The provider's model aliases and presets (its ListModels), kept so a run does not wait on the
 * provider to check its pipeline's models: asked for once, used while fresh, refreshed in the
 * background when older, and asked for again when a pipeline names something the kept one lacks
 * (the provider may have been redeployed with it).
 */
export class ProviderModels {
  #current: { catalog: ModelCatalog; at: number } | undefined;
  #pending: Promise<ModelCatalog> | undefined;
  #failing = false;

  constructor(
    private readonly provider: Pick<ServiceClient<'provider'>, 'listModels'>,
    private readonly logger: Logger,
  ) {}

  /** The catalog, or undefined when the provider cannot tell it (it is unavailable). */
  async get(signal: AbortSignal): Promise<ModelCatalog | undefined> {
    const current = this.#current;
    if (current) {
      if (Date.now() - current.at > MAX_AGE_MS) void this.fetch().catch(() => {});
      return current.catalog;
    }
    return this.wait(signal);
  }

  /** A catalog asked for now, unless the kept one is only just fetched. */
  async fresh(signal: AbortSignal): Promise<ModelCatalog | undefined> {
    const current = this.#current;
    if (current && Date.now() - current.at < RECHECK_AFTER_MS) return current.catalog;
    return (await this.wait(signal)) ?? current?.catalog;
  }

  private async wait(signal: AbortSignal): Promise<ModelCatalog | undefined> {
    try {
      return await abortable(signal, this.fetch());
    } catch (error) {
      if (signal.aborted) throw error;
      return undefined;
    }
  }

  /** One ListModels at a time, whoever asks. */
  private fetch(): Promise<ModelCatalog> {
    this.#pending ??= this.provider
      .listModels({}, { deadline: new Date(Date.now() + LIST_TIMEOUT_MS) })
      .then(
        (response) => {
          const catalog: ModelCatalog = {
            aliases: new Map(response.aliases.map((alias) => [alias.name, alias.presets])),
            providers: response.providers.map((provider) => provider.name),
          };
          this.#current = { catalog, at: Date.now() };
          if (this.#failing) this.logger.info('the provider lists its models again: pipelines are checked against them');
          this.#failing = false;
          return catalog;
        },
        (error: unknown) => {
          // Logged once while it keeps failing: runs go on, and the provider still refuses what it does not serve.
          if (!this.#failing) this.logger.warn({ err: error }, 'cannot list the provider\'s models: pipelines run without checking their models until it answers');
          this.#failing = true;
          throw error;
        },
      )
      .finally(() => {
        this.#pending = undefined;
      });
    return this.#pending;
  }
}
