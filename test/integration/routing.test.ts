// Gateway.Chat goes through the agent's routing, in real processes: routes.yaml's rules, an
// explicit pipeline, the classifier route (a real provider process asking a fake Anthropic
// upstream), and a live reload of routes.yaml (good, then bad, then good) without a restart.
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { revisionOf } from '@elexirion/agent';
import {
  TEST_KEYS,
  eventually,
  repoRoot,
  startFakeAnthropic,
  startNats,
  startStack,
  stopAll,
  testProviderConfig,
  waitFor,
  type FakeUpstream,
  type NatsServer,
  type Stack,
} from '@elexirion/testing';

let nats: NatsServer;
let anthropic: FakeUpstream;
let stack: Stack;
let dir: string;
let routesFile: string;

/** The shipped pipelines' models all served by the mock; the classifier's alias alone by the fake Anthropic. */
function providerConfig() {
  const config = testProviderConfig();
  for (const alias of Object.values(config.aliases)) alias.targets = ['mock/mock'];
  return { ...config, aliases: { ...config.aliases, router: { targets: ['anthropic/claude-sonnet-5'] } } };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'elexirion-routing-'));
  routesFile = join(dir, 'routes.yaml');
  copyFileSync(join(repoRoot, 'pipelines/routes.yaml'), routesFile);
  writeFileSync(join(dir, 'providers.yaml'), JSON.stringify(providerConfig()));
  nats = await startNats();
  anthropic = await startFakeAnthropic({ apiKey: TEST_KEYS.anthropic });
  stack = await startStack('one-process-per-service', nats.url, {
    PROVIDER_CONFIG: join(dir, 'providers.yaml'),
    ANTHROPIC_API_KEY: TEST_KEYS.anthropic,
    ANTHROPIC_BASE_URL: anthropic.url,
    AGENT_ROUTES_FILE: routesFile,
    AGENT_CLASSIFIER_MODEL: 'router',
    AGENT_CLASSIFIER_THRESHOLD: '0.7',
    AGENT_CLASSIFIER_TIMEOUT_MS: '10000',
  });
});

afterAll(async () => {
  await stack?.stop();
  await anthropic?.close();
  await nats?.stop();
  await stopAll();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

beforeEach(() => anthropic.reset());

describe('Gateway.Chat through the routing', () => {
  it('runs "please refactor this" with pipeline refactor, the answer saying rule refactor matched, without asking the classifier', async () => {
    const answer = await stack.gateway.chat({ message: 'please refactor this' });
    expect(answer.pipelineUsed).toBe('refactor');
    expect(answer.route).toEqual({ pipeline: 'refactor', matchedBy: 'rule', rule: 'refactor', confidence: 0, reason: 'keyword "refactor"' });
    expect(answer.response).not.toBe('');
    expect(anthropic.requests).toHaveLength(0);
  });

  it('answers the route in the HTTP API\'s JSON too', async () => {
    const reply = await fetch(`http://127.0.0.1:${stack.ports.gatewayHttp}/v1/chat`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ message: 'Generate a tiny parser' }) });
    expect(reply.status).toBe(200);
    const body = (await reply.json()) as { pipelineUsed: string; route: unknown };
    expect(body.pipelineUsed).toBe('generate');
    expect(body.route).toEqual({ pipeline: 'generate', matchedBy: 'rule', rule: 'generate', reason: 'keyword "generate"' });
  });

  it('lets an explicit pipeline win', async () => {
    const answer = await stack.gateway.chat({ message: 'please refactor this', pipeline: 'general' });
    expect(answer.pipelineUsed).toBe('general');
    expect(answer.route).toMatchObject({ pipeline: 'general', matchedBy: 'explicit', rule: '' });
  });

  it('asks the classifier when no rule matches: its pick at or above the threshold decides, below it the default route does', async () => {
    const message = 'what do you make of this? def f(x): return x * 2';
    // The agent lists the executor's pipelines in the background; until then the rules decide.
    const picked = await eventually('the classifier deciding', async () => {
      anthropic.reset();
      anthropic.setDefault({ text: '{"pipeline": "analysis", "confidence": 0.93}' });
      const answer = await stack.gateway.chat({ message });
      return answer.route?.matchedBy === 'classifier' ? answer : undefined;
    });
    expect(picked.pipelineUsed).toBe('analysis');
    expect(picked.route).toEqual({ pipeline: 'analysis', matchedBy: 'classifier', rule: '', confidence: 0.93, reason: 'classifier 0.93 at or above 0.7' });
    expect(anthropic.requests).toHaveLength(1);

    anthropic.reset();
    anthropic.script({ text: '{"pipeline": "analysis", "confidence": 0.42}' });
    const unsure = await stack.gateway.chat({ message });
    expect(unsure.pipelineUsed).toBe('general');
    expect(unsure.route).toEqual({ pipeline: 'general', matchedBy: 'default', rule: 'general', confidence: 0.42, reason: 'classifier 0.42 below 0.7: default route "general"' });
  });

  it('reloads routes.yaml without a restart: a bad edit keeps the table in use and logs why, the next good one is used', async () => {
    const agent = stack.processes.agent!;
    const metrics = async () => (await fetch(`http://127.0.0.1:${stack.env.AGENT_HTTP_PORT}/metrics`)).text();
    const shipped = revisionOf(await (await import('node:fs/promises')).readFile(routesFile, 'utf8'));
    expect(await metrics()).toContain(`elexirion_agent_route_table_info{revision="${shipped}"} 1`);

    // Bad: a pipeline the executor does not have (the agent knows its pipelines by now).
    const bad = 'rules:\n  - { name: polish, keywords: [polish], pipeline: refactr, input: code }\ndefault: { pipeline: general }\n';
    writeFileSync(routesFile, bad);
    await waitFor('the agent rejecting the bad file', () => agent.output().includes('routes file rejected'), 20_000);
    expect(agent.output()).toContain('routes.yaml:2:51: route \\"polish\\": pipeline \\"refactr\\" does not exist; did you mean \\"refactor\\"?');
    expect((await stack.gateway.chat({ message: 'please refactor this' })).route).toMatchObject({ matchedBy: 'rule', rule: 'refactor' });
    expect(await metrics()).toContain('elexirion_agent_route_table_reloads_total{result="rejected"} 1');

    const good = bad.replace('refactr', 'refactor');
    writeFileSync(routesFile, good);
    const answer = await eventually('the new table in use', async () => {
      const polished = await stack.gateway.chat({ message: 'polish this code' });
      return polished.route?.rule === 'polish' ? polished : undefined;
    }, 20_000);
    expect(answer.pipelineUsed).toBe('refactor');
    expect(answer.route).toMatchObject({ matchedBy: 'rule', reason: 'keyword "polish"' });
    expect(agent.output()).toContain('route table reloaded: 1 rules');
    expect(await metrics()).toContain(`elexirion_agent_route_table_info{revision="${revisionOf(good)}"} 1`);
    // The old rules are gone with the old table.
    anthropic.setDefault({ status: 400, errorMessage: 'no classifier here' });
    expect((await stack.gateway.chat({ message: 'please refactor this' })).route).toMatchObject({ pipeline: 'general', matchedBy: 'default', rule: 'default' });
  });
});
