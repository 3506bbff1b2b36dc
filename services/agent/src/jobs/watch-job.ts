import { ServerError, Status, type proto } from '@elexirion/kit';
import { jobIdProblem, type JobEventLog } from './job-events.js';

export interface WatchJobDeps {
  events: JobEventLog;
  /** Whether a job with this id was stored (its record, not its events: a queued job may have none yet). */
  jobExists(jobId: string): Promise<boolean>;
}

/**
 * Agent/WatchJob: the job's events after `after_sequence`, ending with the one that reports its
 * end. INVALID_ARGUMENT for a malformed job id, NOT_FOUND for a job never stored (or expired),
 * OUT_OF_RANGE for a sequence no event has; a cancelled call ends the stream and its consumer.
 */
export async function* watchJob(deps: WatchJobDeps, request: proto.WatchJobRequest, context: { signal: AbortSignal }): AsyncIterable<proto.WatchJobResponse> {
  const problem = jobIdProblem(request.jobId);
  if (problem) throw new ServerError(Status.INVALID_ARGUMENT, `job_id: ${problem}`);
  if (!(await deps.jobExists(request.jobId))) throw new ServerError(Status.NOT_FOUND, `job ${request.jobId} not found`);
  for await (const event of deps.events.watch(request.jobId, request.afterSequence, context.signal)) yield { event };
}
