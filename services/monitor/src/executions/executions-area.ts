import type { NatsConnection } from '@nats-io/transport-node';
import type { CallContext } from 'nice-grpc-common';
import { CALLER_METADATA, EventsReader, KvRejectedValueError, PIPELINE_NAME, RUN_ID_DESCRIPTION, RUN_ID_PATTERN, ServerError, Status, proto, type DeliveredBatch } from '@elexirion/kit';
import type { MonitorArea, MonitorContext } from '../monitor-area.js';
import { executionToProto, feedbackToProto, promptVersionsOf, recordOfRunEvent, scoreOf, type ExecutionRecord, type FeedbackRecord } from './execution-record.js';
import { ExecutionStore } from './execution-store.js';
import { executionsMetrics } from './executions-metrics.js';
import { decodePageToken, encodePageToken } from './page-token.js';
import { promptVersionStats } from './prompt-version-stats.js';

/** The metadata in which the gateway names the API key that records feedback. */
/** The durable consumers the monitor replicas share: one per subject (nats-server 2.9 keeps one filter per consumer). */
export const RUNS_CONSUMER = 'monitor-executions-runs';
export const REQUESTS_CONSUMER = 'monitor-executions-requests';
const DEFAULT_PAGE_SIZE = 50;
const MAX_PAGE_SIZE = 500;
const DEFAULT_SCORE_NAME = 'thumbs';
const FEEDBACK_NAME = /^[a-z0-9_.-]{1,64}$/;
const MAX_LABEL_CHARS = 128;
const MAX_PROMPT_VERSION_CHARS = 128;
const MAX_FEEDBACK_NAMES_PER_RUN = 32;
/** How long a call made while NATS is not attached (yet) waits for it before UNAVAILABLE. */
const ATTACH_WAIT_MS = 5_000;
/** How often RecordFeedback looks again for a run whose event is on its way. */
const RUN_POLL_MS = 100;
const FEEDBACK_SOURCES = new Set<number>(Object.values(proto.FeedbackSource).filter((value) => value >= 0));
const STATUS_NAMES = new Set(Object.keys(Status).filter((name) => Number.isNaN(Number(name))));

type Keys = 'listExecutions' | 'getExecution' | 'recordFeedback' | 'getPromptVersionStats';

function invalid(message: string): never {
  throw new ServerError(Status.INVALID_ARGUMENT, message);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
  });
}

/** The time range asked, checked; default the whole retention window up to now. */
function rangeOf(start: Date | undefined, end: Date | undefined, retentionHours: number) {
  const endMs = end ? end.getTime() : Date.now();
  const startMs = start ? start.getTime() : endMs - retentionHours * 3_600_000;
  if (!Number.isFinite(startMs)) invalid('start_time is not a valid time');
  if (!Number.isFinite(endMs)) invalid('end_time is not a valid time');
  if (startMs > endMs) invalid(`start_time (${new Date(startMs).toISOString()}) must not be after end_time (${new Date(endMs).toISOString()})`);
  return { startMs, endMs };
}

function checkPipeline(pipeline: string, required: boolean): string {
  if (!pipeline && !required) return pipeline;
  if (!pipeline) invalid('pipeline is required');
  if (!PIPELINE_NAME.test(pipeline)) invalid(`pipeline must be a pipeline name (a-z 0-9 _ -, 1-64 characters, starting with a letter or digit), got ${JSON.stringify(pipeline.slice(0, 80))}`);
  return pipeline;
}

function scoreNameOf(name: string): string {
  if (!name) return DEFAULT_SCORE_NAME;
  if (!FEEDBACK_NAME.test(name)) invalid(`score_name must be 1-64 characters of a-z 0-9 _ . -, got ${JSON.stringify(name.slice(0, 80))}`);
  return name;
}

export interface ExecutionsArea extends MonitorArea<Keys> {
  /** The store once attached to NATS (the rollouts area reads its guarded rollouts' runs from it). */
  store(): ExecutionStore | undefined;
}

/** Executions (completed runs), their feedback, and prompt version statistics. */
export async function executionsArea(context: MonitorContext): Promise<ExecutionsArea> {
  const { config, logger } = context;
  let store: ExecutionStore | undefined;
  let attached: () => void = () => {};
  const attaching = new Promise<void>((resolve) => (attached = resolve));
  const readers = new Set<EventsReader>();
  const stopping = new AbortController();
  const metrics = executionsMetrics(context.metrics.registry);

  /**
   * Each step's rollout baseline (by step name) from the executor's registry, which the stats
   * compare the other versions with. Without an answer in 2 s (an executor away, an old one with no
   * registry) the stats still answer, with the rule used before there were rollouts ("yaml", else
   * the busiest version), and the log says why.
   */
  async function rolloutBaselines(pipeline: string, signal: AbortSignal): Promise<Map<string, string>> {
    try {
      const { steps } = await context.clients.get('executor').listPromptVersions({ pipeline, step: '' }, { signal: AbortSignal.any([signal, AbortSignal.timeout(2_000)]) });
      return new Map(steps.filter((step) => step.rollout?.baseline).map((step) => [step.step, step.rollout!.baseline]));
    } catch (error) {
      logger.warn({ err: error, pipeline }, 'prompt version stats: the rollouts could not be read from the executor; comparing with "yaml" or the busiest version');
      return new Map();
    }
  }

  context.nats.use('executions', async (connection: NatsConnection, signal: AbortSignal) => {
    const opened = await ExecutionStore.open(connection, {
      retentionHours: config.MONITOR_EXECUTIONS_RETENTION_HOURS,
      maxTextChars: config.MONITOR_EXECUTIONS_MAX_TEXT_CHARS,
      maxBytes: config.MONITOR_EXECUTIONS_MAX_BYTES,
    });
    // Calls are answered from now on, also while the readers wait for the stream to exist.
    store = opened;
    attached();
    const both = AbortSignal.any([signal, stopping.signal]);
    const stream = context.host.TELEMETRY_STREAM;
    const runs = await EventsReader.open(connection, { stream, durable: RUNS_CONSUMER, filterSubject: 'elexirion.events.executor.run', signal: both });
    const requests = await EventsReader.open(connection, { stream, durable: REQUESTS_CONSUMER, filterSubject: 'elexirion.events.gateway.request', signal: both }).catch(async (error: unknown) => {
      await runs.close();
      throw error;
    });
    for (const [reader, handle] of [
      [runs, (batch: DeliveredBatch) => storeRuns(opened, batch)],
      [requests, (batch: DeliveredBatch) => storeRoutes(opened, batch)],
    ] as const) {
      readers.add(reader);
      void reader
        .consume(
          async (batch) => {
            try {
              await handle(batch);
            } catch (error) {
              // Redelivered by the reader after its delay: nothing accepted is lost.
              logger.warn({ err: error, subject: batch.subject, sequence: batch.streamSequence }, 'executions: could not store a batch of events; it will be delivered again');
              throw error;
            }
          },
          { onUndecodable: (message) => logger.warn(message, 'executions: a telemetry message that does not decode') },
        )
        .catch((error: unknown) => logger.warn({ err: error }, 'executions: an events reader stopped'))
        .finally(() => readers.delete(reader));
    }
  });

  // The events of a batch are about different runs (a repeat of one is idempotent): stored
  // concurrently, the batch is acknowledged once all are, and redelivered whole if one fails.
  async function storeRuns(target: ExecutionStore, batch: DeliveredBatch): Promise<void> {
    const oldest = Date.now() - config.MONITOR_EXECUTIONS_RETENTION_HOURS * 3_600_000;
    const records = batch.events.map(recordOfRunEvent).filter((record) => record !== undefined && record.finishedAtMs >= oldest);
    const outcomes = await Promise.all(
      records.map((record) =>
        target.storeRun(record!).catch((error: unknown) => {
          // A run the bucket refuses (over the server's max payload even cut) would be refused
          // on every redelivery: told and counted, not retried for ever.
          if (!(error instanceof KvRejectedValueError)) throw error;
          logger.error({ err: error, runId: record!.runId }, 'executions: a run could not be stored');
          return 'rejected' as const;
        }),
      ),
    );
    for (const outcome of outcomes) metrics.runs.inc({ outcome });
  }

  async function storeRoutes(target: ExecutionStore, batch: DeliveredBatch): Promise<void> {
    await Promise.all(
      batch.events.map(({ event }) => {
        const request = event.gatewayRequest;
        // A chat's or pipeline call's event names its job; a queued job's run id is its job id.
        const id = request?.runId || request?.jobId;
        return id && request?.route ? target.storeRoute(id, request.route) : undefined;
      }),
    );
  }

  async function ready(signal: AbortSignal): Promise<ExecutionStore> {
    if (store) return store;
    const waited = new AbortController();
    const timer = setTimeout(() => waited.abort(), ATTACH_WAIT_MS);
    try {
      await Promise.race([attaching, new Promise((resolve) => AbortSignal.any([signal, waited.signal]).addEventListener('abort', resolve, { once: true }))]);
    } finally {
      clearTimeout(timer);
    }
    if (!store) throw new ServerError(Status.UNAVAILABLE, 'the monitor is not connected to NATS (yet): executions cannot be read or written; retry shortly');
    return store;
  }

  function checkRunId(runId: string): string {
    if (!runId) invalid('run_id is required');
    if (!RUN_ID_PATTERN.test(runId)) invalid(`run_id must be ${RUN_ID_DESCRIPTION}, got ${JSON.stringify(runId.slice(0, 140))}`);
    return runId;
  }

  function checkFeedback(feedback: proto.Feedback | undefined): proto.Feedback {
    if (!feedback) invalid('feedback is required (a name, and a score or a label)');
    if (!FEEDBACK_NAME.test(feedback.name)) invalid(`feedback.name must be 1-64 characters of a-z 0-9 _ . -, got ${JSON.stringify(feedback.name.slice(0, 80))}`);
    if (feedback.score !== undefined && !Number.isFinite(feedback.score)) invalid(`feedback.score must be a finite number, got ${feedback.score}`);
    if (feedback.score === undefined && !feedback.label) invalid('feedback needs a score or a label (or both): feedback.score and feedback.label are both empty');
    if (feedback.label.length > MAX_LABEL_CHARS) invalid(`feedback.label must be at most ${MAX_LABEL_CHARS} characters, got ${feedback.label.length}`);
    if (feedback.comment.length > config.MONITOR_FEEDBACK_COMMENT_MAX_CHARS) {
      invalid(`feedback.comment must be at most ${config.MONITOR_FEEDBACK_COMMENT_MAX_CHARS} characters, got ${feedback.comment.length}`);
    }
    if (!FEEDBACK_SOURCES.has(feedback.source)) invalid(`feedback.source ${feedback.source} is not a FeedbackSource (human, llm_judge, code)`);
    return feedback;
  }

  /** The run, waiting briefly when its event may still be on its way; NOT_FOUND naming it after. */
  async function storedRun(target: ExecutionStore, runId: string, waitMs: number, signal: AbortSignal) {
    const deadline = Date.now() + waitMs;
    for (;;) {
      const stored = await target.get(runId);
      if (stored) return stored;
      if (Date.now() >= deadline || signal.aborted) {
        throw new ServerError(Status.NOT_FOUND, `run ${runId} is not among the executions kept (the last ${config.MONITOR_EXECUTIONS_RETENTION_HOURS} h): no completed run or job has that id`);
      }
      await sleep(Math.min(RUN_POLL_MS, deadline - Date.now()), signal);
    }
  }

  return {
    implementation: {
      async listExecutions(request, callContext) {
        const pageSize = request.pageSize === 0 ? DEFAULT_PAGE_SIZE : request.pageSize;
        if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > MAX_PAGE_SIZE) invalid(`page_size must be 1-${MAX_PAGE_SIZE} (0 for ${DEFAULT_PAGE_SIZE}), got ${request.pageSize}`);
        checkPipeline(request.pipeline, false);
        if (request.promptVersion.length > MAX_PROMPT_VERSION_CHARS) invalid(`prompt_version must be at most ${MAX_PROMPT_VERSION_CHARS} characters, got ${request.promptVersion.length}`);
        if (request.status && !STATUS_NAMES.has(request.status)) invalid(`status must be OK or a gRPC status name such as UNAVAILABLE, got ${JSON.stringify(request.status.slice(0, 80))}`);
        if (request.minScore !== undefined && !Number.isFinite(request.minScore)) invalid(`min_score must be a finite number, got ${request.minScore}`);
        const scoreName = scoreNameOf(request.scoreName);
        const range = rangeOf(request.startTime, request.endTime, config.MONITOR_EXECUTIONS_RETENTION_HOURS);
        const before = request.pageToken ? decodePageToken(request.pageToken) : undefined;
        const target = await ready(callContext.signal);
        const accept = (record: ExecutionRecord) => {
          if (request.pipeline && record.pipeline !== request.pipeline) return false;
          if (request.status && record.status !== request.status) return false;
          if (request.promptVersion && !record.steps.some((step) => step.promptVersion === request.promptVersion)) return false;
          if (request.minScore !== undefined) {
            const score = scoreOf(record, scoreName);
            if (score === undefined || score < request.minScore) return false;
          }
          return true;
        };
        // One more than a page tells whether there is a next page.
        const found = await target.scan({ ...range, pipeline: request.pipeline, ...(before ? { before } : {}) }, accept, pageSize + 1);
        const page = found.slice(0, pageSize);
        const last = page.at(-1);
        return {
          executions: page.map(executionToProto),
          nextPageToken: found.length > pageSize && last ? encodePageToken(last) : '',
        };
      },

      async getExecution(request, callContext) {
        const runId = checkRunId(request.runId);
        const target = await ready(callContext.signal);
        const stored = await target.get(runId);
        if (!stored) throw new ServerError(Status.NOT_FOUND, `run ${runId} is not among the executions kept (the last ${config.MONITOR_EXECUTIONS_RETENTION_HOURS} h): no completed run or job has that id`);
        return { execution: executionToProto(stored.value) };
      },

      async recordFeedback(request, callContext: CallContext) {
        const runId = checkRunId(request.runId);
        const feedback = checkFeedback(request.feedback);
        const target = await ready(callContext.signal);
        // A job id names its run: the feedback goes on the run.
        const { runId: storedRunId } = (await storedRun(target, runId, config.MONITOR_FEEDBACK_WAIT_MS, callContext.signal)).value;
        const recorded: FeedbackRecord = {
          name: feedback.name,
          ...(feedback.score !== undefined ? { score: feedback.score } : {}),
          label: feedback.label,
          comment: feedback.comment,
          source: feedback.source,
          recordedAtMs: Date.now(),
          recordedBy: callContext.metadata.get(CALLER_METADATA) ?? '',
        };
        const written = await target.modify(storedRunId, (stored) => {
          const others = stored.feedback.filter((existing) => existing.name !== recorded.name);
          // Bounded, so a run's record stays well under the server's max payload.
          if (others.length >= MAX_FEEDBACK_NAMES_PER_RUN) {
            throw new ServerError(Status.RESOURCE_EXHAUSTED, `run ${storedRunId} has feedback of ${others.length} names already, the most a run keeps: send one of those names again to replace it`);
          }
          return { ...stored, feedback: [...others, recorded] };
        });
        // Expired between the two reads: as if it had never been there.
        if (!written) throw new ServerError(Status.NOT_FOUND, `run ${runId} is not among the executions kept (the last ${config.MONITOR_EXECUTIONS_RETENTION_HOURS} h)`);
        const previous = written.before.feedback.find((existing) => existing.name === recorded.name);
        metrics.feedback.inc({ replaced: String(previous !== undefined) });
        context.events.publish('feedback', {
          status: 'OK',
          monitorFeedback: {
            runId: storedRunId,
            pipeline: written.after.pipeline,
            name: recorded.name,
            score: recorded.score,
            label: recorded.label,
            source: recorded.source as proto.FeedbackSource,
            replaced: previous !== undefined,
            previousScore: previous?.score,
            promptVersions: promptVersionsOf(written.after),
          },
        });
        return { feedback: feedbackToProto(recorded), replaced: previous !== undefined };
      },

      async getPromptVersionStats(request, callContext) {
        checkPipeline(request.pipeline, true);
        if (request.step.length > 128) invalid(`step must be at most 128 characters, got ${request.step.length}`);
        const scoreName = scoreNameOf(request.scoreName);
        const range = rangeOf(request.startTime, request.endTime, config.MONITOR_EXECUTIONS_RETENTION_HOURS);
        const target = await ready(callContext.signal);
        const [records, baselines] = await Promise.all([
          target.scan({ ...range, pipeline: request.pipeline }, (record) => record.pipeline === request.pipeline, Number.POSITIVE_INFINITY),
          rolloutBaselines(request.pipeline, callContext.signal),
        ]);
        return promptVersionStats(records, scoreName, request.step, baselines);
      },
    },
    store: () => store,
    async close() {
      stopping.abort();
      await Promise.allSettled([...readers].map((reader) => reader.close()));
    },
  };
}
