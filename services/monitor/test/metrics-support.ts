// Shared by the monitor metrics tests: a monitor process, known events, and the figures GetMetrics
// must answer for a set of events, computed from the events themselves.
import { expect } from 'vitest';
import { createChannel, createClient } from 'nice-grpc';
import { proto, type EventFields } from '@elexirion/kit';
import { startMonitorProcess, type Spawned } from '@elexirion/testing';
import type { Later } from '@elexirion/testing/fixtures';

export interface Monitor {
  process: Spawned;
  client: ReturnType<typeof createClient<typeof proto.MonitorDefinition>>;
  httpPort: number;
}

/** A monitor process (the whole service, its five areas) on free ports, sharing the consumer `durable`. */
export async function startMonitor(later: Later, natsUrl: string, durable: string, env: NodeJS.ProcessEnv = {}): Promise<Monitor> {
  const { process, grpcPort, httpPort } = await startMonitorProcess(natsUrl, {
    LOG_LEVEL: 'warn',
    MONITOR_METRICS_CONSUMER: durable,
    MONITOR_METRICS_LAG_POLL_MS: '200',
    MONITOR_METRICS_ACK_WAIT_MS: '2000',
    ...env,
  });
  later(() => process.stop());
  const channel = createChannel(`127.0.0.1:${grpcPort}`);
  later(() => channel.close());
  return { process, client: createClient(proto.MonitorDefinition, channel), httpPort };
}

export interface Published {
  service: string;
  kind: string;
  fields: EventFields;
  status: string;
  durationMs: number;
}

/** A known mix: every kind, two pipelines, routes, providers, models, prompt versions, failures, fallbacks. */
export function knownEvents(count: number, tag: string): Published[] {
  const events: Published[] = [];
  const statuses = ['OK', 'OK', 'OK', 'UNAVAILABLE', 'OK', 'DEADLINE_EXCEEDED', 'OK'];
  for (let index = 0; index < count; index += 1) {
    const pipeline = `${tag}-${index % 3 === 0 ? 'summarize' : 'general'}`;
    const status = statuses[index % statuses.length]!;
    const durationMs = 3 + ((index * 37) % 900);
    const usage = { inputTokens: 10 + (index % 5), outputTokens: 20 + (index % 7), costUsd: 0.0001 * (1 + (index % 4)) };
    const provider = index % 2 ? 'openai' : 'anthropic';
    const model = index % 2 ? 'gpt-4.1' : 'claude-sonnet-5';
    const version = index % 4 === 0 ? 'v2' : 'yaml';
    const fallback = index % 5 === 0;
    switch (index % 4) {
      case 0:
        events.push({ service: 'gateway', kind: 'request', status, durationMs, fields: { gatewayRequest: { method: 'Chat', pipeline, route: index % 8 === 0 ? 'rule' : 'classifier', runId: `run-${index}` } } });
        break;
      case 1:
        events.push({ service: 'executor', kind: 'run', status, durationMs, fields: { executorRun: { runId: `run-${index}`, pipeline, usage, steps: [{ name: 'answer', fallbackUsed: fallback }] } } });
        break;
      case 2:
        events.push({ service: 'executor', kind: 'step', status, durationMs, fields: { executorStep: { runId: `run-${index}`, pipeline, step: { name: index % 3 ? 'answer' : 'revise', provider, model, usage, promptVersion: version, fallbackUsed: fallback } } } });
        break;
      default:
        events.push({ service: 'provider', kind: 'completion', status, durationMs, fields: { providerCompletion: { provider, model, usage, attempts: 1 } } });
    }
  }
  return events;
}

export type Dimension = 'kind' | 'pipeline' | 'step' | 'provider' | 'model' | 'route' | 'prompt_version';

function dimensionsOf({ kind, fields }: Published): Record<Dimension, string> {
  const dimensions: Record<Dimension, string> = { kind, pipeline: '', step: '', provider: '', model: '', route: '', prompt_version: '' };
  if (fields.gatewayRequest) Object.assign(dimensions, { pipeline: fields.gatewayRequest.pipeline, route: fields.gatewayRequest.route });
  if (fields.executorRun) Object.assign(dimensions, { pipeline: fields.executorRun.pipeline });
  const step = fields.executorStep?.step;
  if (fields.executorStep && step) Object.assign(dimensions, { pipeline: fields.executorStep.pipeline, step: step.name, provider: step.provider, model: step.model, prompt_version: step.promptVersion });
  if (fields.providerCompletion) Object.assign(dimensions, { provider: fields.providerCompletion.provider, model: fields.providerCompletion.model });
  return dimensions;
}

/** What GetMetrics must answer for these events, grouped by `groupBy`: computed here from what was published. */
function expectedRows(published: Published[], groupBy: Dimension[]) {
  const groups = new Map<string, Published[]>();
  for (const event of published) {
    const dimensions = dimensionsOf(event);
    const key = JSON.stringify(groupBy.map((dimension) => dimensions[dimension]));
    groups.set(key, [...(groups.get(key) ?? []), event]);
  }
  return new Map(
    [...groups].map(([key, events]) => {
      const usage = (event: Published) => event.fields.executorRun?.usage ?? event.fields.executorStep?.step?.usage ?? event.fields.providerCompletion?.usage;
      const errors: Record<string, number> = {};
      for (const event of events) if (event.status !== 'OK') errors[event.status] = (errors[event.status] ?? 0) + 1;
      const durations = events.map((event) => event.durationMs).sort((a, b) => a - b);
      const failures = Object.values(errors).reduce((sum, count) => sum + count, 0);
      return [
        key,
        {
          count: events.length,
          errors,
          inputTokens: events.reduce((sum, event) => sum + (usage(event)?.inputTokens ?? 0), 0),
          outputTokens: events.reduce((sum, event) => sum + (usage(event)?.outputTokens ?? 0), 0),
          costUsd: events.reduce((sum, event) => sum + (usage(event)?.costUsd ?? 0), 0),
          fallbacks: events.filter((event) => event.fields.executorRun?.steps?.some((step) => step?.fallbackUsed) || event.fields.executorStep?.step?.fallbackUsed).length,
          meanMs: durations.reduce((sum, value) => sum + value, 0) / durations.length,
          // DDSketch answers the value of rank floor(q * (n - 1)), within 1%.
          quantile: (q: number) => durations[Math.floor(q * (durations.length - 1))]!,
          successRate: (events.length - failures) / events.length,
        },
      ] as const;
    }),
  );
}

export function expectRowsMatch(rows: proto.MetricsRow[], published: Published[], groupBy: Dimension[]): void {
  const expected = expectedRows(published, groupBy);
  expect(rows.length).toBe(expected.size);
  for (const row of rows) {
    const key = JSON.stringify(groupBy.map((dimension) => row.group[dimension]));
    const want = expected.get(key);
    expect(want, `group ${key}`).toBeDefined();
    expect(row.count).toBe(want!.count);
    expect(row.errorsByStatus).toEqual(want!.errors);
    expect(row.inputTokens).toBe(want!.inputTokens);
    expect(row.outputTokens).toBe(want!.outputTokens);
    expect(row.costUsd).toBeCloseTo(want!.costUsd, 9);
    expect(row.fallbacks).toBe(want!.fallbacks);
    expect(row.successRate).toBeCloseTo(want!.successRate, 12);
    expect(row.latencyMeanMs).toBeCloseTo(want!.meanMs, 9);
    for (const [q, value] of [[0.5, row.latencyP50Ms], [0.9, row.latencyP90Ms], [0.95, row.latencyP95Ms], [0.99, row.latencyP99Ms]] as const) {
      const exact = want!.quantile(q);
      if (exact === 0) expect(value, `p${q * 100}`).toBe(0);
      else expect(Math.abs(value - exact) / exact, `p${q * 100} ${value} against ${exact}`).toBeLessThanOrEqual(0.0101);
    }
  }
}

export const byKind = (published: Published[], kind: string) => published.filter((event) => event.kind === kind);

export async function totalCount(monitor: Pick<Monitor, 'client'>, kind: string, filter: Partial<proto.MetricsFilter> = {}): Promise<number> {
  const { rows } = await monitor.client.getMetrics({ filter: { ...filter, kind } });
  return rows.reduce((sum, row) => sum + row.count, 0);
}

