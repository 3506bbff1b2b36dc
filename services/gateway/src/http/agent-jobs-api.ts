import { z } from 'zod';
import { RUN_ID_DESCRIPTION, RUN_ID_PATTERN, httpRoutes, proto, type HttpRoutes, type ServiceClient } from '@elexirion/kit';
import { httpCallOptions } from '../caller.js';
import { sendEventStream, type ServerSentEvent } from './sse.js';

// The design's job routes (`pipeline_status` and its event stream), in the design's snake_case
// JSON. They answer what Gateway.GetJob and Gateway.WatchJob answer, called in-process with the
// request's key, so ownership, scopes and limits are the gRPC path's.

const STATUS_NAMES = {
  [proto.JobStatus.JOB_STATUS_QUEUED]: 'queued',
  [proto.JobStatus.JOB_STATUS_RUNNING]: 'running',
  [proto.JobStatus.JOB_STATUS_SUCCEEDED]: 'succeeded',
  [proto.JobStatus.JOB_STATUS_FAILED]: 'failed',
  [proto.JobStatus.JOB_STATUS_CANCELLED]: 'cancelled',
} as const;

const jobParams = z.object({
  job_id: z.string().regex(RUN_ID_PATTERN, `expected ${RUN_ID_DESCRIPTION}`).describe('The job id (SubmitJob, or a chat\'s job_id)'),
});

/** A sequence as SSE sends it back: the decimal `id:` of an event. */
const sequence = z
  .string()
  .regex(/^\d{1,15}$/, 'expected the sequence number of an event (a whole number, the id: of an event)')
  .transform(Number);

const eventsQuery = z.object({
  after: sequence.optional().describe('Resume after the event with this sequence (its id:); Last-Event-ID wins when both are given'),
});

const eventsHeaders = z.looseObject({
  'last-event-id': sequence.optional().describe('What a reconnecting EventSource sends: the id: of the last event it received'),
});

const usage = z.object({
  input_tokens: z.number().int(),
  output_tokens: z.number().int(),
  cost_usd: z.number(),
});

/** The design's `pipeline_status`: a job as a browser or a script follows it. */
export const pipelineStatusSchema = z
  .object({
    job_id: z.string(),
    status: z.enum(['queued', 'running', 'succeeded', 'failed', 'cancelled']),
    pipeline: z.string().describe('The pipeline it runs (empty while a message waits to be routed)'),
    origin: z.string().describe('"submitted" (SubmitJob), "chat" or "pipeline" (inline calls)'),
    current_step: z.string().describe('The step running now; empty when none is'),
    progress: z
      .object({
        steps_completed: z.number().int().describe('Steps finished so far'),
        resumed_steps: z.number().int().describe('Of those, steps taken from a checkpoint after a replica took the job over'),
      })
      .optional()
      .describe('While the job runs'),
    result: z.string().optional().describe('The answer, once succeeded'),
    outputs: z.record(z.string(), z.string()).optional().describe('Every output of the pipeline, once succeeded'),
    error: z
      .object({ code: z.string().describe('gRPC status name'), message: z.string() })
      .optional()
      .describe('Why it failed or was cancelled'),
    fallback_used: z.boolean(),
    usage: usage.optional().describe('Tokens and cost so far'),
    created_at: z.string().describe('ISO 8601'),
    started_at: z.string().optional(),
    finished_at: z.string().optional(),
    execution_time_ms: z.number().int().optional().describe('From start to finish, once finished'),
    cancelled_by: z.string().optional(),
    last_sequence: z.number().int().describe('The sequence of its last event: /events?after=<it> streams only what comes next'),
  })
  .describe('pipeline_status: a job\'s state');
export type PipelineStatus = z.infer<typeof pipelineStatusSchema>;

const errorBody = z.object({ error: z.object({ code: z.string(), message: z.string() }) }).describe('{"error":{"code":<gRPC status name>,"message"}}');

/** A job record as the design's `pipeline_status`. */
export function pipelineStatus(job: proto.Job): PipelineStatus {
  const status = STATUS_NAMES[job.status as keyof typeof STATUS_NAMES] ?? 'queued';
  const finished = status === 'succeeded' || status === 'failed' || status === 'cancelled';
  return {
    job_id: job.jobId,
    status,
    pipeline: job.pipeline,
    origin: job.origin,
    current_step: job.currentStep,
    ...(status === 'running' ? { progress: { steps_completed: job.steps.length, resumed_steps: job.resumedSteps } } : {}),
    ...(status === 'succeeded' ? { result: job.output, outputs: job.outputs } : {}),
    ...(finished && status !== 'succeeded' ? { error: { code: job.errorCode || (status === 'cancelled' ? 'CANCELLED' : 'UNKNOWN'), message: job.error } } : {}),
    fallback_used: job.fallbackUsed,
    ...(job.usage ? { usage: { input_tokens: job.usage.inputTokens, output_tokens: job.usage.outputTokens, cost_usd: job.usage.costUsd } } : {}),
    created_at: (job.createdAt ?? new Date(0)).toISOString(),
    ...(job.startedAt ? { started_at: job.startedAt.toISOString() } : {}),
    ...(job.finishedAt ? { finished_at: job.finishedAt.toISOString() } : {}),
    ...(job.startedAt && job.finishedAt ? { execution_time_ms: Math.max(0, job.finishedAt.getTime() - job.startedAt.getTime()) } : {}),
    ...(job.cancelledBy ? { cancelled_by: job.cancelledBy } : {}),
    last_sequence: job.lastSequence,
  };
}

/** The event's kind: the name of the field of JobEvent's oneof it sets. */
function kindOf(event: proto.JobEvent): string {
  if (event.statusChanged) return 'status_changed';
  if (event.stepStarted) return 'step_started';
  if (event.textDelta) return 'text_delta';
  if (event.stepFinished) return 'step_finished';
  if (event.stepFailed) return 'step_failed';
  return 'unknown';
}

/** A job event as one Server-Sent Event: its sequence is the `id:`, so Last-Event-ID resumes after it. */
export function jobServerSentEvent(event: proto.JobEvent): ServerSentEvent {
  return { event: kindOf(event), id: String(event.sequence), data: proto.JobEvent.toJSON(event) };
}

/** `GET /api/agent/jobs/:job_id` and `GET /api/agent/jobs/:job_id/events`. */
export function agentJobsApi(gateway: () => ServiceClient<'gateway'>): HttpRoutes {
  return httpRoutes('/api/agent', async (app) => {
    app.get(
      '/jobs/:job_id',
      { schema: { summary: 'pipeline_status: a job\'s state', params: jobParams, response: { 200: pipelineStatusSchema, 400: errorBody, 404: errorBody } } },
      async (request, reply) => {
        const { job } = await gateway().getJob({ jobId: request.params.job_id }, httpCallOptions(request, reply));
        return pipelineStatus(job!);
      },
    );

    app.get(
      '/jobs/:job_id/events',
      {
        schema: {
          summary: 'A job\'s events as Server-Sent Events, resumable with Last-Event-ID',
          description:
            'Each event is named by its kind (status_changed, step_started, text_delta, step_finished, step_failed), its id: is its sequence and its data the JobEvent in proto3 JSON. ' +
            'The stream ends after the event reporting the job\'s end; reconnecting after that answers 204, which tells an EventSource to stop. A failure mid-stream is an `error` event.',
          params: jobParams,
          querystring: eventsQuery,
          headers: eventsHeaders,
          response: { 204: z.null().describe('The job ended and its last event was seen already'), 400: errorBody, 404: errorBody },
        },
      },
      async (request, reply) => {
        const afterSequence = request.headers['last-event-id'] ?? request.query.after ?? 0;
        const options = httpCallOptions(request, reply);
        const events = gateway().watchJob({ jobId: request.params.job_id, afterSequence }, options)[Symbol.asyncIterator]();
        // Read before answering: an unknown job, another key's or a bad sequence is an HTTP
        // error, and nothing left to send (the client saw the end) is 204.
        const first = await events.next();
        if (first.done) return reply.code(204).send(null);
        await sendEventStream(reply, async function* () {
          try {
            for (let next: IteratorResult<proto.WatchJobResponse> = first; !next.done; next = await events.next()) yield jobServerSentEvent(next.value.event!);
          } finally {
            await events.return?.();
          }
        });
        return reply;
      },
    );
  });
}
