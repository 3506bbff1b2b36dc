// Alerts end to end: an injected provider failure (the fake Anthropic answering 500) fires the
// provider error-rate alert to a local webhook receiver exactly once, with two monitor replicas
// evaluating the same rules, and resolves it exactly once when the provider answers again. The
// webhook bodies are signed; the same change is on NATS (elexirion.alerts.*); a bad edit of the
// rules file is refused and the rules in use stay; ListAlerts says what fired; a critical alert
// firing degrades the system health while it lasts.
import { createHmac } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '@nats-io/transport-node';
import { proto } from '@elexirion/kit';
import {
  eventually,
  repoRoot,
  startFakeAnthropic,
  startMonitorProcess,
  startNats,
  startStack,
  stopAll,
  type FakeUpstream,
  type NatsServer,
  type Spawned,
  type Stack,
} from '@elexirion/testing';

const KEY = 'fake-anthropic-alerts-test-4c3b2a1d0e9f';
const SECRET = 'alerts-webhook-secret-5e6f7a8b';
const folder = mkdtempSync(join(tmpdir(), 'elexirion-alerts-'));
const rulesFile = join(folder, 'alerts.yaml');
const providersFile = join(folder, 'providers.yaml');

interface Received {
  body: Record<string, unknown>;
  raw: string;
  signature: string | undefined;
  delivery: string | undefined;
}

let nats: NatsServer;
let anthropic: FakeUpstream;
let stack: Stack;
let secondMonitor: Spawned;
let receiver: Server;
const received: Received[] = [];
const onNats: string[] = [];
let natsClose: (() => Promise<void>) | undefined;

function rules(webhook: string): string {
  return `webhooks:
  - url: ${webhook}
rules:
  - name: provider-errors
    summary: Provider calls failing
    metric: error_rate
    kind: completion
    group_by: [provider]
    window: 1m
    warning: 0.5
    for: 0s
    min_count: 2
  - name: provider-errors-critical
    metric: error_rate
    kind: completion
    group_by: [provider]
    window: 1m
    warning: 0.9
    critical: 0.9
    min_count: 2
`;
}

beforeAll(async () => {
  receiver = createServer((request, response) => {
    let raw = '';
    request.on('data', (chunk: Buffer) => (raw += chunk.toString('utf8')));
    request.on('end', () => {
      received.push({ body: JSON.parse(raw) as Record<string, unknown>, raw, signature: request.headers['x-elexirion-signature'] as string | undefined, delivery: request.headers['x-elexirion-delivery'] as string | undefined });
      response.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  writeFileSync(rulesFile, rules(`http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`));
  // The breaker never opens here: every failure is an answered call the alert counts.
  writeFileSync(providersFile, readFileSync(join(repoRoot, 'config/providers.yaml'), 'utf8').replaceAll('min_requests: 10', 'min_requests: 100000'));
  nats = await startNats();
  const subscriber = await connect({ servers: nats.url });
  const subscription = subscriber.subscribe('elexirion.alerts.>', { callback: (_error, message) => void onNats.push(message.subject) });
  natsClose = async () => {
    subscription.unsubscribe();
    await subscriber.close();
  };
  anthropic = await startFakeAnthropic({ apiKey: KEY });
  const env = {
    ANTHROPIC_API_KEY: KEY,
    ANTHROPIC_BASE_URL: anthropic.url,
    PROVIDER_CONFIG: providersFile,
    MONITOR_ALERT_RULES: rulesFile,
    MONITOR_ALERT_EVAL_MS: '200',
    MONITOR_ALERT_RULES_POLL_MS: '100',
    MONITOR_ALERT_WEBHOOK_SECRET: SECRET,
    MONITOR_HEALTH_INTERVAL_MS: '200',
    TELEMETRY_FLUSH_MS: '20',
  };
  stack = await startStack('all-in-one', nats.url, env);
  // A second monitor replica on the same NATS: the same rules, the same alert states.
  // The stack's environment but its own ports (startMonitorProcess picks them); the all-in-one
  // process serves every service on its one gRPC port, which is where this replica checks them.
  const { MONITOR_GRPC_PORT: _grpc, MONITOR_HTTP_PORT: _http, ...shared } = stack.env;
  const allInOne = `127.0.0.1:${stack.ports.gatewayGrpc}`;
  const addresses = { GATEWAY_ADDRESS: allInOne, AGENT_ADDRESS: allInOne, EXECUTOR_ADDRESS: allInOne, PROVIDER_ADDRESS: allInOne };
  secondMonitor = (await startMonitorProcess(nats.url, { ...shared, ...addresses }, 'monitor (second)')).process;
});

afterAll(async () => {
  await secondMonitor?.stop();
  await stack?.stop();
  await anthropic?.close();
  await natsClose?.();
  await nats?.stop();
  await new Promise<void>((resolve) => (receiver ? receiver.close(() => resolve()) : resolve()));
  await stopAll();
  rmSync(folder, { recursive: true, force: true });
});

const chat = (message: string) => stack.gateway.chat({ message }).then(() => 'ok', () => 'failed');

describe('alerts', () => {
  it('fires once on a provider failure and resolves once when it stops, signed, with two replicas', async () => {
    anthropic.setDefault({ status: 500, errorMessage: 'injected failure' });
    for (let index = 0; index < 3; index += 1) expect(await chat(`failing ${index}`)).toBe('failed');
    const of = (rule: string) => received.filter((one) => one.body.rule === rule);
    await eventually('the firing notifications', async () => (of('provider-errors').length > 0 && of('provider-errors-critical').length > 0 ? true : undefined), 20_000);
    const firing = of('provider-errors')[0]!;
    expect(firing.body).toMatchObject({ rule: 'provider-errors', status: 'firing', severity: 'warning', labels: { provider: 'anthropic' }, threshold: 0.5 });
    expect(of('provider-errors-critical')[0]!.body).toMatchObject({ status: 'firing', severity: 'critical', threshold: 0.9 });
    expect(firing.signature).toBe(`sha256=${createHmac('sha256', SECRET).update(firing.raw).digest('hex')}`);
    expect(firing.delivery).toBe(firing.body.deliveryId);

    // A critical alert firing degrades the system health, naming it.
    const cause = 'alert provider-errors-critical (provider=anthropic): firing, critical';
    await eventually('health to name the alert', async () => ((await stack.gateway.getSystemHealth({})).health?.causes.includes(cause) ? true : undefined));
    expect((await stack.gateway.getSystemHealth({})).health?.status).toBe(proto.HealthStatus.HEALTH_STATUS_DEGRADED);

    anthropic.setDefault({});
    // A failing chat makes two failed completions (the classifier's and the answer's); a healthy
    // one at least one: 6 failures among 16 or more is under the 0.5 threshold.
    for (let index = 0; index < 10; index += 1) expect(await chat(`healthy ${index}`)).toBe('ok');
    await eventually('the resolved notifications', async () => (received.filter((one) => one.body.status === 'resolved').length === 2 ? true : undefined), 20_000);
    // Several more rounds of both replicas: still one of each.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(of('provider-errors').map((one) => one.body.status)).toEqual(['firing', 'resolved']);
    expect(of('provider-errors-critical').map((one) => one.body.status)).toEqual(['firing', 'resolved']);
    expect(received).toHaveLength(4);
    expect(new Set(received.map((one) => one.delivery)).size).toBe(4);
    expect([...onNats].sort()).toEqual([
      'elexirion.alerts.firing.provider-errors',
      'elexirion.alerts.firing.provider-errors-critical',
      'elexirion.alerts.resolved.provider-errors',
      'elexirion.alerts.resolved.provider-errors-critical',
    ]);
    await eventually('health without the alert', async () => ((await stack.gateway.getSystemHealth({})).health?.causes.includes(cause) ? undefined : true));
    // Both replicas evaluated every round: the all-in-one one reads its own metrics in-process
    // (it once made a gRPC client to itself, to a port nothing listens on, and never evaluated).
    for (const replica of [stack.processes.all!, secondMonitor]) expect(replica.output()).not.toContain('could not be evaluated');
  });

  it('lists the alert states and the rules in use', async () => {
    const answer = await stack.gateway.listAlerts({ states: [] });
    expect(answer.rules).toEqual(['provider-errors', 'provider-errors-critical']);
    expect(answer.rulesSource).toBe(rulesFile);
    expect(answer.alerts.map((alert) => [alert.rule, alert.state, alert.labels])).toEqual([
      ['provider-errors', proto.AlertState.ALERT_STATE_OK, { provider: 'anthropic' }],
      ['provider-errors-critical', proto.AlertState.ALERT_STATE_OK, { provider: 'anthropic' }],
    ]);
  });

  it('keeps the rules in use when an edit is wrong, and takes a right one without a restart', async () => {
    const webhook = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
    writeFileSync(rulesFile, `${rules(webhook)}  - name: broken\n    metric: error_rat\n    warning: 1\n`);
    await new Promise((resolve) => setTimeout(resolve, 800));
    expect((await stack.gateway.listAlerts({ states: [] })).rules).toEqual(['provider-errors', 'provider-errors-critical']);
    writeFileSync(rulesFile, `${rules(webhook)}  - name: spend\n    metric: cost_per_hour\n    kind: completion\n    warning: 1000\n`);
    await eventually('the reloaded rules', async () => ((await stack.gateway.listAlerts({ states: [] })).rules.length === 3 ? true : undefined));
    expect((await stack.gateway.listAlerts({ states: [] })).rules).toEqual(['provider-errors', 'provider-errors-critical', 'spend']);
  });
});
