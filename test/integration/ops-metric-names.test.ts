// The operations files against the real services: the Grafana dashboard (deploy/grafana/) and the
// Prometheus alerting rules (deploy/prometheus/) may use only metric names the services expose.
// The five services run as processes on a real NATS; after some traffic (a chat, a refused call)
// every /metrics is scraped, and every PromQL expression of the two files is parsed with the
// Prometheus project's own grammar (@prometheus-io/lezer-promql): each must parse, and each metric
// it selects must be exposed (a histogram's _bucket, _sum and _count included), with label
// matchers naming labels the metric has. The rules file's shape is validated with a JSON schema.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parser } from '@prometheus-io/lezer-promql';
import { Ajv } from 'ajv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { repoRoot, startNats, startStack, stopAll, type NatsServer, type Stack } from '@elexirion/testing';

const SERVICES = ['gateway', 'agent', 'executor', 'provider', 'monitor'] as const;

/** A metric as scraped: its type and the label names its samples carry (by sample name). */
interface Exposed {
  /** Sample name (x_bucket, x_sum, ...) -> the family it belongs to. */
  samples: Map<string, string>;
  /** Family -> label names seen on its samples. */
  labels: Map<string, Set<string>>;
  /** Which service exposed each family. */
  services: Map<string, Set<string>>;
}

let nats: NatsServer;
let stack: Stack;
const exposed: Exposed = { samples: new Map(), labels: new Map(), services: new Map() };

/** The sample names a family of `type` is queried by. */
function sampleNames(family: string, type: string): string[] {
  switch (type) {
    case 'histogram': return [`${family}_bucket`, `${family}_sum`, `${family}_count`];
    case 'summary': return [family, `${family}_sum`, `${family}_count`];
    default: return [family];
  }
}

/** Reads a Prometheus text exposition into `into`. */
function readExposition(service: string, text: string, into: Exposed): void {
  const familyOf = new Map<string, string>();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) {
      const [, family, kind] = type as unknown as [string, string, string];
      for (const name of sampleNames(family, kind)) {
        into.samples.set(name, family);
        familyOf.set(name, family);
      }
      if (!into.labels.has(family)) into.labels.set(family, new Set());
      if (!into.services.has(family)) into.services.set(family, new Set());
      into.services.get(family)!.add(service);
      continue;
    }
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+/.exec(line);
    if (!sample) continue;
    const family = familyOf.get(sample[1]!);
    if (!family) continue;
    for (const [, label] of (sample[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"/g)) into.labels.get(family)!.add(label!);
  }
}

/** A PromQL expression of one of the files, with where it is. */
interface Query {
  where: string;
  expr: string;
}

/** Grafana's interval variables, replaced by a duration so the expression is plain PromQL. */
function withoutGrafanaVariables(expr: string): string {
  return expr.replace(/\$__(rate_interval|interval|range)/g, '5m');
}

interface Selector {
  metric: string | undefined;
  labels: string[];
}

/** Parses `expr` with the Prometheus grammar: its syntax errors and the series it selects. */
function analyse(expr: string): { errors: string[]; selectors: Selector[] } {
  const text = withoutGrafanaVariables(expr);
  const tree = parser.parse(text);
  const errors: string[] = [];
  const selectors: Selector[] = [];
  tree.iterate({
    enter(node) {
      if (node.type.isError) errors.push(`syntax error at ${node.from}: ${JSON.stringify(text.slice(Math.max(0, node.from - 20), node.to + 20))}`);
      if (node.name !== 'VectorSelector') return;
      const selector: Selector = { metric: undefined, labels: [] };
      const cursor = node.node.cursor();
      cursor.iterate((inner) => {
        if (inner.name === 'Identifier' && inner.node.parent?.name === 'VectorSelector') selector.metric = text.slice(inner.from, inner.to);
        if (inner.name === 'LabelName' && inner.node.parent?.name?.endsWith('LabelMatcher')) selector.labels.push(text.slice(inner.from, inner.to));
      });
      selectors.push(selector);
    },
  });
  return { errors, selectors };
}

const dashboardPath = join(repoRoot, 'deploy/grafana/elexirion.json');
const rulesPath = join(repoRoot, 'deploy/prometheus/alerts.yaml');

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Panel = { id: number; title: string; type: string; panels?: Panel[]; targets?: { expr?: string; refId: string; datasource?: any }[]; gridPos: { x: number; y: number; w: number; h: number } };
const dashboard = JSON.parse(readFileSync(dashboardPath, 'utf8')) as { uid: string; title: string; panels: Panel[]; templating: { list: { name: string; type: string }[] } };
const allPanels = (panels: Panel[]): Panel[] => panels.flatMap((panel) => [panel, ...allPanels(panel.panels ?? [])]);
const dashboardQueries: Query[] = allPanels(dashboard.panels).flatMap((panel) =>
  (panel.targets ?? []).map((target) => ({ where: `dashboard panel "${panel.title}" target ${target.refId}`, expr: target.expr ?? '' })),
);

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
const rulesFile = parseYaml(readFileSync(rulesPath, 'utf8')) as { groups: { name: string; rules: Rule[] }[] };
const ruleQueries: Query[] = (rulesFile.groups ?? []).flatMap((group) => (group.rules ?? []).map((rule) => ({ where: `rule ${group.name}/${rule.alert ?? rule.record}`, expr: String(rule.expr) })));

// A Prometheus rule file (https://prometheus.io/docs/prometheus/latest/configuration/recording_rules/),
// as strict as Prometheus' own loader: unknown keys are refused, durations have its format.
const DURATION = '^(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?$';
const rulesSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['groups'],
  properties: {
    groups: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'rules'],
        properties: {
          name: { type: 'string', minLength: 1 },
          interval: { type: 'string', pattern: DURATION },
          limit: { type: 'integer', minimum: 0 },
          query_offset: { type: 'string', pattern: DURATION },
          labels: { type: 'object', additionalProperties: { type: 'string' } },
          rules: {
            type: 'array',
            minItems: 1,
            items: {
              type: 'object',
              additionalProperties: false,
              required: ['expr'],
              oneOf: [{ required: ['alert'] }, { required: ['record'] }],
              properties: {
                alert: { type: 'string', pattern: '^[A-Za-z_][A-Za-z0-9_]*$' },
                record: { type: 'string', pattern: '^[a-zA-Z_:][a-zA-Z0-9_:]*$' },
                expr: { type: 'string', minLength: 1 },
                for: { type: 'string', pattern: DURATION },
                keep_firing_for: { type: 'string', pattern: DURATION },
                labels: { type: 'object', additionalProperties: { type: 'string' } },
                annotations: { type: 'object', additionalProperties: { type: 'string' } },
              },
            },
          },
        },
      },
    },
  },
};

/** Labels Prometheus adds to every scraped series (the target's), and the histogram bucket bound. */
const TARGET_LABELS = new Set(['job', 'instance', 'le', '__name__']);

/**
 * The monitor's own metrics come with its areas (issue 14's other parts: the consumer lag gauge
 * with the performance database). While this checkout's monitor registers none of its own yet,
 * names under this prefix cannot be checked here; once it registers any, all of them must exist.
 */
const MONITOR_PREFIX = 'elexirion_monitor_';

function unknownNames(queries: Query[]): string[] {
  const monitorHasOwnMetrics = [...exposed.samples.keys()].some((name) => name.startsWith(MONITOR_PREFIX));
  const problems: string[] = [];
  for (const query of queries) {
    for (const selector of analyse(query.expr).selectors) {
      const metric = selector.metric!;
      if (!exposed.samples.has(metric)) {
        if (metric.startsWith(MONITOR_PREFIX) && !monitorHasOwnMetrics) continue;
        problems.push(`${query.where}: no service exposes ${metric}`);
        continue;
      }
      const family = exposed.samples.get(metric)!;
      const known = exposed.labels.get(family)!;
      // Only a family with samples shows its labels (a labelled counter never incremented has none).
      if (known.size === 0) continue;
      for (const label of selector.labels) {
        if (!known.has(label) && !TARGET_LABELS.has(label)) problems.push(`${query.where}: ${metric} has no label ${label} (it has ${[...known].sort().join(', ')})`);
      }
    }
  }
  return problems;
}

beforeAll(async () => {
  nats = await startNats();
  stack = await startStack('one-process-per-service', nats.url);
  // Traffic, so labelled series have samples: a chat through every service, and a refused call.
  await stack.gateway.chat({ message: 'hello metrics' });
  await stack.gateway.executePipeline({ pipeline: 'no_such_pipeline', inputs: {} }).catch(() => undefined);
  for (const service of SERVICES) {
    const port = stack.env[`${service.toUpperCase()}_HTTP_PORT`];
    const reply = await fetch(`http://127.0.0.1:${port}/metrics`);
    expect(reply.status, `${service} /metrics`).toBe(200);
    readExposition(service, await reply.text(), exposed);
  }
}, 120_000);

afterAll(async () => {
  await stack?.stop();
  await nats?.stop();
  await stopAll();
});

describe('operations files use only metric names the services expose', () => {
  it('scraped every service, the monitor included', () => {
    for (const service of SERVICES) {
      expect([...exposed.services.values()].some((services) => services.has(service)), `${service} exposed metrics`).toBe(true);
    }
    // The families the files rely on most, from the services that own them.
    expect(exposed.services.get('grpc_server_handled_total')).toEqual(new Set(SERVICES));
    expect(exposed.services.get('elexirion_provider_breaker_state')).toEqual(new Set(['provider']));
  });

  it('the dashboard: every query parses and selects exposed metrics with their labels', () => {
    expect(dashboardQueries.length).toBeGreaterThan(10);
    for (const query of dashboardQueries) {
      expect(query.expr, `${query.where} has an expression`).not.toBe('');
      const { errors, selectors } = analyse(query.expr);
      expect(errors, query.where).toEqual([]);
      expect(selectors.length, `${query.where} selects something`).toBeGreaterThan(0);
      for (const selector of selectors) expect(selector.metric, `${query.where}: every selector names its metric`).toBeDefined();
    }
    expect(unknownNames(dashboardQueries)).toEqual([]);
  });

  it('the dashboard shows throughput, latency percentiles, errors, tokens and cost, breakers, dropped telemetry and consumer lag', () => {
    const used = new Set(dashboardQueries.flatMap((query) => analyse(query.expr).selectors.map((selector) => selector.metric)));
    for (const metric of [
      'grpc_server_handled_total',
      'grpc_server_handling_seconds_bucket',
      'gen_ai_client_token_usage_sum',
      'elexirion_provider_cost_usd_total',
      'elexirion_provider_breaker_state',
      'elexirion_telemetry_events_dropped_total',
      'elexirion_monitor_consumer_pending',
    ]) {
      expect(used, metric).toContain(metric);
    }
    const percentiles = dashboardQueries.filter((query) => /histogram_quantile\(0\.(5|95|99),/.test(query.expr)).map((query) => /histogram_quantile\((0\.\d+)/.exec(query.expr)![1]);
    expect(new Set(percentiles)).toEqual(new Set(['0.5', '0.95', '0.99']));
  });

  it('the dashboard is a well-formed Grafana dashboard', () => {
    expect(dashboard.uid).toMatch(/^[a-zA-Z0-9_-]{1,40}$/);
    const panels = allPanels(dashboard.panels);
    const ids = panels.map((panel) => panel.id);
    expect(new Set(ids).size, 'panel ids are unique').toBe(ids.length);
    expect(dashboard.templating.list.find((variable) => variable.name === 'datasource')?.type).toBe('datasource');
    for (const panel of panels) {
      expect(panel.gridPos.x + panel.gridPos.w, `${panel.title} fits the 24-column grid`).toBeLessThanOrEqual(24);
      for (const target of panel.targets ?? []) expect(target.datasource?.uid, `${panel.title} uses the datasource variable`).toBe('${datasource}');
    }
  });

  it('the alerting rules: the file validates, every expression parses and selects exposed metrics', () => {
    const ajv = new Ajv({ allErrors: true });
    const validate = ajv.compile(rulesSchema);
    expect(validate(rulesFile), ajv.errorsText(validate.errors)).toBe(true);
    const alerts = rulesFile.groups.flatMap((group) => group.rules);
    expect(new Set(alerts.map((rule) => rule.alert)).size, 'alert names are unique').toBe(alerts.length);
    for (const rule of alerts) {
      expect(['warning', 'critical'], `${rule.alert} severity`).toContain(rule.labels?.severity);
      expect(rule.annotations?.summary, `${rule.alert} summary`).toBeTruthy();
      expect(rule.annotations?.description, `${rule.alert} description`).toBeTruthy();
    }
    for (const query of ruleQueries) {
      const { errors, selectors } = analyse(query.expr);
      expect(errors, query.where).toEqual([]);
      expect(selectors.length, `${query.where} selects something`).toBeGreaterThan(0);
    }
    expect(unknownNames(ruleQueries)).toEqual([]);
  });

  it('the rules cover error rate, p95 latency, open breakers, dropped telemetry and consumer lag', () => {
    const byMetric = (metric: string) => ruleQueries.filter((query) => analyse(query.expr).selectors.some((selector) => selector.metric === metric));
    expect(byMetric('grpc_server_handled_total').length, 'error rate').toBeGreaterThan(0);
    expect(byMetric('grpc_server_handling_seconds_bucket').some((query) => query.expr.includes('histogram_quantile(0.95,')), 'p95 latency').toBe(true);
    expect(byMetric('elexirion_provider_breaker_state').length, 'breaker open').toBeGreaterThan(0);
    expect(byMetric('elexirion_telemetry_events_dropped_total').length, 'dropped telemetry').toBeGreaterThan(0);
    expect(byMetric('elexirion_monitor_consumer_pending').length, 'consumer lag').toBeGreaterThan(0);
  });

  it('finds a misspelt metric name and a syntax error (the check itself works)', () => {
    expect(unknownNames([{ where: 'probe', expr: 'sum(rate(grpc_server_handled{service="gateway"}[5m]))' }])).toEqual(['probe: no service exposes grpc_server_handled']);
    expect(unknownNames([{ where: 'probe', expr: 'rate(grpc_server_handled_total{srvice="gateway"}[5m])' }])[0]).toMatch(/^probe: grpc_server_handled_total has no label srvice/);
    expect(unknownNames([{ where: 'probe', expr: 'histogram_quantile(0.9, rate(grpc_server_handling_seconds_bucket[5m]))' }])).toEqual([]);
    expect(analyse('sum(rate(grpc_server_handled_total[5m])').errors.length).toBeGreaterThan(0);
  });
});
