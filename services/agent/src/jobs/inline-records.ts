/**
 * The records of inline calls (HandleChat, RunPipeline), written after their answer and in
 * batches: every call that starts within one window (`windowMs`) gets an id in the same batch
 * (a UUID naming the batch, see job-store.ts), and the batch's key is written when records came in since its last
 * write, at most once a window. A JetStream write per chat would cost the all-in-one process
 * about a fifth of its chats per second (measured with the benchmark's throughput scenario); a
 * write per batch costs next to nothing. A batch stays in memory until its last call has ended
 * and its records are written; a batch that cannot be written is logged and dropped.
 *
 * A value may not exceed NATS's max_payload (1 MB by default), which many calls with long answers
 * would: a batch holds at most MAX_RECORDS_PER_BATCH calls (the next call starts a new one), each
 * record is encoded once and cut to fit max_payload when it is bigger (job-store.ts trimToFit),
 * and a record that does not fit in the room its batch's value has left is written alone, under
 * its own job id (where GetJob looks when the batch lacks it).
 */
import { randomUUID } from 'node:crypto';
import type { Logger, proto } from '@elexirion/kit';
import { inlineJobId, newInlineBatchId, type EncodedInlineJob, type JobStore } from './job-store.js';

/**
 * Calls per batch: GetJob of one reads (and checks) its whole batch, and a batch's value must stay
 * under max_payload. At the benchmark's rates (a few thousand chats a second) this is still a
 * write every few dozen chats.
 */
export const MAX_RECORDS_PER_BATCH = 64;

interface Batch {
  id: string;
  startedAt: number;
  next: number;
  /** Calls given an id in this batch that have not ended. */
  open: number;
  /** Records that ended and are not placed yet (in the batch's value, or alone). */
  pending: proto.Job[];
  /** The records the batch's value holds, and their bytes. */
  shared: EncodedInlineJob[];
  sharedBytes: number;
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
    if (!batch || now - batch.startedAt >= this.windowMs || batch.next >= MAX_RECORDS_PER_BATCH) {
      batch = { id: newInlineBatchId(randomUUID()), startedAt: now, next: 0, open: 0, pending: [], shared: [], sharedBytes: 0 };
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
        if (job && this.store()) owner.pending.push(job);
        this.#schedule();
        if (owner.pending.length === 0 && owner.open === 0 && owner !== this.#current) this.#batches.delete(owner);
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
      if (batch.pending.length > 0 && store) this.#write(store, batch);
      if (finished || !store) this.#batches.delete(batch);
    }
    if (this.#current && Date.now() - this.#current.startedAt >= this.windowMs && this.#current.open === 0 && this.#current.pending.length === 0) {
      this.#batches.delete(this.#current);
      this.#current = undefined;
    }
  }

  /** Places the batch's pending records (in its value while there is room, else alone) and writes them. */
  #write(store: JobStore, batch: Batch): void {
    const limit = store.inlineValueLimit;
    let shared = false;
    for (const job of batch.pending.splice(0)) {
      let record: EncodedInlineJob;
      try {
        record = store.encodeInline(job);
      } catch (error) {
        this.logger.warn({ err: error, job_id: job.jobId }, 'jobs: an inline call cannot be recorded as a job');
        continue;
      }
      // +1: the comma between two records.
      if (batch.sharedBytes + record.bytes + 1 <= limit) {
        batch.shared.push(record);
        batch.sharedBytes += record.bytes + 1;
        shared = true;
      } else {
        store.putInlineAlone(record).catch((error: unknown) => this.logger.warn({ err: error, job_id: record.jobId, bytes: record.bytes }, 'jobs: recording an inline call as a job failed'));
      }
    }
    // Every shared record of the batch so far: the write replaces the batch's previous one.
    if (shared) store.putInlineBatch(batch.id, [...batch.shared]).catch((error: unknown) => this.logger.warn({ err: error, batch: batch.id, jobs: batch.shared.length, bytes: batch.sharedBytes }, 'jobs: recording inline calls as jobs failed'));
  }

  /** Writes what is pending now (at shutdown). */
  flushNow(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#current = undefined;
    this.#flush();
  }
}
