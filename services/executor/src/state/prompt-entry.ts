/**
 * One pipeline step's prompt registry entry as the KV bucket `elexirion_prompts` stores it (key
 * `pipeline.step`): its immutable versions, its rollout (baseline, weights, candidate, guard) and
 * the change that wrote it. Entries written before issue 15 (versions with a `weight` each, no
 * rollout) still load: they are read as a rollout over those weights.
 */
import { z } from 'zod';
import { PIPELINE_NAME, STEP_NAME } from '../pipeline/schema.js';

/** The id of the step's YAML prompt in weights and baselines. */
export const YAML_VERSION = 'yaml';
/** Ids a published version may not take: what steps report for other prompts. */
export const RESERVED_VERSION_IDS: ReadonlySet<string> = new Set([YAML_VERSION, 'candidate', 'override']);
export const VERSION_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export const GUARD_METRICS = ['success_rate', 'score', 'latency_p95_ms', 'cost_usd_mean'] as const;
export type GuardMetric = (typeof GUARD_METRICS)[number];
export const CHANGE_ACTIONS = ['publish', 'set_rollout', 'promote', 'rollback', 'guard_promote', 'guard_rollback'] as const;
export type ChangeAction = (typeof CHANGE_ACTIONS)[number];

const demoSchema = z.object({ input: z.string(), output: z.string() });
export type PromptDemoRecord = z.infer<typeof demoSchema>;

const templateSchema = z.object({
  prompt: z.string().refine((value) => value.trim().length > 0, 'must not be empty'),
  system: z.string().optional(),
  demos: z.array(demoSchema).optional(),
});
export type PromptTemplateRecord = z.infer<typeof templateSchema>;

const versionSchema = z.object({
  id: z.string().regex(VERSION_ID, `must match ${VERSION_ID}`),
  template: templateSchema,
  source: z.string(),
  description: z.string(),
  scores: z.record(z.string(), z.number()),
  createdAt: z.string(),
  createdBy: z.string(),
});
export type PromptVersionRecord = z.infer<typeof versionSchema>;

const guardSchema = z.object({
  metric: z.enum(GUARD_METRICS),
  scoreName: z.string(),
  minRuns: z.number().int().positive(),
  significance: z.number().gt(0).lt(1),
  maxRuns: z.number().int().positive(),
});
export type PromptGuardRecord = z.infer<typeof guardSchema>;

const rolloutSchema = z.object({
  baseline: z.string().min(1),
  weights: z.record(z.string(), z.number().min(0).max(1)),
  candidate: z.string(),
  guard: guardSchema.optional(),
  baselineProtected: z.boolean(),
  startedAt: z.string().optional(),
});
export type PromptRolloutRecord = z.infer<typeof rolloutSchema>;

const changeSchema = z.object({
  action: z.enum(CHANGE_ACTIONS),
  by: z.string(),
  time: z.string(),
  reason: z.string(),
  before: rolloutSchema,
  after: rolloutSchema,
  version: z.string(),
});
export type PromptChangeRecord = z.infer<typeof changeSchema>;

/** The shape an entry is stored in now. */
const currentEntrySchema = z.object({
  pipeline: z.string().regex(PIPELINE_NAME, `must match ${PIPELINE_NAME}`),
  step: z.string().regex(STEP_NAME, `must match ${STEP_NAME}`),
  versions: z.array(versionSchema),
  rollout: rolloutSchema,
  lastChange: changeSchema.optional(),
  updatedAt: z.string().min(1),
});
export type PromptEntry = z.infer<typeof currentEntrySchema>;

/** The shape before issue 15: each version carries its own weight; no rollout. */
const legacyEntrySchema = z.object({
  pipeline: z.string().regex(PIPELINE_NAME, `must match ${PIPELINE_NAME}`),
  step: z.string().regex(STEP_NAME, `must match ${STEP_NAME}`),
  versions: z
    .array(
      z.object({
        id: z.string().regex(VERSION_ID, `must match ${VERSION_ID}`),
        weight: z.number().finite().nonnegative('must be >= 0'),
        prompt: z.string().refine((value) => value.trim().length > 0, 'must not be empty'),
        system: z.string().optional(),
        demos: z.array(demoSchema).optional(),
        createdAt: z.string().optional(),
        source: z.string().optional(),
      }),
    )
    .min(1, 'needs at least one version'),
  updatedAt: z.string().min(1),
});
export type LegacyPromptEntry = z.infer<typeof legacyEntrySchema>;

/** A legacy entry as a current one: weights normalized to sum 1, the heaviest version as baseline. */
export function fromLegacy(legacy: LegacyPromptEntry): PromptEntry {
  const total = legacy.versions.reduce((sum, version) => sum + version.weight, 0);
  const weights: Record<string, number> = {};
  let baseline = YAML_VERSION;
  let heaviest = 0;
  for (const version of legacy.versions) {
    if (total > 0 && version.weight > 0) weights[version.id] = version.weight / total;
    if (version.weight > heaviest) {
      heaviest = version.weight;
      baseline = version.id;
    }
  }
  return {
    pipeline: legacy.pipeline,
    step: legacy.step,
    versions: legacy.versions.map((version) => ({
      id: version.id,
      template: { prompt: version.prompt, ...(version.system !== undefined ? { system: version.system } : {}), ...(version.demos ? { demos: version.demos } : {}) },
      source: version.source ?? '',
      description: '',
      scores: {},
      createdAt: version.createdAt ?? legacy.updatedAt,
      createdBy: '',
    })),
    // Zero weights everywhere: the registry served the YAML prompt for it.
    rollout: { baseline, weights: total > 0 ? weights : {}, candidate: '', baselineProtected: false },
    updatedAt: legacy.updatedAt,
  };
}

/** The problems of an entry whose parts are each fine but do not fit together. */
function checkConsistency(entry: PromptEntry, context: z.RefinementCtx): void {
  const ids = new Set<string>();
  entry.versions.forEach((version, index) => {
    if (ids.has(version.id)) context.addIssue({ code: 'custom', path: ['versions', index, 'id'], message: `duplicate version id "${version.id}"` });
    if (RESERVED_VERSION_IDS.has(version.id)) context.addIssue({ code: 'custom', path: ['versions', index, 'id'], message: `"${version.id}" is reserved` });
    ids.add(version.id);
  });
  const known = (id: string) => id === YAML_VERSION || ids.has(id);
  const { rollout } = entry;
  if (!known(rollout.baseline)) context.addIssue({ code: 'custom', path: ['rollout', 'baseline'], message: `names version "${rollout.baseline}", which the entry does not have` });
  for (const id of Object.keys(rollout.weights)) {
    if (!known(id)) context.addIssue({ code: 'custom', path: ['rollout', 'weights', id], message: `names version "${id}", which the entry does not have` });
  }
  const weights = Object.values(rollout.weights);
  const sum = weights.reduce((total, weight) => total + weight, 0);
  if (weights.length > 0 && Math.abs(sum - 1) > WEIGHT_TOLERANCE) context.addIssue({ code: 'custom', path: ['rollout', 'weights'], message: `sum to ${sum}, not 1` });
  if (rollout.candidate && !known(rollout.candidate)) context.addIssue({ code: 'custom', path: ['rollout', 'candidate'], message: `names version "${rollout.candidate}", which the entry does not have` });
}

/** Weights sum to 1 within this (they come as doubles, e.g. 0.1 + 0.2). */
export const WEIGHT_TOLERANCE = 1e-6;

/** What the bucket holds: a current entry, or a legacy one read as current; checked whole. */
export const promptEntrySchema: z.ZodType<PromptEntry> = z
  .unknown()
  .transform((raw, context): PromptEntry => {
    // One shape or the other by whether it has a rollout, so problems are told for that shape.
    const legacy = typeof raw === 'object' && raw !== null && !('rollout' in raw);
    const parsed = legacy ? legacyEntrySchema.transform(fromLegacy).safeParse(raw) : currentEntrySchema.safeParse(raw);
    if (parsed.success) return parsed.data;
    for (const issue of parsed.error.issues) context.addIssue({ code: 'custom', message: issue.message, path: issue.path });
    return z.NEVER;
  })
  .superRefine(checkConsistency) as unknown as z.ZodType<PromptEntry>;

/** Only the change an entry carries, for history reads (the versions are not needed there). */
export const changeOnlySchema = z.object({ pipeline: z.string(), step: z.string(), lastChange: changeSchema.optional(), updatedAt: z.string().optional() });

export function entryKey(pipeline: string, step: string): string {
  return `${pipeline}.${step}`;
}
