// One pipeline step's prompt registry entry: its rollout (shares per version, baseline, guard,
// protection) and its versions (template, source, description, scores measured before
// publishing, who published it and when), with promote and roll back for callers that may.
import { useState } from 'preact/hooks';
import { formatTime } from '../../ui/format.js';
import { formatShare, metricLabel } from './prompt-format.js';
import { GUARD_DEFAULTS, YAML_VERSION, sharesOf, type PromptRollout, type PromptStep, type PromptVersion } from './prompt-types.js';

/** A change the user asked for, before it is confirmed. */
export type PendingChange =
  | { kind: 'promote'; step: PromptStep; version: string }
  /** toVersion "": end the rollout, every run on the current baseline. */
  | { kind: 'rollback'; step: PromptStep; toVersion: string };

export interface StepVersionsProps {
  step: PromptStep;
  /** The caller may change prompts (keys off, admin, or prompts:write). */
  canWrite: boolean;
  /** The caller may change a protected baseline (keys off or an admin key). */
  admin: boolean;
  onChange(change: PendingChange): void;
}

export function StepVersions({ step, canWrite, admin, onChange }: StepVersionsProps) {
  const rollout = step.rollout ?? {};
  const baseline = rollout.baseline || YAML_VERSION;
  const shares = sharesOf(rollout);
  const versions = step.versions ?? [];
  const ids = [YAML_VERSION, ...versions.map((version) => version.id)];
  const rolloutRunning = Object.entries(shares).some(([id, share]) => id !== baseline && share > 0);
  // A protected baseline: only an admin may move it; ending a rollout on it is always allowed.
  const baselineLocked = rollout.baselineProtected === true && !admin;
  const label = `${step.pipeline}.${step.step}`;

  return (
    <>
      <h3>Rollout</h3>
      <RolloutSummary rollout={rollout} baseline={baseline} />
      {baselineLocked && canWrite ? (
        <p class="muted">
          The baseline <code>{baseline}</code> is protected: promoting another version or rolling back to another one needs an admin key. Ending a rollout is
          allowed.
        </p>
      ) : null}

      <h3>Versions</h3>
      <div class="table-scroll">
        <table class="prompt-versions">
          <caption class="visually-hidden">Prompt versions of {label}, with their share of runs</caption>
          <thead>
            <tr>
              <th scope="col">Version</th>
              <th scope="col" class="num">
                Share of runs
              </th>
              <th scope="col">Source and description</th>
              <th scope="col">Scores before publishing</th>
              <th scope="col">Published</th>
              {canWrite ? <th scope="col">Actions</th> : null}
            </tr>
          </thead>
          <tbody>
            <VersionRow
              id={YAML_VERSION}
              share={shares[YAML_VERSION] ?? 0}
              baseline={baseline === YAML_VERSION}
              candidate={rollout.candidate === YAML_VERSION}
              canWrite={canWrite}
              promoteAllowed={baseline !== YAML_VERSION && !baselineLocked}
              label={label}
              onPromote={() => onChange({ kind: 'promote', step, version: YAML_VERSION })}
            />
            {versions.map((version) => (
              <VersionRow
                key={version.id}
                id={version.id}
                version={version}
                share={shares[version.id] ?? 0}
                baseline={baseline === version.id}
                candidate={rollout.candidate === version.id}
                canWrite={canWrite}
                promoteAllowed={baseline !== version.id && !baselineLocked}
                label={label}
                onPromote={() => onChange({ kind: 'promote', step, version: version.id })}
              />
            ))}
          </tbody>
        </table>
      </div>
      {canWrite ? <RollbackForm step={step} baseline={baseline} ids={ids} rolloutRunning={rolloutRunning} baselineLocked={baselineLocked} onChange={onChange} /> : null}
    </>
  );
}

function RolloutSummary({ rollout, baseline }: { rollout: PromptRollout; baseline: string }) {
  const guard = rollout.guard;
  const minRuns = guard?.minRuns || GUARD_DEFAULTS.minRuns;
  return (
    <dl class="prompt-facts">
      <div>
        <dt>Baseline</dt>
        <dd>
          <code>{baseline}</code> {rollout.baselineProtected ? <span class="badge warn">protected</span> : <span class="badge">not protected</span>}
        </dd>
      </div>
      <div>
        <dt>Candidate under test</dt>
        <dd>{rollout.candidate ? <code>{rollout.candidate}</code> : 'none'}</dd>
      </div>
      <div>
        <dt>Guard</dt>
        <dd>
          {guard ? (
            <>
              watches the {metricLabel(guard.metric, guard.scoreName)}; decides after {minRuns} runs a side at p &lt; {guard.significance || GUARD_DEFAULTS.significance}; gives up
              after {guard.maxRuns || minRuns * 10} runs a side with no significant difference
            </>
          ) : (
            'none: changes are made by hand'
          )}
        </dd>
      </div>
      <div>
        <dt>Since</dt>
        <dd>{formatTime(rollout.startedAt)}</dd>
      </div>
    </dl>
  );
}

interface VersionRowProps {
  id: string;
  version?: PromptVersion;
  share: number;
  baseline: boolean;
  candidate: boolean;
  canWrite: boolean;
  promoteAllowed: boolean;
  label: string;
  onPromote(): void;
}

function VersionRow({ id, version, share, baseline, candidate, canWrite, promoteAllowed, label, onPromote }: VersionRowProps) {
  const template = version?.template;
  const scores = Object.entries(version?.scores ?? {});
  return (
    <tr data-version={id}>
      <th scope="row">
        <code>{id}</code>
        {baseline ? <span class="badge ok">baseline</span> : null}
        {candidate ? <span class="badge warn">candidate</span> : null}
        {version ? (
          <details class="prompt-template">
            <summary>Template</summary>
            <h4>Prompt</h4>
            <pre>{template?.prompt ?? ''}</pre>
            {template?.system ? (
              <>
                <h4>System text</h4>
                <pre>{template.system}</pre>
              </>
            ) : (
              <p class="muted">System text: the step's own (from the pipeline YAML).</p>
            )}
            {(template?.demos ?? []).length > 0 ? (
              <>
                <h4>Demos ({template!.demos!.length})</h4>
                <ol class="prompt-demos">
                  {template!.demos!.map((demo, index) => (
                    <li key={index}>
                      <span class="muted">User</span>
                      <pre>{demo.input ?? ''}</pre>
                      <span class="muted">Assistant</span>
                      <pre>{demo.output ?? ''}</pre>
                    </li>
                  ))}
                </ol>
              </>
            ) : null}
          </details>
        ) : null}
      </th>
      <td class="num">
        <span class="share">
          <span class="share-bar" aria-hidden="true">
            <span style={{ width: `${Math.round(share * 100)}%` }} />
          </span>
          {formatShare(share)}
        </span>
      </td>
      <td>
        {version ? (
          <>
            <div>{version.source || 'source not given'}</div>
            {version.description ? <div class="muted">{version.description}</div> : null}
          </>
        ) : (
          <span class="muted">The step's prompt in the pipeline's YAML file</span>
        )}
      </td>
      <td>
        {scores.length > 0 ? (
          <ul class="plain">
            {scores.map(([name, value]) => (
              <li key={name}>
                {name}: {value.toFixed(3)}
              </li>
            ))}
          </ul>
        ) : (
          <span class="muted">none</span>
        )}
      </td>
      <td>
        {version ? (
          <>
            <div>{version.createdBy || 'unknown'}</div>
            <div class="muted">{formatTime(version.createdAt)}</div>
          </>
        ) : (
          <span class="muted">with the pipeline</span>
        )}
      </td>
      {canWrite ? (
        <td>
          {!baseline ? (
            <button type="button" class="secondary" disabled={!promoteAllowed} aria-label={`Promote ${id} in ${label}`} onClick={onPromote}>
              Promote
            </button>
          ) : null}
        </td>
      ) : null}
    </tr>
  );
}

function RollbackForm({
  step,
  baseline,
  ids,
  rolloutRunning,
  baselineLocked,
  onChange,
}: {
  step: PromptStep;
  baseline: string;
  ids: string[];
  rolloutRunning: boolean;
  baselineLocked: boolean;
  onChange(change: PendingChange): void;
}) {
  // "" ends the rollout on the baseline; any other id becomes the baseline again.
  const targets = [...(rolloutRunning ? [''] : []), ...(baselineLocked ? [] : ids.filter((id) => id !== baseline))];
  const [choice, setChoice] = useState<string | undefined>(undefined);
  if (targets.length === 0) return null;
  const target = choice !== undefined && targets.includes(choice) ? choice : targets[0]!;
  const fieldId = `rollback-${step.pipeline}-${step.step}`;
  return (
    <form
      class="row prompt-rollback"
      onSubmit={(event) => {
        event.preventDefault();
        onChange({ kind: 'rollback', step, toVersion: target });
      }}
    >
      <label for={fieldId}>
        Roll back {step.step} to
        <select id={fieldId} value={target} onChange={(event) => setChoice((event.target as HTMLSelectElement).value)}>
          {targets.map((id) => (
            <option key={id} value={id}>
              {id === '' ? `${baseline} (end the rollout: every run on the baseline)` : `${id} (it becomes the baseline with every run)`}
            </option>
          ))}
        </select>
      </label>
      <button type="submit" class="danger">
        Roll back…
      </button>
    </form>
  );
}
