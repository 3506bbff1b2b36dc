/**
 * The kinds of telemetry events the services publish, the last part of their subject
 * (`elexirion.events.<service>.<kind>`): what StreamTelemetry and `elexirion events --kind` accept.
 */
export const TELEMETRY_EVENT_KINDS = [
  'request', // gateway: one public call
  'job', // agent: one job
  'run', // executor: one pipeline run
  'step', // executor: one step
  'prompt', // executor: a prompt registry change
  'completion', // provider: one LLM call
  'breaker', // provider: a circuit breaker changed state
  'feedback', // monitor: feedback recorded on a run
  'recovery', // monitor: a recovery action applied or reversed
  'rollout', // monitor: a guard promoted or rolled back a prompt version
] as const;

export type TelemetryEventKind = (typeof TELEMETRY_EVENT_KINDS)[number];
