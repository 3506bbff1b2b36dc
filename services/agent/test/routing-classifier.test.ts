// The classifier route: one LLM call through a real provider process (its SDK talking to a fake
// Anthropic upstream) picks a pipeline by description; at or above the threshold it decides,
// below it, on a failure or past its timeout the route table does, and the answer says which.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { PipelineLoader } from '@elexirion/executor';
import { RouteClassifier, RouteTable, decideRoute, type PipelineShape } from '@elexirion/agent';
import { startProvider, stopAll, type ProviderUnderTest } from '@elexirion/testing';

const PIPELINES_DIR = fileURLToPath(new URL('../../../pipelines/', import.meta.url));
const compiled = RouteTable.compile('routes.yaml', readFileSync(`${PIPELINES_DIR}routes.yaml`, 'utf8'));
if ('problems' in compiled) throw new Error('the shipped routes.yaml does not compile');
const table = compiled.table;
const MESSAGE = 'what do you make of this function? def f(x): return x * 2';

let provider: ProviderUnderTest;
let candidates: PipelineShape[];

beforeAll(async () => {
  provider = await startProvider();
  const listed = await new PipelineLoader(PIPELINES_DIR).list();
  const routed = new Set(table.routes.map((route) => route.pipeline));
  candidates = listed
    .filter(({ name, loaded }) => loaded && routed.has(name))
    .map(({ name, loaded }) => ({ name, description: loaded!.pipeline.description ?? '', valid: true, inputs: [] }));
});

afterAll(async () => {
  await provider?.stop();
  await stopAll();
});

beforeEach(() => provider.fakes.anthropic.reset());

function classifier(timeoutMs = 10_000): RouteClassifier {
  const made = new RouteClassifier(() => provider.client, { model: 'claude', timeoutMs });
  made.setCandidates(candidates);
  return made;
}

describe('the classifier route', () => {
  it('decides at or above the threshold, asking with the pipelines\' descriptions and a JSON Schema of the candidates', async () => {
    provider.fakes.anthropic.script({ text: '{"pipeline": "analysis", "confidence": 0.91}' });
    const choice = await decideRoute(table, MESSAGE, { classifier: classifier(), threshold: 0.7 });
    expect(choice).toEqual({
      pipeline: 'analysis',
      inputs: { code: MESSAGE },
      decision: { pipeline: 'analysis', matchedBy: 'classifier', rule: '', confidence: 0.91, reason: 'classifier 0.91 at or above 0.7' },
    });
    const [request] = provider.fakes.anthropic.requests;
    const asked = JSON.stringify(request!.body);
    expect(asked).toContain(MESSAGE.replace(/"/g, '\\"'));
    for (const candidate of candidates) expect(asked).toContain(`- ${candidate.name}: ${candidate.description}`);
    expect(candidates.map((candidate) => candidate.name).sort()).toEqual(['analysis', 'general', 'generate', 'refactor']);
  });

  it('leaves the decision to the rule table below the threshold, saying so', async () => {
    provider.fakes.anthropic.script({ text: '{"pipeline": "refactor", "confidence": 0.42}' });
    const choice = await decideRoute(table, MESSAGE, { classifier: classifier(), threshold: 0.7 });
    expect(choice).toEqual({
      pipeline: 'general',
      inputs: { message: MESSAGE },
      decision: { pipeline: 'general', matchedBy: 'default', rule: 'general', confidence: 0.42, reason: 'classifier 0.42 below 0.7: default route "general"' },
    });
  });

  it('leaves it to the rule table when the call fails', async () => {
    provider.fakes.anthropic.script({ status: 400, errorMessage: 'bad request' });
    const choice = await decideRoute(table, MESSAGE, { classifier: classifier(), threshold: 0.7 });
    expect(choice.pipeline).toBe('general');
    expect(choice.decision).toMatchObject({ matchedBy: 'default', rule: 'general', confidence: 0 });
    expect(choice.decision!.reason).toMatch(/^classifier failed \(INVALID_ARGUMENT: .*\): default route "general"$/);
  });

  it('leaves it to the rule table when the answer is not the JSON asked for', async () => {
    provider.fakes.anthropic.script({ text: 'analysis, I think' });
    const choice = await decideRoute(table, MESSAGE, { classifier: classifier(), threshold: 0.7 });
    expect(choice.pipeline).toBe('general');
    expect(choice.decision!.reason).toMatch(/^classifier answered no valid JSON \(.+\): default route "general"$/);
  });

  it('gives up at its timeout, aborting the upstream request, and leaves it to the rule table', async () => {
    provider.fakes.anthropic.script({ hang: true });
    const choice = await decideRoute(table, MESSAGE, { classifier: classifier(300), threshold: 0.7 });
    expect(choice.pipeline).toBe('general');
    expect(choice.decision!.reason).toMatch(/^classifier failed \(DEADLINE_EXCEEDED: .*\): default route "general"$/);
    await provider.fakes.anthropic.waitForAbort(0);
  });

  it('is not asked when a rule matches', async () => {
    const choice = await decideRoute(table, 'please refactor this', { classifier: classifier(), threshold: 0.7 });
    expect(choice.decision).toMatchObject({ matchedBy: 'rule', rule: 'refactor' });
    expect(provider.fakes.anthropic.requests).toHaveLength(0);
  });

  it('is not ready, and not asked, before it knows the pipelines', async () => {
    const unready = new RouteClassifier(() => provider.client, { model: 'claude', timeoutMs: 1000 });
    const choice = await decideRoute(table, MESSAGE, { classifier: unready, threshold: 0.7 });
    expect(choice.decision!.reason).toBe('classifier not ready (the pipelines are not listed yet): default route "general"');
    expect(provider.fakes.anthropic.requests).toHaveLength(0);
  });
});
