// The live list of jobs (GET /v1/jobs, newest first), filtered by status and pipeline, in pages.
// The API has no list stream, so the page asks again every ~2 s while it is visible (and not when
// it is hidden), and announces what changed (a job's status) politely instead of every refresh.
import { useEffect, useRef, useState } from 'preact/hooks';
import { call } from '../../api.js';
import { linkClick } from '../../router.js';
import { ErrorNotice } from '../../ui/error-notice.js';
import { JOB_STATUSES, StatusBadge, When, formatDuration, progressText, shortId, statusLabel } from './job-status.js';
import type { Job, JobStatus, ListJobsResponse, PipelineSummary } from './job-types.js';

const REFRESH_MS = 2_000;
const PAGE_SIZES = [10, 20, 50, 100] as const;

interface Filters {
  status: JobStatus | '';
  pipeline: string;
  pageSize: number;
}

/** Each job whose status differs from the last answer's, said in words. */
function statusChanges(before: ReadonlyMap<string, JobStatus | undefined>, jobs: readonly Job[]): string[] {
  const changes: string[] = [];
  for (const job of jobs) {
    if (!before.has(job.jobId)) continue;
    const was = before.get(job.jobId);
    if (was !== job.status) changes.push(`Job ${shortId(job.jobId)}${job.pipeline ? ` (${job.pipeline})` : ''}: ${statusLabel(was)} → ${statusLabel(job.status)}`);
  }
  return changes;
}

export function JobsList({ pipelines, refreshSignal }: { pipelines: readonly PipelineSummary[] | undefined; refreshSignal: number }) {
  const [filters, setFilters] = useState<Filters>({ status: '', pipeline: '', pageSize: 20 });
  // The tokens of the pages before this one and of this one ('' is the first page).
  const [pageTokens, setPageTokens] = useState<string[]>(['']);
  const [answer, setAnswer] = useState<ListJobsResponse | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const [updatedAt, setUpdatedAt] = useState<Date | undefined>(undefined);
  const [visible, setVisible] = useState(() => document.visibilityState === 'visible');
  const [announcement, setAnnouncement] = useState('');
  const [now, setNow] = useState(() => Date.now());
  const lastStatuses = useRef(new Map<string, JobStatus | undefined>());
  const pageToken = pageTokens.at(-1) ?? '';

  useEffect(() => {
    const onVisibility = () => setVisible(document.visibilityState === 'visible');
    document.addEventListener('visibilitychange', onVisibility);
    return () => document.removeEventListener('visibilitychange', onVisibility);
  }, []);

  // A new filter or page starts the announcements afresh: its jobs are new to the list, not changed.
  useEffect(() => {
    lastStatuses.current = new Map();
    setAnswer(undefined);
  }, [filters, pageToken]);

  // Ask now, then again REFRESH_MS after each answer (never two asks at once), while visible.
  useEffect(() => {
    if (!visible) return;
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const refresh = async () => {
      try {
        const next = await call<ListJobsResponse>('GET', '/v1/jobs', undefined, {
          signal: controller.signal,
          query: { statuses: filters.status || undefined, pipeline: filters.pipeline, pageSize: filters.pageSize, pageToken },
        });
        const jobs = next.jobs ?? [];
        const changes = statusChanges(lastStatuses.current, jobs);
        if (changes.length > 0) setAnnouncement(changes.join('. '));
        lastStatuses.current = new Map(jobs.map((job) => [job.jobId, job.status]));
        setAnswer(next);
        setError(undefined);
        setUpdatedAt(new Date());
        setNow(Date.now());
      } catch (caught) {
        if (controller.signal.aborted) return;
        setError(caught);
      }
      if (!controller.signal.aborted) timer = setTimeout(refresh, REFRESH_MS);
    };
    void refresh();
    return () => {
      controller.abort();
      clearTimeout(timer);
    };
  }, [visible, filters, pageToken, refreshSignal]);

  const jobs = answer?.jobs ?? [];
  const stepCounts = new Map((pipelines ?? []).map((each) => [each.name, each.stepCount]));
  // The pipelines to filter by: those listed, and any a job names (a removed pipeline's jobs too).
  const pipelineNames = [...new Set([...(pipelines ?? []).map((each) => each.name), ...jobs.map((job) => job.pipeline ?? '').filter(Boolean), filters.pipeline].filter(Boolean))].sort();
  const filtered = filters.status !== '' || filters.pipeline !== '';
  const setFilter = (change: Partial<Filters>) => {
    setFilters((current) => ({ ...current, ...change }));
    setPageTokens(['']);
  };

  return (
    <section aria-labelledby="jobs-list-title" class="jobs-list">
      <div class="jobs-list-head">
        <h2 id="jobs-list-title">Jobs</h2>
        <p class="muted jobs-updated">
          {!visible
            ? 'Paused while this page is hidden.'
            : updatedAt
              ? `Live: updated every ${REFRESH_MS / 1000} s, last at ${updatedAt.toLocaleTimeString()}.`
              : 'Loading…'}
        </p>
      </div>
      <div class="row jobs-filters" role="group" aria-label="Which jobs to show">
        <div class="job-field">
          <label for="jobs-filter-status">Status</label>
          <select id="jobs-filter-status" value={filters.status} onChange={(event) => setFilter({ status: (event.target as HTMLSelectElement).value as JobStatus | '' })}>
            <option value="">Any status</option>
            {JOB_STATUSES.map((status) => (
              <option key={status} value={status}>
                {statusLabel(status)}
              </option>
            ))}
          </select>
        </div>
        <div class="job-field">
          <label for="jobs-filter-pipeline">Pipeline</label>
          <select id="jobs-filter-pipeline" value={filters.pipeline} onChange={(event) => setFilter({ pipeline: (event.target as HTMLSelectElement).value })}>
            <option value="">Any pipeline</option>
            {pipelineNames.map((name) => (
              <option key={name} value={name}>
                {name}
              </option>
            ))}
          </select>
        </div>
        <div class="job-field">
          <label for="jobs-filter-page-size">Per page</label>
          <select id="jobs-filter-page-size" value={String(filters.pageSize)} onChange={(event) => setFilter({ pageSize: Number((event.target as HTMLSelectElement).value) })}>
            {PAGE_SIZES.map((size) => (
              <option key={size} value={String(size)}>
                {size}
              </option>
            ))}
          </select>
        </div>
      </div>
      <p class="visually-hidden" aria-live="polite">
        {announcement}
      </p>
      <ErrorNotice error={error} title="The jobs could not be listed (still trying every few seconds)" />
      {answer === undefined && !error ? <p class="muted">Loading the jobs…</p> : null}
      {answer !== undefined && jobs.length === 0 ? (
        <p class="muted">{filtered ? 'No jobs match these filters.' : pageTokens.length > 1 ? 'No older jobs.' : 'No jobs yet: submit one above, or chat.'}</p>
      ) : null}
      {jobs.length > 0 ? (
        <div class="jobs-table-wrap">
          <table class="jobs-table">
            <caption class="visually-hidden">Jobs, newest first</caption>
            <thead>
              <tr>
                <th scope="col">Job</th>
                <th scope="col">Status</th>
                <th scope="col">Pipeline</th>
                <th scope="col">Origin</th>
                <th scope="col">Progress</th>
                <th scope="col">Created</th>
                <th scope="col">Started</th>
                <th scope="col">Finished</th>
                <th scope="col" class="num">
                  Duration
                </th>
              </tr>
            </thead>
            <tbody>
              {jobs.map((job) => (
                <tr key={job.jobId} data-job-id={job.jobId}>
                  <th scope="row">
                    <a href={`/jobs/${job.jobId}`} onClick={(event) => linkClick(event, `/jobs/${job.jobId}`)} aria-label={`Job ${job.jobId}`}>
                      <code>{shortId(job.jobId)}</code>
                    </a>
                  </th>
                  <td>
                    <StatusBadge status={job.status} />
                  </td>
                  <td>{job.pipeline || <span class="muted">routing</span>}</td>
                  <td>{job.origin || '-'}</td>
                  <td>{progressText(job, job.pipeline ? stepCounts.get(job.pipeline) : undefined)}</td>
                  <td class="job-when">
                    <When iso={job.createdAt} />
                  </td>
                  <td class="job-when">
                    <When iso={job.startedAt} />
                  </td>
                  <td class="job-when">
                    <When iso={job.finishedAt} />
                  </td>
                  <td class="num">{formatDuration(job, now)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
      {pageTokens.length > 1 || answer?.nextPageToken ? (
        <nav class="row jobs-pager" aria-label="Pages of jobs">
          <button type="button" class="secondary" disabled={pageTokens.length <= 1} onClick={() => setPageTokens((tokens) => tokens.slice(0, -1))}>
            Newer jobs
          </button>
          <span class="muted">Page {pageTokens.length}</span>
          <button type="button" class="secondary" disabled={!answer?.nextPageToken} onClick={() => answer?.nextPageToken && setPageTokens((tokens) => [...tokens, answer.nextPageToken!])}>
            Older jobs
          </button>
        </nav>
      ) : null}
    </section>
  );
}
