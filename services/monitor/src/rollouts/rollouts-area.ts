import { CALLER_METADATA, GUARD_METADATA, KvView, Status, failureMessage, statusOf, type proto } from '@elexirion/kit';
import { Metadata } from 'nice-grpc-common';
import { Counter } from 'prom-client';
import type { AlertsArea, AreaAlertChange } from '../alerts/alerts-area.js';
import { AREA_RULE_NAMES } from '../alerts/alert-rules.js';
import type { ExecutionStore } from '../executions/execution-store.js';
import type { MonitorArea, MonitorContext } from '../monitor-area.js';
import { ROLLOUT_DECISIONS_SPEC, RolloutDecisions, decisionKey, type RolloutDecision, type RolloutDecisionRecord } from './rollout-decisions.js';
import { evaluateRollout, guardSettings, type Comparison, type GuardSettings, type RolloutVerdict } from './rollout-evaluator.js';
import { readRolloutArms, type WatchedRollout } from './rollout-figures.js';

/** Who the monitor is in the registry's history (`x-elexirion-caller`). */
export const MONITOR_CALLER = 'monitor';

/** Codes with which the executor refuses a change for good (a protected baseline, a rollout it cannot take): told once, tried again after the rollout changes. */
const REFUSALS = new Set([Status.FAILED_PRECONDITION, Status.PERMISSION_DENIED, Status.INVALID_ARGUMENT]);

interface Watched {
  entry: proto.PromptStep;
  /** The revision of the step's decision record when it was read (undefined: none), for the compare-and-set of a refusal. */
  decisionRevision: number | undefined;
  settings: GuardSettings;
  rollout: WatchedRollout;
}

export interface RolloutsDependencies {
  /** The executions area's store once it is attached to NATS. */
  executions(): ExecutionStore | undefined;
  alerts: AlertsArea;
}

/**
 * Guarded rollouts: every MONITOR_ROLLOUT_INTERVAL_MS each replica reads the registry from the
 * executor (which owns it), measures each guarded rollout's candidate and baseline from the
 * executions kept since it started, and applies the guard's decision through the executor with
 * the revision it read (see README.md).
 */
export async function rolloutsArea(context: MonitorContext, dependencies: RolloutsDependencies): Promise<MonitorArea<never>> {
  const { config, nats, clients, metrics } = context;
  const logger = context.logger.child({ area: 'rollouts' });
  const executor = clients.get('executor');
  const alertRule = dependencies.alerts.areaRule(AREA_RULE_NAMES.promptRollout);
  const callOptions = () => ({ metadata: Metadata({ [CALLER_METADATA]: MONITOR_CALLER, [GUARD_METADATA]: 'true' }) });

  const decisionsCounter = new Counter({
    name: 'elexirion_monitor_rollout_decisions_total',
    help: 'Guarded rollout decisions this replica applied or was refused: promoted, rolled_back or refused.',
    labelNames: ['decision'] as const,
    registers: [metrics.registry],
  });

  const rounds = new Counter({
    name: 'elexirion_monitor_rollout_rounds_total',
    help: 'Evaluation rounds of the guarded rollouts this replica completed (the registry read, every guarded rollout evaluated).',
    registers: [metrics.registry],
  });

  let decisions: RolloutDecisions | undefined;
  const view = new KvView<RolloutDecisionRecord>({ ...ROLLOUT_DECISIONS_SPEC, logger, label: 'rollout decision' });
  nats.use('rollout decisions', async (connection) => {
    decisions = await RolloutDecisions.open(connection, view);
  });

  // What went wrong last, logged when it changes rather than every round.
  let lastProblem = '';
  function problem(message: string, fields: object = {}, level: 'info' | 'warn' = 'warn') {
    if (message === lastProblem) return;
    lastProblem = message;
    logger[level](fields, message);
  }
  const guardProblems = new Map<string, string>();

  async function round(nowMs = Date.now()): Promise<void> {
    const store = dependencies.executions();
    const decided = decisions;
    if (!store || !decided) return;
    let steps: proto.PromptStep[];
    try {
      steps = (await executor.listPromptVersions({ pipeline: '', step: '' }, callOptions())).steps;
    } catch (error) {
      const code = statusOf(error);
      if (code === Status.UNIMPLEMENTED) problem('the executor has no prompt registry: guarded rollouts are not watched until it has', {}, 'info');
      else problem('guarded rollouts: the registry cannot be read from the executor; trying again', { code: Status[code], err: failureMessage(error) });
      return;
    }
    lastProblem = '';
    await resolveChanged(decided, steps);
    const watched = guarded(decided, steps);
    if (watched.length === 0) {
      rounds.inc();
      return;
    }
    const arms = await readRolloutArms(
      store,
      watched.map((item) => item.rollout),
      nowMs,
      nowMs - config.MONITOR_EXECUTIONS_RETENTION_HOURS * 3_600_000,
    );
    for (const item of watched) {
      const { candidate, baseline } = arms.get(item.rollout)!;
      const verdict = evaluateRollout(item.settings, candidate, baseline, { earlyMinRuns: config.MONITOR_ROLLOUT_EARLY_MIN_RUNS });
      if (verdict.decision === 'hold') {
        logger.debug({ pipeline: item.rollout.pipeline, step: item.rollout.step, candidate: item.rollout.candidate, reason: verdict.reason }, 'guarded rollout: holding');
        continue;
      }
      await apply(decided, item, verdict);
    }
    rounds.inc();
  }

  /** The guarded rollouts to evaluate: a candidate, a usable guard, and no refusal of this very revision. */
  function guarded(decided: RolloutDecisions, steps: proto.PromptStep[]): Watched[] {
    const watched: Watched[] = [];
    for (const entry of steps) {
      const rollout = entry.rollout;
      // Revision 0 would tell the executor "whatever it is": only stored entries (revision > 0) are acted on.
      if (!rollout?.guard || !rollout.candidate || rollout.candidate === rollout.baseline || !entry.revision) continue;
      const key = decisionKey(entry.pipeline, entry.step);
      const settings = guardSettings(rollout.guard);
      if ('problem' in settings) {
        // The executor checks guards when they are set; one it let through is told, not applied.
        if (guardProblems.get(key) !== settings.problem) logger.warn({ pipeline: entry.pipeline, step: entry.step, problem: settings.problem }, 'guarded rollout: its guard cannot be applied; not watched');
        guardProblems.set(key, settings.problem);
        continue;
      }
      guardProblems.delete(key);
      const previous = decided.get(key);
      if (previous?.value.decision === 'refused' && previous.value.revision === entry.revision) continue;
      watched.push({
        entry,
        decisionRevision: previous?.revision,
        settings,
        rollout: {
          pipeline: entry.pipeline,
          step: entry.step,
          candidate: rollout.candidate,
          baseline: rollout.baseline || 'yaml',
          startedAtMs: rollout.startedAt?.getTime() ?? 0,
          scoreName: settings.scoreName,
        },
      });
    }
    return watched;
  }

  /** A firing alert (rollback, refusal) resolves once the step's entry changed after the decision: someone acted on it. */
  async function resolveChanged(decided: RolloutDecisions, steps: proto.PromptStep[]): Promise<void> {
    const revisions = new Map(steps.map((entry) => [decisionKey(entry.pipeline, entry.step), entry.revision]));
    for (const { key, value: record, revision: decisionRevision } of decided.entries()) {
      if (!record.alertFiring) continue;
      const revision = revisions.get(key);
      if (revision === record.revision) continue;
      // One replica resolves it: the one whose write lands.
      if (!(await decided.change({ ...record, alertFiring: false }, decisionRevision))) continue;
      const what = record.decision === 'refused' ? `the refused promotion of ${record.candidate}` : `the rollback of ${record.candidate}`;
      await alertRule
        .raise({
          labels: labelsOf(record),
          state: 'ok',
          severity: '',
          value: null,
          threshold: 0,
          summary: `prompt rollout ${record.pipeline}/${record.step}: resolved, the step's prompts changed after ${what} (revision ${record.revision} -> ${revision ?? 'gone'})`,
          transition: 'resolved',
        })
        .catch((error: unknown) => logger.warn({ err: error, pipeline: record.pipeline, step: record.step, candidate: record.candidate }, 'guarded rollout: the alert could not be resolved'));
    }
  }

  async function apply(decided: RolloutDecisions, item: Watched, verdict: Exclude<RolloutVerdict, { decision: 'hold' }>): Promise<void> {
    const { pipeline, step, candidate } = item.rollout;
    const reason = `guard (${item.settings.metric}): ${verdict.reason}`;
    let revision: number;
    try {
      const response =
        verdict.decision === 'promote'
          ? await executor.promotePromptVersion({ pipeline, step, versionId: candidate, reason, expectedRevision: item.entry.revision }, callOptions())
          : await executor.rollbackPrompt({ pipeline, step, toVersion: '', reason, expectedRevision: item.entry.revision }, callOptions());
      revision = Number(response.step?.revision ?? 0);
    } catch (error) {
      const code = statusOf(error);
      const fields = { pipeline, step, candidate, decision: verdict.decision, code: Status[code], err: failureMessage(error) };
      if (code === Status.ABORTED || code === Status.NOT_FOUND) {
        // Changed meanwhile (another replica's decision, or a person's change): read again next round.
        logger.info(fields, 'guarded rollout: the entry changed before the decision was applied; reading it again');
        return;
      }
      if (!REFUSALS.has(code)) {
        logger.warn(fields, 'guarded rollout: the decision could not be applied now; trying again');
        return;
      }
      await tell(decided, item, 'refused', `${verdict.decision === 'promote' ? 'promotion' : 'rollback'} refused by the registry: ${failureMessage(error)} (the guard's verdict: ${verdict.reason})`, verdict.comparison, Number(item.entry.revision));
      return;
    }
    await tell(decided, item, verdict.decision === 'promote' ? 'promoted' : 'rolled_back', reason, verdict.comparison, revision);
  }

  /** The decision's record, event, counter, log and alert; a refusal once across replicas (the record's compare-and-set decides). */
  async function tell(decided: RolloutDecisions, item: Watched, decision: RolloutDecision, reason: string, comparison: Comparison, revision: number): Promise<void> {
    const { pipeline, step, candidate, baseline } = item.rollout;
    const record: RolloutDecisionRecord = { pipeline, step, candidate, baseline, decision, reason, revision, decidedAtMs: Date.now(), alertFiring: decision !== 'promoted' };
    if (decision === 'refused') {
      // Over the record read before deciding: a replica that refused the same revision first wrote since, and told it.
      if (!(await decided.change(record, item.decisionRevision))) return;
    } else {
      // Applied already (the registry has it): told even when its record cannot be kept now (a rollback's alert then stays firing).
      await decided.record(record).catch((error: unknown) => logger.warn({ err: error, pipeline, step, candidate }, 'guarded rollout: the record of a decision could not be written'));
    }
    decisionsCounter.inc({ decision });
    context.events.publish('rollout', {
      status: 'OK',
      monitorRollout: {
        pipeline,
        step,
        candidate,
        baseline,
        decision,
        reason,
        metric: comparison.metric,
        candidateValue: comparison.candidateValue,
        baselineValue: comparison.baselineValue,
        candidateRuns: comparison.candidateRuns,
        baselineRuns: comparison.baselineRuns,
        pValue: comparison.pValue,
      },
    });
    logger.info({ pipeline, step, candidate, baseline, decision, revision, metric: comparison.metric, pValue: comparison.pValue }, `guarded rollout ${pipeline}/${step}: ${candidate} ${decision.replace('_', ' ')}: ${reason}`);
    const alert: AreaAlertChange = {
      labels: labelsOf(record),
      state: decision === 'promoted' ? 'ok' : 'firing',
      severity: decision === 'promoted' ? '' : 'warning',
      value: comparison.candidateValue,
      threshold: comparison.baselineValue,
      summary: `prompt rollout ${pipeline}/${step}: ${summaryOf(decision, candidate, baseline)}: ${reason}`,
      transition: decision === 'promoted' ? 'resolved' : 'firing',
    };
    await alertRule.raise(alert).catch((error: unknown) => logger.warn({ err: error, pipeline, step, candidate }, 'guarded rollout: the alert of a decision could not be written'));
  }

  let stopped = false;
  let running: Promise<void> | undefined;
  const timer = setInterval(() => {
    // A round slower than the interval is not stacked with the next.
    if (stopped || running) return;
    running = round()
      .catch((error: unknown) => logger.warn({ err: error }, 'guarded rollouts: evaluation round failed'))
      .finally(() => (running = undefined));
  }, config.MONITOR_ROLLOUT_INTERVAL_MS);
  timer.unref();

  return {
    implementation: {},
    async close() {
      stopped = true;
      clearInterval(timer);
      await running;
      await view.close();
    },
  };
}

function labelsOf(record: Pick<RolloutDecisionRecord, 'pipeline' | 'step' | 'candidate'>): Record<string, string> {
  return { pipeline: record.pipeline, step: record.step, candidate: record.candidate };
}

function summaryOf(decision: RolloutDecision, candidate: string, baseline: string): string {
  if (decision === 'promoted') return `${candidate} promoted over ${baseline}`;
  if (decision === 'rolled_back') return `${candidate} rolled back, ${baseline} stays`;
  return `the guard's decision on ${candidate} was refused`;
}
