// The prompt calls' answers as the gateway's REST API sends them: proto3 JSON (camelCase, int64
// and uint64 as strings, Timestamps as RFC 3339 strings, default values left out, so every
// field may be absent). See proto/elexirion/v1/prompts.proto and monitor.proto.

export interface PromptDemo {
  input?: string;
  output?: string;
}

export interface PromptTemplate {
  prompt?: string;
  system?: string;
  demos?: PromptDemo[];
}

export interface PromptVersion {
  id: string;
  template?: PromptTemplate;
  source?: string;
  description?: string;
  scores?: Record<string, number>;
  createdAt?: string;
  createdBy?: string;
}

export interface PromptRolloutGuard {
  metric?: string;
  scoreName?: string;
  minRuns?: number;
  significance?: number;
  maxRuns?: number;
}

export interface PromptRollout {
  baseline?: string;
  weights?: Record<string, number>;
  candidate?: string;
  guard?: PromptRolloutGuard;
  baselineProtected?: boolean;
  startedAt?: string;
}

export interface PromptStep {
  pipeline: string;
  step: string;
  versions?: PromptVersion[];
  rollout?: PromptRollout;
  revision?: string;
  updatedAt?: string;
}

export interface ListPromptVersionsResponse {
  steps?: PromptStep[];
}

export interface PromptChange {
  pipeline?: string;
  step?: string;
  action?: string;
  time?: string;
  by?: string;
  reason?: string;
  before?: PromptRollout;
  after?: PromptRollout;
  version?: string;
  revision?: string;
}

export interface GetPromptHistoryResponse {
  changes?: PromptChange[];
  nextPageToken?: string;
}
export type { GetPromptVersionStatsResponse, PromptVersionComparison, PromptVersionStats, ScoreSummary } from '../../api-types.js';

/** The step's YAML prompt: a version id every rollout may name. */
export const YAML_VERSION = 'yaml';

/** The guard's defaults when a field is left out (prompts.proto). */
export const GUARD_DEFAULTS = { scoreName: 'thumbs', minRuns: 30, significance: 0.05 } as const;

/**
 * The share of runs each version gets: the weights, or every run on the baseline when there are
 * none (an empty map means exactly that).
 */
export function sharesOf(rollout: PromptRollout | undefined): Record<string, number> {
  const weights = rollout?.weights ?? {};
  if (Object.keys(weights).length > 0) return weights;
  return { [rollout?.baseline || YAML_VERSION]: 1 };
}
