// The executions area against a real nats-server, the monitor hosted in the test process: run
// events published with the kit's EventPublisher (as the executor's, on the real stream) become
// executions that ListExecutions filters and pages, feedback recorded on them (also by two
// replicas at once) shows in the executions, ListExecutions(min_score), the feedback events and
// GetPromptVersionStats; bad input is refused naming the field.
import { randomUUID } from 'node:crypto';
import { jetstream } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { createChannel, createClient, Metadata, type Client } from 'nice-grpc';
import { describe, expect, it } from 'vitest';
import { ServerError, Status, proto, startHost, type Host } from '@elexirion/kit';
import { collectEvents, eventually, hostEnv } from '@elexirion/testing';
import { cleanupAfterEach, natsForFile } from '@elexirion/testing/fixtures';
import { EXECUTION_INDEX_BUCKET, RUN_ROUTES_BUCKET } from '../src/executions/execution-store.js';
import { monitorService } from '../src/monitor-service.js';

const nats = natsForFile({ connect: true });
const later = cleanupAfterEach();

type MonitorClient = Client<typeof proto.MonitorDefinition>;

interface MonitorUnderTest {
  host: Host;
  client: MonitorClient;
}

async function startMonitor(extra: NodeJS.ProcessEnv = {}): Promise<MonitorUnderTest> {
  const host = await startHost([monitorService], {
    env: await hostEnv({ NATS_URL: nats.url, TELEMETRY_EVENTS: 'true', TELEMETRY_FLUSH_MS: '5', MONITOR_FEEDBACK_WAIT_MS: '3000', ...extra }),
  });
  const channel = createChannel(`127.0.0.1:${host.grpcPort}`);
  later(async () => {
    channel.close();
    await host.stop('test over');
  });
  return { host, client: createClient(proto.MonitorDefinition, channel) };
}

interface RunShape {
  runId?: string;
  pipeline: string;
  status?: string;
  versions?: Record<string, string>;
  output?: string;
  costUsd?: number;
  durationMs?: number;
}

/** Publishes an executor run event (kind "run") as the executor does, through the host's EventPublisher. */
function publishRun(host: Host, run: RunShape): string {
  const runId = run.runId ?? randomUUID();
  const steps = Object.entries(run.versions ?? { answer: 'yaml' }).map(([name, promptVersion]) => ({
    name,
    type: 'llm',
    output: `${name} says hi`,
    provider: 'mock',
    model: 'mock-1',
    usage: { inputTokens: 10, outputTokens: 5, costUsd: run.costUsd ?? 0.001 },
    durationMs: run.durationMs ?? 20,
    attempts: 1,
    status: run.status && run.status !== 'OK' ? 'failed' : 'completed',
    promptVersion,
  }));
  host.events.publish(
    'executor',
    'run',
    { executorRun: { runId, jobId: '', pipeline: run.pipeline, inputs: { question: 'why?' }, output: run.output ?? `answer of ${runId}`, steps, usage: { inputTokens: 10, outputTokens: 5, costUsd: run.costUsd ?? 0.001 } } },
    { status: run.status ?? 'OK', durationMs: run.durationMs ?? 20 },
  );
  return runId;
}

/**
 * A run event made by hand (its id and time chosen) and published on the real stream as the
 * publisher would, once per call: publishing the same event twice is a redelivery.
 */
function handMadeRun(runId: string, pipeline: string, timeMs: number, fields: { status?: string; output?: string; eventId?: string } = {}): proto.TelemetryEvent {
  return proto.TelemetryEvent.fromPartial({
    eventId: fields.eventId ?? randomUUID(),
    service: 'executor',
    kind: 'run',
    time: new Date(timeMs),
    status: fields.status ?? 'OK',
    durationMs: 5,
    executorRun: { runId, pipeline, output: fields.output ?? '', steps: [{ name: 'answer', promptVersion: 'yaml', status: 'completed' }] },
  });
}

async function publishRaw(...events: proto.TelemetryEvent[]): Promise<void> {
  const js = jetstream(nats.connection);
  for (const event of events) await js.publish('elexirion.events.executor.run', proto.TelemetryEventBatch.encode({ events: [event] }).finish());
}

async function listAll(client: MonitorClient, request: Partial<proto.ListExecutionsRequest>): Promise<proto.Execution[]> {
  return (await client.listExecutions(request)).executions;
}

async function statusOf(call: Promise<unknown>): Promise<{ code: Status; details: string }> {
  const error = await call.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  if (!(error instanceof Error) || !('code' in error)) throw new Error(`expected a failed call, got ${String(error)}`);
  return { code: (error as ServerError).code, details: (error as ServerError).details };
}

function uniquePipeline(prefix: string): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

describe('monitor executions', () => {
  it('stores each completed run once, with its route, and lists them newest first, filtered and paged', async () => {
    const { host, client } = await startMonitor();
    const pipeline = uniquePipeline('qa');
    const ids: string[] = [];
    // One at a time, each stored before the next is published, so their finish times are ordered.
    for (let index = 0; index < 7; index++) {
      const status = index === 2 ? 'UNAVAILABLE' : 'OK';
      ids.push(publishRun(host, { pipeline, status, versions: { answer: index % 2 ? 'v2' : 'yaml' }, output: `answer ${index}` }));
      await eventually('run stored', async () => (await client.getExecution({ runId: ids[index]! })).execution);
    }
    publishRun(host, { pipeline: uniquePipeline('other') });
    // The same run event again (a redelivery, or a retried publish): the first one stays.
    // An older event of a stored run (another event id) changes nothing.
    await publishRaw(handMadeRun(ids[0]!, pipeline, Date.now() - 60_000, { output: 'an older copy' }));
    // A redelivery (the same event twice) is stored once.
    const redeliveredPipeline = uniquePipeline('again');
    const redelivered = handMadeRun(randomUUID(), redeliveredPipeline, Date.now(), { output: 'once' });
    await publishRaw(redelivered, redelivered);
    // The gateway's request event carries the route: before and after the run's event both join.
    const routedLater = ids[3]!;
    host.events.publish('gateway', 'request', { gatewayRequest: { method: 'Chat', pipeline, route: 'rule', runId: routedLater } });
    const routedFirst = randomUUID();
    host.events.publish('gateway', 'request', { gatewayRequest: { method: 'Chat', pipeline, route: 'classifier', runId: routedFirst } });
    const routes = await new Kvm(nats.connection).open(RUN_ROUTES_BUCKET);
    await eventually('route kept before its run', async () => (await routes.get(routedFirst))?.operation === 'PUT' || undefined);
    publishRun(host, { runId: routedFirst, pipeline, versions: { answer: 'yaml' } });
    ids.push(routedFirst);

    const all = await eventually('every run listed with its route', async () => {
      const listed = await listAll(client, { pipeline });
      const first = listed.find((execution) => execution.runId === routedFirst);
      const laterRouted = listed.find((execution) => execution.runId === routedLater);
      return listed.length === 8 && first?.route === 'classifier' && laterRouted?.route === 'rule' ? listed : undefined;
    });
    expect(all.map((execution) => execution.runId)).toEqual([...ids].reverse());
    // One time index key per run (the older copy added none), under its pipeline.
    const indexKeys: string[] = [];
    for await (const key of await (await new Kvm(nats.connection).open(EXECUTION_INDEX_BUCKET)).keys(`*.${pipeline}.>`)) indexKeys.push(key);
    expect(indexKeys.map((key) => key.split('.')[3]).sort()).toEqual([...ids].sort());
    const firstRun = (await client.getExecution({ runId: ids[0]! })).execution!;
    expect(firstRun.output).toBe('answer 0');
    expect(firstRun).toMatchObject({ pipeline, status: 'OK', inputs: { question: 'why?' }, usage: { inputTokens: 10, outputTokens: 5 } });
    expect(firstRun.steps[0]).toMatchObject({ name: 'answer', promptVersion: 'yaml', status: 'completed' });
    expect(firstRun.finishedAt).toBeInstanceOf(Date);

    // Filters.
    expect((await listAll(client, { pipeline, status: 'UNAVAILABLE' })).map((execution) => execution.runId)).toEqual([ids[2]]);
    expect((await listAll(client, { pipeline, promptVersion: 'v2' })).map((execution) => execution.runId)).toEqual([ids[5], ids[3], ids[1]]);
    const third = all.find((execution) => execution.runId === ids[2])!;
    const fromThird = await listAll(client, { pipeline, startTime: third.finishedAt, endTime: all[1]!.finishedAt });
    expect(fromThird.map((execution) => execution.runId)).toEqual(all.slice(1, 6).map((execution) => execution.runId));
    expect(await listAll(client, { pipeline, startTime: new Date(Date.now() + 60_000), endTime: new Date(Date.now() + 120_000) })).toEqual([]);

    // Pages of 3, while a newer run arrives between them: no repeat, no gap, no newcomer.
    const paged: string[] = [];
    let token = '';
    let pages = 0;
    do {
      const page = await client.listExecutions({ pipeline, pageSize: 3, pageToken: token });
      paged.push(...page.executions.map((execution) => execution.runId));
      token = page.nextPageToken;
      pages++;
      if (pages === 1) {
        const newcomer = publishRun(host, { pipeline });
        await eventually('newcomer stored', async () => (await client.getExecution({ runId: newcomer })).execution);
      }
    } while (token);
    expect(pages).toBe(3);
    expect(paged).toEqual(all.map((execution) => execution.runId));

    // Counted: every run stored once, the older copy and the redelivery as repeats.
    const byOutcome = await eventually('runs counted', async () => {
      const counted = await host.metrics.registry.getSingleMetric('elexirion_monitor_executions_runs_total')!.get();
      const outcomes = Object.fromEntries(counted.values.map((value) => [value.labels.outcome, value.value]));
      return outcomes.stored === 11 && outcomes.repeat >= 2 ? outcomes : undefined;
    });
    expect(byOutcome.updated).toBeUndefined();
    expect((await listAll(client, { pipeline: redeliveredPipeline })).map((execution) => execution.output)).toEqual(['once']);

    const missing = await statusOf(client.getExecution({ runId: 'no-such-run' }));
    expect(missing.code).toBe(Status.NOT_FOUND);
    expect(missing.details).toContain('no-such-run');
  });

  it("finds a job's run by the job id, the successful one when its first run failed", async () => {
    const { host, client } = await startMonitor();
    const pipeline = uniquePipeline('job');
    const jobId = randomUUID();
    const failed = randomUUID();
    host.events.publish('executor', 'run', { executorRun: { runId: failed, jobId, pipeline, errorMessage: 'step answer: overloaded' } }, { status: 'UNAVAILABLE', durationMs: 5 });
    await eventually('failed run stored', async () => (await client.getExecution({ runId: failed })).execution);
    expect((await client.getExecution({ runId: jobId })).execution).toMatchObject({ runId: failed, jobId, status: 'UNAVAILABLE', errorMessage: 'step answer: overloaded' });
    // Its emergent fallback's run answers the job from now on; a failed run after it does not.
    const fallback = randomUUID();
    host.events.publish('executor', 'run', { executorRun: { runId: fallback, jobId, pipeline, output: 'simpler answer' } }, { status: 'OK', durationMs: 5 });
    await eventually('the job answers with its successful run', async () => ((await client.getExecution({ runId: jobId })).execution?.runId === fallback ? true : undefined));
    const late = randomUUID();
    host.events.publish('executor', 'run', { executorRun: { runId: late, jobId, pipeline } }, { status: 'INTERNAL', durationMs: 5 });
    await eventually('late run stored', async () => (await client.getExecution({ runId: late })).execution);
    expect((await client.getExecution({ runId: jobId })).execution!.runId).toBe(fallback);
    const feedback = await client.recordFeedback({ runId: jobId, feedback: { name: 'thumbs', score: 1, label: '', comment: '', source: proto.FeedbackSource.FEEDBACK_SOURCE_HUMAN, recordedBy: '' } });
    expect(feedback.replaced).toBe(false);
    expect((await client.getExecution({ runId: fallback })).execution!.feedback.map((entry) => entry.score)).toEqual([1]);
  });

  it('lists runs of hours and days ago by time range, and does not store runs older than the retention window', async () => {
    const { client } = await startMonitor();
    const pipeline = uniquePipeline('old');
    const now = Date.now();
    const hour = 3_600_000;
    // Hand-made run events with times of the past, on the real stream (the publisher stamps "now").
    const ages = { tooOld: 100 * hour, days: 50 * hour, hours: 10 * hour, minutes: 0.1 * hour, sentinel: 0 };
    const ids = Object.fromEntries(Object.keys(ages).map((name) => [name, randomUUID()])) as Record<keyof typeof ages, string>;
    await publishRaw(...(Object.keys(ages) as (keyof typeof ages)[]).map((name) => handMadeRun(ids[name], pipeline, now - ages[name], { output: `${ages[name] / hour} h ago` })));
    await eventually('the last run stored', async () => (await client.getExecution({ runId: ids.sentinel })).execution);
    // One reader handles batches in stream order: the older one was handled before, and left out.
    expect((await statusOf(client.getExecution({ runId: ids.tooOld }))).code).toBe(Status.NOT_FOUND);
    const runIds = async (request: Partial<proto.ListExecutionsRequest>) => (await listAll(client, { pipeline, ...request })).map((execution) => execution.runId);
    expect(await runIds({})).toEqual([ids.sentinel, ids.minutes, ids.hours, ids.days]);
    expect(await runIds({ startTime: new Date(now - 60 * hour), endTime: new Date(now - 5 * hour) })).toEqual([ids.hours, ids.days]);
    expect(await runIds({ startTime: new Date(now - 11 * hour), endTime: new Date(now - 9 * hour) })).toEqual([ids.hours]);
    expect(await runIds({ endTime: new Date(now - 49 * hour) })).toEqual([ids.days]);
    // Paged one by one across the slices read one by one and the rest.
    const paged: string[] = [];
    let token = '';
    do {
      const page = await client.listExecutions({ pipeline, pageSize: 1, pageToken: token });
      paged.push(...page.executions.map((execution) => execution.runId));
      token = page.nextPageToken;
    } while (token);
    expect(paged).toEqual([ids.sentinel, ids.minutes, ids.hours, ids.days]);
    expect((await client.getPromptVersionStats({ pipeline, startTime: new Date(now - 60 * hour) })).versions[0]).toMatchObject({ version: 'yaml', runs: 4 });
    expect((await client.getPromptVersionStats({ pipeline, endTime: new Date(now - hour) })).versions[0]).toMatchObject({ version: 'yaml', runs: 2 });
  });

  it("takes a later event of a stored run (a resumed run's outcome) as the run's, keeping its feedback", async () => {
    const { client } = await startMonitor();
    const pipeline = uniquePipeline('resumed');
    const runId = randomUUID();
    const first = Date.now() - 30_000;
    await publishRaw(handMadeRun(runId, pipeline, first, { status: 'CANCELLED', output: '' }));
    await eventually('the cancelled run stored', async () => (await client.getExecution({ runId })).execution);
    await client.recordFeedback({ runId, feedback: { name: 'judge', score: 3, label: '', comment: '', source: 3, recordedBy: '' } });
    await publishRaw(handMadeRun(runId, pipeline, first + 20_000, { status: 'OK', output: 'resumed and done' }));
    const resumed = await eventually('the resumed outcome', async () => {
      const execution = (await client.getExecution({ runId })).execution!;
      return execution.status === 'OK' ? execution : undefined;
    });
    expect(resumed).toMatchObject({ output: 'resumed and done', finishedAt: new Date(first + 20_000) });
    expect(resumed.feedback.map((feedback) => [feedback.name, feedback.score])).toEqual([['judge', 3]]);
    // Listed once, at its new time: the old index key is skipped.
    const listed = await listAll(client, { pipeline });
    expect(listed.map((execution) => [execution.runId, execution.status])).toEqual([[runId, 'OK']]);
    expect(await listAll(client, { pipeline, endTime: new Date(first + 10_000) })).toEqual([]);
  });

  it('keeps a bounded copy of long texts', async () => {
    const { host, client } = await startMonitor({ MONITOR_EXECUTIONS_MAX_TEXT_CHARS: '100' });
    const runId = publishRun(host, { pipeline: uniquePipeline('long'), output: 'x'.repeat(5_000) });
    const execution = await eventually('run stored', async () => (await client.getExecution({ runId })).execution);
    expect(execution.output.length).toBe(100);
    expect(execution.output).toMatch(/^x+…\[truncated: 5000 characters\]$/);
  });

  it('records feedback, replaces it by name, and shows it in executions, min_score listings, events and version statistics', async () => {
    const { host, client } = await startMonitor();
    const events = await collectEvents(nats.url);
    later(() => events.close());
    const pipeline = uniquePipeline('rated');
    // yaml: 4 runs, thumbs 1,1,1,0; v2: 3 runs (one failed), thumbs 0,0,1.
    const yamlRuns = [0, 1, 2, 3].map(() => publishRun(host, { pipeline, versions: { draft: 'yaml', answer: 'yaml' }, durationMs: 10, costUsd: 0.001 }));
    const v2Runs = [0, 1, 2].map((index) => publishRun(host, { pipeline, status: index === 0 ? 'INTERNAL' : 'OK', versions: { draft: 'yaml', answer: 'v2' }, durationMs: 30, costUsd: 0.003 }));
    await eventually('runs stored', async () => ((await listAll(client, { pipeline })).length === 7 ? true : undefined));

    const thumbs = (score: number) => ({ name: 'thumbs', score, label: '', comment: '', source: proto.FeedbackSource.FEEDBACK_SOURCE_HUMAN, recordedBy: '' });
    const scores = [1, 1, 1, 0];
    for (const [index, runId] of yamlRuns.entries()) {
      const answer = await client.recordFeedback({ runId, feedback: thumbs(scores[index]!) }, { metadata: Metadata({ 'x-elexirion-caller': 'alice' }) });
      expect(answer.replaced).toBe(false);
      expect(answer.feedback).toMatchObject({ name: 'thumbs', score: scores[index], recordedBy: 'alice' });
    }
    for (const [index, runId] of v2Runs.entries()) await client.recordFeedback({ runId, feedback: thumbs(index === 2 ? 1 : 0.5) });
    // Replaced: 0.5 -> 0 on the second v2 run.
    const replaced = await client.recordFeedback({ runId: v2Runs[1]!, feedback: { ...thumbs(0), comment: 'wrong on second look' } });
    expect(replaced.replaced).toBe(true);
    await client.recordFeedback({ runId: v2Runs[0]!, feedback: thumbs(0) });
    // A label only, of another name, from a judge.
    await client.recordFeedback({ runId: yamlRuns[0]!, feedback: { name: 'format', label: 'good', comment: '', source: proto.FeedbackSource.FEEDBACK_SOURCE_LLM_JUDGE, recordedBy: 'ignored' } });

    const rated = (await client.getExecution({ runId: yamlRuns[0]! })).execution!;
    expect(rated.feedback.map((feedback) => [feedback.name, feedback.score, feedback.label, feedback.recordedBy])).toEqual([
      ['thumbs', 1, '', 'alice'],
      ['format', undefined, 'good', ''],
    ]);
    const second = (await client.getExecution({ runId: v2Runs[1]! })).execution!;
    expect(second.feedback).toHaveLength(1);
    expect(second.feedback[0]).toMatchObject({ name: 'thumbs', score: 0, comment: 'wrong on second look' });

    const good = await listAll(client, { pipeline, minScore: 1 });
    expect(new Set(good.map((execution) => execution.runId))).toEqual(new Set([...yamlRuns.slice(0, 3), v2Runs[2]!]));
    expect(await listAll(client, { pipeline, minScore: 0.5, scoreName: 'format' })).toEqual([]);

    const feedbackEvent = await eventually('the replacing feedback event', async () =>
      events.events.find((received) => received.subject === 'elexirion.events.monitor.feedback' && received.event.monitorFeedback?.runId === v2Runs[1] && received.event.monitorFeedback?.replaced),
    );
    expect(feedbackEvent.event.monitorFeedback).toMatchObject({ pipeline, name: 'thumbs', score: 0, previousScore: 0.5, promptVersions: { draft: 'yaml', answer: 'v2' } });

    const stats = await client.getPromptVersionStats({ pipeline, step: 'answer' });
    const byVersion = new Map(stats.versions.map((version) => [version.version, version]));
    expect(byVersion.get('yaml')).toMatchObject({ step: 'answer', runs: 4, successRate: 1, baseline: true, latencyP50Ms: 10, costUsdMean: 0.001 });
    expect(byVersion.get('yaml')!.score).toMatchObject({ count: 4, mean: 0.75 });
    expect(byVersion.get('yaml')!.score!.ci95Low).toBeLessThan(0.75);
    expect(byVersion.get('v2')).toMatchObject({ runs: 3, baseline: false, latencyP50Ms: 30 });
    expect(byVersion.get('v2')!.successRate).toBeCloseTo(2 / 3);
    expect(byVersion.get('v2')!.score!.mean).toBeCloseTo(1 / 3);
    expect(stats.comparisons).toHaveLength(1);
    const comparison = stats.comparisons[0]!;
    expect(comparison).toMatchObject({ step: 'answer', candidate: 'v2', baseline: 'yaml' });
    expect(comparison.successRateDelta).toBeCloseTo(-1 / 3);
    expect(comparison.scoreDelta).toBeCloseTo(1 / 3 - 0.75);
    expect(comparison.latencyP50DeltaMs).toBe(20);
    expect(comparison.successRatePValue).toBeGreaterThan(0);
    expect(comparison.successRatePValue).toBeLessThan(1);
    expect(comparison.scorePValue).toBeGreaterThan(0);
    expect(comparison.scorePValue).toBeLessThan(1);
    // Every step without a step filter: draft has yaml only (7 runs), no comparison.
    const everyStep = await client.getPromptVersionStats({ pipeline });
    expect(everyStep.versions.every((version) => version.pipeline === pipeline)).toBe(true);
    expect(everyStep.versions.find((version) => version.step === 'draft')).toMatchObject({ version: 'yaml', runs: 7, baseline: true });
  });

  it('keeps both of two concurrent writers of different names, through two replicas', async () => {
    const one = await startMonitor();
    const two = await startMonitor();
    const runId = publishRun(one.host, { pipeline: uniquePipeline('busy') });
    await eventually('run stored', async () => (await two.client.getExecution({ runId })).execution);
    const names = Array.from({ length: 12 }, (_, index) => `judge.${index}`);
    const answers = await Promise.all(
      names.map((name, index) => (index % 2 ? one : two).client.recordFeedback({ runId, feedback: { name, score: index, label: '', comment: '', source: proto.FeedbackSource.FEEDBACK_SOURCE_CODE, recordedBy: '' } })),
    );
    expect(answers.every((answer) => !answer.replaced)).toBe(true);
    const stored = (await one.client.getExecution({ runId })).execution!;
    expect(stored.feedback.map((feedback) => feedback.name).sort()).toEqual([...names].sort());
    // A run keeps feedback of at most 32 names; a name it has is still replaced.
    for (let index = names.length; index < 32; index++) await one.client.recordFeedback({ runId, feedback: { name: `judge.${index}`, score: 1, label: '', comment: '', source: 0, recordedBy: '' } });
    const full = await statusOf(one.client.recordFeedback({ runId, feedback: { name: 'one.too.many', score: 1, label: '', comment: '', source: 0, recordedBy: '' } }));
    expect(full.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect((await two.client.recordFeedback({ runId, feedback: { name: 'judge.0', score: 5, label: '', comment: '', source: 0, recordedBy: '' } })).replaced).toBe(true);
  });

  it('waits for a run whose event is on its way, and answers NOT_FOUND for one that never comes', async () => {
    const { host, client } = await startMonitor({ MONITOR_FEEDBACK_WAIT_MS: '3000' });
    const runId = randomUUID();
    const feedback = { name: 'thumbs', score: 1, label: '', comment: '', source: proto.FeedbackSource.FEEDBACK_SOURCE_HUMAN, recordedBy: '' };
    const recording = client.recordFeedback({ runId, feedback });
    publishRun(host, { runId, pipeline: uniquePipeline('late') });
    expect((await recording).replaced).toBe(false);
    expect((await client.getExecution({ runId })).execution!.feedback).toHaveLength(1);

    const { client: impatient } = await startMonitor({ MONITOR_FEEDBACK_WAIT_MS: '200' });
    const missing = await statusOf(impatient.recordFeedback({ runId: 'never-ran', feedback }));
    expect(missing.code).toBe(Status.NOT_FOUND);
    expect(missing.details).toContain('never-ran');
  });

  it('refuses bad input with INVALID_ARGUMENT naming the field', async () => {
    const { client } = await startMonitor({ MONITOR_FEEDBACK_COMMENT_MAX_CHARS: '10' });
    const feedback = { name: 'thumbs', score: 1, label: '', comment: '', source: proto.FeedbackSource.FEEDBACK_SOURCE_HUMAN, recordedBy: '' };
    const cases: [Promise<unknown>, string][] = [
      [client.listExecutions({ pageSize: 501 }), 'page_size'],
      [client.listExecutions({ pageSize: -1 }), 'page_size'],
      [client.listExecutions({ status: 'BROKEN' }), 'status'],
      [client.listExecutions({ pageToken: 'not-a-token' }), 'page_token'],
      [client.listExecutions({ startTime: new Date(2_000_000_000_000), endTime: new Date(1_000_000_000_000) }), 'start_time'],
      [client.listExecutions({ scoreName: 'Thumbs Up' }), 'score_name'],
      [client.getExecution({ runId: 'has spaces' }), 'run_id'],
      [client.recordFeedback({ runId: '', feedback }), 'run_id'],
      [client.recordFeedback({ runId: 'r1' }), 'feedback'],
      [client.recordFeedback({ runId: 'r1', feedback: { ...feedback, name: 'Bad Name' } }), 'feedback.name'],
      [client.recordFeedback({ runId: 'r1', feedback: { ...feedback, name: 'x'.repeat(65) } }), 'feedback.name'],
      [client.recordFeedback({ runId: 'r1', feedback: { ...feedback, score: undefined } }), 'feedback.score'],
      [client.recordFeedback({ runId: 'r1', feedback: { ...feedback, comment: 'much too long' } }), 'feedback.comment'],
      [client.recordFeedback({ runId: 'r1', feedback: { ...feedback, source: 9 as proto.FeedbackSource } }), 'feedback.source'],
      [client.getPromptVersionStats({ pipeline: 'p', scoreName: '', startTime: new Date(2_000_000_000_000), endTime: new Date(1_000_000_000_000) }), 'start_time'],
      [client.getPromptVersionStats({ pipeline: '' }), 'pipeline'],
      [client.getPromptVersionStats({ pipeline: 'Not A Pipeline' }), 'pipeline'],
      [client.getPromptVersionStats({ pipeline: 'p', scoreName: 'UPPER' }), 'score_name'],
      [client.listExecutions({ pipeline: 'a.>' }), 'pipeline'],
      [client.listExecutions({ promptVersion: 'v'.repeat(200) }), 'prompt_version'],
      [client.listExecutions({ minScore: Number.NaN }), 'min_score'],
    ];
    for (const [call, field] of cases) {
      const { code, details } = await statusOf(call);
      expect({ field, code }).toEqual({ field, code: Status.INVALID_ARGUMENT });
      expect(details).toContain(field);
    }
  });
});
