/**
 * The prompt lifecycle's changes as pure functions of the current entry: publish a version, set a
 * rollout, promote, roll back. Each checks its request (errors name the field), applies the rules
 * of a protected baseline, and answers the next entry with the change it records. The registry
 * writes the result with compare-and-set (PromptRegistry.change); nothing here touches NATS.
 */
import { ServerError, Status } from '@elexirion/kit';
import {
  GUARD_METRICS,
  RESERVED_VERSION_IDS,
  VERSION_ID,
  WEIGHT_TOLERANCE,
  YAML_VERSION,
  type ChangeAction,
  type GuardMetric,
  type PromptChangeRecord,
  type PromptEntry,
  type PromptGuardRecord,
  type PromptRolloutRecord,
  type PromptTemplateRecord,
  type PromptVersionRecord,
} from './prompt-entry.js';

/** Who makes a change. */
export interface ChangeActor {
  /** The API key's name, or the service ("monitor"). */
  by: string;
  /** The admin scope: needed to move a protected baseline. */
  admin: boolean;
  /** The monitor's guard: its promote and rollback are recorded as guard_promote and guard_rollback. */
  guard: boolean;
  /** ISO time of the change. */
  now: string;
}

export const GUARD_DEFAULTS = { minRuns: 30, significance: 0.05, maxRunsFactor: 10, scoreName: 'thumbs' } as const;

// Bounds on what one version may hold: a KV entry keeps every version of its step.
export const MAX_TEMPLATE_BYTES = 64 * 1024;
export const MAX_DEMOS = 50;
export const MAX_DEMOS_BYTES = 256 * 1024;
export const MAX_TEXT_BYTES = 4 * 1024;
export const MAX_SCORES = 32;

export interface GuardInput {
  metric: string;
  scoreName: string;
  minRuns: number;
  significance: number;
  maxRuns: number;
}

export interface PublishInput {
  versionId: string;
  template: PromptTemplateRecord;
  source: string;
  description: string;
  scores: Record<string, number>;
  rolloutWeight: number;
  guard: GuardInput | undefined;
  reason: string;
}

export interface RolloutInput {
  weights: Record<string, number>;
  candidate: string;
  guard: GuardInput | undefined;
  baselineProtected: boolean | undefined;
  reason: string;
}

function invalid(message: string): ServerError {
  return new ServerError(Status.INVALID_ARGUMENT, message);
}

const bytes = (text: string) => Buffer.byteLength(text, 'utf8');

/** A text field within its bound. */
export function checkText(field: string, value: string, limit = MAX_TEXT_BYTES): void {
  if (bytes(value) > limit) throw invalid(`${field}: ${bytes(value)} bytes is over the limit of ${limit}`);
}

/** The guard with its defaults filled; INVALID_ARGUMENT naming the field otherwise. */
export function normalizeGuard(guard: GuardInput): PromptGuardRecord {
  if (!(GUARD_METRICS as readonly string[]).includes(guard.metric)) {
    throw invalid(`guard.metric: ${JSON.stringify(guard.metric.slice(0, 40))} is not one of ${GUARD_METRICS.join(', ')}`);
  }
  const metric = guard.metric as GuardMetric;
  if (!Number.isInteger(guard.minRuns) || guard.minRuns < 0) throw invalid(`guard.min_runs: must be a positive whole number (0 for the default ${GUARD_DEFAULTS.minRuns}), got ${guard.minRuns}`);
  const minRuns = guard.minRuns || GUARD_DEFAULTS.minRuns;
  if (!Number.isFinite(guard.significance) || guard.significance < 0 || guard.significance > 0.5) {
    throw invalid(`guard.significance: must be above 0 and at most 0.5 (0 for the default ${GUARD_DEFAULTS.significance}), got ${guard.significance}`);
  }
  const significance = guard.significance || GUARD_DEFAULTS.significance;
  if (!Number.isInteger(guard.maxRuns) || guard.maxRuns < 0) throw invalid(`guard.max_runs: must be a whole number >= 0, got ${guard.maxRuns}`);
  const maxRuns = guard.maxRuns || GUARD_DEFAULTS.maxRunsFactor * minRuns;
  if (maxRuns < minRuns) throw invalid(`guard.max_runs: ${maxRuns} is below min_runs ${minRuns}`);
  checkText('guard.score_name', guard.scoreName, 128);
  if (metric !== 'score' && guard.scoreName) throw invalid(`guard.score_name: only for metric "score", not "${metric}"`);
  const scoreName = metric === 'score' ? guard.scoreName || GUARD_DEFAULTS.scoreName : '';
  return { metric, scoreName, minRuns, significance, maxRuns };
}

/** A template within bounds (placeholders are the caller's to check against the step). */
export function checkTemplate(template: PromptTemplateRecord | undefined, field = 'template'): PromptTemplateRecord {
  if (!template) throw invalid(`${field}: required`);
  if (template.prompt.trim() === '') throw invalid(`${field}.prompt: must not be empty`);
  checkText(`${field}.prompt`, template.prompt, MAX_TEMPLATE_BYTES);
  checkText(`${field}.system`, template.system ?? '', MAX_TEMPLATE_BYTES);
  const demos = template.demos ?? [];
  if (demos.length > MAX_DEMOS) throw invalid(`${field}.demos: ${demos.length} demos is over the limit of ${MAX_DEMOS}`);
  let total = 0;
  demos.forEach((demo, index) => {
    if (demo.input.trim() === '') throw invalid(`${field}.demos[${index}].input: must not be empty`);
    if (demo.output.trim() === '') throw invalid(`${field}.demos[${index}].output: must not be empty`);
    total += bytes(demo.input) + bytes(demo.output);
  });
  if (total > MAX_DEMOS_BYTES) throw invalid(`${field}.demos: ${total} bytes in all is over the limit of ${MAX_DEMOS_BYTES}`);
  return {
    prompt: template.prompt,
    ...(template.system ? { system: template.system } : {}),
    ...(demos.length > 0 ? { demos: demos.map((demo) => ({ input: demo.input, output: demo.output })) } : {}),
  };
}

export function emptyEntry(pipeline: string, step: string, now: string): PromptEntry {
  return { pipeline, step, versions: [], rollout: { baseline: YAML_VERSION, weights: {}, candidate: '', baselineProtected: false }, updatedAt: now };
}

function has(entry: PromptEntry, id: string): boolean {
  return id === YAML_VERSION || entry.versions.some((version) => version.id === id);
}

function notFound(entry: PromptEntry, field: string, id: string): ServerError {
  const known = [YAML_VERSION, ...entry.versions.map((version) => version.id)].join(', ');
  return new ServerError(Status.NOT_FOUND, `${field}: ${entry.pipeline}.${entry.step} has no version "${id.slice(0, 80)}" (it has ${known})`);
}

function protectedBaseline(entry: PromptEntry, what: string): ServerError {
  return new ServerError(
    Status.PERMISSION_DENIED,
    `${entry.pipeline}.${entry.step}: the baseline "${entry.rollout.baseline}" is protected; ${what} needs the admin scope`,
  );
}

function withChange(entry: PromptEntry, before: PromptRolloutRecord, rollout: PromptRolloutRecord, action: ChangeAction, version: string, reason: string, actor: ChangeActor, versions = entry.versions): PromptEntry {
  const change: PromptChangeRecord = { action, by: actor.by, time: actor.now, reason, before, after: rollout, version };
  return { pipeline: entry.pipeline, step: entry.step, versions, rollout, lastChange: change, updatedAt: actor.now };
}

/** The next free "v<N>" of the entry. */
function nextVersionId(entry: PromptEntry): string {
  let highest = 0;
  for (const version of entry.versions) {
    const match = /^v(\d+)$/.exec(version.id);
    if (match) highest = Math.max(highest, Number(match[1]));
  }
  let next = Math.max(highest, entry.versions.length) + 1;
  while (has(entry, `v${next}`)) next++;
  return `v${next}`;
}

/** Checks a version id a caller chose (the entry decides uniqueness). */
export function checkVersionId(id: string): void {
  if (!VERSION_ID.test(id)) throw invalid(`version_id: ${JSON.stringify(id.slice(0, 80))} must be 1-64 of letters, digits, ., _ and - starting with a letter or digit`);
  if (RESERVED_VERSION_IDS.has(id)) throw invalid(`version_id: "${id}" is reserved (yaml, candidate and override name other prompts)`);
}

/** Checks scores: finite numbers under short names. */
export function checkScores(scores: Record<string, number>): void {
  const names = Object.keys(scores);
  if (names.length > MAX_SCORES) throw invalid(`scores: ${names.length} scores is over the limit of ${MAX_SCORES}`);
  for (const name of names) {
    if (name === '' || bytes(name) > 64) throw invalid(`scores: a score name must be 1-64 bytes, got ${JSON.stringify(name.slice(0, 80))}`);
    if (!Number.isFinite(scores[name])) throw invalid(`scores.${name}: must be a finite number`);
  }
}

/** Publishes a version (immutable from now on), with a rollout against the baseline when `rolloutWeight` > 0. */
export function publishVersion(current: PromptEntry, input: PublishInput, actor: ChangeActor): { entry: PromptEntry; version: PromptVersionRecord } {
  const id = input.versionId || nextVersionId(current);
  if (input.versionId && has(current, input.versionId)) {
    throw new ServerError(Status.ALREADY_EXISTS, `version_id: ${current.pipeline}.${current.step} already has version "${id}"; versions are immutable, publish under a new id`);
  }
  const version: PromptVersionRecord = {
    id,
    template: input.template,
    source: input.source,
    description: input.description,
    scores: { ...input.scores },
    createdAt: actor.now,
    createdBy: actor.by,
  };
  const before = current.rollout;
  let rollout = before;
  if (input.rolloutWeight > 0) {
    const baseline = before.baseline;
    const weights: Record<string, number> = { [baseline]: 1 - input.rolloutWeight, [id]: input.rolloutWeight };
    rollout = {
      baseline,
      weights,
      candidate: id,
      ...(input.guard ? { guard: normalizeGuard(input.guard) } : {}),
      baselineProtected: before.baselineProtected,
      startedAt: actor.now,
    };
  }
  return { entry: withChange(current, before, rollout, 'publish', id, input.reason, actor, [...current.versions, version]), version };
}

/** Checks a publish request's rollout part before the entry is read. */
export function checkRolloutWeight(weight: number, guard: GuardInput | undefined): void {
  if (!Number.isFinite(weight) || weight < 0 || weight >= 1) throw invalid(`rollout_weight: must be 0 (no traffic) or above 0 and below 1, got ${weight}`);
  if (guard && weight === 0) throw invalid('guard: a guard watches a rollout; give rollout_weight too');
  if (guard) normalizeGuard(guard);
}

/**
 * Sets the weights (and the candidate and guard) of the rollout; the baseline stays. A request
 * with only baseline_protected (no weights, candidate or guard) changes the protection alone.
 * Without a candidate, the current one stays the candidate while it keeps a weight; the guard is
 * what the request says (none: no guard).
 */
export function setRollout(current: PromptEntry, input: RolloutInput, actor: ChangeActor): PromptEntry {
  const before = current.rollout;
  if (input.baselineProtected !== undefined && Object.keys(input.weights).length === 0 && !input.candidate && !input.guard) {
    if (before.baselineProtected && !input.baselineProtected && !actor.admin) throw protectedBaseline(current, 'clearing the protection');
    return withChange(current, before, { ...before, baselineProtected: input.baselineProtected }, 'set_rollout', before.candidate, input.reason, actor);
  }
  const weights: Record<string, number> = {};
  let sum = 0;
  for (const [id, weight] of Object.entries(input.weights)) {
    if (!Number.isFinite(weight) || weight < 0 || weight > 1) throw invalid(`weights.${id}: must be between 0 and 1, got ${weight}`);
    if (!has(current, id)) throw invalid(`weights.${id}: ${current.pipeline}.${current.step} has no version "${id.slice(0, 80)}"`);
    if (weight > 0) weights[id] = weight;
    sum += weight;
  }
  if (Object.keys(input.weights).length > 0 && Math.abs(sum - 1) > WEIGHT_TOLERANCE) throw invalid(`weights: must sum to 1, they sum to ${sum}`);
  const serving = Object.keys(weights);
  let candidate = input.candidate || (before.candidate && before.candidate in weights && before.candidate !== before.baseline ? before.candidate : '');
  if (candidate && !has(current, candidate)) throw notFound(current, 'candidate', candidate);
  if (candidate && !(candidate in weights)) throw invalid(`candidate: "${candidate}" has no weight in weights`);
  if (candidate && candidate === before.baseline) throw invalid(`candidate: "${candidate}" is the baseline; a candidate is compared with it`);
  let guard: PromptGuardRecord | undefined;
  if (input.guard) {
    guard = normalizeGuard(input.guard);
    const others = serving.filter((id) => id !== before.baseline);
    if (!serving.includes(before.baseline) || others.length !== 1) {
      throw invalid(`guard: a guarded rollout gives weight to exactly the baseline "${before.baseline}" and one candidate; weights give it to ${serving.join(', ') || 'none'}`);
    }
    if (candidate && candidate !== others[0]) throw invalid(`candidate: the guarded candidate must be "${others[0]}", the one version besides the baseline with weight`);
    candidate = others[0]!;
  }
  let baselineProtected = before.baselineProtected;
  if (input.baselineProtected !== undefined) {
    if (before.baselineProtected && !input.baselineProtected && !actor.admin) throw protectedBaseline(current, 'clearing the protection');
    baselineProtected = input.baselineProtected;
  }
  const sameWeights = serving.length === Object.keys(before.weights).length && serving.every((id) => before.weights[id] === weights[id]);
  const rollout: PromptRolloutRecord = {
    baseline: before.baseline,
    weights,
    candidate,
    ...(guard ? { guard } : {}),
    baselineProtected,
    ...(sameWeights && before.startedAt ? { startedAt: before.startedAt } : { startedAt: actor.now }),
  };
  return withChange(current, before, rollout, 'set_rollout', candidate, input.reason, actor);
}

/** Makes a version the baseline serving every run; the guard ends. */
export function promoteVersion(current: PromptEntry, versionId: string, reason: string, actor: ChangeActor): PromptEntry {
  if (!versionId) throw invalid('version_id: required');
  if (!has(current, versionId)) throw notFound(current, 'version_id', versionId);
  const before = current.rollout;
  if (before.baselineProtected && versionId !== before.baseline && !actor.admin) throw protectedBaseline(current, `promoting "${versionId}"`);
  const rollout: PromptRolloutRecord = { baseline: versionId, weights: { [versionId]: 1 }, candidate: '', baselineProtected: before.baselineProtected, startedAt: actor.now };
  return withChange(current, before, rollout, actor.guard ? 'guard_promote' : 'promote', versionId, reason, actor);
}

/** Ends the rollout (every run on the baseline), or makes `toVersion` the baseline. */
export function rollbackPrompt(current: PromptEntry, toVersion: string, reason: string, actor: ChangeActor): PromptEntry {
  const before = current.rollout;
  let baseline = before.baseline;
  if (toVersion) {
    if (!has(current, toVersion)) throw notFound(current, 'to_version', toVersion);
    if (before.baselineProtected && toVersion !== before.baseline && !actor.admin) throw protectedBaseline(current, `rolling back to "${toVersion}"`);
    baseline = toVersion;
  }
  const rollout: PromptRolloutRecord = { baseline, weights: { [baseline]: 1 }, candidate: '', baselineProtected: before.baselineProtected, startedAt: actor.now };
  // The version rolled back: the candidate that was under test, else the baseline left.
  const version = before.candidate || (baseline !== before.baseline ? before.baseline : '');
  return withChange(current, before, rollout, actor.guard ? 'guard_rollback' : 'rollback', version, reason, actor);
}
