// One job (/jobs/<id>): its record (GET /v1/jobs/{id}), its events followed live and resumably
// (GET /v1/jobs/{id}/events: after a dropped connection, follow() resumes after the last sequence
// seen), the text as the model writes it, and Cancel while it is queued or running.
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, call, follow, type StreamState } from '../../api.js';
import { mayUse, useCaller } from '../../caller.js';
import { linkClick } from '../../router.js';
import { ErrorNotice } from '../../ui/error-notice.js';
import { enumLabel, formatCost, formatCount, formatMs, formatTime } from '../../ui/format.js';
import { StatusBadge, formatDuration, isCancellable, isFinished, shortId, statusLabel } from './job-status.js';
import type { Job, JobEvent, StepResult, Usage, WatchJobResponse } from './job-types.js';

/** How long after an event the record is read again: a burst of events makes one read. */
const RELOAD_DELAY_MS = 150;
/** The event log keeps the last of these (the text itself is kept whole, per step). */
const MAX_LOG = 200;

interface LoggedEvent {
  sequence: string;
  time?: string;
  text: string;
}

/** An event in words for the log; text deltas are shown as text, not logged one by one. */
function describeEvent(event: JobEvent): string | undefined {
  if (event.statusChanged) return `Status ${statusLabel(event.statusChanged.status)}${event.statusChanged.detail ? `: ${event.statusChanged.detail}` : ''}`;
  if (event.stepStarted) return `Step ${event.stepStarted.step ?? '?'} started${event.stepStarted.type ? ` (${event.stepStarted.type})` : ''}`;
  if (event.stepFinished) return `Step ${event.stepFinished.name ?? '?'} ${event.stepFinished.status ?? 'finished'}${event.stepFinished.durationMs ? ` in ${formatMs(Number(event.stepFinished.durationMs))}` : ''}`;
  if (event.stepFailed) return `Step ${event.stepFailed.step ?? '?'} failed: ${event.stepFailed.code ?? ''} ${event.stepFailed.message ?? ''}`.trim();
  return undefined;
}

const STREAM_STATE_TEXT: Record<StreamState, string> = {
  connecting: 'Connecting to the job\'s events…',
  live: 'Following the job\'s events live.',
  reconnecting: 'The connection dropped: reconnecting, to resume after the last event received…',
  ended: 'All of the job\'s events received: it has ended.',
};

function tokens(usage: Usage | undefined): string {
  if (!usage || (!usage.inputTokens && !usage.outputTokens)) return '-';
  return `${formatCount(usage.inputTokens ?? 0)} in / ${formatCount(usage.outputTokens ?? 0)} out`;
}

function cancelOutcome(job: Job): string {
  if (job.status === 'JOB_STATUS_CANCELLED') {
    return `Cancelled by ${job.cancelledBy || 'api'}${job.cancelledAtStep ? ` at step ${job.cancelledAtStep}` : ' before it started a step'}.`;
  }
  return `Nothing to cancel: the job had already ${statusLabel(job.status)}.`;
}

export function JobDetail({ jobId }: { jobId: string }) {
  const { caller } = useCaller();
  const [job, setJob] = useState<Job | undefined>(undefined);
  const [loadError, setLoadError] = useState<unknown>(undefined);
  const [streamState, setStreamState] = useState<StreamState | undefined>(undefined);
  const [streamError, setStreamError] = useState<unknown>(undefined);
  // The streamed text, per step in the order the steps began.
  const [texts, setTexts] = useState<[string, string][]>([]);
  const [log, setLog] = useState<LoggedEvent[]>([]);
  const [announcement, setAnnouncement] = useState('');
  const [cancelReason, setCancelReason] = useState('');
  const [cancelling, setCancelling] = useState(false);
  const [cancelResult, setCancelResult] = useState<Job | undefined>(undefined);
  const [cancelError, setCancelError] = useState<unknown>(undefined);
  const reloadTimer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  const unmounted = useRef(new AbortController());

  /** Reads the record; answers it, or undefined when it could not be read (the error is shown). */
  const reload = async (): Promise<Job | undefined> => {
    try {
      const answer = await call<{ job?: Job }>('GET', `/v1/jobs/${encodeURIComponent(jobId)}`, undefined, { signal: unmounted.current.signal });
      if (answer.job) setJob(answer.job);
      setLoadError(undefined);
      return answer.job;
    } catch (error) {
      if (!unmounted.current.signal.aborted) setLoadError(error);
      return undefined;
    }
  };

  const reloadSoon = () => {
    if (reloadTimer.current !== undefined) return;
    reloadTimer.current = setTimeout(() => {
      reloadTimer.current = undefined;
      void reload();
    }, RELOAD_DELAY_MS);
  };

  useEffect(() => {
    const controller = unmounted.current;
    void (async () => {
      const first = await reload();
      // An unknown or another key's job: the record's NOT_FOUND says it; no stream to follow.
      // An inline call (a chat, a direct pipeline run) is recorded once it has ended, without events.
      if (!first || controller.signal.aborted || first.origin !== 'submitted') return;
      try {
        await follow<WatchJobResponse>(
          `/v1/jobs/${encodeURIComponent(jobId)}/events`,
          {
            onEvent: ({ data }) => {
              const event = data?.event;
              if (!event) return;
              if (event.textDelta?.text) {
                const step = event.textDelta.step ?? '';
                const text = event.textDelta.text;
                setTexts((current) => {
                  const at = current.findIndex(([name]) => name === step);
                  if (at < 0) return [...current, [step, text]];
                  const next = current.slice();
                  next[at] = [step, current[at]![1] + text];
                  return next;
                });
                return;
              }
              const described = describeEvent(event);
              if (described) setLog((current) => [...current.slice(-(MAX_LOG - 1)), { sequence: event.sequence ?? '', time: event.time, text: described }]);
              if (event.statusChanged) {
                setAnnouncement(`Job ${statusLabel(event.statusChanged.status)}.`);
                if (event.statusChanged.job) setJob(event.statusChanged.job);
                else reloadSoon();
              } else reloadSoon();
            },
            finished: ({ data }) => isFinished(data?.event?.statusChanged?.status),
            onState: (state) => setStreamState(state),
          },
          { signal: controller.signal },
        );
      } catch (error) {
        if (!controller.signal.aborted) setStreamError(error);
      }
    })();
    return () => {
      controller.abort();
      clearTimeout(reloadTimer.current);
    };
  }, [jobId]);

  async function cancel() {
    setCancelling(true);
    setCancelError(undefined);
    try {
      const answer = await call<{ job?: Job }>('POST', `/v1/jobs/${encodeURIComponent(jobId)}/cancel`, cancelReason.trim() ? { reason: cancelReason.trim() } : {});
      if (answer.job) {
        setCancelResult(answer.job);
        setJob(answer.job);
      }
    } catch (error) {
      setCancelError(error);
    } finally {
      setCancelling(false);
    }
  }

  const back = (
    <p>
      <a href="/jobs" onClick={(event) => linkClick(event, '/jobs')}>
        ← All jobs
      </a>
    </p>
  );

  if (loadError && !job) {
    const notFound = loadError instanceof ApiError && loadError.code === 'NOT_FOUND';
    return (
      <>
        {back}
        <h1>Job {shortId(jobId)}</h1>
        <ErrorNotice
          error={loadError}
          title={notFound ? 'No such job: it was never submitted, is older than the retention period, or belongs to another key' : 'The job could not be read'}
        />
      </>
    );
  }
  if (!job) {
    return (
      <>
        {back}
        <h1>Job {shortId(jobId)}</h1>
        <p class="muted">Loading the job…</p>
      </>
    );
  }

  const steps = job.steps ?? [];
  const outputs = Object.entries(job.outputs ?? {});
  const inputs = Object.entries(job.inputs ?? {});
  const mayCancel = isCancellable(job.status) && (caller === undefined || mayUse(caller, 'jobs'));

  return (
    <>
      {back}
      <div class="job-heading">
        <h1>
          Job <code>{shortId(job.jobId)}</code>
        </h1>
        <StatusBadge status={job.status} />
      </div>
      <p class="muted job-id">
        Id <code>{job.jobId}</code>
      </p>
      <p class="visually-hidden" aria-live="polite">
        {announcement}
      </p>
      <ErrorNotice error={loadError} title="The record could not be read again (what is shown may be out of date)" />

      {mayCancel || cancelResult || cancelError ? (
        <section class="card job-cancel" aria-labelledby="job-cancel-title">
          <h2 id="job-cancel-title">Cancel</h2>
          {mayCancel ? (
            <div class="row">
              <label>
                Reason (optional)
                <input type="text" value={cancelReason} maxLength={500} onInput={(event) => setCancelReason((event.target as HTMLInputElement).value)} />
              </label>
              <button type="button" class="danger" disabled={cancelling} onClick={cancel}>
                {cancelling ? 'Cancelling…' : 'Cancel job'}
              </button>
            </div>
          ) : null}
          <ErrorNotice error={cancelError} title="The job was not cancelled" />
          <p role="status" class="job-cancel-result">
            {cancelResult ? cancelOutcome(cancelResult) : ''}
          </p>
        </section>
      ) : null}

      <section aria-labelledby="job-stream-title" class="job-stream">
        <h2 id="job-stream-title">Live output</h2>
        <p class="muted job-stream-state">
          {job.origin !== 'submitted'
            ? `A ${job.origin === 'chat' ? 'chat' : 'direct pipeline run'} runs inline and is recorded once it has ended: it has no event stream; its output is below.`
            : streamState
              ? STREAM_STATE_TEXT[streamState]
              : 'Connecting…'}
        </p>
        <ErrorNotice error={streamError} title="The job's events could not be followed" />
        {texts.length === 0 ? (
          job.origin === 'submitted' ? (
            <p class="muted">{streamState === 'ended' ? 'No text was streamed.' : 'No text yet: it appears here as the model writes it.'}</p>
          ) : null
        ) : (
          texts.map(([step, text]) => (
            <div key={step} class="job-streamed">
              {texts.length > 1 || step ? <h3>Step {step || '(unnamed)'}</h3> : null}
              <pre class="job-text" data-step={step} aria-busy={streamState !== 'ended' && !isFinished(job.status) ? true : undefined}>
                {text}
              </pre>
            </div>
          ))
        )}
      </section>

      {job.status === 'JOB_STATUS_SUCCEEDED' || job.output ? (
        <section aria-labelledby="job-output-title">
          <h2 id="job-output-title">Output</h2>
          {job.output ? <pre class="job-text job-output">{job.output}</pre> : <p class="muted">The job succeeded with an empty output.</p>}
          {outputs.length > 0 ? (
            <NamedTexts caption="Named outputs" captionHidden nameHeading="Output" entries={outputs} />
          ) : null}
        </section>
      ) : null}

      {job.error || job.errorCode ? (
        <section aria-labelledby="job-error-title">
          <h2 id="job-error-title">{job.status === 'JOB_STATUS_CANCELLED' ? 'Why it stopped' : 'Error'}</h2>
          <div class={job.status === 'JOB_STATUS_CANCELLED' ? 'notice' : 'notice notice-error'}>
            {job.errorCode ? <span class="code">{job.errorCode}</span> : null}
            <p>{job.error || 'No message was recorded.'}</p>
          </div>
        </section>
      ) : null}

      <section aria-labelledby="job-record-title">
        <h2 id="job-record-title">Record</h2>
        <dl class="job-record">
          <dt>Status</dt>
          <dd>{statusLabel(job.status)}</dd>
          <dt>Pipeline</dt>
          <dd>{job.pipeline || 'not routed yet'}</dd>
          <dt>Origin</dt>
          <dd>{job.origin || '-'}</dd>
          {job.route ? (
            <>
              <dt>Route</dt>
              <dd>
                {job.route.pipeline ?? '-'} by {job.route.matchedBy ?? '-'}
                {job.route.rule ? `, rule ${job.route.rule}` : ''}
                {job.route.confidence ? `, confidence ${job.route.confidence.toFixed(2)}` : ''}
                {job.route.reason ? ` (${job.route.reason})` : ''}
              </dd>
            </>
          ) : null}
          {job.currentStep && job.status === 'JOB_STATUS_RUNNING' ? (
            <>
              <dt>Current step</dt>
              <dd>{job.currentStep}</dd>
            </>
          ) : null}
          <dt>Created</dt>
          <dd>{formatTime(job.createdAt)}</dd>
          <dt>Started</dt>
          <dd>{formatTime(job.startedAt)}</dd>
          <dt>Finished</dt>
          <dd>{formatTime(job.finishedAt)}</dd>
          <dt>Duration</dt>
          <dd>{formatDuration(job)}</dd>
          <dt>Usage</dt>
          <dd>{job.usage ? `${tokens(job.usage)}, ${formatCost(job.usage.costUsd ?? 0)}` : isFinished(job.status) ? 'none recorded' : 'counted when a step finishes'}</dd>
          {job.status === 'JOB_STATUS_CANCELLED' ? (
            <>
              <dt>Cancelled</dt>
              <dd class="job-cancelled">{cancelOutcome(job)}</dd>
            </>
          ) : null}
          <dt>Deliveries</dt>
          <dd>
            {job.deliveries ?? 0}
            {job.replica ? ` (replica ${job.replica})` : ''}
            {job.resumedSteps ? `, ${job.resumedSteps} step${job.resumedSteps === 1 ? '' : 's'} resumed from a checkpoint` : ''}
          </dd>
          {job.fallbackUsed || job.fallback ? (
            <>
              <dt>Fallback</dt>
              <dd>
                {job.fallback
                  ? `${job.fallback.pipeline ?? ''} after ${enumLabel(job.fallback.failureClass, 'FAILURE_CLASS_')} (${job.fallback.originalError ?? ''}), ${job.fallback.succeeded ? 'succeeded' : 'failed'}`
                  : 'a step was served by other than its first choice (see the steps)'}
              </dd>
            </>
          ) : null}
          {job.webhookUrl ? (
            <>
              <dt>Webhook</dt>
              <dd>
                <code>{job.webhookUrl}</code>: {job.webhookStatus || 'pending'}
              </dd>
            </>
          ) : null}
          {job.idempotencyKey ? (
            <>
              <dt>Idempotency key</dt>
              <dd>
                <code>{job.idempotencyKey}</code>
              </dd>
            </>
          ) : null}
          {job.owner ? (
            <>
              <dt>Owner (key id)</dt>
              <dd>
                <code>{job.owner}</code>
              </dd>
            </>
          ) : null}
        </dl>
        {job.message ? (
          <>
            <h3>Message</h3>
            <pre class="job-text">{job.message}</pre>
          </>
        ) : null}
        {inputs.length > 0 ? (
          <NamedTexts class="job-inputs" caption="Inputs" nameHeading="Input" entries={inputs} />
        ) : null}
      </section>

      <section aria-labelledby="job-steps-title">
        <h2 id="job-steps-title">Steps</h2>
        {steps.length === 0 ? (
          <p class="muted">{isFinished(job.status) ? 'No step finished.' : 'No step has finished yet.'}</p>
        ) : (
          <div class="jobs-table-wrap">
            <table class="job-steps">
              <caption class="visually-hidden">The job's finished steps, in order</caption>
              <thead>
                <tr>
                  <th scope="col">Step</th>
                  <th scope="col">Status</th>
                  <th scope="col">Model</th>
                  <th scope="col">Provider</th>
                  <th scope="col">Prompt version</th>
                  <th scope="col">Tokens</th>
                  <th scope="col" class="num">
                    Cost
                  </th>
                  <th scope="col" class="num">
                    Duration
                  </th>
                  <th scope="col" class="num">
                    Attempts
                  </th>
                </tr>
              </thead>
              <tbody>{steps.map((step, index) => <StepRow key={`${step.name ?? ''}-${index}`} step={step} />)}</tbody>
            </table>
          </div>
        )}
      </section>

      {job.origin === 'submitted' ? (
        <section aria-labelledby="job-events-title">
          <h2 id="job-events-title">Events</h2>
          {log.length === 0 ? (
            <p class="muted">No events received yet.</p>
          ) : (
            <ol class="job-events">
              {log.map((entry) => (
                <li key={entry.sequence}>
                  <span class="muted">
                    #{entry.sequence} {entry.time ? new Date(entry.time).toLocaleTimeString() : ''}
                  </span>{' '}
                  {entry.text}
                </li>
              ))}
            </ol>
          )}
        </section>
      ) : null}
    </>
  );
}

function StepRow({ step }: { step: StepResult }) {
  const notes = [step.fallbackUsed ? 'served by a fallback' : '', ...(step.failedTargets ?? []).map((target) => `failed first: ${target}`), step.error ?? ''].filter(Boolean);
  return (
    <tr>
      <th scope="row">
        {step.name ?? '-'}
        {step.type ? <span class="muted"> ({step.type})</span> : null}
        {notes.length > 0 ? <div class="muted job-step-notes">{notes.join('; ')}</div> : null}
      </th>
      <td>{step.status ?? '-'}</td>
      <td>{step.model || '-'}</td>
      <td>{step.provider || '-'}</td>
      <td>{step.promptVersion || '-'}</td>
      <td>{tokens(step.usage)}</td>
      <td class="num">{formatCost(step.usage?.costUsd ?? 0)}</td>
      <td class="num">{formatMs(step.durationMs === undefined ? undefined : Number(step.durationMs))}</td>
      <td class="num">{step.attempts ?? 0}</td>
    </tr>
  );
}

/** Names and their texts (inputs, named outputs) as a table, each text as it is. */
function NamedTexts({ caption, captionHidden, nameHeading, entries, class: className }: { caption: string; captionHidden?: boolean; nameHeading: string; entries: [string, string][]; class?: string }) {
  return (
    <table class={className}>
      <caption class={captionHidden ? 'visually-hidden' : undefined}>{caption}</caption>
      <thead>
        <tr>
          <th scope="col">{nameHeading}</th>
          <th scope="col">Value</th>
        </tr>
      </thead>
      <tbody>
        {entries.map(([name, value]) => (
          <tr key={name}>
            <th scope="row">{name}</th>
            <td>
              <pre class="job-text">{value}</pre>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
