import { z } from 'zod';
import { RUN_ID_DESCRIPTION, RUN_ID_PATTERN, proto, type TracedEvent } from '@elexirion/kit';

/**
 * What is stored per completed run (JSON in the executions bucket, keyed by run id): the run
 * event's fields, bounded, plus the route (joined from the gateway's request event) and the
 * feedback recorded on it. Times are epoch milliseconds.
 */
const usageSchema = z.object({ inputTokens: z.number(), outputTokens: z.number(), costUsd: z.number() });

const stepSchema = z.object({
  name: z.string(),
  type: z.string(),
  output: z.string(),
  provider: z.string(),
  model: z.string(),
  usage: usageSchema,
  durationMs: z.number(),
  attempts: z.number(),
  status: z.string(),
  promptVersion: z.string(),
  json: z.string(),
  error: z.string(),
  fallbackUsed: z.boolean(),
  failedTargets: z.array(z.string()),
});

export const feedbackSchema = z.object({
  name: z.string(),
  score: z.number().optional(),
  label: z.string(),
  comment: z.string(),
  source: z.number().int(),
  recordedAtMs: z.number(),
  recordedBy: z.string(),
});

export const executionRecordSchema = z.object({
  runId: z.string().regex(RUN_ID_PATTERN),
  jobId: z.string(),
  pipeline: z.string(),
  status: z.string(),
  inputs: z.record(z.string(), z.string()),
  output: z.string(),
  steps: z.array(stepSchema),
  usage: usageSchema,
  durationMs: z.number(),
  finishedAtMs: z.number(),
  errorMessage: z.string(),
  route: z.string(),
  traceId: z.string(),
  feedback: z.array(feedbackSchema),
  /** The run event's id: its redelivery is known as such, and a later event of the run (a resumed run's) is not. */
  eventId: z.string().default(''),
});

export type ExecutionRecord = z.infer<typeof executionRecordSchema>;
export type FeedbackRecord = z.infer<typeof feedbackSchema>;
type StepRecord = z.infer<typeof stepSchema>;

export const RUN_ID_RULE = { pattern: RUN_ID_PATTERN, description: RUN_ID_DESCRIPTION, name: 'run id' };

function usageOf(usage: proto.Usage | undefined) {
  return { inputTokens: Number(usage?.inputTokens ?? 0), outputTokens: Number(usage?.outputTokens ?? 0), costUsd: usage?.costUsd ?? 0 };
}

/** The record of a run event (kind "run" of the executor), or undefined when it is not one that can be stored. */
export function recordOfRunEvent({ event }: TracedEvent): ExecutionRecord | undefined {
  const run = event.executorRun;
  if (!run || !RUN_ID_PATTERN.test(run.runId)) return undefined;
  return {
    runId: run.runId,
    jobId: run.jobId,
    pipeline: run.pipeline,
    status: event.status || 'OK',
    inputs: { ...run.inputs },
    output: run.output,
    steps: run.steps.map(
      (step): StepRecord => ({
        name: step.name,
        type: step.type,
        output: step.output,
        provider: step.provider,
        model: step.model,
        usage: usageOf(step.usage),
        durationMs: Number(step.durationMs),
        attempts: step.attempts,
        status: step.status,
        promptVersion: step.promptVersion,
        json: step.json,
        error: step.error,
        fallbackUsed: step.fallbackUsed,
        failedTargets: [...step.failedTargets],
      }),
    ),
    usage: usageOf(run.usage),
    durationMs: Number(event.durationMs),
    finishedAtMs: event.time ? event.time.getTime() : Date.now(),
    errorMessage: run.errorMessage,
    route: '',
    traceId: event.traceId,
    feedback: [],
    eventId: event.eventId,
  };
}

/** A text cut to `max` characters, ending with a marker that says so and how long it was. */
export function cut(text: string, max: number): string {
  if (text.length <= max) return text;
  const marker = `…[truncated: ${text.length} characters]`;
  return text.slice(0, Math.max(0, max - marker.length)) + marker;
}

/**
 * Bounds what is kept of a run: every free text (inputs, output, each step's output, JSON and
 * error, the error message) to `maxTextChars`, then halves that limit until the whole record's
 * JSON fits `maxBytes` (room left for feedback). Names, statuses, versions and figures are kept.
 */
export function bounded(record: ExecutionRecord, maxTextChars: number, maxBytes: number): ExecutionRecord {
  let limit = maxTextChars;
  for (;;) {
    const candidate: ExecutionRecord = {
      ...record,
      inputs: Object.fromEntries(Object.entries(record.inputs).map(([name, value]) => [cut(name, 256), cut(value, limit)])),
      output: cut(record.output, limit),
      errorMessage: cut(record.errorMessage, limit),
      steps: record.steps.map((step) => ({ ...step, output: cut(step.output, limit), json: cut(step.json, limit), error: cut(step.error, limit) })),
    };
    // A quarter of the budget is left for feedback added later.
    if (Buffer.byteLength(JSON.stringify(candidate)) <= (maxBytes * 3) / 4 || limit <= 64) return candidate;
    limit = Math.floor(limit / 2);
  }
}

/** The prompt version each step used, by step name. */
export function promptVersionsOf(record: ExecutionRecord): Record<string, string> {
  return Object.fromEntries(record.steps.filter((step) => step.promptVersion).map((step) => [step.name, step.promptVersion]));
}

/** The run's numeric score of feedback `name`, if it has one. */
export function scoreOf(record: ExecutionRecord, name: string): number | undefined {
  return record.feedback.find((feedback) => feedback.name === name)?.score;
}

export function feedbackToProto(feedback: FeedbackRecord): proto.Feedback {
  return proto.Feedback.fromPartial({
    name: feedback.name,
    score: feedback.score,
    label: feedback.label,
    comment: feedback.comment,
    source: feedback.source as proto.FeedbackSource,
    recordedAt: new Date(feedback.recordedAtMs),
    recordedBy: feedback.recordedBy,
  });
}

export function executionToProto(record: ExecutionRecord): proto.Execution {
  return proto.Execution.fromPartial({
    runId: record.runId,
    jobId: record.jobId,
    pipeline: record.pipeline,
    status: record.status,
    inputs: record.inputs,
    output: record.output,
    steps: record.steps,
    usage: record.usage,
    durationMs: record.durationMs,
    finishedAt: new Date(record.finishedAtMs),
    errorMessage: record.errorMessage,
    route: record.route,
    feedback: record.feedback.map(feedbackToProto),
    traceId: record.traceId,
  });
}
