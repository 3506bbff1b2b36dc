/**
 * A run's checkpoint writes, which never hold the run hostage to NATS: with NATS not connected a
 * write is skipped at once; when connected it is bounded by a timeout and by the run's deadline,
 * and given up the moment the connection drops. A skipped write is logged and counted, and the
 * run goes on. Resuming such a run starts after the last checkpoint that was written: the steps
 * after it run again.
 */
import type { Logger, ServiceNats } from '@elexirion/kit';
import { CheckpointRejectedError, type CheckpointStore, type RunCheckpoint } from './checkpoint-store.js';

/** Why a checkpoint was not written: the `reason` label of `elexirion_executor_checkpoints_skipped_total`. */
export const CHECKPOINT_SKIP_REASONS = ['not_connected', 'not_attached', 'timeout', 'rejected', 'failed'] as const;
export type CheckpointSkipReason = (typeof CHECKPOINT_SKIP_REASONS)[number];

export interface CheckpointWriterOptions {
  /** The store, once it has attached to its bucket. */
  store: () => CheckpointStore | undefined;
  nats: Pick<ServiceNats, 'connected' | 'onStatus'>;
  /** Counts skipped writes by reason. */
  skipped: { inc(labels: { reason: CheckpointSkipReason }): void };
  logger: Pick<Logger, 'warn'>;
  /** The longest a run waits for one write while NATS is connected. */
  timeoutMs: number;
}

type Settle = (reason: CheckpointSkipReason | undefined, error?: unknown) => void;

export class CheckpointWriter {
  /** The writes in flight, each settled as skipped when NATS goes away under it. */
  readonly #inFlight = new Set<Settle>();
  readonly #stopFollowing: () => void;

  constructor(private readonly options: CheckpointWriterOptions) {
    // A write in flight when the connection drops would otherwise wait out its timeout: the
    // client answers nothing for a request whose connection is gone.
    this.#stopFollowing = options.nats.onStatus((state) => {
      if (state === 'disconnected') for (const settle of [...this.#inFlight]) settle('not_connected');
    });
  }

  /**
   * Writes the checkpoint, or skips it (logged and counted); true when written. Never throws.
   * `deadline` (epoch ms): the write waits no later than this, when it is still ahead.
   */
  async save(checkpoint: RunCheckpoint, deadline: number | undefined): Promise<boolean> {
    if (!this.options.nats.connected) return this.#skip(checkpoint, 'not_connected');
    const store = this.options.store();
    if (!store) return this.#skip(checkpoint, 'not_attached');
    const left = deadline === undefined ? Infinity : deadline - Date.now();
    const limitMs = left > 0 ? Math.min(this.options.timeoutMs, left) : this.options.timeoutMs;
    let failure: unknown;
    const skipped = await new Promise<CheckpointSkipReason | undefined>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const settle: Settle = (reason, error) => {
        if (!this.#inFlight.delete(settle)) return; // settled already
        clearTimeout(timer);
        failure = error;
        resolve(reason);
      };
      this.#inFlight.add(settle);
      timer = setTimeout(settle, limitMs, 'timeout');
      // The store encodes the checkpoint before this returns, so the run may change it meanwhile.
      store.save(checkpoint).then(
        () => settle(undefined),
        (error: unknown) => settle(error instanceof CheckpointRejectedError ? 'rejected' : 'failed', error),
      );
    });
    return skipped === undefined ? true : this.#skip(checkpoint, skipped, failure);
  }

  /** Stops following the connection's status. */
  close(): void {
    this.#stopFollowing();
  }

  #skip(checkpoint: RunCheckpoint, reason: CheckpointSkipReason, error?: unknown): false {
    this.options.skipped.inc({ reason });
    this.options.logger.warn(
      {
        run_id: checkpoint.runId,
        pipeline: checkpoint.pipeline,
        run_status: checkpoint.status,
        // What the skipped checkpoint held: the steps done, the last of them by name.
        steps_done: checkpoint.steps.length,
        last_step: checkpoint.steps.at(-1)?.name ?? '',
        reason,
        ...(error === undefined ? {} : { error: error instanceof Error ? error.message : String(error) }),
      },
      'checkpoint skipped: the run goes on; a resume starts after its last written checkpoint',
    );
    return false;
  }
}
