import { hostname } from 'node:os';
import { z } from 'zod';
import {
  ConcurrencyLimiter,
  FALLBACK_USED_TRAILER,
  LimitExceededError,
  PIPELINE_NAME,
  RETRY_PUSHBACK_KEY,
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
  TrailerCapture,
  type ServiceContext,
} from '@elexirion/kit';
import type { CallContext } from 'nice-grpc-common';
import { FallbackFailedError, recover } from './fallback/index.js';
import { Jobs, type InlineRun } from './jobs/jobs.js';
import { watchJob } from './jobs/watch-job.js';
import { createRouter, routingConfigShape, type RouteChoice } from './routing/router.js';
import { executeStreaming, type RunEvent } from './streaming/execute-streaming.js';
import { streamRun } from './streaming/stream-run.js';

const positiveInt = () => z.coerce.number().int().positive();

export const agentConfigSchema = z.object({
  AGENT_DEFAULT_PIPELINE: z.string().regex(PIPELINE_NAME, 'expected a pipeline name').default('general'),
  ...routingConfigShape,
  /** HandleChat's and RunPipeline's own timeout, under any deadline their caller sets. */
  AGENT_CHAT_TIMEOUT_MS: durationMs().default(300_000),
  /** Inline calls (HandleChat, RunPipeline) running at once on a replica; more wait in a queue. */
  AGENT_MAX_CONCURRENT_CALLS: positiveInt().default(1_024),
  /** Inline calls waiting for a slot; past it, RESOURCE_EXHAUSTED with a retry hint. */
  AGENT_MAX_QUEUED_CALLS: z.coerce.number().int().min(0).default(4_096),
  /** Queued jobs (SubmitJob) this replica runs at once; it takes one from the queue only when a slot is free. */
  AGENT_MAX_CONCURRENT_JOBS: positiveInt().default(16),
  /** Jobs stored and not yet ended, across the replicas (the queue's bound); past it SubmitJob is RESOURCE_EXHAUSTED with a retry hint. */
  AGENT_MAX_QUEUED_JOBS: positiveInt().default(10_000),
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
  /** Job webhooks may go to loopback, private and link-local addresses (development, tests); refused otherwise. */
  AGENT_WEBHOOK_ALLOW_PRIVATE: boolFlag().default(false),
});
export type AgentConfig = z.infer<typeof agentConfigSchema>;

/** The retry hint of a RESOURCE_EXHAUSTED answer: about how long a queued call takes to get a slot. */
const RETRY_HINT_MS = 1_000;

/** One inline run (HandleChat, RunPipeline and their streams) as runInline takes it. */
interface InlineCall {
  origin: InlineRun['origin'];
  choice: RouteChoice;
  /** The executor's session key: a session keeps its prompt versions. */
  sessionKey: string;
  message?: string;
  owner: string;
  promptOverrides?: Record<string, string>;
  /** Whole prompts per step for this run (RunPipelineRequest.prompt_candidates), passed to the executor as they are. */
  promptCandidates?: Record<string, proto.PromptTemplate>;
  inlineYaml?: string;
  /** The streams: each run event as it arrives, awaited (the reader paces the run). */
  forward?: (event: RunEvent) => Promise<void>;
}

interface InlineOutcome {
  jobId: string;
  result: proto.ExecuteResponse;
  fallbackUsed: boolean;
  fallback: proto.EmergentFallback | undefined;
}

function chatCall(request: proto.HandleChatRequest, choice: RouteChoice): InlineCall {
  return { origin: 'chat', choice, sessionKey: request.sessionId, message: request.message, owner: request.owner };
}

function chatAnswer(choice: RouteChoice, { jobId, result, fallbackUsed, fallback }: InlineOutcome): proto.HandleChatResponse {
  return { response: result.output, pipelineUsed: result.pipeline, fallbackUsed, jobId, usage: result.usage, steps: result.steps, route: choice.decision, fallback };
}

function pipelineCall(request: proto.RunPipelineRequest): InlineCall {
  const choice: RouteChoice = {
    pipeline: request.pipeline,
    inputs: request.inputs,
    decision: { pipeline: request.pipeline, matchedBy: 'explicit', rule: '', confidence: 0, reason: request.inlineYaml ? 'the request gave the pipeline inline' : 'the request named the pipeline' },
  };
  return { origin: 'pipeline', choice, sessionKey: request.sessionId, owner: request.owner, promptOverrides: request.promptOverrides, promptCandidates: request.promptCandidates, inlineYaml: request.inlineYaml };
}

function pipelineAnswer({ jobId, result }: InlineOutcome): proto.RunPipelineResponse {
  return { result: result.output, pipeline: result.pipeline, jobId, usage: result.usage, steps: result.steps };
}

export function createAgent(context: ServiceContext<AgentConfig>) {
  const { config, clients, events, nats, logger } = context;
  const executor = clients.get('executor');
  const replica = config.AGENT_REPLICA_NAME || `${hostname()}-${process.pid}`;
  const jobs = new Jobs({
    replica,
    maxConcurrent: config.AGENT_RUN_JOBS ? config.AGENT_MAX_CONCURRENT_JOBS : 0,
    ackWaitMs: config.AGENT_JOB_ACK_WAIT_MS,
    maxDeliveries: config.AGENT_JOB_MAX_DELIVERIES,
    maxQueued: config.AGENT_MAX_QUEUED_JOBS,
    retentionMs: config.AGENT_JOB_RETENTION_HOURS * 3_600_000,
    inlineRecordWindowMs: config.AGENT_INLINE_RECORD_WINDOW_MS,
    webhookAllowPrivate: config.AGENT_WEBHOOK_ALLOW_PRIVATE,
    executor,
    nats,
    logger,
  });
  // routes.yaml (reloaded live) and the optional classifier: HandleChat and SubmitJob without a pipeline.
  const router = createRouter(context);
  const admission = new ConcurrencyLimiter({ maxConcurrency: config.AGENT_MAX_CONCURRENT_CALLS, maxQueue: config.AGENT_MAX_QUEUED_CALLS });

  /**
   * Runs a pipeline inline under the replica's limit and the chat timeout, reports it, and
   * records it as a job after the answer (not awaited). With `forward` (the streams), the run goes
   * through the executor's ExecuteStream and each event is forwarded as it arrives.
   */
  async function runInline(call: InlineCall, callContext: CallContext) {
    const { origin, choice, sessionKey, message = '', owner, promptOverrides = {}, promptCandidates = {}, inlineYaml = '', forward } = call;
    const { pipeline, inputs } = choice;
    // A chat recovers from a failed run with its emergent fallback (fallback/); RunPipeline, a
    // direct run of a named pipeline, answers its failure as it is.
    const recovering = origin === 'chat';
    const timeout = chatTimeout(callContext);
    let release: () => void;
    try {
      release = await admission.acquire(callContext.signal, timeout.deadline);
    } catch (error) {
      timeout.dispose();
      if (!(error instanceof LimitExceededError)) throw error;
      callContext.trailer.set(RETRY_PUSHBACK_KEY, String(RETRY_HINT_MS));
      throw new ServerError(Status.RESOURCE_EXHAUSTED, `agent is at its limit of inline calls (${error.message}): retry in about ${RETRY_HINT_MS} ms`);
    }
    const { jobId, end } = jobs.beginInline();
    const startedAt = new Date();
    const observation = events.begin('job');
    const run: InlineRun = { jobId, origin, pipeline, message, inputs, sessionId: sessionKey, route: choice.decision, startedAt, owner };
    const overTimeout = (error: unknown) =>
      timeout.timedOut ? new ServerError(Status.DEADLINE_EXCEEDED, `the run went over the agent's chat timeout of ${config.AGENT_CHAT_TIMEOUT_MS} ms (AGENT_CHAT_TIMEOUT_MS)`) : error;
    // Inline YAML runs under the name its document gives; the executor takes one or the other.
    const request: proto.ExecuteRequest = { pipeline: inlineYaml ? '' : pipeline, inlineYaml, inputs, jobId, sessionKey, promptOverrides, promptCandidates, resumeRunId: '', runId: '' };
    // Once the client has seen text, another pipeline's answer cannot replace it: no fallback then.
    let textForwarded = false;
    try {
      let result: proto.ExecuteResponse;
      let fallback: proto.EmergentFallback | undefined;
      const trailer = recovering ? new TrailerCapture() : undefined;
      const options = trailer ? { ...timeout.options, onTrailer: trailer.onTrailer } : timeout.options;
      try {
        result = forward
          ? await executeStreaming(executor, request, options, (event) => {
              if (event.textDelta) textForwarded = true;
              return forward(event);
            })
          : await executor.execute(request, options);
      } catch (error) {
        if (!trailer || timeout.timedOut || textForwarded) throw overTimeout(error);
        ({ fallback, result } = await recover(executor, error, trailer.runFailure(), { pipeline, inlineYaml, inputs, jobId, sessionKey }, timeout.options).catch((caught: unknown) => {
          throw overTimeout(caught);
        }));
      }
      // A run used a fallback when any of its steps was served by other than its first choice, or
      // when the emergent fallback answered.
      const fallbackUsed = fallback !== undefined || result.steps.some((step) => step.fallbackUsed);
      observation.succeeded({ agentJob: { jobId, pipeline: result.pipeline, fallbackUsed } });
      run.result = { ...result, fallbackUsed };
      run.fallback = fallback;
      return { jobId, result, fallbackUsed, fallback };
    } catch (error) {
      // A fallback that failed too was still used.
      const fallbackFailed = error instanceof FallbackFailedError ? error.fallback : undefined;
      if (fallbackFailed) callContext.trailer.set(FALLBACK_USED_TRAILER, '1');
      observation.failed(error, (errorMessage) => ({ agentJob: { jobId, pipeline, errorMessage, fallbackUsed: fallbackFailed !== undefined } }));
      run.error = { code: statusNameOf(error), message: failureMessage(error) };
      run.fallback = fallbackFailed;
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

  const implementation: proto.AgentServiceImplementation = {
    async handleChat(request, callContext) {
      // An explicit pipeline wins; otherwise the route table (and the classifier, when on) decides.
      const choice = await router.route(request.message, { pipeline: request.pipeline, context: callContext });
      // The chat's session is the executor's session key: a session keeps its prompt versions.
      const outcome = await runInline(chatCall(request, choice), callContext);
      return chatAnswer(choice, outcome);
    },
    async *handleChatStream(request, callContext) {
      const choice = await router.route(request.message, { pipeline: request.pipeline, context: callContext });
      yield { route: choice.decision };
      const outcome = yield* streamRun((forward) => runInline({ ...chatCall(request, choice), forward }, callContext));
      yield { done: chatAnswer(choice, outcome) };
    },
    async runPipeline(request, callContext) {
      return pipelineAnswer(await runInline(pipelineCall(request), callContext));
    },
    async *runPipelineStream(request, callContext) {
      const outcome = yield* streamRun((forward) => runInline({ ...pipelineCall(request), forward }, callContext));
      yield { done: pipelineAnswer(outcome) };
    },
    async submitJob(request, callContext) {
      if (!request.pipeline && !request.message) throw new ServerError(Status.INVALID_ARGUMENT, 'pipeline or message: give a pipeline to run, or a message to route');
      // A message is routed as a chat is; with a pipeline named, its route says which input gets the message.
      const choice = request.message ? await router.route(request.message, { pipeline: request.pipeline, context: callContext }) : undefined;
      return jobs.submit({ pipeline: choice?.pipeline ?? request.pipeline, inputs: choice?.inputs ?? {}, request, route: choice?.decision }, callContext);
    },
    async getJob(request) {
      return { job: await jobs.get(request.jobId) };
    },
    async *watchJob(request, callContext) {
      yield* watchJob(jobs.watchDeps(), request, callContext);
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
      router.close();
      await jobs.close();
    },
  };
}

export const agentService = defineService({
  name: 'agent',
  configSchema: agentConfigSchema,
  create: createAgent,
});
