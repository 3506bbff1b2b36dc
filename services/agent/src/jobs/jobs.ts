/**
 * The agent's jobs: SubmitJob, GetJob, CancelJob and ListJobs over the job records and the work
 * queue, the runner that takes queued jobs on this replica, and the records of inline calls
 * (HandleChat, RunPipeline), written after their answer.
 */
import { randomUUID } from 'node:crypto';
import type { CallContext } from 'nice-grpc-common';
import { PIPELINE_NAME, RETRY_PUSHBACK_KEY, ServerError, Status, proto, type Logger, type ServiceClient, type ServiceNats } from '@elexirion/kit';
import { InlineRecords } from './inline-records.js';
import { JobEventLog, jobIdProblem } from './job-events.js';
import { JOBS_CANCEL_SUBJECT, JobQueue, QueueFullError } from './job-queue.js';
import { JobRunner } from './job-runner.js';
import { JobStore, isFinished } from './job-store.js';
import type { WatchJobDeps } from './watch-job.js';
import { resolvedAddressProblem } from './webhook-address.js';
import { WebhookSender, checkWebhook } from './webhook.js';

const { JobStatus } = proto;

export interface JobsOptions {
  replica: string;
  maxConcurrent: number;
  ackWaitMs: number;
  maxDeliveries: number;
  maxQueued: number;
  retentionMs: number;
  inlineRecordWindowMs: number;
  /** Webhooks may go to loopback, private and link-local receivers (AGENT_WEBHOOK_ALLOW_PRIVATE). */
  webhookAllowPrivate?: boolean;
  executor: ServiceClient<'executor'>;
  nats: ServiceNats;
  logger: Logger;
}

/** A job as SubmitJob is asked for it, the pipeline already chosen. */
export interface JobSubmission {
  pipeline: string;
  /** The inputs the route gave the message (the pipeline's input that gets it); the request's own inputs go beside them. */
  inputs: Record<string, string>;
  request: proto.SubmitJobRequest;
  route?: proto.RouteDecision | undefined;
}

/** An inline call (HandleChat, RunPipeline) as its job record tells it. */
export interface InlineRun {
  jobId: string;
  origin: 'chat' | 'pipeline';
  pipeline: string;
  message: string;
  inputs: Record<string, string>;
  sessionId: string;
  /** The API key (its id) that made the call, as the gateway says; empty when keys are off. */
  owner?: string;
  route?: proto.RouteDecision | undefined;
  /** The emergent fallback tried when the routed run failed (it answered, or failed too). */
  fallback?: proto.EmergentFallback | undefined;
  startedAt: Date;
  result?: { pipeline: string; output: string; outputs: Record<string, string>; steps: proto.StepResult[]; usage: proto.Usage | undefined; fallbackUsed: boolean };
  error?: { code: string; message: string };
}

const JOB_STATUSES: ReadonlySet<proto.JobStatus> = new Set([
  JobStatus.JOB_STATUS_QUEUED,
  JobStatus.JOB_STATUS_RUNNING,
  JobStatus.JOB_STATUS_SUCCEEDED,
  JobStatus.JOB_STATUS_FAILED,
  JobStatus.JOB_STATUS_CANCELLED,
]);
const DEFAULT_PAGE_SIZE = 50;
const MAX_PAGE_SIZE = 500;
const MAX_IDEMPOTENCY_KEY = 256;
/** How long a submit whose key another submit holds waits for that one's record to appear. */
const DEDUP_WAIT_MS = 5_000;
/** The retry hint when the queue is full: about how long jobs take to leave it. */
const QUEUE_FULL_RETRY_MS = 5_000;

export class Jobs {
  readonly #options: JobsOptions;
  #store: JobStore | undefined;
  #queue: JobQueue | undefined;
  #runner: JobRunner | undefined;
  #events: JobEventLog | undefined;
  #connection: Parameters<Parameters<ServiceNats['use']>[1]>[0] | undefined;
  readonly #inline: InlineRecords;

  constructor(options: JobsOptions) {
    this.#options = options;
    this.#inline = new InlineRecords(() => this.#store, options.logger, options.inlineRecordWindowMs);
    options.nats.use('jobs', async (connection) => {
      const store = await JobStore.open(connection, { retentionMs: options.retentionMs });
      // JetStream delivers one more than the limit: that delivery ends the job as failed.
      const queue = await JobQueue.open(connection, { ackWaitMs: options.ackWaitMs, maxDeliver: options.maxDeliveries + 1, maxQueued: options.maxQueued });
      const events = await JobEventLog.open(connection, { maxAgeMs: options.retentionMs });
      await this.#runner?.close();
      const runner = new JobRunner({ ...options, store, queue, events, webhooks: new WebhookSender({ logger: options.logger, allowPrivate: options.webhookAllowPrivate ?? false }) });
      this.#store = store;
      this.#events = events;
      this.#queue = queue;
      this.#connection = connection;
      this.#runner = runner;
      runner.start(connection);
    });
  }

  async close(): Promise<void> {
    this.#inline.flushNow();
    await this.#runner?.close();
  }

  #attached(): { store: JobStore; queue: JobQueue } {
    if (!this.#store || !this.#queue) throw new ServerError(Status.UNAVAILABLE, 'jobs are unavailable: their store (NATS JetStream) is not connected; try again');
    return { store: this.#store, queue: this.#queue };
  }

  async submit({ pipeline, inputs: routed, request, route }: JobSubmission, context?: Pick<CallContext, 'trailer'>): Promise<proto.SubmitJobResponse> {
    if (!PIPELINE_NAME.test(pipeline)) throw invalid(`pipeline: "${pipeline.slice(0, 80)}" is not a pipeline name (lowercase letters, digits, _ and -, at most 64)`);
    const both = Object.keys(routed).filter((name) => request.inputs[name] !== undefined);
    if (both.length > 0) throw invalid(`message and inputs.${both[0]}: the message goes to input "${both[0]}" of ${pipeline}; give one, not both`);
    if (request.idempotencyKey.length > MAX_IDEMPOTENCY_KEY) throw invalid(`idempotency_key: at most ${MAX_IDEMPOTENCY_KEY} characters, got ${request.idempotencyKey.length}`);
    const webhook = request.webhook;
    const allowPrivate = this.#options.webhookAllowPrivate ?? false;
    const givenWebhook = webhook && (webhook.url || webhook.secret) ? webhook : undefined;
    const webhookProblem = givenWebhook && (checkWebhook(givenWebhook, allowPrivate) ?? (allowPrivate ? undefined : await resolvedAddressProblem(new URL(givenWebhook.url))));
    if (webhookProblem) throw invalid(webhookProblem);
    const { store, queue } = this.#attached();
    const inputs = { ...request.inputs, ...routed };
    // Each owner has its own idempotency keys: another key's submit with the same one must not
    // be answered this owner's job.
    const claim = request.owner ? `${request.owner}\u0000${request.idempotencyKey}` : request.idempotencyKey;
    const job: proto.Job = {
      ...proto.Job.fromPartial({}),
      jobId: randomUUID(),
      status: JobStatus.JOB_STATUS_QUEUED,
      origin: 'submitted',
      pipeline,
      message: request.message,
      inputs,
      route,
      idempotencyKey: request.idempotencyKey,
      sessionId: request.sessionId,
      createdAt: new Date(),
      webhookUrl: webhook?.url ?? '',
      owner: request.owner,
    };
    await store.create(job, webhook?.secret ?? '');
    if (request.idempotencyKey) {
      const holder = await store.claimKey(claim, job.jobId).catch(async (error: unknown) => {
        await store.delete(job.jobId).catch(() => {});
        throw error;
      });
      if (holder !== undefined) {
        // Another submit holds the key: this record never reaches the queue.
        await store.delete(job.jobId).catch(() => {});
        return { job: await this.#waitForRecord(store, holder), deduplicated: true };
      }
    }
    try {
      await queue.enqueue(job.jobId);
    } catch (error) {
      // Not accepted: nothing of it may stay behind (a key pointing at a job that never runs).
      await store.delete(job.jobId).catch(() => {});
      if (request.idempotencyKey) await store.releaseKey(claim).catch(() => {});
      if (error instanceof QueueFullError) {
        context?.trailer.set(RETRY_PUSHBACK_KEY, String(QUEUE_FULL_RETRY_MS));
        throw new ServerError(Status.RESOURCE_EXHAUSTED, `${error.message}: retry in about ${QUEUE_FULL_RETRY_MS} ms`);
      }
      this.#options.logger.warn({ err: error, job_id: job.jobId }, 'jobs: a job could not be queued');
      throw new ServerError(Status.UNAVAILABLE, 'the job could not be stored in the queue (NATS JetStream); it was not accepted: try again');
    }
    return { job, deduplicated: false };
  }

  /** The job another submit with the same key created: it stores the record before it claims the key. */
  async #waitForRecord(store: JobStore, jobId: string): Promise<proto.Job> {
    const until = Date.now() + DEDUP_WAIT_MS;
    for (;;) {
      const record = await store.get(jobId);
      if (record) return record.job;
      if (Date.now() > until) throw new ServerError(Status.ABORTED, `idempotency_key: the job holding it (${jobId}) was not accepted; try again`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** What WatchJob needs: the event log, and whether a job was stored. */
  watchDeps(): WatchJobDeps {
    const events = this.#events;
    if (!events) throw new ServerError(Status.UNAVAILABLE, 'job events are unavailable: their store (NATS JetStream) is not connected; try again');
    const store = this.#store!;
    return { events, originOf: async (jobId) => (await store.get(jobId))?.job.origin };
  }

  async get(jobId: string): Promise<proto.Job> {
    checkJobId(jobId);
    const { store } = this.#attached();
    const record = await store.get(jobId);
    if (!record) throw new ServerError(Status.NOT_FOUND, `job "${jobId}" not found (never submitted, or older than the retention period)`);
    return record.job;
  }

  /**
   * Marks the job cancelled (by whom, at which step) and tells every replica, so the one running
   * it aborts its executor call. A queued job never runs; a finished one is answered unchanged.
   */
  async cancel(request: proto.CancelJobRequest): Promise<proto.Job> {
    checkJobId(request.jobId);
    const { store } = this.#attached();
    const by = request.requestedBy || 'api';
    let wasRunning = false;
    const record = await store.mutate(request.jobId, (job) => {
      if (isFinished(job.status)) return undefined;
      wasRunning = job.status === JobStatus.JOB_STATUS_RUNNING;
      return {
        ...job,
        status: JobStatus.JOB_STATUS_CANCELLED,
        cancelledBy: by,
        cancelledAtStep: job.currentStep,
        finishedAt: new Date(),
        errorCode: 'CANCELLED',
        error: request.reason ? `cancelled by ${by}: ${request.reason}` : `cancelled by ${by}`,
        webhookStatus: job.webhookUrl ? 'pending' : job.webhookStatus,
      };
    });
    if (!record) throw new ServerError(Status.NOT_FOUND, `job "${request.jobId}" not found (never submitted, or older than the retention period)`);
    // The replica running it stops and writes the event and the webhook; a queued one is
    // acknowledged unrun by whichever replica takes it.
    if (wasRunning) this.#connection?.publish(JOBS_CANCEL_SUBJECT, request.jobId);
    return record.job;
  }

  async list(request: proto.ListJobsRequest): Promise<proto.ListJobsResponse> {
    if (request.pageSize < 0) throw invalid(`page_size: must be 0 (the default, ${DEFAULT_PAGE_SIZE}) or more, got ${request.pageSize}`);
    const pageSize = Math.min(request.pageSize || DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
    const after = request.pageToken ? decodePageToken(request.pageToken) : undefined;
    const statuses = new Set(request.statuses);
    for (const status of statuses) {
      if (!JOB_STATUSES.has(status)) throw invalid(`statuses: ${status} (${proto.jobStatusToJSON(status)}) is not a status a job has`);
    }
    const from = request.createdAfter?.getTime();
    const to = request.createdBefore?.getTime();
    const { store } = this.#attached();
    const jobs = (await store.list())
      .filter((job) => (statuses.size === 0 || statuses.has(job.status)) && (!request.pipeline || job.pipeline === request.pipeline) && (!request.owner || job.owner === request.owner))
      .filter((job) => {
        const created = job.createdAt?.getTime() ?? 0;
        return (from === undefined || created >= from) && (to === undefined || created < to);
      })
      .sort(newestFirst)
      .filter((job) => !after || newestFirst(job, after) > 0);
    const page = jobs.slice(0, pageSize);
    const last = page.at(-1);
    return { jobs: page, nextPageToken: jobs.length > pageSize && last ? encodePageToken(last) : '' };
  }

  /**
   * An id for an inline call starting now, and `end`, which records the call as a finished job
   * once it has answered: in a batch written a moment later, never awaited by the call. Without
   * NATS the call is not recorded.
   */
  beginInline(): { jobId: string; end(run: InlineRun): void } {
    const { jobId, end } = this.#inline.begin();
    return { jobId, end: (run) => end(this.#store ? this.#inlineJob(run) : undefined) };
  }

  #inlineJob(run: InlineRun): proto.Job {
    const { result, error } = run;
    return {
      ...proto.Job.fromPartial({}),
      jobId: run.jobId,
      status: result ? JobStatus.JOB_STATUS_SUCCEEDED : error?.code === 'CANCELLED' ? JobStatus.JOB_STATUS_CANCELLED : JobStatus.JOB_STATUS_FAILED,
      origin: run.origin,
      pipeline: result?.pipeline ?? run.pipeline,
      message: run.message,
      inputs: run.inputs,
      route: run.route,
      sessionId: run.sessionId,
      owner: run.owner ?? '',
      createdAt: run.startedAt,
      startedAt: run.startedAt,
      finishedAt: new Date(),
      deliveries: 1,
      replica: this.#options.replica,
      output: result?.output ?? '',
      outputs: result?.outputs ?? {},
      steps: result?.steps ?? [],
      usage: result?.usage,
      fallbackUsed: result?.fallbackUsed ?? run.fallback !== undefined,
      fallback: run.fallback,
      errorCode: error?.code ?? '',
      error: error?.message ?? '',
    };
  }
}

/** A job id as the caller gave it: INVALID_ARGUMENT naming the field when it cannot be one (before NATS is asked). */
function checkJobId(jobId: string): void {
  if (!jobId) throw invalid('job_id: required');
  const problem = jobIdProblem(jobId);
  if (problem) throw invalid(`job_id: ${problem}`);
}

function invalid(message: string): ServerError {
  return new ServerError(Status.INVALID_ARGUMENT, message);
}

/** Newest first; the job id settles ties so pages never overlap or skip. */
function newestFirst(a: Pick<proto.Job, 'createdAt' | 'jobId'>, b: Pick<proto.Job, 'createdAt' | 'jobId'>): number {
  const byTime = (b.createdAt?.getTime() ?? 0) - (a.createdAt?.getTime() ?? 0);
  return byTime !== 0 ? byTime : a.jobId < b.jobId ? 1 : a.jobId > b.jobId ? -1 : 0;
}

/** A page token is where the previous page ended: the last job's creation time and id. */
function encodePageToken(job: proto.Job): string {
  return Buffer.from(JSON.stringify({ t: job.createdAt?.getTime() ?? 0, id: job.jobId })).toString('base64url');
}

function decodePageToken(token: string): Pick<proto.Job, 'createdAt' | 'jobId'> {
  try {
    const parsed = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as unknown;
    if (parsed && typeof parsed === 'object' && 't' in parsed && 'id' in parsed && typeof parsed.t === 'number' && typeof parsed.id === 'string') {
      return { createdAt: new Date(parsed.t), jobId: parsed.id };
    }
  } catch {
    // answered below
  }
  throw invalid('page_token: not a token from a ListJobs answer (pass next_page_token as it came)');
}
