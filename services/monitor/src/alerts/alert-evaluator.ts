import { proto } from '@elexirion/kit';
import type { AlertRule, GroupDimension } from './alert-rules.js';

/** Where the alert figures come from: the monitor's own calls, and its consumer's backlog. */
export interface AlertSources {
  getMetrics(request: proto.GetMetricsRequest): Promise<proto.GetMetricsResponse>;
  getPromptVersionStats(request: proto.GetPromptVersionStatsRequest): Promise<proto.GetPromptVersionStatsResponse>;
  /** Events in the stream the metrics consumer has not processed; undefined when it cannot be read. */
  consumerLag(): Promise<number | undefined>;
}

/** One group's value of a rule; `value` undefined: no data (fewer events than min_count). */
export interface RuleValue {
  labels: Record<string, string>;
  value: number | undefined;
}

const DIMENSION: Record<GroupDimension, proto.MetricDimension> = {
  pipeline: proto.MetricDimension.METRIC_DIMENSION_PIPELINE,
  step: proto.MetricDimension.METRIC_DIMENSION_STEP,
  provider: proto.MetricDimension.METRIC_DIMENSION_PROVIDER,
  model: proto.MetricDimension.METRIC_DIMENSION_MODEL,
  route: proto.MetricDimension.METRIC_DIMENSION_ROUTE,
  prompt_version: proto.MetricDimension.METRIC_DIMENSION_PROMPT_VERSION,
};

/** A row's group as the rule's labels (`promptVersion` and the like named as in the rules file). */
function labelsOf(rule: AlertRule, row: proto.MetricsRow): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const dimension of rule.group_by) {
    labels[dimension] = row.group[dimension] ?? row.group[dimension.replace(/_([a-z])/g, (_, letter: string) => letter.toUpperCase())] ?? '';
  }
  return labels;
}

function valueOf(rule: AlertRule, row: proto.MetricsRow): number | undefined {
  if (row.count < Math.max(1, rule.min_count)) return undefined;
  switch (rule.metric) {
    case 'error_rate':
      return 1 - row.successRate;
    case 'latency_p50_ms':
      return row.latencyP50Ms;
    case 'latency_p95_ms':
      return row.latencyP95Ms;
    case 'latency_p99_ms':
      return row.latencyP99Ms;
    case 'requests_per_minute':
      return row.count / (rule.windowMs / 60_000);
    case 'cost_per_hour':
      return row.costUsd / (rule.windowMs / 3_600_000);
    default:
      return undefined;
  }
}

/** The rule's value per group now: one entry per group that has events, or one without labels. */
export async function evaluateRule(rule: AlertRule, sources: AlertSources, now: Date): Promise<RuleValue[]> {
  if (rule.metric === 'consumer_lag') return [{ labels: {}, value: await sources.consumerLag() }];
  if (rule.metric === 'score_drop') {
    const stats = await sources.getPromptVersionStats({
      pipeline: rule.filter.pipeline ?? '',
      step: rule.filter.step ?? '',
      startTime: new Date(now.getTime() - rule.windowMs),
      endTime: now,
      scoreName: rule.score,
    });
    // One value per candidate version: how far its score mean is below its baseline's.
    return stats.comparisons.map((comparison) => {
      const candidate = stats.versions.find((version) => version.step === comparison.step && version.version === comparison.candidate);
      const enough = (candidate?.score?.count ?? 0) >= Math.max(1, rule.min_count);
      return { labels: { step: comparison.step, prompt_version: comparison.candidate }, value: enough ? -comparison.scoreDelta : undefined };
    });
  }
  const response = await sources.getMetrics({
    filter: {
      pipeline: rule.filter.pipeline ?? '',
      step: rule.filter.step ?? '',
      provider: rule.filter.provider ?? '',
      model: rule.filter.model ?? '',
      route: rule.filter.route ?? '',
      promptVersion: rule.filter.prompt_version ?? '',
      kind: rule.kind,
    },
    startTime: new Date(now.getTime() - rule.windowMs),
    endTime: now,
    groupBy: rule.group_by.map((dimension) => DIMENSION[dimension]),
    perMinute: false,
  });
  if (response.rows.length === 0) return rule.group_by.length === 0 ? [{ labels: {}, value: undefined }] : [];
  return response.rows.map((row) => ({ labels: labelsOf(rule, row), value: valueOf(rule, row) }));
}

export type Verdict = { state: 'ok' } | { state: 'breach'; severity: 'warning' | 'critical'; threshold: number } | { state: 'no_data' };

/** Where a value stands against the rule's thresholds. */
export function judge(rule: AlertRule, value: number | undefined): Verdict {
  if (value === undefined || Number.isNaN(value)) {
    if (rule.no_data === 'alert') return { state: 'breach', severity: 'warning', threshold: rule.warning };
    return { state: 'no_data' };
  }
  if (rule.critical !== undefined && value >= rule.critical) return { state: 'breach', severity: 'critical', threshold: rule.critical };
  if (value >= rule.warning) return { state: 'breach', severity: 'warning', threshold: rule.warning };
  return { state: 'ok' };
}
