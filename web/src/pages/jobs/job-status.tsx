// How a job's status, times and progress read, in the list and on a job's page.
import { enumLabel, formatMs } from '../../ui/format.js';
import type { Job, JobStatus } from './job-types.js';

export const JOB_STATUSES: readonly JobStatus[] = ['JOB_STATUS_QUEUED', 'JOB_STATUS_RUNNING', 'JOB_STATUS_SUCCEEDED', 'JOB_STATUS_FAILED', 'JOB_STATUS_CANCELLED'];

export function statusLabel(status: JobStatus | undefined): string {
  return enumLabel(status, 'JOB_STATUS_');
}

export function isFinished(status: JobStatus | undefined): boolean {
  return status === 'JOB_STATUS_SUCCEEDED' || status === 'JOB_STATUS_FAILED' || status === 'JOB_STATUS_CANCELLED';
}

/** Queued and running jobs can be cancelled. */
export function isCancellable(status: JobStatus | undefined): boolean {
  return status === 'JOB_STATUS_QUEUED' || status === 'JOB_STATUS_RUNNING';
}

const BADGE_CLASS: Partial<Record<JobStatus, string>> = {
  JOB_STATUS_SUCCEEDED: 'badge ok',
  JOB_STATUS_FAILED: 'badge bad',
  JOB_STATUS_CANCELLED: 'badge warn',
  JOB_STATUS_RUNNING: 'badge job-running',
};

/** The status as a word in a badge: the colour only repeats what the word says. */
export function StatusBadge({ status }: { status: JobStatus | undefined }) {
  return <span class={BADGE_CLASS[status ?? 'JOB_STATUS_QUEUED'] ?? 'badge'}>{statusLabel(status)}</span>;
}

/** Start to finish; a running job's time so far (at `now`). */
export function jobDurationMs(job: Job, now = Date.now()): number | undefined {
  if (!job.startedAt) return undefined;
  const started = Date.parse(job.startedAt);
  const ended = job.finishedAt ? Date.parse(job.finishedAt) : isFinished(job.status) ? undefined : now;
  return ended === undefined ? undefined : Math.max(0, ended - started);
}

export function formatDuration(job: Job, now = Date.now()): string {
  const ms = jobDurationMs(job, now);
  if (ms === undefined) return '-';
  return job.finishedAt ? formatMs(ms) : `${formatMs(ms)} so far`;
}

/** "answer running, 1 of 3 done", "2 steps done" and the like. */
export function progressText(job: Job, stepCount?: number): string {
  const done = job.steps?.length ?? 0;
  const of = stepCount && done <= stepCount ? ` of ${stepCount}` : '';
  if (job.status === 'JOB_STATUS_RUNNING' && job.currentStep) return `${job.currentStep} running, ${done}${of} done`;
  if (job.status === 'JOB_STATUS_QUEUED') return 'waiting for a replica';
  return `${done}${of} step${(stepCount || done) === 1 ? '' : 's'} done`;
}

/** A job id is long: its first characters are enough to tell jobs apart in a list. */
export function shortId(jobId: string): string {
  return jobId.length > 8 ? `${jobId.slice(0, 8)}…` : jobId;
}

/** A time in a table cell: the time of day for today, the date too otherwise; the full time on hover. */
export function When({ iso }: { iso: string | undefined }) {
  if (!iso) return <>-</>;
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return <>{iso}</>;
  const today = date.toDateString() === new Date().toDateString();
  return (
    <time dateTime={iso} title={date.toLocaleString()}>
      {today ? date.toLocaleTimeString() : date.toLocaleString()}
    </time>
  );
}
