import { setTimeout as sleep } from 'node:timers/promises';
import { failureMessage, retry, type Logger } from '@elexirion/kit';
import type { PipelineShape } from '@elexirion/kit';

/**
 * The executor's pipelines (ListPipelines), held in memory and refreshed in the background: what
 * the route table is checked against and what the classifier chooses among. A request never waits
 * for it; until the first listing arrives it is undefined.
 */
export class PipelineCatalog {
  private shapes: ReadonlyMap<string, PipelineShape> | undefined;
  private fingerprint = '';
  private readonly stopped = new AbortController();

  constructor(
    private readonly list: (signal: AbortSignal) => Promise<PipelineShape[]>,
    private readonly options: { refreshMs: number; logger: Pick<Logger, 'warn'>; onChange(shapes: ReadonlyMap<string, PipelineShape>): void },
  ) {}

  get current(): ReadonlyMap<string, PipelineShape> | undefined {
    return this.shapes;
  }

  start(): void {
    void this.loop();
  }

  close(): void {
    this.stopped.abort();
  }

  /** Lists now; the new listing is kept (and told) when it differs. */
  async refresh(signal: AbortSignal = this.stopped.signal): Promise<void> {
    const listed = await this.list(signal);
    const fingerprint = JSON.stringify(listed);
    if (fingerprint === this.fingerprint) return;
    this.fingerprint = fingerprint;
    this.shapes = new Map(listed.map((shape) => [shape.name, shape]));
    this.options.onChange(this.shapes);
  }

  private async loop(): Promise<void> {
    const { signal } = this.stopped;
    const { logger, refreshMs } = this.options;
    while (!signal.aborted) {
      try {
        // The executor may start after the agent: keep asking, quietly, until it answers.
        await retry(() => this.refresh(signal), {
          maxAttempts: Infinity,
          baseMs: 250,
          maxMs: 5_000,
          signal,
          unref: true,
          onRetry: ({ attempt, error }) => {
            if (attempt === 3) logger.warn({ error: failureMessage(error) }, 'cannot list the executor\'s pipelines yet: routes are not checked against them, and the classifier waits');
          },
        });
        await sleep(refreshMs, undefined, { signal, ref: false });
      } catch (error) {
        if (signal.aborted) return;
        logger.warn({ error: failureMessage(error) }, 'listing the executor\'s pipelines failed');
      }
    }
  }
}
