// The gateway's JSON for jobs and runs, as the pages read it (proto3 JSON: camelCase, enums by
// name, int64 as strings, default values left out); see proto/elexirion/v1/{agent,common}.proto.

export type JobStatus = 'JOB_STATUS_QUEUED' | 'JOB_STATUS_RUNNING' | 'JOB_STATUS_SUCCEEDED' | 'JOB_STATUS_FAILED' | 'JOB_STATUS_CANCELLED';

export interface Usage {
  inputTokens?: string;
  outputTokens?: string;
  costUsd?: number;
}

export interface RouteDecision {
  pipeline?: string;
  matchedBy?: string;
  rule?: string;
  confidence?: number;
  reason?: string;
}

export interface StepResult {
  name?: string;
  type?: string;
  output?: string;
  provider?: string;
  model?: string;
  usage?: Usage;
  durationMs?: string;
  attempts?: number;
  status?: string;
  promptVersion?: string;
  json?: string;
  error?: string;
  fallbackUsed?: boolean;
  failedTargets?: string[];
}

export interface EmergentFallback {
  failureClass?: string;
  pipeline?: string;
  originalError?: string;
  succeeded?: boolean;
}

export interface Job {
  jobId: string;
  status?: JobStatus;
  origin?: string;
  pipeline?: string;
  message?: string;
  inputs?: Record<string, string>;
  route?: RouteDecision;
  idempotencyKey?: string;
  sessionId?: string;
  createdAt?: string;
  startedAt?: string;
  finishedAt?: string;
  deliveries?: number;
  replica?: string;
  currentStep?: string;
  resumedSteps?: number;
  output?: string;
  outputs?: Record<string, string>;
  steps?: StepResult[];
  usage?: Usage;
  errorCode?: string;
  error?: string;
  fallbackUsed?: boolean;
  fallback?: EmergentFallback;
  cancelledBy?: string;
  cancelledAtStep?: string;
  webhookUrl?: string;
  webhookStatus?: string;
  lastSequence?: string;
  owner?: string;
}

export interface StepStarted {
  step?: string;
  type?: string;
}

export interface TextDelta {
  step?: string;
  text?: string;
}

export interface StepFailed {
  step?: string;
  code?: string;
  message?: string;
  failureClass?: string;
}

export interface JobEvent {
  jobId?: string;
  sequence?: string;
  time?: string;
  statusChanged?: { status?: JobStatus; detail?: string; job?: Job };
  stepStarted?: StepStarted;
  textDelta?: TextDelta;
  stepFinished?: StepResult;
  stepFailed?: StepFailed;
}

/** One Server-Sent Event of GET /v1/jobs/{id}/events: the WatchJobResponse. */
export interface WatchJobResponse {
  event?: JobEvent;
}

// GetPromptVersionStats (monitor.proto), read by the prompts page and the dashboard.

export interface ScoreSummary {
  count?: string;
  mean?: number;
  ci95Low?: number;
  ci95High?: number;
}

export interface PromptVersionStats {
  pipeline?: string;
  step?: string;
  version?: string;
  runs?: string;
  successRate?: number;
  latencyP50Ms?: number;
  latencyP95Ms?: number;
  costUsdMean?: number;
  score?: ScoreSummary;
  baseline?: boolean;
}

export interface PromptVersionComparison {
  pipeline?: string;
  step?: string;
  candidate?: string;
  baseline?: string;
  successRateDelta?: number;
  scoreDelta?: number;
  latencyP50DeltaMs?: number;
  costUsdMeanDelta?: number;
  successRatePValue?: number;
  scorePValue?: number;
}

export interface GetPromptVersionStatsResponse {
  versions?: PromptVersionStats[];
  comparisons?: PromptVersionComparison[];
}
