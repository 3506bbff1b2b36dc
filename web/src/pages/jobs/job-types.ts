// The gateway's JSON for what only the jobs page reads (proto3 JSON, as api-types.ts says); see
// proto/elexirion/v1/{agent,executor}.proto.
import type { Job } from '../../api-types.js';

export type { Job, JobEvent, JobStatus, StepResult, Usage, WatchJobResponse } from '../../api-types.js';

export interface ListJobsResponse {
  jobs?: Job[];
  nextPageToken?: string;
}

export interface PipelineInput {
  name: string;
  type?: string;
  required?: boolean;
  description?: string;
}

export interface PipelineSummary {
  name: string;
  description?: string;
  inputs?: PipelineInput[];
  stepCount?: number;
  valid?: boolean;
  problem?: string;
}

export interface ListPipelinesResponse {
  pipelines?: PipelineSummary[];
}

export interface SubmitJobResponse {
  job?: Job;
  deduplicated?: boolean;
}
