// What served an answer, under it: pipeline and route, each model step's prompt version (the A/B
// arm), model and provider, the fallback path, tokens, cost and times.
import { formatCost, formatCount, formatMs } from '../../ui/format.js';
import type { Provenance } from './chat-store.js';
import type { StepResult } from './chat-types.js';

function promptVersionLabel(version: string | undefined): string {
  if (!version) return '-';
  if (version === 'yaml') return 'yaml (the pipeline file’s own prompt)';
  if (version === 'override') return 'override (a prompt given with the run)';
  return version;
}

function tokens(step: { usage?: { inputTokens?: string; outputTokens?: string } }): string {
  return `${formatCount(step.usage?.inputTokens ?? '0')} in / ${formatCount(step.usage?.outputTokens ?? '0')} out`;
}

/** The steps that called a model (they have a provider), the ones whose provenance matters. */
function modelSteps(steps: StepResult[] | undefined): StepResult[] {
  return (steps ?? []).filter((step) => step.provider || step.model || step.promptVersion);
}

export function ProvenanceDetails({ provenance }: { provenance: Provenance }) {
  const route = provenance.route;
  const steps = modelSteps(provenance.steps);
  const usage = provenance.usage;
  return (
    <dl class="chat-provenance">
      <div>
        <dt>Pipeline</dt>
        <dd>{provenance.pipeline || route?.pipeline || '-'}</dd>
      </div>
      {route ? (
        <div>
          <dt>Route</dt>
          <dd>
            {route.matchedBy || '-'}
            {route.rule ? ` (rule ${route.rule})` : ''}
            {route.reason ? `: ${route.reason}` : ''}
          </dd>
        </div>
      ) : null}
      {steps.map((step) => (
        <div key={step.name} class="chat-provenance-step">
          <dt>Step {step.name}</dt>
          <dd>
            <span>
              model <strong>{step.model || '-'}</strong> from <strong>{step.provider || '-'}</strong>
            </span>
            <span>prompt version {promptVersionLabel(step.promptVersion)}</span>
            <span>{tokens(step)}</span>
            {step.durationMs ? <span>{formatMs(Number(step.durationMs))}</span> : null}
            {step.fallbackUsed ? (
              <span class="chat-fallback">
                fallback: served by other than the first choice
                {step.failedTargets?.length ? ` after ${step.failedTargets.join('; ')}` : ''}
              </span>
            ) : null}
          </dd>
        </div>
      ))}
      {provenance.fallback?.pipeline ? (
        <div>
          <dt>Fallback pipeline</dt>
          <dd class="chat-fallback">
            {provenance.fallback.pipeline} ({provenance.fallback.succeeded ? 'answered' : 'failed too'}) after {provenance.fallback.originalError || 'a failure'}
          </dd>
        </div>
      ) : null}
      <div>
        <dt>Tokens</dt>
        <dd>{usage ? tokens({ usage }) : '-'}</dd>
      </div>
      <div>
        <dt>Cost</dt>
        <dd>{formatCost(usage?.costUsd ?? 0)}</dd>
      </div>
      <div>
        <dt>First token</dt>
        <dd>{formatMs(provenance.firstTokenMs)}</dd>
      </div>
      <div>
        <dt>Total time</dt>
        <dd>{formatMs(provenance.totalMs)}</dd>
      </div>
    </dl>
  );
}
