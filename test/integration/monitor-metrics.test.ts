// The performance database with the real chain: chats through the all-in-one process (gateway,
// agent, executor, provider and the monitor, as `--services all` runs them); every figure the
// monitor's GetMetrics answers equals the one computed from the events the services published
// (read off NATS as they went by).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createChannel, createClient, type Channel } from 'nice-grpc';
import { proto } from '@elexirion/kit';
import { collectEvents, eventually, startNats, startStack, stopAll, type NatsServer, type Stack } from '@elexirion/testing';
import { byKind, expectRowsMatch, totalCount, type Published } from '../../services/monitor/test/metrics-support.js';

let channel: Channel | undefined;
let nats: NatsServer;
let stack: Stack;
let collected: Awaited<ReturnType<typeof collectEvents>>;

beforeAll(async () => {
  nats = await startNats();
  // Listening before anything publishes: every event the services send is collected.
  collected = await collectEvents(nats.url);
  stack = await startStack('all-in-one', nats.url);
});

afterAll(async () => {
  channel?.close();
  await collected?.close();
  await stack?.stop();
  await nats?.stop();
  await stopAll();
});

const KINDS = ['request', 'run', 'step', 'completion'] as const;

function published(): Published[] {
  return collected.events
    .filter(({ event }) => event.gatewayRequest || event.executorRun || event.executorStep || event.providerCompletion)
    .map(({ event }) => ({ service: event.service, kind: event.kind, fields: event, status: event.status || 'OK', durationMs: event.durationMs }));
}

describe('the performance database with the real chain', () => {
  it('answers the figures of the events the chain published', async () => {
    const chats = 24;
    for (let index = 0; index < chats; index += 4) {
      await Promise.all([0, 1, 2, 3].map((n) => stack.gateway.chat({ message: `monitor metrics ${index + n}` })));
    }
    // A failure too: a pipeline that does not exist.
    await stack.gateway.executePipeline({ pipeline: 'no-such-pipeline', inputs: {} }).catch(() => undefined);

    // The stack's own monitor: the all-in-one process serves every service on its gateway's port.
    channel = createChannel(`127.0.0.1:${stack.ports.gatewayGrpc}`);
    const monitor = { client: createClient(proto.MonitorDefinition, channel) };
    // Every chat's request and run are published and applied: then the sets are complete.
    await eventually(
      'every event of the chain applied',
      async () => {
        const events = published();
        if (byKind(events, 'request').length < chats + 1 || byKind(events, 'run').length < chats) return undefined;
        for (const kind of KINDS) if ((await totalCount(monitor, kind)) !== byKind(events, kind).length) return undefined;
        return true;
      },
      20_000,
    );
    const events = published();
    expect(byKind(events, 'request').length).toBeGreaterThanOrEqual(chats + 1);
    expect(byKind(events, 'completion').length).toBeGreaterThanOrEqual(chats);

    const requests = await monitor.client.getMetrics({ filter: { kind: 'request' }, groupBy: [proto.MetricDimension.METRIC_DIMENSION_PIPELINE, proto.MetricDimension.METRIC_DIMENSION_ROUTE] });
    expectRowsMatch(requests.rows, byKind(events, 'request'), ['pipeline', 'route']);
    expect(requests.rows.some((row) => Object.keys(row.errorsByStatus).length > 0)).toBe(true);

    const runs = await monitor.client.getMetrics({ groupBy: [proto.MetricDimension.METRIC_DIMENSION_PIPELINE] });
    expectRowsMatch(runs.rows, byKind(events, 'run'), ['pipeline']);

    const steps = await monitor.client.getMetrics({ filter: { kind: 'step' }, groupBy: [proto.MetricDimension.METRIC_DIMENSION_STEP, proto.MetricDimension.METRIC_DIMENSION_PROVIDER, proto.MetricDimension.METRIC_DIMENSION_MODEL, proto.MetricDimension.METRIC_DIMENSION_PROMPT_VERSION] });
    expectRowsMatch(steps.rows, byKind(events, 'step'), ['step', 'provider', 'model', 'prompt_version']);

    const completions = await monitor.client.getMetrics({ filter: { kind: 'completion' }, groupBy: [proto.MetricDimension.METRIC_DIMENSION_PROVIDER, proto.MetricDimension.METRIC_DIMENSION_MODEL] });
    expectRowsMatch(completions.rows, byKind(events, 'completion'), ['provider', 'model']);
    expect(completions.rows.reduce((sum, row) => sum + row.inputTokens, 0)).toBeGreaterThan(0);
  }, 60_000);
});
