import { serviceNames, TELEMETRY_EVENT_KINDS } from '@elexirion/kit';
import * as proto from '@elexirion/kit/proto';
import { parseInteger, parseTime, UsageError, type CommandSpec } from '../args.js';
import type { Context } from '../context.js';
import { ExitCode } from '../exit-codes.js';
import { formatTime, formatUsage } from '../format.js';

export const eventsSpec: CommandSpec = {
  path: ['events'],
  brief: 'telemetry events, filtered; --follow for live ones',
  usage: '--follow | --since TIME [--service NAME]... [--kind KIND]... [--pipeline NAME] [--job ID] [--limit N]',
  summary:
    "Prints the services' telemetry events (StreamTelemetry), filtered. --follow keeps printing live events until interrupted; without it, --since TIME prints the events retained since then and stops at the first event published after the command started, or once none came for 2 s.",
  options: {
    follow: { type: 'boolean', short: 'f', description: 'keep printing live events (until Ctrl-C or --limit)' },
    since: { type: 'string', value: 'TIME', description: 'start with events published since then: ISO 8601, or a duration ago (10m)' },
    service: { type: 'string', multiple: true, commaList: true, value: 'NAME', description: serviceNames.join(', ') },
    kind: { type: 'string', multiple: true, commaList: true, value: 'KIND', description: TELEMETRY_EVENT_KINDS.join(', ') },
    pipeline: { type: 'string', short: 'p', value: 'NAME', description: 'only events about this pipeline' },
    job: { type: 'string', value: 'ID', description: 'only events about this job (or run)' },
    limit: { type: 'string', short: 'n', value: 'N', description: 'stop after N events' },
  },
  positionals: { min: 0, max: 0, names: '' },
  details: 'Output: one line per event (time, service, kind, status, duration, what it was about); --json: one StreamTelemetryResponse per line.',
};

const SERVICES = [...serviceNames];
const KINDS = [...TELEMETRY_EVENT_KINDS];

function checkChoices(values: string[], choices: string[], option: string): string[] {
  for (const value of values) if (!choices.includes(value)) throw new UsageError(`${option}: "${value}" is not one of ${choices.join(', ')}`);
  return values;
}

/** What one event was about, in a few words. */
function describe(event: proto.TelemetryEvent): string {
  if (event.gatewayRequest) return [event.gatewayRequest.method, event.gatewayRequest.pipeline, event.gatewayRequest.jobId && `job ${event.gatewayRequest.jobId}`, event.gatewayRequest.errorMessage].filter(Boolean).join(' ');
  if (event.agentJob) return [`job ${event.agentJob.jobId}`, event.agentJob.pipeline, event.agentJob.fallbackUsed && 'fallback used', event.agentJob.errorMessage].filter(Boolean).join(' ');
  if (event.executorRun) return [`run ${event.executorRun.runId}`, event.executorRun.pipeline, formatUsage(event.executorRun.usage), event.executorRun.errorMessage].filter(Boolean).join(' ');
  if (event.executorStep) return [`run ${event.executorStep.runId}`, event.executorStep.pipeline, event.executorStep.step && `step ${event.executorStep.step.name} ${event.executorStep.step.status}`].filter(Boolean).join(' ');
  if (event.providerCompletion) {
    const completion = event.providerCompletion;
    return [`${completion.provider}/${completion.model}`, formatUsage(completion.usage), completion.attempts > 1 && `${completion.attempts} attempts`, completion.finishReason, completion.errorMessage].filter(Boolean).join(' ');
  }
  if (event.providerBreaker) return `${event.providerBreaker.provider} breaker ${event.providerBreaker.state}`;
  if (event.monitorFeedback) {
    const feedback = event.monitorFeedback;
    return [`run ${feedback.runId}`, feedback.pipeline, `${feedback.name}${feedback.score === undefined ? '' : ` ${feedback.score}`}`, feedback.label, feedback.replaced && 'replaced'].filter(Boolean).join(' ');
  }
  if (event.monitorRecovery) return [event.monitorRecovery.applied ? 'applied' : 'reversed', event.monitorRecovery.action, event.monitorRecovery.target, event.monitorRecovery.reason].filter(Boolean).join(' ');
  if (event.executorPrompt?.change) {
    const change = event.executorPrompt.change;
    return [`${change.pipeline}.${change.step}`, change.action, change.version, change.by && `by ${change.by}`, change.reason].filter(Boolean).join(' ');
  }
  if (event.monitorRollout) {
    const rollout = event.monitorRollout;
    return [`${rollout.pipeline}.${rollout.step}`, rollout.candidate, rollout.decision, `vs ${rollout.baseline}`, rollout.reason].filter(Boolean).join(' ');
  }
  return '';
}

export async function events(ctx: Context): Promise<number> {
  const follow = Boolean(ctx.values.follow);
  if (!follow && !ctx.values.since) throw new UsageError('give --follow for live events, or --since TIME for the retained ones');
  const limit = ctx.values.limit === undefined ? Infinity : parseInteger(String(ctx.values.limit), '--limit', 1);
  const request: proto.StreamTelemetryRequest = {
    services: checkChoices((ctx.values.service as string[] | undefined) ?? [], SERVICES, '--service'),
    kinds: checkChoices((ctx.values.kind as string[] | undefined) ?? [], KINDS, '--kind'),
    pipeline: String(ctx.values.pipeline ?? ''),
    jobId: String(ctx.values.job ?? ''),
    since: ctx.values.since ? parseTime(String(ctx.values.since), '--since') : undefined,
  };
  const startedAt = Date.now();
  let printed = 0;
  // Without --follow, a quiet stream means the retained events are all out: the stream itself
  // never says it has caught up, and on an idle system no newer event would come to end it.
  const quiet = new AbortController();
  let quietTimer: NodeJS.Timeout | undefined;
  const rearm = () => {
    if (follow) return;
    clearTimeout(quietTimer);
    quietTimer = setTimeout(() => quiet.abort(), CAUGHT_UP_AFTER_MS);
  };
  rearm();
  try {
    // Ending the loop early (limit, caught up) cancels the call: nice-grpc aborts the stream.
    for await (const { event } of ctx.gateway.streamTelemetry(request, { ...ctx.stream(), signal: AbortSignal.any([ctx.signal, quiet.signal]) })) {
      rearm();
      if (!event) continue;
      if (!follow && event.time && event.time.getTime() >= startedAt) break;
      if (ctx.output.json) ctx.output.jsonLine(proto.StreamTelemetryResponse.toJSON({ event }));
      else ctx.output.line([formatTime(event.time), event.service, event.kind, event.status, `${event.durationMs}ms`, describe(event)].join(' '));
      if (++printed >= limit) break;
    }
  } catch (error) {
    if (!(quiet.signal.aborted && !ctx.signal.aborted)) throw error;
  } finally {
    clearTimeout(quietTimer);
  }
  return ExitCode.OK;
}

/** Without --follow: no event for this long means the retained ones are all out. */
const CAUGHT_UP_AFTER_MS = 2_000;
