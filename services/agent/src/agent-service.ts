import { hostname } from 'node:os';
import { z } from 'zod';
import {
  ConcurrencyLimiter,
  LimitExceededError,
  PIPELINE_NAME,
  ServerError,
  Status,
  boolFlag,
  callOptions,
  defineService,
  durationMs,
  failureMessage,
  incomingDeadline,
  proto,
  statusNameOf,
  type ServiceContext,
} from '@elexirion/kit';
import type { CallContext } from 'nice-grpc-common';
import { Jobs, type InlineRun } from './jobs/jobs.js';

const positiveInt = () => z.coerce.number().int().positive();

export const agentConfigSchema = z.object({
  AGENT_DEFAULT_PIPELINE: z.string().regex(PIPELINE_NAME, 'expected a pipeline name').default('general'),
  /** HandleChat's and RunPipeline's own timeout, under any deadline their caller sets. */
  AGENT_CHAT_TIMEOUT_MS: durationMs().default(300_000),
  /** Inline calls (HandleChat, RunPipeline) running at once on a replica; more wait in a queue. */
  AGENT_MAX_CONCURRENT_CALLS: positiveInt().default(1_024),
  /** Inline calls waiting for a slot; past it, RESOURCE_EXHAUSTED with a retry hint. */
  AGENT_MAX_QUEUED_CALLS: z.coerce.number().int().min(0).default(4_096),
  /** Queued jobs (SubmitJob) this replica runs at once; it takes one from the queue only when a slot is free. */
  AGENT_MAX_CONCURRENT_JOBS: positiveInt().default(16),
  /** Jobs (SubmitJob) are run by this replica; off, it still stores, answers and cancels them. */
  AGENT_RUN_JOBS: boolFlag().default(true),
  /** How long a replica may hold a job without a sign of life before another takes it over. */
  AGENT_JOB_ACK_WAIT_MS: positiveInt().default(30_000),
  /** Deliveries after which a job that never ended (its replicas kept dying) ends as failed. */
  AGENT_JOB_MAX_DELIVERIES: positiveInt().default(5),
  /** How long job records, events and idempotency keys are kept. */
  AGENT_JOB_RETENTION_HOURS: positiveInt().default(24 * 7),
  /** Inline calls starting within this window are recorded as jobs in one batch (one KV write per batch and window). */
  AGENT_INLINE_RECORD_WINDOW_MS: positiveInt().default(50),
  /** This replica's name on the jobs it runs; the host name and process id when empty. */
  AGENT_REPLICA_NAME: z.string().default(''),
});
export type AgentConfig = z.infer<typeof agentConfigSchema>;

/** The retry hint of a RESOURCE_EXHAUSTED answer: about how long a queued call takes to get a slot. */
const RETRY_HINT_MS = 1_000;

export function createAgent(context: ServiceContext<AgentConfig>) {
  const { config, clients, events, nats, logger } = context;
  const executor = clients.get('executor');
  const replica = config.AGENT_REPLICA_NAME || `${hostname()}-${process.pid}`;
  const jobs = new Jobs({
    replica,
    maxConcurrent: config.AGENT_RUN_JOBS ? config.AGENT_MAX_CONCURRENT_JOBS : 0,
    ackWaitMs: config.AGENT_JOB_ACK_WAIT_MS,
    maxDeliveries: config.AGENT_JOB_MAX_DELIVERIES,
    retentionMs: config.AGENT_JOB_RETENTION_HOURS * 3_600_000,
    inlineRecordWindowMs: config.AGENT_INLINE_RECORD_WINDOW_MS,
    executor,
    nats,
    logger,
  });
  const admission = new ConcurrencyLimiter({ maxConcurrency: config.AGENT_MAX_CONCURRENT_CALLS, maxQueue: config.AGENT_MAX_QUEUED_CALLS });

  /** The pipeline a request runs: routing (issue 12's router) replaces this one place. */
  function choosePipeline(request: { pipeline: string }): string {
    return request.pipeline || config.AGENT_DEFAULT_PIPELINE;
  }

  /**
   * Runs a pipeline inline under the replica's limit and the chat timeout, reports it, and
   * records it as a job after the answer (not awaited).
   */
  async function runInline(
    origin: InlineRun['origin'],
    pipeline: string,
    inputs: Record<string, string>,
    sessionKey: string,
    callContext: CallContext,
    message = '',
  ) {
    const timeout = chatTimeout(callContext);
    let release: () => void;
    try {
      release = await admission.acquire(callContext.signal, timeout.deadline);
    } catch (error) {
      timeout.dispose();
      if (!(error instanceof LimitExceededError)) throw error;
      callContext.trailer.set('grpc-retry-pushback-ms', String(RETRY_HINT_MS));
      throw new ServerError(Status.RESOURCE_EXHAUSTED, `agent is at its limit of inline calls (${error.message}): retry in about ${RETRY_HINT_MS} ms`);
    }
    const { jobId, end } = jobs.beginInline();
    const startedAt = new Date();
    const call = events.begin('job');
    const run: InlineRun = { jobId, origin, pipeline, message, inputs, sessionId: sessionKey, startedAt };
    try {
      const result = await executor.execute({ pipeline, inputs, jobId, sessionKey }, timeout.options).catch((error: unknown) => {
        throw timeout.timedOut ? new ServerError(Status.DEADLINE_EXCEEDED, `the run went over the agent's chat timeout of ${config.AGENT_CHAT_TIMEOUT_MS} ms (AGENT_CHAT_TIMEOUT_MS)`) : error;
      });
      // A run used a fallback when any of its steps was served by other than its first choice.
      const fallbackUsed = result.steps.some((step) => step.fallbackUsed);
      call.succeeded({ agentJob: { jobId, pipeline: result.pipeline, fallbackUsed } });
      run.result = { ...result, fallbackUsed };
      return { jobId, result, fallbackUsed };
    } catch (error) {
      call.failed(error, (errorMessage) => ({ agentJob: { jobId, pipeline, errorMessage } }));
      run.error = { code: statusNameOf(error), message: failureMessage(error) };
      throw error;
    } finally {
      timeout.dispose();
      release();
      end(run);
    }
  }

  /**
   * The chat timeout. A caller's deadline that comes first is kept and sent on as it is. Without
   * one, the timeout is a timer here that aborts the executor call: a deadline sent down the chain
   * would cost every hop its deadline bookkeeping on each chat, for a limit of minutes.
   */
  function chatTimeout(callContext: CallContext) {
    const timeoutAt = Date.now() + config.AGENT_CHAT_TIMEOUT_MS;
    const incoming = incomingDeadline(callContext);
    if (incoming && incoming.getTime() <= timeoutAt) {
      return { options: callOptions(callContext), deadline: incoming.getTime(), timedOut: false, dispose() {} };
    }
    const controller = new AbortController();
    const onAbort = () => controller.abort();
    callContext.signal.addEventListener('abort', onAbort, { once: true });
    const state = {
      options: incoming ? { signal: controller.signal, deadline: incoming } : { signal: controller.signal },
      deadline: timeoutAt,
      timedOut: false,
      dispose() {
        clearTimeout(timer);
        callContext.signal.removeEventListener('abort', onAbort);
      },
    };
    const timer = setTimeout(() => {
      state.timedOut = true;
      controller.abort();
    }, config.AGENT_CHAT_TIMEOUT_MS);
    return state;
  }

  /** HandleChat's run: the routing work adds its router in front of this one function. */
  function runChat(pipeline: string, inputs: Record<string, string>, sessionKey: string, callContext: CallContext) {
    return runInline('chat', pipeline, inputs, sessionKey, callContext, inputs.message ?? '');
  }

  const implementation: proto.AgentServiceImplementation = {
    async handleChat(request, callContext) {
      const pipeline = choosePipeline(request);
      // The chat's session is the executor's session key: a session keeps its prompt versions.
      const { jobId, result, fallbackUsed } = await runChat(pipeline, { message: request.message }, request.sessionId, callContext);
      return { response: result.output, pipelineUsed: result.pipeline, fallbackUsed, jobId, usage: result.usage, steps: result.steps };
    },
    async runPipeline(request, callContext) {
      const { jobId, result } = await runInline('pipeline', request.pipeline, request.inputs, '', callContext);
      return { result: result.output, pipeline: result.pipeline, jobId, usage: result.usage, steps: result.steps };
    },
    async submitJob(request) {
      return jobs.submit({ pipeline: choosePipeline(request), request });
    },
    async getJob(request) {
      return { job: await jobs.get(request.jobId) };
    },
    // WatchJob is built by the events work of this issue.
    async *watchJob() {
      throw new ServerError(Status.UNIMPLEMENTED, 'Agent/WatchJob is not built yet');
    },
    async cancelJob(request) {
      return { job: await jobs.cancel(request) };
    },
    async listJobs(request) {
      return jobs.list(request);
    },
  };
  return {
    implementation,
    async close() {
      await jobs.close();
    },
  };
}

export const agentService = defineService({
  name: 'agent',
  configSchema: agentConfigSchema,
  create: createAgent,
});
