// Executions and feedback through the real chain: gateway, agent, executor, the mock provider and
// the monitor, each a process of its own. Runs made over HTTP (a pipeline call and a
// chat) become executions; feedback recorded over HTTP on each answer's job id lands on its run,
// named after the API key that sent it, and shows in GET /v1/executions (min_score) and
// GET /v1/pipelines/{pipeline}/prompt-stats.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, startNats, startStack, stopAll, type NatsServer, type Stack } from '@elexirion/testing';

let nats: NatsServer;
let stack: Stack;
let secret: string;
const ADMIN_KEY = 'an-admin-key-for-the-monitor-executions-test';

beforeAll(async () => {
  nats = await startNats();
  // The split shape: the monitor is a process of its own, which the gateway calls.
  stack = await startStack('one-process-per-service', nats.url, { GATEWAY_AUTH: 'on', GATEWAY_ADMIN_KEY: ADMIN_KEY });
  const created = await fetch(url('/v1/keys'), {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_KEY}` },
    body: JSON.stringify({ name: 'rater', scopes: ['chat', 'pipelines', 'telemetry'] }),
  });
  expect(created.status).toBe(200);
  secret = ((await created.json()) as { secret: string }).secret;
});

afterAll(async () => {
  await stack?.stop();
  await nats?.stop();
  await stopAll();
});

const url = (path: string) => `http://127.0.0.1:${stack.ports.gatewayHttp}${path}`;

async function post(path: string, body: unknown): Promise<any> {
  const reply = await fetch(url(path), { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${secret}` }, body: JSON.stringify(body) });
  const json = await reply.json();
  if (reply.status !== 200) throw new Error(`POST ${path}: ${reply.status} ${JSON.stringify(json)}`);
  return json;
}

async function get(path: string): Promise<any> {
  const reply = await fetch(url(path), { headers: { authorization: `Bearer ${secret}` } });
  const json = await reply.json();
  if (reply.status !== 200) throw new Error(`GET ${path}: ${reply.status} ${JSON.stringify(json)}`);
  return json;
}

describe('executions and feedback through the gateway', () => {
  it('stores the runs of real calls and shows feedback recorded over HTTP in the listing and the version statistics', async () => {
    const executed = await post('/v1/pipelines/general/execute', { inputs: { message: 'ping' } });
    const chatted = await post('/v1/chat', { message: 'hello', pipeline: 'general' });
    expect(executed.jobId).toBeTruthy();
    expect(chatted.jobId).toBeTruthy();

    // The answer names the job; the feedback finds its run (waiting for its event if need be).
    const liked = await post(`/v1/executions/${executed.jobId}/feedback`, { feedback: { name: 'thumbs', score: 1, source: 'FEEDBACK_SOURCE_HUMAN', comment: 'spot on' } });
    expect(liked).toMatchObject({ feedback: { name: 'thumbs', score: 1, comment: 'spot on', recordedBy: 'rater' } });
    expect(liked.replaced ?? false).toBe(false);
    await post(`/v1/executions/${chatted.jobId}/feedback`, { feedback: { name: 'thumbs', score: 1 } });
    const changed = await post(`/v1/executions/${chatted.jobId}/feedback`, { feedback: { name: 'thumbs', score: 0, source: 'FEEDBACK_SOURCE_HUMAN' } });
    expect(changed.replaced).toBe(true);

    const run = (await get(`/v1/executions/${executed.jobId}`)).execution;
    expect(run).toMatchObject({ jobId: executed.jobId, pipeline: 'general', status: 'OK', inputs: { message: 'ping' }, output: executed.result });
    expect(run.steps.length).toBeGreaterThan(0);
    expect(run.steps.every((step: { promptVersion: string }) => step.promptVersion)).toBe(true);

    // The chat's route, from the gateway's request event, joins its run.
    const chatRun = await eventually('the chat run with its route', async () => {
      const execution = (await get(`/v1/executions/${chatted.jobId}`)).execution;
      return execution.route ? execution : undefined;
    });
    expect(chatRun.route).toBe(chatted.route.matchedBy);

    const listed = (await get('/v1/executions?pipeline=general')).executions;
    expect(listed.map((execution: { jobId: string }) => execution.jobId)).toEqual([chatted.jobId, executed.jobId]);
    const good = (await get('/v1/executions?pipeline=general&min_score=1')).executions;
    expect(good.map((execution: { jobId: string }) => execution.jobId)).toEqual([executed.jobId]);
    expect(good[0].feedback).toEqual([expect.objectContaining({ name: 'thumbs', score: 1, source: 'FEEDBACK_SOURCE_HUMAN', recordedBy: 'rater' })]);

    const stats = await get('/v1/pipelines/general/prompt-stats');
    const step = run.steps[0];
    const version = stats.versions.find((entry: { step: string }) => entry.step === step.name);
    expect(version).toMatchObject({ pipeline: 'general', version: step.promptVersion, runs: 2, successRate: 1, baseline: true });
    expect(version.score).toMatchObject({ count: 2, mean: 0.5 });

    const refused = await fetch(url('/v1/executions?page_size=9999'), { headers: { authorization: `Bearer ${secret}` } });
    expect(refused.status).toBe(400);
    expect(((await refused.json()) as { error: { message: string } }).error.message).toContain('page_size');
  });
});
