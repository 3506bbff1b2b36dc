import { ServerError, Status, type proto } from '@elexirion/kit';
import { jobIdProblem, type JobEventLog } from './job-events.js';

export interface WatchJobDeps {
  events: JobEventLog;
  /**
   * How the job with this id came to be ("submitted", "chat", "pipeline"), from its record (not
   * its events: a queued job may have none yet); undefined when no job has this id.
   */
  originOf(jobId: string): Promise<string | undefined>;
}

/**
 * Agent/WatchJob: the job's events after `after_sequence`, ending with the one that reports its
 * end (at once for an inline call's record, which has none). INVALID_ARGUMENT for a malformed job id, NOT_FOUND for a job never stored (or expired),
 * OUT_OF_RANGE for a sequence no event has; a cancelled call ends the stream and its consumer.
 */
export async function* watchJob(deps: WatchJobDeps, request: proto.WatchJobRequest, context: { signal: AbortSignal }): AsyncIterable<proto.WatchJobResponse> {
  const problem = jobIdProblem(request.jobId);
  if (problem) throw new ServerError(Status.INVALID_ARGUMENT, `job_id: ${problem}`);
  const origin = await deps.originOf(request.jobId);
  if (origin === undefined) throw new ServerError(Status.NOT_FOUND, `job ${request.jobId} not found`);
  // An inline call (HandleChat, RunPipeline) has no events, and its record is written once it
  // has ended: there is nothing to stream, nor to wait for.
  if (origin !== 'submitted') return;
  for await (const event of deps.events.watch(request.jobId, request.afterSequence, context.signal)) yield { event };
}
