// A pipeline's prompt history (GetPromptHistory): who changed what, when and why, newest first,
// a page at a time; the guard's decisions are the monitor's. Read again when `reloadKey` changes.
// The history trails the registry by milliseconds, so after a change it is read again until it
// has that change (`awaiting`: the step and the revision the change wrote).
import { useEffect, useState } from 'preact/hooks';
import { call } from '../../api.js';
import { ErrorNotice } from '../../ui/error-notice.js';
import { formatTime } from '../../ui/format.js';
import { actionLabel, formatShare } from './prompt-format.js';
import { sharesOf, type GetPromptHistoryResponse, type PromptChange, type PromptRollout } from './prompt-types.js';

const PAGE_SIZE = 20;
const CATCH_UP_ATTEMPTS = 10;
const CATCH_UP_DELAY_MS = 200;

export interface AwaitedChange {
  step: string;
  revision: string;
}

export function PromptHistory({ pipeline, reloadKey, awaiting }: { pipeline: string; reloadKey: number; awaiting?: AwaitedChange }) {
  const [changes, setChanges] = useState<PromptChange[] | null>(null);
  const [nextPageToken, setNextPageToken] = useState('');
  const [error, setError] = useState<unknown>(null);
  const [loadingMore, setLoadingMore] = useState(false);

  useEffect(() => {
    const abort = new AbortController();
    setError(null);
    (async () => {
      for (let attempt = 1; ; attempt++) {
        const answer = await call<GetPromptHistoryResponse>('GET', `/v1/prompts/${encodeURIComponent(pipeline)}/history`, undefined, { query: { pageSize: PAGE_SIZE }, signal: abort.signal });
        const found = (answer.changes ?? []);
        const caughtUp = !awaiting || found.some((change) => change.step === awaiting.step && BigInt(change.revision ?? '0') >= BigInt(awaiting.revision));
        if (caughtUp || attempt >= CATCH_UP_ATTEMPTS) {
          setChanges(found);
          setNextPageToken(answer.nextPageToken ?? '');
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, CATCH_UP_DELAY_MS));
        if (abort.signal.aborted) return;
      }
    })().catch((failure: unknown) => {
      if (!abort.signal.aborted) setError(failure);
    });
    return () => abort.abort();
  }, [pipeline, reloadKey, awaiting?.step, awaiting?.revision]);

  async function loadOlder() {
    setLoadingMore(true);
    setError(null);
    try {
      const answer = await call<GetPromptHistoryResponse>('GET', `/v1/prompts/${encodeURIComponent(pipeline)}/history`, undefined, { query: { pageSize: PAGE_SIZE, pageToken: nextPageToken } });
      setChanges((shown) => [...(shown ?? []), ...(answer.changes ?? [])]);
      setNextPageToken(answer.nextPageToken ?? '');
    } catch (failure) {
      setError(failure);
    } finally {
      setLoadingMore(false);
    }
  }

  return (
    <section class="card prompt-history" aria-labelledby="prompt-history-title">
      <h2 id="prompt-history-title">History of {pipeline}</h2>
      <ErrorNotice error={error} title="The history could not be read" />
      {changes === null && !error ? <p class="muted">Loading the history…</p> : null}
      {changes !== null && changes.length === 0 ? <p class="muted">No changes recorded for {pipeline} yet.</p> : null}
      {changes !== null && changes.length > 0 ? (
        <div class="table-scroll">
          <table>
            <caption class="visually-hidden">Changes to the prompts of {pipeline}, newest first</caption>
            <thead>
              <tr>
                <th scope="col">When</th>
                <th scope="col">Step</th>
                <th scope="col">Change</th>
                <th scope="col">Version</th>
                <th scope="col">By</th>
                <th scope="col">Reason</th>
                <th scope="col">Rollout after (before)</th>
              </tr>
            </thead>
            <tbody>
              {changes.map((change) => (
                <tr key={`${change.step}-${change.revision}`} data-action={change.action}>
                  <td>{formatTime(change.time)}</td>
                  <td>{change.step}</td>
                  <td>{actionLabel(change.action)}</td>
                  <td>{change.version ? <code>{change.version}</code> : '-'}</td>
                  <td>{change.by || '-'}</td>
                  <td>{change.reason || <span class="muted">none given</span>}</td>
                  <td>
                    {describeRollout(change.after)}
                    <div class="muted">was {describeRollout(change.before)}</div>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
      {nextPageToken ? (
        <button type="button" class="secondary" disabled={loadingMore} onClick={loadOlder}>
          {loadingMore ? 'Loading older changes…' : 'Show older changes'}
        </button>
      ) : null}
    </section>
  );
}

/** "baseline v1; v1 90%, v2 10%; candidate v2 (guarded)". */
function describeRollout(rollout: PromptRollout | undefined): string {
  if (!rollout) return 'nothing';
  const shares = Object.entries(sharesOf(rollout))
    .map(([id, share]) => `${id} ${formatShare(share)}`)
    .join(', ');
  const candidate = rollout.candidate ? `; candidate ${rollout.candidate}${rollout.guard ? ' (guarded)' : ''}` : '';
  return `baseline ${rollout.baseline || 'yaml'}; ${shares}${candidate}${rollout.baselineProtected ? '; protected' : ''}`;
}
