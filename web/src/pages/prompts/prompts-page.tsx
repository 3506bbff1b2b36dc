// The prompts page (/prompts): per pipeline and LLM step the published prompt versions, the
// rollout that shares runs between them, the A/B comparison the monitor measures, and the history
// of changes; promote and roll back for callers that may (keys off, admin, prompts:write), each
// confirmed with a reason, and the state read again after every change.
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, call } from '../../api.js';
import { mayUse, useCaller } from '../../caller.js';
import { navigate, useLocation } from '../../router.js';
import { ErrorNotice } from '../../ui/error-notice.js';
import { formatTime } from '../../ui/format.js';
import { ConfirmDialog } from './confirm-dialog.js';
import { PromptHistory, type AwaitedChange } from './prompt-history.js';
import { actionLabel, formatShare } from './prompt-format.js';
import {
  GUARD_DEFAULTS,
  YAML_VERSION,
  sharesOf,
  type GetPromptVersionStatsResponse,
  type ListPromptVersionsResponse,
  type PromptChange,
  type PromptStep,
} from './prompt-types.js';
import { useLiveUpdates } from './live-updates.js';
import { StepComparison } from './step-comparison.js';
import { StepVersions, type PendingChange } from './step-versions.js';
import './prompts.css';

/** The time ranges the comparison reads runs from; "" is every run the monitor keeps. */
const RANGES = [
  { value: '1h', label: 'the last hour', ms: 3_600_000 },
  { value: '24h', label: 'the last 24 hours', ms: 86_400_000 },
  { value: '7d', label: 'the last 7 days', ms: 7 * 86_400_000 },
  { value: '', label: 'all the monitor keeps', ms: 0 },
] as const;

export function PromptsPage() {
  const { query } = useLocation();
  const { caller, error: callerError } = useCaller();
  const [steps, setSteps] = useState<PromptStep[] | null>(null);
  const [listError, setListError] = useState<unknown>(null);
  const [stats, setStats] = useState<GetPromptVersionStatsResponse | null>(null);
  const [statsError, setStatsError] = useState<unknown>(null);
  const [scoreName, setScoreName] = useState<string>(GUARD_DEFAULTS.scoreName);
  const [range, setRange] = useState<string>('');
  // Bumped to read everything again (after a change, or the refresh button).
  const [reloadKey, setReloadKey] = useState(0);
  // Bumped to read the comparison again (runs and feedback came in).
  const [figuresKey, setFiguresKey] = useState(0);
  const [pending, setPending] = useState<PendingChange | null>(null);
  const [outcome, setOutcome] = useState('');
  const [changeError, setChangeError] = useState<{ error: unknown; title: string } | null>(null);
  // The last change made here: the history is read until it shows it.
  const [awaitedChange, setAwaitedChange] = useState<(AwaitedChange & { pipeline: string }) | undefined>(undefined);
  // After a change the button that asked for it may be gone (a promoted version has no promote
  // button): focus goes to the outcome, which says what happened.
  const result = useRef<HTMLDivElement>(null);
  const [focusResult, setFocusResult] = useState(0);
  useEffect(() => {
    if (focusResult > 0) result.current?.focus();
  }, [focusResult]);

  const pipelines = [...new Set((steps ?? []).map((step) => step.pipeline))];
  const wanted = query.get('pipeline') ?? '';
  const pipeline = pipelines.includes(wanted) ? wanted : (pipelines[0] ?? '');
  const pipelineSteps = (steps ?? []).filter((step) => step.pipeline === pipeline);

  useEffect(() => {
    const abort = new AbortController();
    call<ListPromptVersionsResponse>('GET', '/v1/prompts', undefined, { signal: abort.signal }).then(
      (answer) => {
        setSteps(answer.steps ?? []);
        setListError(null);
      },
      (failure: unknown) => {
        if (!abort.signal.aborted) setListError(failure);
      },
    );
    return () => abort.abort();
  }, [reloadKey]);

  useEffect(() => {
    if (!pipeline) return;
    const abort = new AbortController();
    const rangeMs = RANGES.find((entry) => entry.value === range)?.ms ?? 0;
    setStatsError(null);
    call<GetPromptVersionStatsResponse>('GET', `/v1/pipelines/${encodeURIComponent(pipeline)}/prompt-stats`, undefined, {
      query: { scoreName: scoreName.trim(), startTime: rangeMs ? new Date(Date.now() - rangeMs).toISOString() : undefined },
      signal: abort.signal,
    }).then(
      (answer) => setStats(answer),
      (failure: unknown) => {
        if (!abort.signal.aborted) {
          setStats(null);
          setStatsError(failure);
        }
      },
    );
    return () => abort.abort();
  }, [pipeline, scoreName, range, reloadKey, figuresKey]);

  // Changes others make (people, the guard) are announced; this page's own are told by the
  // outcome line. A change's event may come before its call answers: those wait for the answer.
  const [othersChange, setOthersChange] = useState<PromptChange | null>(null);
  const ownChanges = useRef({ inFlight: false, revisions: new Set<string>(), waiting: [] as PromptChange[] });
  const announce = (change: PromptChange) => {
    const own = ownChanges.current;
    if (own.inFlight) own.waiting.push(change);
    else if (!own.revisions.has(changeKey(change))) setOthersChange(change);
  };
  const live = useLiveUpdates(pipeline, {
    onRegistryChange: () => setReloadKey((key) => key + 1),
    onFiguresChange: () => setFiguresKey((key) => key + 1),
    onPromptChange: announce,
  });

  const canWrite = mayUse(caller, 'prompts:write');
  const admin = caller !== undefined && (!caller.keysEnabled || caller.admin === true);
  // Score names worth offering: thumbs (the chat page's), correct (the optimizer's example) and the guards'.
  const scoreNames = [
    ...new Set([GUARD_DEFAULTS.scoreName, 'correct', ...pipelineSteps.map((step) => step.rollout?.guard?.scoreName ?? '').filter((name) => name !== '')]),
  ];

  async function applyChange(change: PendingChange, reason: string) {
    const { step } = change;
    const where = `/v1/prompts/${encodeURIComponent(step.pipeline)}/${encodeURIComponent(step.step)}`;
    const label = `${step.pipeline}.${step.step}`;
    setChangeError(null);
    setOutcome('');
    ownChanges.current.inFlight = true;
    try {
      if (change.kind === 'promote') {
        const answer = await call<{ step?: PromptStep }>('POST', `${where}/promote`, { versionId: change.version, reason, expectedRevision: step.revision ?? '0' });
        setAwaitedChange({ pipeline: step.pipeline, step: step.step, revision: answer.step?.revision ?? '0' });
        ownChanges.current.revisions.add(changeKey({ pipeline: step.pipeline, step: step.step, revision: answer.step?.revision }));
        setOutcome(`Promoted ${change.version} in ${label}: it is the baseline and serves every run.`);
      } else {
        const answer = await call<{ step?: PromptStep }>('POST', `${where}/rollback`, { toVersion: change.toVersion, reason, expectedRevision: step.revision ?? '0' });
        setAwaitedChange({ pipeline: step.pipeline, step: step.step, revision: answer.step?.revision ?? '0' });
        ownChanges.current.revisions.add(changeKey({ pipeline: step.pipeline, step: step.step, revision: answer.step?.revision }));
        setOutcome(
          change.toVersion
            ? `Rolled ${label} back to ${change.toVersion}: it is the baseline and serves every run.`
            : `Ended the rollout of ${label}: every run is on the baseline ${step.rollout?.baseline || YAML_VERSION}.`,
        );
      }
    } catch (failure) {
      setChangeError({ error: failure, title: changeFailureTitle(failure, change) });
    } finally {
      const own = ownChanges.current;
      own.inFlight = false;
      for (const change of own.waiting.splice(0)) announce(change);
      setPending(null);
      setFocusResult((count) => count + 1);
      // Whatever happened, show the state as it is now.
      setReloadKey((key) => key + 1);
    }
  }

  return (
    <div class="prompts-page">
      <h1>Prompts</h1>
      <p class="muted">
        Each LLM step's published prompt versions, the share of runs each gets, how they compare on live runs, and every change. The step's YAML prompt is the version{' '}
        <code>yaml</code>.
      </p>

      <ErrorNotice error={callerError} title="Who you are could not be read, so changes are not offered" />
      {caller && !canWrite ? (
        <p class="notice" data-testid="read-only">
          Read only: the key <strong>{caller.name || 'in use'}</strong> lacks the <code>prompts:write</code> scope, so promote and roll back are not offered. Use a key with that
          scope (or an admin key) to change rollouts.
        </p>
      ) : null}

      <div ref={result} tabIndex={-1} class="prompt-outcome">
        <p role="status" aria-live="polite">
          {outcome}
        </p>
        {changeError ? <ErrorNotice error={changeError.error} title={changeError.title} /> : null}
      </div>
      <ErrorNotice error={listError} title="The prompt versions could not be read" />

      {steps === null && !listError ? <p class="muted">Loading prompt versions…</p> : null}
      {steps !== null && steps.length === 0 ? (
        <p class="notice">
          No prompt versions are published yet: every LLM step runs its YAML prompt. Versions come from the optimizer (<code>elexirion-optimizer optimize</code>) or{' '}
          <code>POST /v1/prompts/&#123;pipeline&#125;/&#123;step&#125;/versions</code>.
        </p>
      ) : null}

      {steps !== null && wanted && wanted !== pipeline ? (
        <p class="notice">
          <code>{wanted}</code> has no published prompt versions (its steps run their YAML prompts); shown instead: <code>{pipeline || 'nothing'}</code>.
        </p>
      ) : null}
      {pipeline ? (
        <>
          <form class="row prompt-controls" onSubmit={(event) => event.preventDefault()}>
            <label>
              Pipeline
              <select value={pipeline} onChange={(event) => navigate(`/prompts?pipeline=${encodeURIComponent((event.target as HTMLSelectElement).value)}`, { replace: true })}>
                {pipelines.map((name) => (
                  <option key={name} value={name}>
                    {name}
                  </option>
                ))}
              </select>
            </label>
            <label>
              Compare runs from
              <select value={range} onChange={(event) => setRange((event.target as HTMLSelectElement).value)}>
                {RANGES.map((entry) => (
                  <option key={entry.value} value={entry.value}>
                    {entry.label}
                  </option>
                ))}
              </select>
            </label>
            <label>
              Feedback score
              <input
                list="prompt-score-names"
                value={scoreName}
                size={12}
                spellcheck={false}
                onChange={(event) => setScoreName((event.target as HTMLInputElement).value.trim() || GUARD_DEFAULTS.scoreName)}
              />
              <datalist id="prompt-score-names">
                {scoreNames.map((name) => (
                  <option key={name} value={name} />
                ))}
              </datalist>
            </label>
            <button type="button" class="secondary" onClick={() => setReloadKey((key) => key + 1)}>
              Refresh
            </button>
          </form>
          <p class="muted prompt-live" data-live={live.state}>
            {live.state === 'off'
              ? `Live updates are off (${live.reason}): use Refresh to see changes.`
              : live.state === 'reconnecting'
                ? 'Live updates interrupted: reconnecting…'
                : 'Changes to these prompts, new runs and feedback show here as they happen.'}
          </p>
          <p class="prompt-others-change" aria-live="polite">
            {othersChange ? describeOthersChange(othersChange) : null}
          </p>

          <ErrorNotice error={statsError} title="The A/B comparison could not be read" />
          {pipelineSteps.map((step) => {
            const label = `${step.pipeline}.${step.step}`;
            const headingId = `prompt-step-${step.pipeline}-${step.step}`;
            return (
              <section key={label} class="card prompt-step" aria-labelledby={headingId} data-step={step.step}>
                <h2 id={headingId}>
                  {step.pipeline} <span class="muted">step</span> {step.step}
                </h2>
                <p class="muted">
                  {describeShares(step)} · revision {step.revision ?? '0'}, changed {formatTime(step.updatedAt)}
                </p>
                <StepVersions step={step} canWrite={canWrite} admin={admin} onChange={(change) => setPending(change)} />
                <h3>A/B comparison</h3>
                {statsError ? <p class="muted">Not available: see the error above.</p> : null}
                {stats === null && !statsError ? <p class="muted">Loading the comparison…</p> : null}
                {stats !== null ? (
                  <StepComparison
                    label={label}
                    versions={(stats.versions ?? []).filter((entry) => entry.pipeline === step.pipeline && entry.step === step.step)}
                    comparisons={(stats.comparisons ?? []).filter((entry) => entry.pipeline === step.pipeline && entry.step === step.step)}
                    scoreName={scoreName}
                    rollout={step.rollout}
                  />
                ) : null}
              </section>
            );
          })}

          <PromptHistory pipeline={pipeline} reloadKey={reloadKey} awaiting={awaitedChange?.pipeline === pipeline ? awaitedChange : undefined} />
        </>
      ) : null}

      {pending ? <ChangeDialog change={pending} onConfirm={(reason) => applyChange(pending, reason)} onCancel={() => setPending(null)} /> : null}
    </div>
  );
}

/** A registry change's identity: its step and the revision it wrote. */
function changeKey(change: { pipeline?: string; step?: string; revision?: string }): string {
  return `${change.pipeline}.${change.step}@${change.revision ?? '0'}`;
}

/** "At <time>, review-sentiment.label changed: rolled back by the guard: v2 (by monitor: <reason>)." */
function describeOthersChange(change: PromptChange): string {
  const what = `${actionLabel(change.action)}${change.version ? `: ${change.version}` : ''}`;
  const who = `by ${change.by || 'someone'}${change.reason ? `: ${change.reason}` : ''}`;
  return `At ${formatTime(change.time)}, ${change.pipeline}.${change.step} changed: ${what} (${who}).`;
}

function describeShares(step: PromptStep): string {
  const shares = Object.entries(sharesOf(step.rollout)).filter(([, share]) => share > 0);
  if (shares.length === 1) return `Every run on ${shares[0]![0]}`;
  return `Runs shared: ${shares.map(([id, share]) => `${id} ${formatShare(share)}`).join(', ')}`;
}

function ChangeDialog({ change, onConfirm, onCancel }: { change: PendingChange; onConfirm(reason: string): Promise<void>; onCancel(): void }) {
  const label = `${change.step.pipeline}.${change.step.step}`;
  const baseline = change.step.rollout?.baseline || YAML_VERSION;
  if (change.kind === 'promote') {
    return (
      <ConfirmDialog title={`Promote ${change.version}?`} confirmLabel={`Promote ${change.version}`} onConfirm={onConfirm} onCancel={onCancel}>
        <p>
          <code>{change.version}</code> becomes the baseline of {label} and serves every run from now on, in place of <code>{baseline}</code>. Any running rollout and its
          guard end.
        </p>
      </ConfirmDialog>
    );
  }
  if (change.toVersion === '') {
    return (
      <ConfirmDialog title="End the rollout?" confirmLabel="End the rollout" danger onConfirm={onConfirm} onCancel={onCancel}>
        <p>
          Every run of {label} goes back to the baseline <code>{baseline}</code>; the candidate{change.step.rollout?.candidate ? ` ${change.step.rollout.candidate}` : 's'} stop
          getting runs and any guard ends.
        </p>
      </ConfirmDialog>
    );
  }
  return (
    <ConfirmDialog title={`Roll back to ${change.toVersion}?`} confirmLabel={`Roll back to ${change.toVersion}`} danger onConfirm={onConfirm} onCancel={onCancel}>
      <p>
        <code>{change.toVersion}</code> becomes the baseline of {label} again and serves every run, in place of <code>{baseline}</code>. Any running rollout and its guard end.
      </p>
    </ConfirmDialog>
  );
}

/** A failed change's headline: what happened to the change and what to do next. */
function changeFailureTitle(failure: unknown, change: PendingChange): string {
  const what = change.kind === 'promote' ? `Promoting ${change.version}` : change.toVersion ? `Rolling back to ${change.toVersion}` : 'Ending the rollout';
  const code = failure instanceof ApiError ? failure.code : '';
  switch (code) {
    case 'ABORTED':
      return `${what} was not done: someone changed ${change.step.pipeline}.${change.step.step} meanwhile. The page shows it as it is now; check it and try again.`;
    case 'FAILED_PRECONDITION':
      return `${what} was not done: the step's state does not allow it. The page shows it as it is now.`;
    case 'PERMISSION_DENIED':
      return `${what} was not allowed for this key (a protected baseline needs an admin key).`;
    case 'NOT_FOUND':
      return `${what} was not done: the version is gone. The page shows the step as it is now.`;
    default:
      return `${what} failed`;
  }
}
