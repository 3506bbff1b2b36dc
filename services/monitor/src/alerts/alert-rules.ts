import { createHash } from 'node:crypto';
import { formatProblem, parseYamlDocument, positionIn, validateYamlDocument, type Problem } from '@elexirion/kit';
import { z } from 'zod';

// The alert rules file (config/alerts.yaml by default, MONITOR_ALERT_RULES): which figure to
// watch, over what window, at which warning and critical thresholds, for how long before it
// fires, and what no data means. Checked like the pipelines and routes.yaml: every problem at
// file:line:column.

/**
 * What a rule watches. The aggregates' figures (error_rate, latency_*, requests_per_minute,
 * cost_per_hour) come from GetMetrics over the rule's window, one value per group;
 * consumer_lag is the monitor's own events consumer's backlog; score_drop is how far a prompt
 * version's feedback score mean is below its baseline's (GetPromptVersionStats).
 */
export const ALERT_METRICS = ['error_rate', 'latency_p50_ms', 'latency_p95_ms', 'latency_p99_ms', 'requests_per_minute', 'cost_per_hour', 'consumer_lag', 'score_drop'] as const;
export type AlertMetric = (typeof ALERT_METRICS)[number];

/**
 * Rules other areas of the monitor decide (the rollouts area's guard decisions): the rules file
 * may not use their names.
 */
export const AREA_RULE_NAMES = { promptRollout: 'prompt_rollout' } as const;

const KINDS = ['request', 'run', 'step', 'completion'] as const;
const GROUP_DIMENSIONS = ['pipeline', 'step', 'provider', 'model', 'route', 'prompt_version'] as const;
export type GroupDimension = (typeof GROUP_DIMENSIONS)[number];

const DURATION = /^([0-9]+)(ms|s|m|h)$/;
const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const;

/** "30s", "5m", "1h" as milliseconds. */
export function parseDuration(text: string): number {
  const match = DURATION.exec(text);
  if (!match) throw new Error(`expected a duration such as 30s, 5m or 1h, got "${text}"`);
  return Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS];
}

const duration = z.string().regex(DURATION, 'expected a duration such as 30s, 5m or 1h');

const ruleSchema = z
  .object({
    name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,63}$/, 'expected 1-64 characters of a-z 0-9 _ - (starting with a letter or digit)'),
    summary: z.string().max(500).optional(),
    metric: z.enum(ALERT_METRICS),
    kind: z.enum(KINDS).default('run'),
    filter: z.strictObject({
      pipeline: z.string().optional(),
      step: z.string().optional(),
      provider: z.string().optional(),
      model: z.string().optional(),
      route: z.string().optional(),
      prompt_version: z.string().optional(),
    }).default({}),
    group_by: z.array(z.enum(GROUP_DIMENSIONS)).max(3).default([]),
    window: duration.default('5m'),
    warning: z.number().finite(),
    critical: z.number().finite().optional(),
    for: duration.default('0s'),
    /** What a window without enough events means: ok (resolve), keep (hold the state) or alert (fire at warning). */
    no_data: z.enum(['ok', 'keep', 'alert']).default('ok'),
    /** Events a window needs before its value counts (fewer: no data). */
    min_count: z.number().int().min(0).default(1),
    /** The feedback name score_drop compares. */
    score: z.string().default('thumbs'),
  })
  .strict();

const webhookSchema = z.strictObject({
  url: z.url({ protocol: /^https?$/, error: 'expected an http(s) URL' }),
});

const rulesFileSchema = z.strictObject({
  webhooks: z.array(webhookSchema).max(20).default([]),
  rules: z.array(ruleSchema).max(500).default([]),
});

export type AlertRuleSpec = z.output<typeof ruleSchema>;

export interface AlertRule extends AlertRuleSpec {
  windowMs: number;
  forMs: number;
}

export interface AlertRules {
  rules: AlertRule[];
  webhooks: string[];
  /** The first 12 hex digits of the sha256 of the text. */
  revision: string;
  source: string;
}

export function rulesRevision(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 12);
}

/** Parses and checks a rules file; the problems at file:line:column when it is not right. */
export function compileAlertRules(file: string, text: string): { rules: AlertRules } | { problems: Problem[] } {
  const parsed = parseYamlDocument(file, text, 'expected a mapping with "rules" (a list of alert rules) and optionally "webhooks"');
  if ('problems' in parsed) return parsed;
  const validated = validateYamlDocument(rulesFileSchema, parsed.document);
  if ('problems' in validated) return validated;
  const problems: Problem[] = [];
  const seen = new Map<string, number>();
  validated.data.rules.forEach((rule, index) => {
    const at = (field: string) => ({ file, ...positionIn(parsed.document, ['rules', index, field]) });
    const first = seen.get(rule.name);
    if (first !== undefined) problems.push({ ...at('name'), message: `rules.${index}.name: "${rule.name}" is the name of rules.${first} too` });
    else seen.set(rule.name, index);
    if ((Object.values(AREA_RULE_NAMES) as string[]).includes(rule.name)) problems.push({ ...at('name'), message: `rules.${index}.name: "${rule.name}" is the monitor's own rule (guarded rollouts' decisions); name this rule otherwise` });
    if (rule.critical !== undefined && rule.critical < rule.warning) problems.push({ ...at('critical'), message: `rules.${index}.critical: ${rule.critical} is below warning (${rule.warning}); alerts fire when the value reaches a threshold` });
    if (parseDuration(rule.window) < 60_000) problems.push({ ...at('window'), message: `rules.${index}.window: at least 1m (the aggregates are per minute)` });
    if (rule.metric === 'score_drop' && !rule.filter.pipeline) problems.push({ ...at('metric'), message: `rules.${index}.filter.pipeline: score_drop compares a pipeline's prompt versions; name the pipeline` });
    if (rule.metric === 'consumer_lag' && rule.group_by.length > 0) problems.push({ ...at('group_by'), message: `rules.${index}.group_by: consumer_lag is one figure; it has no groups` });
  });
  if (problems.length > 0) return { problems };
  return {
    rules: {
      rules: validated.data.rules.map((rule) => ({ ...rule, windowMs: parseDuration(rule.window), forMs: parseDuration(rule.for) })),
      webhooks: validated.data.webhooks.map((webhook) => webhook.url),
      revision: rulesRevision(text),
      source: file,
    },
  };
}

export { formatProblem };
