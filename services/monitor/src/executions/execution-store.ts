import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { z } from 'zod';
import { KvRevisionConflictError, KvStore, PIPELINE_NAME } from '@elexirion/kit';
import { RUN_ID_RULE, bounded, executionRecordSchema, type ExecutionRecord } from './execution-record.js';

export const EXECUTIONS_BUCKET = 'monitor_executions';
export const EXECUTION_INDEX_BUCKET = 'monitor_execution_index';
export const RUN_ROUTES_BUCKET = 'monitor_run_routes';
export const JOB_RUNS_BUCKET = 'monitor_job_runs';

const HOUR_MS = 3_600_000;
/**
 * The time index's slices: a page of the newest runs reads the keys of the last few slices only
 * (5 minutes of runs, not an hour's, under load), and a week is 2016 slices.
 */
const SLICE_MS = 5 * 60_000;
/**
 * A scan reads the newest slices one by one (4 hours: most pages end there), then, when it needs
 * more, what is left of the range with one read of the pipeline's index keys: a scan of a sparse
 * or old range never reads hundreds of empty slices one by one.
 */
const SLICES_READ_ONE_BY_ONE = 48;
const SLICES_READ_AHEAD = 8;
/** Executions read at once while a listing filters them. */
const READ_CONCURRENCY = 32;
/** Compare-and-set attempts before a write gives up (only under heavy contention on one run). */
const MAX_CAS_ATTEMPTS = 50;

/**
 * A position in the time index: the run's finish time and id. Index keys are
 * `<5-minute slice>.<pipeline>.<finished ms, 13 digits>.<run id>`, so a time range reads only
 * its slices' keys, and a pipeline's only its own.
 */
export interface IndexPosition {
  finishedAtMs: number;
  runId: string;
}

/** The pipeline as an index key token: its name (a-z 0-9 _ -), or "_" for a name that is not one (never a pipeline's). */
function pipelineToken(pipeline: string): string {
  return PIPELINE_NAME.test(pipeline) ? pipeline : '_';
}

export function indexKey({ finishedAtMs, runId, pipeline }: IndexPosition & { pipeline: string }): string {
  return `${Math.floor(finishedAtMs / SLICE_MS)}.${pipelineToken(pipeline)}.${String(finishedAtMs).padStart(13, '0')}.${runId}`;
}

function positionOfKey(key: string): IndexPosition | undefined {
  const match = /^\d+\.[^.]+\.(\d{13})\.([A-Za-z0-9_-]{1,128})$/.exec(key);
  return match ? { finishedAtMs: Number(match[1]), runId: match[2]! } : undefined;
}

/** Newest first: later time first, then the larger run id (any total order works for paging). */
export function newerFirst(a: IndexPosition, b: IndexPosition): number {
  return b.finishedAtMs - a.finishedAtMs || (a.runId < b.runId ? 1 : a.runId > b.runId ? -1 : 0);
}

export interface ExecutionStoreOptions {
  retentionHours: number;
  maxTextChars: number;
  maxBytes: number;
}

export interface ScanRange {
  startMs: number;
  endMs: number;
  /** Only this pipeline's runs (read from the index keys, not the runs); empty: every pipeline. */
  pipeline?: string;
  /** Only positions strictly older than this (the previous page's last one). */
  before?: IndexPosition;
}

/**
 * The executions in JetStream KV: one bucket of runs by id (with their feedback), one time
 * index (key only) so a time range is read without reading every run, and a short-lived bucket
 * of routes the gateway's request events carry for runs (joined whichever event comes first).
 * Every bucket's max age is the retention window.
 */
export class ExecutionStore {
  private constructor(
    readonly executions: KvStore<ExecutionRecord>,
    private readonly index: KvStore<Record<string, never>>,
    private readonly manager: JetStreamManager,
    private readonly routes: KvStore<{ route: string }>,
    private readonly jobRuns: KvStore<{ runId: string; ok: boolean }>,
    private readonly options: ExecutionStoreOptions,
  ) {}

  static async open(connection: NatsConnection, options: ExecutionStoreOptions): Promise<ExecutionStore> {
    const ttlMs = options.retentionHours * HOUR_MS;
    const executions = await KvStore.open(connection, {
      bucket: EXECUTIONS_BUCKET,
      schema: executionRecordSchema,
      key: RUN_ID_RULE,
      check: (key, value) => (value.runId === key ? undefined : `runId ${value.runId} is not its key`),
      ttlMs,
      description: 'Completed pipeline runs with their feedback, by run id (the monitor)',
    });
    const index = await KvStore.open(connection, {
      bucket: EXECUTION_INDEX_BUCKET,
      schema: z.object({}).strict() as unknown as z.ZodType<Record<string, never>>,
      key: { pattern: /^\d+\.([a-z0-9][a-z0-9_-]{0,63}|_)\.\d{13}\.[A-Za-z0-9_-]{1,128}$/, description: '<5-minute slice>.<pipeline>.<finished ms, 13 digits>.<run id>', name: 'index key' },
      ttlMs,
      description: 'Time index of monitor_executions: <5-minute slice>.<pipeline>.<finished ms>.<run id>',
    });
    const routes = await KvStore.open(connection, {
      bucket: RUN_ROUTES_BUCKET,
      schema: z.object({ route: z.string() }),
      key: RUN_ID_RULE,
      ttlMs: Math.min(ttlMs, 6 * HOUR_MS),
      description: "How the agent chose each run's pipeline, from the gateway's request events (the monitor)",
    });
    const jobRuns = await KvStore.open(connection, {
      bucket: JOB_RUNS_BUCKET,
      schema: z.object({ runId: z.string().regex(RUN_ID_RULE.pattern), ok: z.boolean() }),
      key: { ...RUN_ID_RULE, name: 'job id' },
      ttlMs,
      description: "The run of each agent job whose run id is not the job's (inline chats and pipeline calls)",
    });
    return new ExecutionStore(executions, index, await jetstreamManager(connection), routes, jobRuns, options);
  }

  /**
   * Stores a completed run once: a redelivered event finds it stored and changes nothing (the
   * index write is idempotent, and repeated in case the first delivery stopped between the two).
   */
  async storeRun(record: ExecutionRecord): Promise<'stored' | 'repeat' | 'updated'> {
    const kept = bounded(record, this.options.maxTextChars, this.options.maxBytes);
    let stored = kept;
    let outcome: 'stored' | 'repeat' | 'updated' = 'stored';
    try {
      await this.executions.create(kept.runId, kept);
    } catch (error) {
      if (!(error instanceof KvRevisionConflictError)) throw error;
      // Stored already. The same event again (a redelivery) or an older one changes nothing; a
      // later event of the run (a run resumed from its checkpoint ends again) is its outcome
      // now, with the feedback and route it has. Its index key moves with it (the old one is
      // skipped: it no longer matches the run's time).
      const written = await this.modify(kept.runId, (current) =>
        current.eventId === kept.eventId || current.finishedAtMs >= kept.finishedAtMs ? undefined : { ...kept, feedback: current.feedback, route: current.route || kept.route },
      );
      if (!written) return 'repeat';
      stored = written.after;
      outcome = written.after === written.before ? 'repeat' : 'updated';
    }
    await this.index.put(indexKey(stored), {});
    if (stored.jobId && stored.jobId !== stored.runId && RUN_ID_RULE.pattern.test(stored.jobId)) await this.keepJobRun(stored);
    if (stored.route) return outcome;
    // The request event may have come first: its route is waiting (see storeRoute), by run or job id.
    const route = (await this.routes.get(stored.runId)) ?? (stored.jobId && RUN_ID_RULE.pattern.test(stored.jobId) ? await this.routes.get(stored.jobId) : undefined);
    if (route?.value.route) await this.modify(kept.runId, (current) => (current.route ? undefined : { ...current, route: route.value.route }));
    return outcome;
  }

  /**
   * Keeps which run answered a job whose run id is not the job's: an inline chat's answer names
   * the job. When a job has two runs (a failure, then its emergent fallback), the successful one.
   */
  private async keepJobRun(run: ExecutionRecord): Promise<void> {
    const ok = run.status === 'OK';
    try {
      await this.jobRuns.create(run.jobId, { runId: run.runId, ok });
    } catch (error) {
      if (!(error instanceof KvRevisionConflictError)) throw error;
      const existing = await this.jobRuns.get(run.jobId);
      if (existing && existing.value.runId !== run.runId && ok && !existing.value.ok) {
        await this.jobRuns.update(run.jobId, { runId: run.runId, ok }, existing.revision).catch((conflict: unknown) => {
          if (!(conflict instanceof KvRevisionConflictError)) throw conflict;
        });
      }
    }
  }

  /** The run id of a run or job id: the id itself when a run has it, else the job's run. */
  async resolve(id: string): Promise<string | undefined> {
    if (await this.executions.get(id)) return id;
    return (await this.jobRuns.get(id))?.value.runId;
  }

  /**
   * Keeps the route of a run from the gateway's request event, and puts it on the run when that
   * is stored already. Written before the run is read, as storeRun reads it after the run is
   * written: whichever comes second sees the other.
   */
  async storeRoute(runId: string, route: string): Promise<void> {
    if (!RUN_ID_RULE.pattern.test(runId) || !route) return;
    await this.routes.put(runId, { route });
    const resolved = await this.resolve(runId);
    if (resolved) await this.modify(resolved, (stored) => (stored.route ? undefined : { ...stored, route }));
  }

  /** The run of a run id, or of a job id whose run has another id. */
  async get(id: string) {
    const stored = await this.executions.get(id);
    if (stored) return stored;
    const jobRun = await this.jobRuns.get(id);
    return jobRun ? this.executions.get(jobRun.value.runId) : undefined;
  }

  /**
   * Read-modify-write with compare-and-set on the revision, again on a conflict, so two writers
   * never lose one's change. `change` answers the new value, or undefined for no write. Answers
   * the value before and after, or undefined when the run is not stored.
   */
  async modify(runId: string, change: (stored: ExecutionRecord) => ExecutionRecord | undefined): Promise<{ before: ExecutionRecord; after: ExecutionRecord } | undefined> {
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const stored = await this.executions.get(runId);
      if (!stored) return undefined;
      const next = change(stored.value);
      if (!next) return { before: stored.value, after: stored.value };
      try {
        await this.executions.update(runId, next, stored.revision);
        return { before: stored.value, after: next };
      } catch (error) {
        if (!(error instanceof KvRevisionConflictError)) throw error;
      }
    }
    throw new Error(`run ${runId} changed under ${MAX_CAS_ATTEMPTS} writes in a row`);
  }

  /**
   * The stored runs of a time range, newest first, as `accept` filters them, until `wanted` are
   * accepted. Reads the index keys of the range's slices (and pipeline), newest first, not the
   * keys of other times or pipelines, then the runs themselves a few at a time.
   */
  async scan(range: ScanRange, accept: (record: ExecutionRecord) => boolean, wanted: number): Promise<ExecutionRecord[]> {
    const found: ExecutionRecord[] = [];
    const endMs = range.before ? Math.min(range.endMs, range.before.finishedAtMs) : range.endMs;
    if (endMs < range.startMs) return found;
    const firstSlice = Math.floor(range.startMs / SLICE_MS);
    const lastSlice = Math.floor(endMs / SLICE_MS);
    const inRange = (position: IndexPosition) =>
      position.finishedAtMs >= range.startMs && position.finishedAtMs <= range.endMs && (!range.before || newerFirst(range.before, position) < 0);
    const pipeline = range.pipeline ? pipelineToken(range.pipeline) : '*';
    const batches: { read: () => Promise<string[]>; before: number }[] = [];
    const lastOneByOne = Math.max(firstSlice, lastSlice - SLICES_READ_ONE_BY_ONE + 1);
    for (let slice = lastSlice; slice >= lastOneByOne; slice--) batches.push({ read: () => this.keys(`${slice}.${pipeline}.>`), before: Number.POSITIVE_INFINITY });
    // The rest of the range, older than the slices read one by one.
    if (lastOneByOne > firstSlice) batches.push({ read: () => this.keys(`*.${pipeline}.>`), before: lastOneByOne * SLICE_MS });
    // Reads of the next few slices start while one is handled: most slices of a sparse range are empty.
    const reads: Promise<string[]>[] = [];
    const readAhead = (upTo: number) => {
      for (let next = reads.length; next < Math.min(upTo, batches.length); next++) {
        const read = batches[next]!.read();
        // A read left behind when the scan ends early must not fail unhandled.
        read.catch(() => {});
        reads.push(read);
      }
    };
    for (const [index, batch] of batches.entries()) {
      readAhead(index + SLICES_READ_AHEAD);
      const positions = (await reads[index]!).map(positionOfKey).filter((position): position is IndexPosition => !!position && position.finishedAtMs < batch.before && inRange(position));
      positions.sort(newerFirst);
      for (let offset = 0; offset < positions.length; offset += READ_CONCURRENCY) {
        const chunk = positions.slice(offset, offset + READ_CONCURRENCY);
        const records = await Promise.all(chunk.map((position) => this.executions.get(position.runId)));
        for (const [at, record] of records.entries()) {
          // Skipped: a run expired before its index key, or a key that is not the run's time.
          if (record && record.value.finishedAtMs === chunk[at]!.finishedAtMs && accept(record.value)) {
            found.push(record.value);
            if (found.length >= wanted) return found;
          }
        }
      }
    }
    return found;
  }

  /**
   * The index keys matching a filter, from the stream's subjects (one request, paged by the
   * client past the server's page): no consumer is made, so an empty slice costs one round trip.
   */
  private async keys(filter: string): Promise<string[]> {
    const prefix = `$KV.${EXECUTION_INDEX_BUCKET}.`;
    const info = await this.manager.streams.info(`KV_${EXECUTION_INDEX_BUCKET}`, { subjects_filter: `${prefix}${filter}` });
    return Object.keys(info.state.subjects ?? {}).map((subject) => subject.slice(prefix.length));
  }
}
