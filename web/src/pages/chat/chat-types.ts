// The gateway's JSON (proto3 JSON: camelCase, enums by name, int64 as strings, default values
// left out) for the messages the chat page reads; see proto/elexirion/v1/{agent,gateway,common}.proto.

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

export type JobStatus = 'JOB_STATUS_QUEUED' | 'JOB_STATUS_RUNNING' | 'JOB_STATUS_SUCCEEDED' | 'JOB_STATUS_FAILED' | 'JOB_STATUS_CANCELLED';

export interface Job {
  jobId: string;
  status?: JobStatus;
  pipeline?: string;
  route?: RouteDecision;
  createdAt?: string;
  startedAt?: string;
  finishedAt?: string;
  output?: string;
  steps?: StepResult[];
  usage?: Usage;
  errorCode?: string;
  error?: string;
  fallbackUsed?: boolean;
  fallback?: EmergentFallback;
  cancelledBy?: string;
  lastSequence?: string;
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

export interface WatchJobResponse {
  event?: JobEvent;
}

export interface ChatResponse {
  response?: string;
  pipelineUsed?: string;
  executionTimeMs?: string;
  fallbackUsed?: boolean;
  jobId?: string;
  usage?: Usage;
  route?: RouteDecision;
  fallback?: EmergentFallback;
  degraded?: boolean;
  steps?: StepResult[];
}

export interface ChatStreamResponse {
  route?: RouteDecision;
  runStarted?: { runId?: string; pipeline?: string };
  stepStarted?: StepStarted;
  textDelta?: TextDelta;
  stepFinished?: StepResult;
  stepFailed?: StepFailed;
  done?: ChatResponse;
}

export interface Caller {
  keysEnabled?: boolean;
  name?: string;
  scopes?: string[];
  admin?: boolean;
}

export interface Feedback {
  name?: string;
  score?: number;
  label?: string;
  comment?: string;
  source?: string;
  recordedAt?: string;
  recordedBy?: string;
}
