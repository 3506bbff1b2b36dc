// The guard where one process hosts every service (as `npm start` runs it): the monitor calls the
// executor in-process (no socket), with the same caller metadata and compare-and-set. A candidate
// whose runs fail upstream is rolled back by "monitor" before its minimum sample.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { proto } from '@elexirion/kit';
import { eventually, repoRoot, startNats, startStack, stopAll, type NatsServer, type Stack } from '@elexirion/testing';

const folder = mkdtempSync(join(tmpdir(), 'elexirion-rollouts-'));
const mockFile = join(folder, 'mock-responses.yaml');
const providersFile = join(folder, 'providers.yaml');

let nats: NatsServer;
let stack: Stack;

beforeAll(async () => {
  // A candidate whose system text says it is broken fails upstream (a client error, not retried); the YAML prompt answers.
  writeFileSync(mockFile, 'responses:\n  - { pattern: "in-process question", context: "you are broken", status: 400 }\n  - { pattern: "in-process question", response: "fine" }\n');
  writeFileSync(providersFile, readFileSync(join(repoRoot, 'config/providers.yaml'), 'utf8').replaceAll('min_requests: 10', 'min_requests: 100000'));
  nats = await startNats();
  stack = await startStack('all-in-one', nats.url, { PROVIDER_MOCK_RESPONSES: mockFile, PROVIDER_CONFIG: providersFile, MONITOR_ROLLOUT_INTERVAL_MS: '200', TELEMETRY_FLUSH_MS: '20' });
  await eventually('the prompt registry attached', () => stack.gateway.listPromptVersions({ pipeline: '', step: '' }).then(() => true));
}, 120_000);

afterAll(async () => {
  await stack?.stop();
  await nats?.stop();
  await stopAll();
  rmSync(folder, { recursive: true, force: true });
});

it('rolls back a failing candidate through the in-process executor client', async () => {
  const step = { pipeline: 'general', step: 'answer' };
  const published = await stack.gateway.publishPromptVersion(
    proto.PublishPromptVersionRequest.fromPartial({ ...step, template: { prompt: '{{inputs.message}}', system: 'You are broken.', demos: [] }, source: 'manual', rolloutWeight: 0.5, guard: { metric: 'success_rate', minRuns: 30 } }),
  );
  const candidate = published.version!.id;
  const rollout = async () => (await stack.gateway.listPromptVersions(step)).steps[0]!.rollout!;
  let runs = 0;
  while ((await rollout()).candidate !== '' && runs < 60) {
    await stack.gateway.executePipeline(proto.ExecutePipelineRequest.fromPartial({ pipeline: 'general', inputs: { message: `in-process question ${runs}` } })).catch(() => undefined);
    runs++;
  }
  await eventually('the rollback', async () => ((await rollout()).candidate === '' ? true : undefined), 15_000);
  expect(await rollout()).toMatchObject({ baseline: 'yaml', candidate: '' });
  const history = await stack.gateway.getPromptHistory({ ...step, pageSize: 5, pageToken: '' });
  expect(history.changes[0]).toMatchObject({ action: 'guard_rollback', by: 'monitor', version: candidate });
  // The early rule (failures), not the metric's, which needs 30 runs per arm.
  expect(history.changes[0]!.reason).toMatch(/the candidate fails more often than the baseline: (\d+) of \1 runs/);
  const candidateRuns = Number(/: (\d+) of/.exec(history.changes[0]!.reason)![1]);
  expect(candidateRuns).toBeLessThan(30);
}, 90_000);
