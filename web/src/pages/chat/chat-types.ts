// The gateway's JSON for what only the chat page reads (proto3 JSON, as api-types.ts says); see
// proto/elexirion/v1/{gateway,monitor}.proto.
import type { EmergentFallback, RouteDecision, StepFailed, StepResult, StepStarted, TextDelta, Usage } from '../../api-types.js';

export type { EmergentFallback, Job, JobEvent, JobStatus, RouteDecision, StepFailed, StepResult, StepStarted, TextDelta, Usage, WatchJobResponse } from '../../api-types.js';

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

export interface Feedback {
  name?: string;
  score?: number;
  label?: string;
  comment?: string;
  source?: string;
  recordedAt?: string;
  recordedBy?: string;
}
