// Guarded rollouts end to end: a real nats-server, the services in one real process (mock
// provider, a pattern table under which the candidate's wording answers better, or fails
// upstream), and monitor processes of their own reading the registry from that process's executor.
// A candidate published through the gateway with a guard is run, rated, and promoted by the
// monitor (history by "monitor", an event, an alert notification on NATS and the webhook, the
// counter); a candidate whose runs fail is rolled back long before its minimum sample; and with
// two monitor replicas a promotion, and a refused promotion over a protected baseline, are each
// applied and told once, the refusal's alert resolving once the rollout changes.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { createChannel, createClient, type Channel } from 'nice-grpc';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { proto } from '@elexirion/kit';
import { collectEvents, eventually, repoRoot, startMonitorProcess, startNats, startStack, stopAll, type MonitorProcess, type NatsServer, type Stack } from '@elexirion/testing';

const folder = mkdtempSync(join(tmpdir(), 'elexirion-rollouts-'));
const pipelinesDir = join(folder, 'pipelines');
const mockFile = join(folder, 'mock-responses.yaml');
const rulesFile = join(folder, 'alerts.yaml');
const providersFile = join(folder, 'providers.yaml');

/** Pipelines of their own (general's one step), one per case, so no case sees another's registry entry. */
const PIPELINES = ['guard-better', 'guard-failing', 'guard-twice', 'guard-protected'] as const;
const pipelineYaml = (name: string) => `workflow:
  name: ${name}
  inputs:
    message: { type: string, required: true }
  steps:
    - name: answer
      type: claude_smart
      preset: chat
      system: You are Elexirion, a concise and helpful assistant.
      prompt: "{{inputs.message}}"
`;

// The mock's answers: a prompt whose system text asks for care answers well; one that says it is
// broken fails upstream (a client error, not retried); the YAML prompt answers sloppily, except
// for the "lucky" questions, so the baseline's ratings vary.
const MOCK_TABLE = `responses:
  - { pattern: "guard question", context: "answer carefully", response: "A careful and good answer." }
  - { pattern: "guard question", context: "you are broken", status: 400, message: "the candidate's prompt is refused upstream" }
  - { pattern: "guard question lucky", response: "A lucky, good answer." }
  - { pattern: "guard question", response: "A sloppy answer." }
`;
const CAREFUL = { prompt: '{{inputs.message}}', system: 'Answer carefully.', demos: [] };
const BROKEN = { prompt: '{{inputs.message}}', system: 'You are broken.', demos: [] };

let nats: NatsServer;
let stack: Stack;
let first: MonitorProcess;
let second: MonitorProcess | undefined;
let subscriber: NatsConnection;
let events: Awaited<ReturnType<typeof collectEvents>>;
let receiver: Server;
const notifications: { subject: string; body: Record<string, any> }[] = [];
const hooks: Record<string, any>[] = [];
const channels: Channel[] = [];
let monitorEnv: NodeJS.ProcessEnv;

function monitorClient(monitor: MonitorProcess) {
  const channel = createChannel(`127.0.0.1:${monitor.grpcPort}`);
  channels.push(channel);
  return createClient(proto.MonitorDefinition, channel);
}

beforeAll(async () => {
  cpSync(join(repoRoot, 'pipelines'), pipelinesDir, { recursive: true });
  for (const name of PIPELINES) writeFileSync(join(pipelinesDir, `${name}.yaml`), pipelineYaml(name));
  writeFileSync(mockFile, MOCK_TABLE);
  // The mock's breaker never opens on the failing candidate's errors: the baseline keeps answering.
  writeFileSync(providersFile, readFileSync(join(repoRoot, 'config/providers.yaml'), 'utf8').replaceAll('min_requests: 10', 'min_requests: 100000'));
  receiver = createServer((request, response) => {
    let raw = '';
    request.on('data', (chunk: Buffer) => (raw += chunk.toString('utf8')));
    request.on('end', () => {
      hooks.push(JSON.parse(raw) as Record<string, any>);
      response.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  writeFileSync(rulesFile, `webhooks:\n  - url: http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook\nrules: []\n`);

  nats = await startNats();
  subscriber = await connect({ servers: nats.url });
  subscriber.subscribe('elexirion.alerts.>', { callback: (_error, message) => void notifications.push({ subject: message.subject, body: message.json() }) });
  await subscriber.flush();
  events = await collectEvents(nats.url);
  stack = await startStack('all-in-one', nats.url, { PIPELINES_DIR: pipelinesDir, PROVIDER_MOCK_RESPONSES: mockFile, PROVIDER_CONFIG: providersFile, TELEMETRY_FLUSH_MS: '20' }, undefined, { monitor: false });
  // The monitors reach every service where the all-in-one process serves them (its one gRPC port).
  const allInOne = `127.0.0.1:${stack.ports.gatewayGrpc}`;
  monitorEnv = {
    GATEWAY_ADDRESS: allInOne,
    AGENT_ADDRESS: allInOne,
    EXECUTOR_ADDRESS: allInOne,
    PROVIDER_ADDRESS: allInOne,
    MONITOR_ROLLOUT_INTERVAL_MS: '200',
    MONITOR_ALERT_RULES: rulesFile,
    MONITOR_ALERT_EVAL_MS: '500',
    TELEMETRY_FLUSH_MS: '20',
  };
  first = await startMonitorProcess(nats.url, monitorEnv, 'monitor (first)');
  await eventually('the prompt registry attached', () => stack.gateway.listPromptVersions({ pipeline: '', step: '' }).then(() => true));
}, 120_000);

afterAll(async () => {
  for (const channel of channels) channel.close();
  await second?.process.stop();
  await first?.process.stop();
  await stack?.stop();
  await events?.close();
  await subscriber?.close();
  await nats?.stop();
  await new Promise<void>((resolve) => (receiver ? receiver.close(() => resolve()) : resolve()));
  await stopAll();
  rmSync(folder, { recursive: true, force: true });
});

async function rollout(pipeline: string): Promise<proto.PromptRollout> {
  const listed = await stack.gateway.listPromptVersions({ pipeline, step: 'answer' });
  return listed.steps[0]!.rollout!;
}

/** Runs the pipeline once through the gateway: the version its step used, the answer, and the job (the run) id; failed runs too. */
async function runOnce(pipeline: string, index: number): Promise<{ ok: boolean; version: string; answer: string; jobId: string }> {
  const message = index % 4 === 3 ? `guard question lucky ${index}` : `guard question ${index}`;
  try {
    const answer = await stack.gateway.executePipeline(proto.ExecutePipelineRequest.fromPartial({ pipeline, inputs: { message } }));
    return { ok: true, version: answer.steps[0]!.promptVersion, answer: answer.result, jobId: answer.jobId };
  } catch {
    return { ok: false, version: '', answer: '', jobId: '' };
  }
}

/**
 * Runs the pipeline and rates each answer (thumbs 1 for a good one, 0 otherwise) on the monitor,
 * until the guard has decided (the rollout has no candidate any more, or `until` says so), at
 * most `maxRuns` runs. Answers the runs per version.
 */
async function runAndRate(pipeline: string, rate: ReturnType<typeof monitorClient> | undefined, decided: () => Promise<boolean>, maxRuns: number): Promise<Record<string, number>> {
  const perVersion: Record<string, number> = {};
  for (let index = 0; index < maxRuns; index++) {
    if (await decided()) return perVersion;
    const run = await runOnce(pipeline, index);
    if (run.ok) {
      perVersion[run.version] = (perVersion[run.version] ?? 0) + 1;
      if (rate) {
        const score = run.answer.includes('good') ? 1 : 0;
        await rate.recordFeedback({ runId: run.jobId, feedback: { name: 'thumbs', score, label: '', comment: '', source: proto.FeedbackSource.FEEDBACK_SOURCE_HUMAN, recordedBy: '' } });
      }
    }
  }
  // The guard decides within a few rounds of the last run's figures.
  await eventually(`the guard's decision on ${pipeline}`, async () => ((await decided()) ? true : undefined), 15_000);
  return perVersion;
}

const rolloutEvents = (pipeline: string) => events.events.filter(({ event }) => event.monitorRollout?.pipeline === pipeline).map(({ event }) => event.monitorRollout!);
const alertsOf = (pipeline: string, list: { rule: string; labels: Record<string, string> }[]) => list.filter((alert) => alert.rule === 'prompt_rollout' && alert.labels.pipeline === pipeline);

async function decisionsCounted(monitor: MonitorProcess): Promise<Record<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${monitor.httpPort}/metrics`)).text();
  const counted: Record<string, number> = {};
  for (const match of text.matchAll(/^elexirion_monitor_rollout_decisions_total\{decision="([a-z_]+)"\} (\d+)/gm)) counted[match[1]!] = Number(match[2]);
  const rounds = /^elexirion_monitor_rollout_rounds_total (\d+)/m.exec(text);
  counted.rounds = rounds ? Number(rounds[1]) : 0;
  return counted;
}

/** Waits until each monitor has completed `more` evaluation rounds beyond now: whatever they would still do about a decision, they have done. */
async function moreRounds(monitors: MonitorProcess[], more = 3): Promise<void> {
  const start = await Promise.all(monitors.map(decisionsCounted));
  await eventually('more evaluation rounds of every monitor', async () => {
    const now = await Promise.all(monitors.map(decisionsCounted));
    return now.every((counted, index) => counted.rounds! >= start[index]!.rounds! + more) ? true : undefined;
  }, 20_000);
}

describe('guarded rollouts', () => {
  it('promotes a candidate that is rated significantly better, as "monitor", with an event, an alert notification and the counter', async () => {
    const pipeline = 'guard-better';
    const monitor = monitorClient(first);
    const published = await stack.gateway.publishPromptVersion(
      proto.PublishPromptVersionRequest.fromPartial({ pipeline, step: 'answer', template: CAREFUL, source: 'manual', rolloutWeight: 0.5, guard: { metric: 'score', minRuns: 6, significance: 0.05 }, reason: 'try the careful wording' }),
    );
    const candidate = published.version!.id;
    const perVersion = await runAndRate(pipeline, monitor, async () => (await rollout(pipeline)).candidate === '', 120);
    expect(perVersion[candidate]).toBeGreaterThanOrEqual(6);
    expect(perVersion.yaml).toBeGreaterThanOrEqual(6);

    expect(await rollout(pipeline)).toMatchObject({ baseline: candidate, weights: { [candidate]: 1 }, candidate: '' });
    const history = await stack.gateway.getPromptHistory({ pipeline, step: 'answer', pageSize: 10, pageToken: '' });
    expect(history.changes[0]).toMatchObject({ action: 'guard_promote', by: 'monitor', version: candidate, after: { baseline: candidate } });
    expect(history.changes[0]!.reason).toMatch(/^guard \(score\): the candidate is significantly better: thumbs mean 1 against /);

    const decided = await eventually('the rollout event', async () => rolloutEvents(pipeline)[0]);
    expect(decided).toMatchObject({ step: 'answer', candidate, baseline: 'yaml', decision: 'promoted', metric: 'score', candidateValue: 1 });
    expect(decided.candidateRuns).toBeGreaterThanOrEqual(6);
    expect(decided.baselineRuns).toBeGreaterThanOrEqual(6);
    expect(decided.baselineValue).toBeLessThan(0.5);
    expect(decided.pValue).toBeLessThan(0.05);

    // The alert: a notification (resolved: good news) on NATS and to the webhook, the state in ListAlerts.
    const labels = { pipeline, step: 'answer', candidate };
    const hook = await eventually('the webhook notification', async () => hooks.find((body) => body.rule === 'prompt_rollout' && body.labels.pipeline === pipeline));
    expect(hook).toMatchObject({ status: 'resolved', labels, summary: expect.stringContaining(`${candidate} promoted over yaml`) });
    expect(notifications.filter((notification) => notification.body.labels?.pipeline === pipeline).map((notification) => notification.subject)).toEqual(['elexirion.alerts.resolved.prompt_rollout']);
    const listed = await monitor.listAlerts({ states: [] });
    // Not a rule of the rules file (ListAlerts' `rules` names those).
    expect(listed.rules).not.toContain('prompt_rollout');
    expect(alertsOf(pipeline, listed.alerts)).toEqual([expect.objectContaining({ state: proto.AlertState.ALERT_STATE_OK, labels, value: 1 })]);
    expect((await decisionsCounted(first)).promoted).toBe(1);
  });

  it('rolls back a candidate whose runs fail, long before its minimum sample', async () => {
    const pipeline = 'guard-failing';
    const published = await stack.gateway.publishPromptVersion(
      proto.PublishPromptVersionRequest.fromPartial({ pipeline, step: 'answer', template: BROKEN, source: 'manual', rolloutWeight: 0.5, guard: { metric: 'success_rate', minRuns: 30 }, reason: 'a broken candidate' }),
    );
    const candidate = published.version!.id;
    await runAndRate(pipeline, undefined, async () => (await rollout(pipeline)).candidate === '', 60);

    expect(await rollout(pipeline)).toMatchObject({ baseline: 'yaml', weights: { yaml: 1 }, candidate: '' });
    const history = await stack.gateway.getPromptHistory({ pipeline, step: 'answer', pageSize: 10, pageToken: '' });
    expect(history.changes[0]).toMatchObject({ action: 'guard_rollback', by: 'monitor', version: candidate });
    expect(history.changes[0]!.reason).toContain('the candidate fails more often than the baseline');

    const decided = await eventually('the rollout event', async () => rolloutEvents(pipeline)[0]);
    expect(decided).toMatchObject({ candidate, baseline: 'yaml', decision: 'rolled_back', metric: 'failure_rate', candidateValue: 1, baselineValue: 0 });
    // Failed runs counted as the candidate's failures: rolled back at a fraction of min_runs.
    expect(decided.candidateRuns).toBeGreaterThanOrEqual(5);
    expect(decided.candidateRuns).toBeLessThan(30);
    expect(decided.pValue).toBeLessThan(0.05);
    // The monitor's executions hold the candidate's failed runs with the version that failed.
    const failedRuns = (await monitorClient(first).listExecutions({ pipeline, promptVersion: candidate, pageSize: 100 })).executions;
    expect(failedRuns.length).toBeGreaterThanOrEqual(5);
    expect(failedRuns.every((execution) => execution.status !== 'OK' && execution.steps[0]!.status === 'failed')).toBe(true);

    const labels = { pipeline, step: 'answer', candidate };
    const hook = await eventually('the webhook notification', async () => hooks.find((body) => body.rule === 'prompt_rollout' && body.labels.pipeline === pipeline));
    expect(hook).toMatchObject({ status: 'firing', severity: 'warning', labels, summary: expect.stringContaining(`${candidate} rolled back, yaml stays`) });
    expect(notifications.filter((notification) => notification.body.labels?.pipeline === pipeline).map((notification) => notification.subject)).toEqual(['elexirion.alerts.firing.prompt_rollout']);
    const alerts = alertsOf(pipeline, (await monitorClient(first).listAlerts({ states: [proto.AlertState.ALERT_STATE_FIRING] })).alerts);
    expect(alerts).toEqual([expect.objectContaining({ labels, severity: proto.AlertSeverity.ALERT_SEVERITY_WARNING, value: 1, threshold: 0 })]);
  });

  it('with two monitor replicas applies a promotion once, and tells a refused one once until the rollout changes', async () => {
    second = await startMonitorProcess(nats.url, monitorEnv, 'monitor (second)');
    const replicas = [first, second];
    const monitor = monitorClient(second);

    // A promotion both replicas see due: the registry's compare-and-set lets one apply it.
    const twice = 'guard-twice';
    const published = await stack.gateway.publishPromptVersion(
      proto.PublishPromptVersionRequest.fromPartial({ pipeline: twice, step: 'answer', template: CAREFUL, source: 'manual', rolloutWeight: 0.5, guard: { metric: 'score', minRuns: 6 }, reason: 'two replicas watch' }),
    );
    await runAndRate(twice, monitor, async () => (await rollout(twice)).candidate === '', 120);
    await moreRounds(replicas);
    const history = await stack.gateway.getPromptHistory({ pipeline: twice, step: 'answer', pageSize: 10, pageToken: '' });
    expect(history.changes.filter((change) => change.action.startsWith('guard_')).map((change) => [change.action, change.by])).toEqual([['guard_promote', 'monitor']]);
    expect(rolloutEvents(twice).map((event) => event.decision)).toEqual(['promoted']);
    expect(hooks.filter((body) => body.labels?.pipeline === twice).map((body) => body.status)).toEqual(['resolved']);
    const counted = await Promise.all(replicas.map(decisionsCounted));
    // The first replica promoted once in the first case; between them, one more promotion here.
    expect(counted.reduce((sum, one) => sum + (one.promoted ?? 0), 0)).toBe(2);
    expect((await rollout(twice)).baseline).toBe(published.version!.id);

    // A protected baseline: the guard's promotion is refused, told once by one replica, not tried again.
    const guarded = 'guard-protected';
    const step = { pipeline: guarded, step: 'answer' };
    await stack.gateway.publishPromptVersion(proto.PublishPromptVersionRequest.fromPartial({ ...step, versionId: 'base', template: { prompt: '{{inputs.message}}', system: 'Plain.', demos: [] }, source: 'manual' }));
    await stack.gateway.promotePromptVersion({ ...step, versionId: 'base', reason: 'the baseline', expectedRevision: 0 });
    await stack.gateway.setPromptRollout(proto.SetPromptRolloutRequest.fromPartial({ ...step, weights: { base: 1 }, baselineProtected: true, reason: 'protect it' }));
    const better = await stack.gateway.publishPromptVersion(
      proto.PublishPromptVersionRequest.fromPartial({ ...step, template: CAREFUL, source: 'manual', rolloutWeight: 0.5, guard: { metric: 'score', minRuns: 6 }, reason: 'better, but the baseline is protected' }),
    );
    const candidate = better.version!.id;
    await runAndRate(guarded, monitor, async () => rolloutEvents(guarded).length > 0, 120);
    await moreRounds(replicas);
    expect(rolloutEvents(guarded)).toEqual([expect.objectContaining({ decision: 'refused', candidate, baseline: 'base', metric: 'score' })]);
    expect(rolloutEvents(guarded)[0]!.reason).toMatch(/^promotion refused by the registry: .*protected/);
    // Nothing changed in the registry: the rollout stands for a person to decide.
    expect(await rollout(guarded)).toMatchObject({ baseline: 'base', candidate, baselineProtected: true });
    const refusedCounts = await Promise.all(replicas.map(decisionsCounted));
    expect(refusedCounts.reduce((sum, one) => sum + (one.refused ?? 0), 0)).toBe(1);
    const labels = { pipeline: guarded, step: 'answer', candidate };
    await eventually('the refusal notified', async () => (hooks.some((body) => body.labels?.pipeline === guarded) ? true : undefined));
    expect(hooks.filter((body) => body.labels?.pipeline === guarded)).toEqual([expect.objectContaining({ status: 'firing', severity: 'warning', labels })]);
    for (const replica of replicas) {
      const firing = alertsOf(guarded, (await monitorClient(replica).listAlerts({ states: [proto.AlertState.ALERT_STATE_FIRING] })).alerts);
      expect(firing).toEqual([expect.objectContaining({ labels, summary: expect.stringContaining('was refused') })]);
    }

    // A person acts (ends the rollout): the alert resolves, once.
    await stack.gateway.rollbackPrompt({ ...step, toVersion: '', reason: 'not now', expectedRevision: 0 });
    await eventually('the refusal resolved', async () => (hooks.filter((body) => body.labels?.pipeline === guarded).length >= 2 ? true : undefined));
    await moreRounds(replicas);
    expect(hooks.filter((body) => body.labels?.pipeline === guarded).map((body) => body.status)).toEqual(['firing', 'resolved']);
    expect(notifications.filter((notification) => notification.body.labels?.pipeline === guarded).map((notification) => notification.subject)).toEqual([
      'elexirion.alerts.firing.prompt_rollout',
      'elexirion.alerts.resolved.prompt_rollout',
    ]);
    expect(rolloutEvents(guarded)).toHaveLength(1);
  });
});
