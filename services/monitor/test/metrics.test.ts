// The performance database against a real nats-server and real monitor processes: known events
// published with the kit's EventPublisher, read back through GetMetrics and compared figure by
// figure; two replicas sharing the consumer, one killed with SIGKILL mid-stream; bad input.
import { afterAll, describe, expect, it } from 'vitest';
import { ClientError, Status } from 'nice-grpc';
import { EventPublisher, Metrics, SharedNatsConnection, createLogger, proto } from '@elexirion/kit';
import { eventually, sleep, startNats, stopAll } from '@elexirion/testing';
import { cleanupAfterEach } from '@elexirion/testing/fixtures';
import { byKind, expectRowsMatch, knownEvents, startMonitor as startMonitorProcess, totalCount, type Monitor, type Published } from './metrics-support.js';

const later = cleanupAfterEach();
afterAll(() => stopAll());

/** A nats-server of the test's own (one stream and one metrics bucket per test), stopped when it ends. */
async function natsForTest(): Promise<string> {
  const server = await startNats();
  later(() => server.stop());
  return server.url;
}

/** A publisher as a host runs one; once it resolves, the events stream exists. */
async function publisher(natsUrl: string): Promise<EventPublisher> {
  const logger = createLogger({ level: 'silent', name: 'monitor-metrics-test' });
  const shared = new SharedNatsConnection({ url: natsUrl, name: 'monitor-metrics-test', logger });
  const created = new EventPublisher({ enabled: true, queueMax: 100_000, flushIntervalMs: 5, streamName: 'ELEXIRION_EVENTS', streamMaxAgeHours: 1, logger, metrics: new Metrics({ defaultMetrics: false }) });
  created.start(shared.forService('monitor-metrics-test'));
  later(async () => {
    await created.close();
    await shared.stop(1_000);
  });
  expect(await created.waitUntilConnected(10_000)).toBe(true);
  return created;
}

function publishAll(events: EventPublisher, published: Published[]): void {
  for (const { service, kind, fields, status, durationMs } of published) events.publish(service, kind, fields, { status, durationMs });
}

const startMonitor = (natsUrl: string, durable: string, env: NodeJS.ProcessEnv = {}): Promise<Monitor> => startMonitorProcess(later, natsUrl, durable, env);

describe('the performance database', () => {
  it('answers every figure of the events published, by kind and grouped', async () => {
    const natsUrl = await natsForTest();
    const monitor = await startMonitor(natsUrl, 'metrics-figures');
    const events = await publisher(natsUrl);
    const published = knownEvents(400, 'figures');
    publishAll(events, published);

    // Wait for every kind to be in, then compare every figure.
    await eventually('every event applied', async () => {
      for (const kind of ['request', 'run', 'step', 'completion']) {
        if ((await totalCount(monitor, kind)) !== byKind(published, kind).length) return undefined;
      }
      return true;
    });

    const request = await monitor.client.getMetrics({ filter: { kind: 'request' }, groupBy: [proto.MetricDimension.METRIC_DIMENSION_PIPELINE, proto.MetricDimension.METRIC_DIMENSION_ROUTE] });
    expectRowsMatch(request.rows, byKind(published, 'request'), ['pipeline', 'route']);

    // kind defaults to run.
    const runs = await monitor.client.getMetrics({ groupBy: [proto.MetricDimension.METRIC_DIMENSION_PIPELINE] });
    expectRowsMatch(runs.rows, byKind(published, 'run'), ['pipeline']);

    const steps = await monitor.client.getMetrics({
      filter: { kind: 'step' },
      groupBy: [proto.MetricDimension.METRIC_DIMENSION_STEP, proto.MetricDimension.METRIC_DIMENSION_PROVIDER, proto.MetricDimension.METRIC_DIMENSION_MODEL, proto.MetricDimension.METRIC_DIMENSION_PROMPT_VERSION],
    });
    expectRowsMatch(steps.rows, byKind(published, 'step'), ['step', 'provider', 'model', 'prompt_version']);

    const completions = await monitor.client.getMetrics({ filter: { kind: 'completion', provider: 'openai' } });
    expectRowsMatch(completions.rows, byKind(published, 'completion').filter((event) => event.fields.providerCompletion?.provider === 'openai'), []);

    const everything = await monitor.client.getMetrics({ groupBy: [proto.MetricDimension.METRIC_DIMENSION_KIND], filter: { kind: 'step', pipeline: 'figures-summarize' } });
    expectRowsMatch(everything.rows, byKind(published, 'step').filter((event) => event.fields.executorStep?.pipeline === 'figures-summarize'), ['kind']);

    // The lag gauge and the applied counter are on the monitor's /metrics.
    const scraped = await (await fetch(`http://127.0.0.1:${monitor.httpPort}/metrics`)).text();
    expect(scraped).toMatch(/^elexirion_monitor_consumer_pending \d+$/m);
    expect(Number(/^elexirion_monitor_events_applied_total (\d+)$/m.exec(scraped)?.[1])).toBe(published.length);
  });

  it('answers one row per minute and group, oldest first, that add up to the totals', async () => {
    const natsUrl = await natsForTest();
    const monitor = await startMonitor(natsUrl, 'metrics-minutes');
    const events = await publisher(natsUrl);
    const published = knownEvents(120, 'minutes');
    publishAll(events, published);
    await eventually('every request applied', async () => ((await totalCount(monitor, 'request', {})) >= byKind(published, 'request').length ? true : undefined));

    const answer = await monitor.client.getMetrics({ filter: { kind: 'request' }, groupBy: [proto.MetricDimension.METRIC_DIMENSION_PIPELINE], perMinute: true });
    const totals = answer.rows.filter((row) => row.minute === undefined);
    const minutes = answer.rows.filter((row) => row.minute !== undefined);
    expectRowsMatch(totals, byKind(published, 'request'), ['pipeline']);
    expect(minutes.length).toBeGreaterThanOrEqual(totals.length);
    // Oldest first, each minute within the range read, whole minutes.
    const times = minutes.map((row) => row.minute!.getTime());
    expect(times).toEqual([...times].sort((a, b) => a - b));
    for (const time of times) {
      expect(time % 60_000).toBe(0);
      expect(time).toBeGreaterThanOrEqual(answer.startTime!.getTime());
      expect(time).toBeLessThan(answer.endTime!.getTime());
    }
    for (const total of totals) {
      const ofGroup = minutes.filter((row) => row.group.pipeline === total.group.pipeline);
      expect(ofGroup.reduce((sum, row) => sum + row.count, 0)).toBe(total.count);
      expect(ofGroup.reduce((sum, row) => sum + row.inputTokens, 0)).toBe(total.inputTokens);
    }
    // The default range is the last hour, in whole minutes.
    expect(answer.endTime!.getTime() - answer.startTime!.getTime()).toBe(3_600_000);
  });

  it('moves a replaced feedback score instead of counting it twice, with a 95% interval', async () => {
    const natsUrl = await natsForTest();
    const monitor = await startMonitor(natsUrl, 'metrics-feedback');
    const events = await publisher(natsUrl);
    const feedback = (runId: string, score: number, previous?: number) =>
      events.publish('monitor', 'feedback', { monitorFeedback: { runId, pipeline: 'rated', name: 'thumbs', score, replaced: previous !== undefined, previousScore: previous, promptVersions: { answer: 'v7' } } });
    feedback('run-1', 1);
    feedback('run-2', 0);
    feedback('run-3', 1);
    feedback('run-2', 1, 0); // run-2's thumbs down replaced by a thumbs up
    const scores = [1, 1, 1];
    await eventually('the feedback applied', async () => {
      const { rows } = await monitor.client.getMetrics({ filter: { kind: 'run', pipeline: 'rated' } });
      return rows[0]?.feedback.thumbs?.mean === 1 ? rows : undefined;
    });
    const { rows } = await monitor.client.getMetrics({ filter: { kind: 'run', pipeline: 'rated' } });
    expect(rows[0]!.count).toBe(0); // feedback is not a run
    expect(rows[0]!.feedback.thumbs).toEqual({ count: scores.length, mean: 1, ci95Low: 1, ci95High: 1 });

    // The step's prompt version gets it too; a spread of scores gets Student's t interval.
    feedback('run-4', 0);
    const summary = await eventually('the fifth score', async () => {
      const answer = await monitor.client.getMetrics({ filter: { kind: 'step', promptVersion: 'v7' }, groupBy: [proto.MetricDimension.METRIC_DIMENSION_PROMPT_VERSION] });
      const thumbs = answer.rows.find((row) => row.group.prompt_version === 'v7')?.feedback.thumbs;
      return thumbs?.count === 4 ? thumbs : undefined;
    });
    const values = [1, 1, 1, 0];
    const mean = 0.75;
    const sd = Math.sqrt(values.reduce((sum, value) => sum + (value - mean) ** 2, 0) / 3);
    const half = 3.182446305284263 * (sd / 2); // t(0.975, 3) * sd / sqrt(4)
    expect(summary.mean).toBeCloseTo(mean, 12);
    expect(summary.ci95Low).toBeCloseTo(mean - half, 9);
    expect(summary.ci95High).toBeCloseTo(mean + half, 9);
  });

  it('counts each event once when replicas are killed mid-stream (SIGKILL), three times over', async () => {
    const natsUrl = await natsForTest();
    const durable = 'metrics-kill';
    const survivor = await startMonitor(natsUrl, durable);
    const events = await publisher(natsUrl);
    const published = knownEvents(9_000, 'kill');
    // In small groups, so the stream holds many batches and every replica takes some.
    let publishedAll = false;
    const publishing = (async () => {
      for (let start = 0; start < published.length; start += 20) {
        publishAll(events, published.slice(start, start + 20));
        await sleep(8);
      }
      publishedAll = true;
    })();
    // A replica joins, applies some batches and is killed; another joins; again. Each kill may
    // land between a minute's write and its batch's ack (metrics-minute-store.test.ts makes that
    // case deterministic); whatever it lands on, the totals must stay exact.
    let kills = 0;
    while (kills < 3 && !publishedAll) {
      const doomed = await startMonitor(natsUrl, durable);
      await eventually('the doomed replica applying events', async () => {
        const scraped = await (await fetch(`http://127.0.0.1:${doomed.httpPort}/metrics`)).text();
        return publishedAll || Number(/^elexirion_monitor_events_applied_total (\d+)$/m.exec(scraped)?.[1] ?? 0) > 0 ? true : undefined;
      });
      doomed.process.child.kill('SIGKILL');
      await doomed.process.exited;
      kills += 1;
    }
    await publishing;
    expect(kills).toBeGreaterThanOrEqual(1);

    await eventually(
      'every event applied by the survivor',
      async () => {
        for (const kind of ['request', 'run', 'step', 'completion']) {
          if ((await totalCount(survivor, kind, {})) < byKind(published, kind).length) return undefined;
        }
        return true;
      },
      30_000,
    );
    // Exact, not at least: nothing counted twice.
    for (const kind of ['request', 'run', 'step', 'completion']) {
      const answer = await survivor.client.getMetrics({ filter: { kind }, groupBy: [proto.MetricDimension.METRIC_DIMENSION_PIPELINE] });
      expectRowsMatch(answer.rows, byKind(published, kind), ['pipeline']);
    }
    // A replica started again resumes with the group: nothing more to apply, nothing counted again.
    const restarted = await startMonitor(natsUrl, durable);
    await eventually('the restarted replica sees no lag', async () => {
      const scraped = await (await fetch(`http://127.0.0.1:${restarted.httpPort}/metrics`)).text();
      return /^elexirion_monitor_consumer_pending 0$/m.test(scraped) ? true : undefined;
    });
    expect(await totalCount(restarted, 'step', {})).toBe(byKind(published, 'step').length);
  }, 90_000);

  it('refuses bad input with INVALID_ARGUMENT naming the field', async () => {
    const natsUrl = await natsForTest();
    const monitor = await startMonitor(natsUrl, 'metrics-invalid', { MONITOR_RETENTION_HOURS: '24' });
    const refused = async (request: Partial<proto.GetMetricsRequest>, message: RegExp) => {
      const error = await monitor.client.getMetrics(request).then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expect(error).toBeInstanceOf(ClientError);
      expect((error as ClientError).code).toBe(Status.INVALID_ARGUMENT);
      expect((error as ClientError).details).toMatch(message);
    };
    const now = Date.now();
    await refused({ startTime: new Date(now - 60_000), endTime: new Date(now - 600_000) }, /end_time .* is before start_time/);
    await refused({ startTime: new Date(now - 30 * 3_600_000), endTime: new Date(now) }, /more than the retention of 24 h/);
    await refused({ startTime: new Date(now - 26 * 3_600_000), endTime: new Date(now - 25 * 3_600_000) }, /start_time .* is past the retention of 24 h/);
    await refused({ groupBy: [proto.MetricDimension.METRIC_DIMENSION_PIPELINE, 42 as proto.MetricDimension] }, /group_by\[1\]/);
    await refused({ groupBy: [proto.MetricDimension.METRIC_DIMENSION_UNSPECIFIED] }, /group_by\[0\]/);
    await refused({ filter: proto.MetricsFilter.fromPartial({ kind: 'job' }) }, /filter\.kind "job"/);
    // A range within the retention with nothing in it: no rows, the range read.
    const minute = Math.floor(now / 60_000) * 60_000;
    const empty = await monitor.client.getMetrics({ startTime: new Date(minute - 2 * 3_600_000 + 1), endTime: new Date(minute - 3_600_000 - 1) });
    expect(empty.rows).toEqual([]);
    expect(empty.endTime!.getTime() - empty.startTime!.getTime()).toBe(3_600_000);
  });
});
