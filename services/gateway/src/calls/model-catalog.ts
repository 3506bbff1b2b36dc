import { ServerError, Status, type ServiceClient } from '@elexirion/kit';

/** How long the provider's alias list is trusted before it is asked again. */
const MAX_AGE_MS = 30_000;
/** A name not in the list asks the provider again (its config may have changed), at most this often. */
const MISS_REFRESH_MS = 1_000;
const LIST_TIMEOUT_MS = 5_000;

interface Snapshot {
  at: number;
  aliases: ReadonlySet<string>;
  providers: ReadonlySet<string>;
}

/**
 * The model names the provider serves (its aliases, and `<provider>/<model>` for its providers),
 * cached so a call checks its model without a round trip: an unknown model is the caller's
 * NOT_FOUND at the gateway, not a failed call inside.
 */
export class ModelCatalog {
  private snapshot: Snapshot | undefined;
  private loading: Promise<Snapshot> | undefined;

  constructor(private readonly provider: ServiceClient<'provider'>) {}

  /** Throws NOT_FOUND unless `model` (an alias or `<provider>/<model>`; '' is the default alias) is served. */
  async check(model: string): Promise<void> {
    if (model === '') return;
    let snapshot = await this.current(MAX_AGE_MS);
    if (knows(snapshot, model)) return;
    snapshot = await this.current(MISS_REFRESH_MS);
    if (knows(snapshot, model)) return;
    const slash = model.indexOf('/');
    if (slash >= 0) {
      throw new ServerError(Status.NOT_FOUND, `model: provider "${model.slice(0, slash)}" is not one of ${[...snapshot.providers].join(', ')}`);
    }
    throw new ServerError(Status.NOT_FOUND, `model: "${model}" is not a model alias (${[...snapshot.aliases].join(', ')}) nor "<provider>/<model>"`);
  }

  private async current(maxAgeMs: number): Promise<Snapshot> {
    if (this.snapshot && Date.now() - this.snapshot.at < maxAgeMs) return this.snapshot;
    // One list call at a time, shared by every call waiting for it; not tied to any caller's
    // signal, so one caller going away does not fail the others.
    this.loading ??= this.provider
      .listModels({}, { deadline: new Date(Date.now() + LIST_TIMEOUT_MS) })
      .then((answer) => {
        this.snapshot = { at: Date.now(), aliases: new Set(answer.aliases.map((alias) => alias.name)), providers: new Set(answer.providers.map((each) => each.name)) };
        return this.snapshot;
      })
      .finally(() => {
        this.loading = undefined;
      });
    return this.loading;
  }
}

function knows(snapshot: Snapshot, model: string): boolean {
  const slash = model.indexOf('/');
  return slash < 0 ? snapshot.aliases.has(model) : snapshot.providers.has(model.slice(0, slash));
}
