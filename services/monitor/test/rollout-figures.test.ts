// A guarded rollout's figures read from the executions kept, against a real nats-server with the
// monitor hosted in the test process: run events (failed runs with their steps and versions, as
// the executor publishes them) published on the real stream become executions; feedback recorded
// through the monitor's call; then the two arms of two rollouts of one pipeline (runs since each
// started, of its step) read from the store, GetPromptVersionStats counting the failed runs as
// failures of their versions, and the guard's verdict on those figures.
import { randomUUID } from 'node:crypto';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { createChannel, createClient } from 'nice-grpc';
import { describe, expect, it } from 'vitest';
import { proto, startHost, type Host } from '@elexirion/kit';
import { eventually, hostEnv } from '@elexirion/testing';
import { cleanupAfterEach, natsForFile } from '@elexirion/testing/fixtures';
import { ExecutionStore } from '../src/executions/execution-store.js';
import { monitorService } from '../src/monitor-service.js';
import { evaluateRollout, guardSettings } from '../src/rollouts/rollout-evaluator.js';
import { readRolloutArms, type WatchedRollout } from '../src/rollouts/rollout-figures.js';

const nats = natsForFile({ connect: true });
const later = cleanupAfterEach();

interface StepShape {
  name: string;
  version: string;
  failed?: boolean;
  durationMs?: number;
  costUsd?: number;
}

/** An executor run event as the executor publishes it: a failed run carries the steps it ran, the failing one "failed". */
function runEvent(pipeline: string, steps: StepShape[], fields: { status?: string; timeMs?: number; runId?: string } = {}): proto.TelemetryEvent {
  const runId = fields.runId ?? randomUUID();
  const status = fields.status ?? 'OK';
  return proto.TelemetryEvent.fromPartial({
    eventId: randomUUID(),
    service: 'executor',
    kind: 'run',
    time: new Date(fields.timeMs ?? Date.now()),
    status,
    durationMs: 30,
    executorRun: {
      runId,
      pipeline,
      inputs: { question: 'why?' },
      output: status === 'OK' ? `answer of ${runId}` : '',
      errorMessage: status === 'OK' ? '' : `step ${steps.find((step) => step.failed)?.name ?? '?'}: output is not valid JSON`,
      steps: steps.map((step) => ({
        name: step.name,
        type: 'llm',
        output: step.failed ? '' : 'text',
        provider: 'mock',
        model: 'mock-1',
        usage: { inputTokens: 3, outputTokens: 2, costUsd: step.costUsd ?? 0.001 },
        durationMs: step.durationMs ?? 20,
        attempts: 1,
        status: step.failed ? 'failed' : 'completed',
        promptVersion: step.version,
        error: step.failed ? 'output is not valid JSON' : '',
      })),
    },
  });
}

/** Publishes on the real events stream, once the host has made it. */
async function publish(events: proto.TelemetryEvent[]): Promise<void> {
  const js = jetstream(nats.connection);
  await eventually('the events stream made by the host', async () => ((await jetstreamManager(nats.connection).then((manager) => manager.streams.info('ELEXIRION_EVENTS')).catch(() => undefined)) ? true : undefined));
  for (const event of events) await js.publish('elexirion.events.executor.run', proto.TelemetryEventBatch.encode({ events: [event] }).finish());
}

async function startMonitor(): Promise<{ host: Host; client: ReturnType<typeof createClient<typeof proto.MonitorDefinition>> }> {
  const host = await startHost([monitorService], { env: await hostEnv({ NATS_URL: nats.url, TELEMETRY_EVENTS: 'true', TELEMETRY_FLUSH_MS: '5' }) });
  const channel = createChannel(`127.0.0.1:${host.grpcPort}`);
  later(async () => {
    channel.close();
    await host.stop('test over');
  });
  return { host, client: createClient(proto.MonitorDefinition, channel) };
}

describe('guarded rollout figures from the executions kept', () => {
  it('reads each arm since its rollout started, failed runs as failures of their versions, feedback as scores', async () => {
    const { client } = await startMonitor();
    const pipeline = `guarded-${randomUUID().slice(0, 8)}`;
    const startedAtMs = Date.now() - 60_000;
    const events: proto.TelemetryEvent[] = [];
    // Before the rollout started: not counted.
    events.push(runEvent(pipeline, [{ name: 'answer', version: 'v2', failed: true }], { status: 'INVALID_ARGUMENT', timeMs: startedAtMs - 5_000 }));
    // The candidate v2 of step "answer": 6 runs, 5 failed at that step (its output is invalid), one OK.
    for (let index = 0; index < 5; index++) events.push(runEvent(pipeline, [{ name: 'answer', version: 'v2', failed: true, costUsd: 0.002 }], { status: 'INVALID_ARGUMENT' }));
    const candidateOk = randomUUID();
    events.push(runEvent(pipeline, [{ name: 'answer', version: 'v2', costUsd: 0.002 }, { name: 'format', version: 'yaml' }], { runId: candidateOk }));
    // The baseline "yaml": 6 runs, one failed at the later step "format" (a failure of both versions it used).
    const baselineRuns: string[] = [];
    for (let index = 0; index < 5; index++) {
      baselineRuns.push(randomUUID());
      events.push(runEvent(pipeline, [{ name: 'answer', version: 'yaml', durationMs: 10 + index }, { name: 'format', version: 'yaml' }], { runId: baselineRuns[index]! }));
    }
    events.push(runEvent(pipeline, [{ name: 'answer', version: 'yaml' }, { name: 'format', version: 'f1', failed: true }], { status: 'UNAVAILABLE' }));
    // Another version of the step, and another pipeline: in neither arm.
    events.push(runEvent(pipeline, [{ name: 'answer', version: 'v1' }]));
    events.push(runEvent(`other-${pipeline}`, [{ name: 'answer', version: 'v2' }]));
    await publish(events);

    await eventually('every run of the pipeline stored', async () => ((await client.listExecutions({ pipeline, pageSize: 50 })).executions.length === 14 ? true : undefined));
    // The failed runs are kept with their steps and versions.
    const failed = (await client.listExecutions({ pipeline, status: 'INVALID_ARGUMENT', pageSize: 50 })).executions;
    expect(failed).toHaveLength(6);
    expect(failed[0]!.steps).toEqual([expect.objectContaining({ name: 'answer', promptVersion: 'v2', status: 'failed', error: 'output is not valid JSON' })]);

    // Feedback: thumbs on the candidate's good run and on two baseline runs.
    const thumbs = (runId: string, score: number) => client.recordFeedback({ runId, feedback: { name: 'thumbs', score, label: '', comment: '', source: proto.FeedbackSource.FEEDBACK_SOURCE_HUMAN, recordedBy: '' } });
    await thumbs(candidateOk, 1);
    await thumbs(baselineRuns[0]!, 0);
    await thumbs(baselineRuns[1]!, 1);

    const store = await ExecutionStore.open(nats.connection, { retentionHours: 72, maxTextChars: 16_384, maxBytes: 256 * 1024 });
    const answer: WatchedRollout = { pipeline, step: 'answer', candidate: 'v2', baseline: 'yaml', startedAtMs, scoreName: 'thumbs' };
    const format: WatchedRollout = { pipeline, step: 'format', candidate: 'f1', baseline: 'yaml', startedAtMs, scoreName: 'thumbs' };
    const now = Date.now();
    const arms = await readRolloutArms(store, [answer, format], now, now - 72 * 3_600_000);
    expect(arms.get(answer)!.candidate).toMatchObject({ runs: 6, successes: 1, scores: [1], costsUsd: [0.002, 0.002, 0.002, 0.002, 0.002, 0.002] });
    expect(arms.get(answer)!.baseline).toMatchObject({ runs: 6, successes: 5 });
    expect([...arms.get(answer)!.baseline.scores].sort()).toEqual([0, 1]);
    expect(arms.get(format)!.candidate).toMatchObject({ runs: 1, successes: 0 });
    // Its baseline: the format step of the candidate's good run and of the 5 baseline runs.
    expect(arms.get(format)!.baseline).toMatchObject({ runs: 6, successes: 6 });
    // A rollout that started later sees none of these runs.
    const fresh = { ...answer, startedAtMs: now + 1 };
    expect((await readRolloutArms(store, [fresh], now + 2, now - 3_600_000)).get(fresh)!.candidate.runs).toBe(0);

    // The statistics count the failed runs as failures of the versions they used (all runs of the window).
    const stats = await client.getPromptVersionStats({ pipeline, step: 'answer' });
    expect(stats.versions.find((version) => version.version === 'v2')).toMatchObject({ runs: 7, successRate: 1 / 7 });
    expect(stats.versions.find((version) => version.version === 'yaml')).toMatchObject({ runs: 6, successRate: 5 / 6, baseline: true });

    // The guard's verdict on these figures: the candidate fails more often, rolled back before its 30 runs.
    const settings = guardSettings({ metric: 'score', scoreName: '', minRuns: 30, significance: 0.05, maxRuns: 0 });
    if ('problem' in settings) throw new Error(settings.problem);
    const verdict = evaluateRollout(settings, arms.get(answer)!.candidate, arms.get(answer)!.baseline, { earlyMinRuns: 5 });
    expect(verdict).toMatchObject({ decision: 'rollback', comparison: { metric: 'failure_rate', candidateRuns: 6, baselineRuns: 6 } });
    expect(verdict.comparison!.pValue).toBeLessThan(0.05);
  });
});
