import type { proto, ServiceClient } from '@elexirion/kit';

/** How long the executor's pipeline list is trusted. */
const MAX_AGE_MS = 10_000;
/** A name not in the list asks again (a pipeline just added), at most this often. */
const MISS_REFRESH_MS = 1_000;
const LIST_TIMEOUT_MS = 5_000;

/**
 * The pipelines' shapes (inputs, step count), read from the executor and cached: what a
 * `pipeline/<name>` model needs to fill the right input and to know whether its text streams as
 * the answer. Read from the executor, not through the gateway's ListPipelines, so a completion is
 * one call into the gateway (one request against the key's limits, its key checked first); the
 * run itself goes through the gateway, which checks the key, the scope and that the pipeline exists.
 */
export class PipelineCatalog {
  private snapshot: { at: number; byName: ReadonlyMap<string, proto.PipelineSummary> } | undefined;
  private loading: Promise<void> | undefined;

  constructor(private readonly executor: () => ServiceClient<'executor'>) {}

  /** The pipeline's summary; undefined when unknown or when the executor cannot say now (the run then answers for itself). */
  async find(name: string): Promise<proto.PipelineSummary | undefined> {
    try {
      await this.refresh(MAX_AGE_MS);
      const found = this.snapshot?.byName.get(name);
      if (found) return found;
      await this.refresh(MISS_REFRESH_MS);
      return this.snapshot?.byName.get(name);
    } catch {
      return undefined;
    }
  }

  private async refresh(maxAgeMs: number): Promise<void> {
    if (this.snapshot && Date.now() - this.snapshot.at < maxAgeMs) return;
    this.loading ??= this.executor()
      .listPipelines({}, { deadline: new Date(Date.now() + LIST_TIMEOUT_MS) })
      .then((answer) => {
        this.snapshot = { at: Date.now(), byName: new Map(answer.pipelines.map((each) => [each.name, each])) };
      })
      .finally(() => {
        this.loading = undefined;
      });
    return this.loading;
  }
}
