// Running answers: a durable job (POST /v1/jobs, then its event stream, resumed after the last
// sequence applied), or ChatStream for a key that may chat but not submit jobs. Every change goes
// through the store, so what arrived is in localStorage before it is on screen.
import { ApiError, call, events, follow } from '../../api.js';
import { findAnswer, updateAnswer, type Answer, type Provenance } from './chat-store.js';
import type { ChatResponse, ChatStreamResponse, Feedback, Job, JobEvent, WatchJobResponse } from './chat-types.js';

/** The streams running in this page, by answer id: Stop aborts them, leaving the page ends them. */
const running = new Map<string, AbortController>();

export function isRunning(answerId: string): boolean {
  return running.has(answerId);
}

const TERMINAL = new Set(['JOB_STATUS_SUCCEEDED', 'JOB_STATUS_FAILED', 'JOB_STATUS_CANCELLED']);

function elapsedMs(from: string | undefined, to: string | undefined): number | undefined {
  if (!from || !to) return undefined;
  const ms = Date.parse(to) - Date.parse(from);
  return Number.isFinite(ms) ? ms : undefined;
}

function provenanceOfJob(job: Job, answer: Answer): Provenance {
  return {
    pipeline: job.pipeline,
    route: job.route,
    steps: job.steps,
    usage: job.usage,
    fallbackUsed: job.fallbackUsed,
    fallback: job.fallback,
    firstTokenMs: elapsedMs(job.createdAt, answer.firstTokenAt),
    totalMs: elapsedMs(job.createdAt, job.finishedAt),
  };
}

/** The answer as it is once its job has ended. */
function finishedAnswer(answer: Answer, job: Job): Answer {
  const provenance = provenanceOfJob(job, answer);
  switch (job.status) {
    case 'JOB_STATUS_SUCCEEDED':
      // The job's output is the answer of record (a last step that did not stream has no deltas).
      return { ...answer, status: 'succeeded', text: job.output ?? answer.text, provenance, error: undefined };
    case 'JOB_STATUS_CANCELLED':
      // What arrived stays, marked stopped.
      return { ...answer, status: 'stopped', provenance };
    default:
      return { ...answer, status: 'failed', provenance, error: { code: job.errorCode || 'UNKNOWN', message: job.error || 'the job failed without a message', job: true } };
  }
}

/** Applies one job event (once: events at or before the last applied sequence are skipped). */
function applyJobEvent(answerId: string, event: JobEvent): void {
  updateAnswer(answerId, (answer) => {
    if (event.sequence && answer.lastSequence && BigInt(event.sequence) <= BigInt(answer.lastSequence)) return answer;
    let next: Answer = { ...answer, lastSequence: event.sequence ?? answer.lastSequence };
    if (event.textDelta?.text) {
      const step = event.textDelta.step;
      const sameStep = next.textStep === undefined || next.textStep === step;
      next = {
        ...next,
        status: 'streaming',
        text: sameStep ? next.text + event.textDelta.text : event.textDelta.text,
        textStep: step,
        firstTokenAt: next.firstTokenAt ?? event.time,
      };
    }
    const changed = event.statusChanged;
    if (changed?.job) {
      next = { ...next, startedAt: changed.job.createdAt ?? next.startedAt };
      if (changed.status && TERMINAL.has(changed.status)) next = finishedAnswer(next, changed.job);
    }
    return next;
  });
}

function failAnswer(answerId: string, error: unknown): void {
  const code = error instanceof ApiError ? error.code : 'UNKNOWN';
  const message = error instanceof Error ? error.message : String(error);
  // An error event inside an accepted stream (HTTP 200) is the run's failure, not a refused call.
  const job = error instanceof ApiError && error.status === 200;
  updateAnswer(answerId, (answer) => ({ ...answer, status: 'failed', error: { code, message, job } }));
}

/**
 * Submits (or, after a reload, re-submits with the same idempotency key: the same job comes back)
 * and follows the job until it ends.
 */
export async function runJobAnswer(answerId: string, message: string, sessionId: string): Promise<void> {
  if (running.has(answerId)) return;
  const controller = new AbortController();
  running.set(answerId, controller);
  try {
    let answer = findAnswer(answerId)?.turn.answer;
    if (!answer) return;
    if (!answer.jobId) {
      const submitted = await call<{ job: Job }>('POST', '/v1/jobs', { message, sessionId, idempotencyKey: answer.idempotencyKey }, { signal: controller.signal });
      updateAnswer(answerId, (current) => ({ ...current, jobId: submitted.job.jobId, startedAt: submitted.job.createdAt, status: 'streaming' }));
      answer = findAnswer(answerId)?.turn.answer;
      if (!answer?.jobId) return;
      // Stop was pressed while the job was being stored: cancel it now; its stream then ends CANCELLED.
      if (answer.stopRequested) await cancelJob(answer.jobId);
    }
    const jobId = answer.jobId;
    await follow<WatchJobResponse>(
      `/v1/jobs/${encodeURIComponent(jobId)}/events`,
      {
        onEvent: (event) => {
          if (event.data.event) applyJobEvent(answerId, event.data.event);
        },
        finished: (event) => {
          const status = event.data.event?.statusChanged?.status;
          return status !== undefined && TERMINAL.has(status);
        },
        onState: (state, detail) => {
          // Said under the answer while the connection is down; follow() resumes after the last event.
          const reconnecting = state === 'reconnecting' ? (detail ?? 'the connection dropped') : undefined;
          if (findAnswer(answerId)?.turn.answer.reconnecting !== reconnecting) updateAnswer(answerId, (current) => ({ ...current, reconnecting }));
        },
      },
      { signal: controller.signal, lastEventId: answer.lastSequence },
    );
    // The stream ended without a record (an older job's last event had none): ask for it.
    const after = findAnswer(answerId)?.turn.answer;
    if (!controller.signal.aborted && after && (after.status === 'streaming' || after.status === 'sending')) {
      const { job } = await call<{ job: Job }>('GET', `/v1/jobs/${encodeURIComponent(jobId)}`);
      if (job.status && TERMINAL.has(job.status)) updateAnswer(answerId, (current) => finishedAnswer(current, job));
    }
  } catch (error) {
    if (!controller.signal.aborted) failAnswer(answerId, error);
  } finally {
    // Only its own entry: after abortAll() a remounted page may already follow this answer anew.
    if (running.get(answerId) === controller) running.delete(answerId);
  }
}

async function cancelJob(jobId: string): Promise<Job> {
  const { job } = await call<{ job: Job }>('POST', `/v1/jobs/${encodeURIComponent(jobId)}/cancel`, { reason: 'stopped on the chat page' });
  return job;
}

/** Stops a job: the cancel is the job's, so its stream ends with CANCELLED and what came stays. */
export async function stopJobAnswer(answerId: string): Promise<void> {
  updateAnswer(answerId, (current) => ({ ...current, stopRequested: true }));
  const answer = findAnswer(answerId)?.turn.answer;
  // Not stored yet: runJobAnswer cancels the job as soon as the submit answers with its id (the
  // submit may already have reached the gateway, so aborting it would leave the job running).
  if (!answer?.jobId) return;
  let job: Job;
  try {
    job = await cancelJob(answer.jobId);
  } catch (error) {
    updateAnswer(answer.id, (current) => ({ ...current, stopRequested: false }));
    throw error;
  }
  // Normally the followed stream brings the CANCELLED event; without a follower, apply the record.
  if (!running.has(answer.id) && job.status && TERMINAL.has(job.status)) updateAnswer(answer.id, (current) => finishedAnswer(current, job));
}

/** ChatStream (no job): it cannot resume after a reload, and Stop aborts the call itself. */
export async function runStreamAnswer(answerId: string, message: string, sessionId: string): Promise<void> {
  const controller = new AbortController();
  running.set(answerId, controller);
  const sentAt = new Date().toISOString();
  updateAnswer(answerId, (answer) => ({ ...answer, status: 'streaming', startedAt: sentAt }));
  try {
    for await (const { data } of events<ChatStreamResponse>('/v1/chat/stream', { method: 'POST', body: { message, sessionId }, signal: controller.signal })) {
      updateAnswer(answerId, (answer) => streamEventApplied(answer, data));
      if (data.done) break;
    }
  } catch (error) {
    if (controller.signal.aborted) updateAnswer(answerId, (answer) => ({ ...answer, status: 'stopped' }));
    else failAnswer(answerId, error);
  } finally {
    // Only its own entry: after abortAll() a remounted page may already follow this answer anew.
    if (running.get(answerId) === controller) running.delete(answerId);
  }
}

function streamEventApplied(answer: Answer, data: ChatStreamResponse): Answer {
  if (data.runStarted?.runId) return { ...answer, jobId: data.runStarted.runId };
  if (data.route) return { ...answer, provenance: { ...answer.provenance, route: data.route } };
  if (data.textDelta?.text) {
    const sameStep = answer.textStep === undefined || answer.textStep === data.textDelta.step;
    return {
      ...answer,
      text: sameStep ? answer.text + data.textDelta.text : data.textDelta.text,
      textStep: data.textDelta.step,
      firstTokenAt: answer.firstTokenAt ?? new Date().toISOString(),
    };
  }
  if (data.done) return doneAnswer(answer, data.done);
  return answer;
}

function doneAnswer(answer: Answer, done: ChatResponse): Answer {
  return {
    ...answer,
    status: 'succeeded',
    jobId: done.jobId || answer.jobId,
    text: done.response ?? answer.text,
    provenance: {
      pipeline: done.pipelineUsed,
      route: done.route ?? answer.provenance?.route,
      steps: done.steps,
      usage: done.usage,
      fallbackUsed: done.fallbackUsed,
      fallback: done.fallback,
      firstTokenMs: elapsedMs(answer.startedAt, answer.firstTokenAt),
      totalMs: done.executionTimeMs === undefined ? undefined : Number(done.executionTimeMs),
    },
  };
}

export function stopStreamAnswer(answerId: string): void {
  running.get(answerId)?.abort();
}

/**
 * A conversation being deleted: its unfinished answers are cancelled (nobody will read them) and no
 * longer followed.
 */
export function abandon(answers: Answer[]): void {
  for (const answer of answers) {
    if (answer.status !== 'sending' && answer.status !== 'streaming') continue;
    running.get(answer.id)?.abort();
    running.delete(answer.id);
    if (answer.mode === 'job' && answer.jobId) cancelJob(answer.jobId).catch(() => {
      // Best effort: the job may have ended meanwhile, and its conversation is gone either way.
    });
  }
}

/** Leaving the page: the jobs go on (the page resumes them on return); the streams are cut. */
export function abortAll(): void {
  for (const controller of running.values()) controller.abort();
  running.clear();
}

/**
 * Records thumbs up (1) or down (0) on the run. The monitor records the execution shortly after
 * the run ends, so NOT_FOUND is retried a few times before it is reported.
 */
export async function recordThumbs(runId: string, score: 0 | 1, comment: string): Promise<Feedback> {
  const body = { feedback: { name: 'thumbs', score, comment: comment || undefined, source: 'FEEDBACK_SOURCE_HUMAN' } };
  for (let attempt = 0; ; attempt++) {
    try {
      const { feedback } = await call<{ feedback: Feedback }>('POST', `/v1/executions/${encodeURIComponent(runId)}/feedback`, body);
      return feedback;
    } catch (error) {
      if (!(error instanceof ApiError) || error.code !== 'NOT_FOUND' || attempt >= 8) throw error;
      await new Promise((resolve) => setTimeout(resolve, 250 * (attempt + 1)));
    }
  }
}
