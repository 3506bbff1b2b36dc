/**
 * The records of inline calls (HandleChat, RunPipeline), written after their answer and in
 * batches: every call that starts within one window (`windowMs`) gets an id in the same batch
 * (a UUID naming the batch, see job-store.ts), and the batch's key is written when records came in since its last
 * write, at most once a window. A JetStream write per chat would cost the all-in-one process
 * about a fifth of its chats per second (measured with the benchmark's throughput scenario); a
 * write per batch costs next to nothing. A batch stays in memory until its last call has ended
 * and its records are written; a batch that cannot be written is logged and dropped.
 */
import { randomUUID } from 'node:crypto';
import type { Logger, proto } from '@elexirion/kit';
import { inlineJobId, newInlineBatchId, type JobStore } from './job-store.js';

interface Batch {
  id: string;
  startedAt: number;
  next: number;
  /** Calls given an id in this batch that have not ended. */
  open: number;
  jobs: proto.Job[];
  /** Records came in since the last write. */
  dirty: boolean;
}

export class InlineRecords {
  #current: Batch | undefined;
  readonly #batches = new Set<Batch>();
  #timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: () => JobStore | undefined,
    private readonly logger: Pick<Logger, 'warn'>,
    private readonly windowMs: number,
  ) {}

  /** An id for a call starting now, and what to call with its record once it has ended (exactly once). */
  begin(): { jobId: string; end(job: proto.Job | undefined): void } {
    const now = Date.now();
    let batch = this.#current;
    if (!batch || now - batch.startedAt >= this.windowMs) {
      batch = { id: newInlineBatchId(randomUUID()), startedAt: now, next: 0, open: 0, jobs: [], dirty: false };
      this.#current = batch;
      this.#batches.add(batch);
    }
    batch.open += 1;
    const owner = batch;
    const jobId = inlineJobId(batch.id, batch.next++);
    return {
      jobId,
      end: (job) => {
        owner.open -= 1;
        if (job && this.store()) {
          owner.jobs.push(job);
          owner.dirty = true;
        }
        this.#schedule();
        if (!owner.dirty && owner.open === 0 && owner !== this.#current) this.#batches.delete(owner);
      },
    };
  }

  #schedule(): void {
    this.#timer ??= setTimeout(() => {
      this.#timer = undefined;
      this.#flush();
    }, this.windowMs);
    this.#timer.unref();
  }

  #flush(): void {
    const store = this.store();
    for (const batch of this.#batches) {
      const finished = batch.open === 0 && batch !== this.#current;
      if (batch.dirty && store) {
        batch.dirty = false;
        // Every record of the batch so far: the write replaces the batch's previous one.
        store.putInlineBatch(batch.id, [...batch.jobs]).catch((error: unknown) => this.logger.warn({ err: error, batch: batch.id, jobs: batch.jobs.length }, 'jobs: recording inline calls as jobs failed'));
      }
      if (finished || !store) this.#batches.delete(batch);
    }
    if (this.#current && Date.now() - this.#current.startedAt >= this.windowMs && this.#current.open === 0 && !this.#current.dirty) {
      this.#batches.delete(this.#current);
      this.#current = undefined;
    }
    if ([...this.#batches].some((batch) => batch.dirty)) this.#schedule();
  }

  /** Writes what is pending now (at shutdown). */
  flushNow(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#current = undefined;
    this.#flush();
  }
}
