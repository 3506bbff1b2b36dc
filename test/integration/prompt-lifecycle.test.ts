// The prompt lifecycle through the gateway, over gRPC and REST, with API keys on, against a real
// nats-server and the services in one real process: publishing, rollouts, promotion and rollback
// with who/when/why in the history; scopes and a protected baseline; compare-and-set between
// writers; candidates for one run changing the mock's answer; and a failed run's event carrying
// its steps with their prompt versions.
import { randomBytes } from 'node:crypto';
import { Metadata } from 'nice-grpc';
import { ClientError, Status } from 'nice-grpc-common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient } from 'nice-grpc';
import { Kvm } from '@nats-io/kv';
import { connect } from '@nats-io/transport-node';
import { proto } from '@elexirion/kit';
import { collectEvents, eventually, startNats, startStack, stopAll, waitFor, type NatsServer, type Stack } from '@elexirion/testing';

const ADMIN_KEY = `admin-${randomBytes(24).toString('base64url')}`;
const bearer = (secret: string) => ({ metadata: Metadata({ authorization: `Bearer ${secret}` }) });

let nats: NatsServer;
let stack: Stack;
/** A key with prompts:write and pipelines, one with pipelines only, and their names. */
let writer: { name: string; secret: string };
let reader: { name: string; secret: string };

/** An inline pipeline of two LLM steps, the second reading the first's output. */
function twoStepPipeline(name: string): string {
  return `workflow:
  name: ${name}
  inputs:
    message: { type: string, required: true }
  steps:
    - name: first
      type: claude_smart
      prompt: "{{inputs.message}}"
    - name: second
      type: claude_smart
      prompt: "{{steps.first.output}}"
`;
}

async function createKey(name: string, scopes: string[]): Promise<{ name: string; secret: string }> {
  const created = await stack.gateway.createKey(proto.CreateKeyRequest.fromPartial({ name, scopes }), bearer(ADMIN_KEY));
  return { name, secret: created.secret };
}

async function rest(method: 'GET' | 'POST', path: string, secret: string, body?: unknown): Promise<{ status: number; body: any }> {
  const reply = await fetch(`http://127.0.0.1:${stack.ports.gatewayHttp}${path}`, {
    method,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${secret}` },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: reply.status, body: await reply.json() };
}

/** The gRPC error a call fails with (the test fails when it does not). */
async function failure(call: Promise<unknown>): Promise<ClientError> {
  const error = await call.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error, 'the call should have failed').toBeInstanceOf(ClientError);
  return error as ClientError;
}

type PublishFields = Parameters<typeof proto.PublishPromptVersionRequest.fromPartial>[0];

function publishRequest(fields: PublishFields): proto.PublishPromptVersionRequest {
  return proto.PublishPromptVersionRequest.fromPartial({ pipeline: 'general', step: 'answer', template: { prompt: 'Answer briefly: {{inputs.message}}' }, source: 'manual', ...fields });
}

/** A pipeline of its own per test, so tests do not share registry entries: general's YAML under another name. */
const ANSWER_YAML = (name: string) => `workflow:
  name: ${name}
  inputs:
    message: { type: string, required: true }
  steps:
    - name: answer
      type: claude_smart
      preset: chat
      system: You are terse.
      prompt: "{{inputs.message}}"
`;

beforeAll(async () => {
  nats = await startNats();
  stack = await startStack('all-in-one', nats.url, { GATEWAY_AUTH: 'on', GATEWAY_ADMIN_KEY: ADMIN_KEY }, undefined, { monitor: false });
  await eventually('the key store attached', () => stack.gateway.listKeys({}, bearer(ADMIN_KEY)).then(() => true, () => undefined));
  writer = await createKey(`writer-${randomBytes(3).toString('hex')}`, ['pipelines', 'prompts:write']);
  reader = await createKey(`reader-${randomBytes(3).toString('hex')}`, ['pipelines']);
  // The registry attaches to NATS just after the executor serves.
  await eventually('the prompt registry attached', () => stack.gateway.listPromptVersions({ pipeline: '', step: '' }, bearer(reader.secret)).then(() => true, () => undefined));
}, 120_000);

afterAll(async () => {
  await stack?.stop();
  await nats?.stop();
  await stopAll();
});

describe('the prompt lifecycle through the gateway', () => {
  it('publishes, rolls out, promotes and rolls back, with every change in the history', async () => {
    const pipeline = { pipeline: 'general', step: 'answer' };
    const v1 = await stack.gateway.publishPromptVersion(
      publishRequest({ versionId: 'v1', description: 'terser', scores: { dev: 0.8 }, reason: 'first try', template: { prompt: 'V1: {{inputs.message}}', system: 'Be brief.', demos: [{ input: 'hi', output: 'hello' }] } }),
      bearer(writer.secret),
    );
    expect(v1.version).toMatchObject({ id: 'v1', createdBy: writer.name, source: 'manual', scores: { dev: 0.8 }, template: { prompt: 'V1: {{inputs.message}}', system: 'Be brief.', demos: [{ input: 'hi', output: 'hello' }] } });
    expect(v1.step!.rollout).toMatchObject({ baseline: 'yaml', weights: {} });
    expect(v1.step!.revision).toBeGreaterThan(0);

    // Published with 25% of runs and a guard: the defaults are filled in.
    const v2 = await stack.gateway.publishPromptVersion(
      publishRequest({ template: { prompt: 'V2: {{inputs.message}}' }, rolloutWeight: 0.25, guard: { metric: 'success_rate' }, reason: 'candidate' }),
      bearer(writer.secret),
    );
    expect(v2.version!.id).toBe('v2');
    expect(v2.step!.rollout).toMatchObject({ baseline: 'yaml', weights: { yaml: 0.75, v2: 0.25 }, candidate: 'v2', guard: { metric: 'success_rate', minRuns: 30, significance: 0.05, maxRuns: 300 } });

    const promoted = await stack.gateway.promotePromptVersion({ ...pipeline, versionId: 'v2', reason: 'it won', expectedRevision: v2.step!.revision }, bearer(writer.secret));
    expect(promoted.step!.rollout).toMatchObject({ baseline: 'v2', weights: { v2: 1 }, candidate: '' });
    expect(promoted.step!.rollout!.guard).toBeUndefined();

    // Runs through the gateway now use v2 (the mock echoes the prompt it was sent).
    const run = await stack.gateway.executePipeline(proto.ExecutePipelineRequest.fromPartial({ pipeline: 'general', inputs: { message: 'zebra crossing' } }), bearer(writer.secret));
    expect(run.steps[0]!.promptVersion).toBe('v2');
    expect(run.result).toContain('V2: zebra crossing');

    const rolledBack = await stack.gateway.rollbackPrompt({ ...pipeline, toVersion: 'v1', reason: 'v2 regressed', expectedRevision: 0 }, bearer(writer.secret));
    expect(rolledBack.step!.rollout).toMatchObject({ baseline: 'v1', weights: { v1: 1 } });

    // Over REST too: the list and the history, newest first, with who, when, from what to what, and why.
    const listed = await rest('GET', '/v1/prompts?pipeline=general&step=answer', reader.secret);
    expect(listed.status).toBe(200);
    expect(listed.body.steps[0].versions.map((version: { id: string }) => version.id)).toEqual(['v1', 'v2']);
    expect(listed.body.steps[0].rollout.baseline).toBe('v1');
    const history = await eventually('the history has the four changes', async () => {
      const answer = await rest('GET', '/v1/prompts/general/history?step=answer', reader.secret);
      return answer.body.changes?.length === 4 ? answer.body.changes : undefined;
    });
    expect(history.map((change: { action: string }) => change.action)).toEqual(['rollback', 'promote', 'publish', 'publish']);
    expect(history[0]).toMatchObject({ by: writer.name, reason: 'v2 regressed', version: 'v2', before: { baseline: 'v2' }, after: { baseline: 'v1' } });
    expect(history[1]).toMatchObject({ reason: 'it won', version: 'v2', before: { candidate: 'v2', baseline: 'yaml' }, after: { baseline: 'v2' } });
    expect(history[3]).toMatchObject({ action: 'publish', version: 'v1', reason: 'first try', by: writer.name });
    expect(Date.parse(history[0].time)).toBeGreaterThan(Date.parse(history[3].time) - 1);
    expect(history[0].revision).toBe(rolledBack.step!.revision);
  });

  it('needs prompts:write to change and pipelines to read', async () => {
    const pipeline = `scoped-${randomBytes(3).toString('hex')}`;
    const refused = await failure(stack.gateway.publishPromptVersion(publishRequest({ pipeline }), bearer(reader.secret)));
    expect(refused.code).toBe(Status.PERMISSION_DENIED);
    expect(refused.details).toContain('prompts:write');
    const overRest = await rest('POST', '/v1/prompts/general/answer/promote', reader.secret, { versionId: 'v1' });
    expect(overRest.status).toBe(403);
    const chatOnly = await createKey(`chat-${randomBytes(3).toString('hex')}`, ['chat']);
    expect((await rest('GET', '/v1/prompts', chatOnly.secret)).status).toBe(403);
  });

  it('refuses bad input with the field named', async () => {
    const refusals: [PublishFields, Status, string][] = [
      [{ template: { prompt: 'Use {{inputs.nope}}', system: '', demos: [] } }, Status.INVALID_ARGUMENT, 'template.prompt: {{inputs.nope}}'],
      [{ template: { prompt: 'Use {{steps.answer.output}}', system: '', demos: [] } }, Status.INVALID_ARGUMENT, 'refers to its own output'],
      [{ template: { prompt: 'ok {{inputs.message}}', system: '{{bad reference}}', demos: [] } }, Status.INVALID_ARGUMENT, 'template.system'],
      [{ template: { prompt: '  ', system: '', demos: [] } }, Status.INVALID_ARGUMENT, 'template.prompt: must not be empty'],
      [{ versionId: 'yaml' }, Status.INVALID_ARGUMENT, 'version_id: "yaml" is reserved'],
      [{ versionId: '-bad id' }, Status.INVALID_ARGUMENT, 'version_id'],
      [{ step: 'nope' }, Status.NOT_FOUND, 'step: pipeline "general" has no step "nope"'],
      [{ pipeline: 'no-such-pipeline' }, Status.NOT_FOUND, 'no-such-pipeline'],
      [{ rolloutWeight: 1.5 }, Status.INVALID_ARGUMENT, 'rollout_weight'],
      [{ rolloutWeight: 0.1, guard: { metric: 'vibes', scoreName: '', minRuns: 0, significance: 0, maxRuns: 0 } }, Status.INVALID_ARGUMENT, 'guard.metric'],
      [{ guard: { metric: 'score', scoreName: '', minRuns: 0, significance: 0, maxRuns: 0 } }, Status.INVALID_ARGUMENT, 'guard: a guard watches a rollout'],
      [{ scores: { dev: Number.NaN } }, Status.INVALID_ARGUMENT, 'scores.dev'],
    ];
    for (const [fields, code, text] of refusals) {
      const error = await failure(stack.gateway.publishPromptVersion(publishRequest(fields), bearer(writer.secret)));
      expect({ code: Status[error.code], details: error.details }, JSON.stringify(fields)).toMatchObject({ code: Status[code], details: expect.stringContaining(text) });
    }
    // Triage's remember_kind is a set_variable step: no prompt to version.
    const notLlm = await failure(stack.gateway.publishPromptVersion(publishRequest({ pipeline: 'triage', step: 'remember_kind' }), bearer(writer.secret)));
    expect(notLlm.code).toBe(Status.INVALID_ARGUMENT);
    expect(notLlm.details).toContain('not an LLM step');

    const step = { pipeline: 'triage', step: 'classify' };
    await stack.gateway.publishPromptVersion(publishRequest({ ...step, versionId: 'only', template: { prompt: 'Classify: {{inputs.report}}', system: '', demos: [] } }), bearer(writer.secret));
    const duplicate = await failure(stack.gateway.publishPromptVersion(publishRequest({ ...step, versionId: 'only', template: { prompt: 'Again: {{inputs.report}}', system: '', demos: [] } }), bearer(writer.secret)));
    expect(duplicate.code).toBe(Status.ALREADY_EXISTS);
    const weights = await failure(stack.gateway.setPromptRollout(proto.SetPromptRolloutRequest.fromPartial({ ...step, weights: { only: 0.5, yaml: 0.4 } }), bearer(writer.secret)));
    expect(weights.code).toBe(Status.INVALID_ARGUMENT);
    expect(weights.details).toContain('weights: must sum to 1');
    const unknown = await failure(stack.gateway.setPromptRollout(proto.SetPromptRolloutRequest.fromPartial({ ...step, weights: { ghost: 1 } }), bearer(writer.secret)));
    expect(unknown.details).toContain('weights.ghost');
    const guardShape = await failure(
      stack.gateway.setPromptRollout(proto.SetPromptRolloutRequest.fromPartial({ ...step, weights: { only: 1 }, guard: { metric: 'success_rate' } }), bearer(writer.secret)),
    );
    expect(guardShape.details).toContain('exactly the baseline');
    const missing = await failure(stack.gateway.promotePromptVersion({ ...step, versionId: 'ghost', reason: '', expectedRevision: 0 }, bearer(writer.secret)));
    expect(missing.code).toBe(Status.NOT_FOUND);
    // Over REST, the same words.
    const overRest = await rest('POST', '/v1/prompts/triage/classify/versions', writer.secret, { template: { prompt: '{{vars.nothing}}' } });
    expect(overRest.status).toBe(400);
    expect(overRest.body.error.message).toContain('template.prompt: {{vars.nothing}} names variable "nothing"');
  });

  it('takes versions with large demos, and refuses one that would take the entry over the KV max payload', async () => {
    const step = { pipeline: 'summarize-each', step: 'summarize' };
    // About 200 KiB of demos each: over the gateway's 64 KiB for small calls, within a version's bounds.
    const demos = Array.from({ length: 40 }, (_, index) => ({ input: `Document ${index}: ${'lorem ipsum '.repeat(200)}`, output: `Summary ${index}: ${'dolor '.repeat(200)}` }));
    let refused: ClientError | undefined;
    const published: string[] = [];
    for (let attempt = 0; attempt < 8 && !refused; attempt++) {
      const answer = await stack.gateway
        .publishPromptVersion(publishRequest({ ...step, template: { prompt: 'Summarize {{loop.item}}', system: '', demos } }), bearer(writer.secret))
        .catch((error: unknown) => error);
      if (answer instanceof ClientError) refused = answer;
      else published.push((answer as proto.PublishPromptVersionResponse).version!.id);
    }
    expect(published.length).toBeGreaterThanOrEqual(2);
    expect(refused?.code).toBe(Status.INVALID_ARGUMENT);
    expect(refused?.details).toMatch(/the step's prompt entry cannot be stored: .*exceeds the server's max payload/);
    const listed = await stack.gateway.listPromptVersions(step, bearer(reader.secret));
    expect(listed.steps[0]!.versions.map((version) => version.id)).toEqual(published);
    const tooMany = await failure(
      stack.gateway.publishPromptVersion(publishRequest({ ...step, template: { prompt: 'Summarize {{loop.item}}', system: '', demos: Array.from({ length: 51 }, () => ({ input: 'a', output: 'b' })) } }), bearer(writer.secret)),
    );
    expect(tooMany.details).toContain('template.demos: 51 demos is over the limit of 50');
  });

  it('guards a protected baseline: another version needs an admin key', async () => {
    const step = { pipeline: 'analysis', step: 'analyze_code' };
    await stack.gateway.publishPromptVersion(publishRequest({ ...step, versionId: 'base', template: { prompt: 'Analyze: {{inputs.code}}', system: '', demos: [] } }), bearer(writer.secret));
    await stack.gateway.promotePromptVersion({ ...step, versionId: 'base', reason: 'baseline', expectedRevision: 0 }, bearer(writer.secret));
    await stack.gateway.setPromptRollout(proto.SetPromptRolloutRequest.fromPartial({ ...step, weights: { base: 1 }, baselineProtected: true, reason: 'protect' }), bearer(writer.secret));
    const next = await stack.gateway.publishPromptVersion(
      publishRequest({ ...step, versionId: 'next', template: { prompt: 'Look at {{inputs.code}}', system: '', demos: [] }, rolloutWeight: 0.5 }),
      bearer(writer.secret),
    );
    expect(next.step!.rollout).toMatchObject({ baseline: 'base', baselineProtected: true, weights: { base: 0.5, next: 0.5 } });
    const promote = await failure(stack.gateway.promotePromptVersion({ ...step, versionId: 'next', reason: '', expectedRevision: 0 }, bearer(writer.secret)));
    expect(promote.code).toBe(Status.PERMISSION_DENIED);
    expect(promote.details).toContain('protected');
    const rollbackTo = await failure(stack.gateway.rollbackPrompt({ ...step, toVersion: 'yaml', reason: '', expectedRevision: 0 }, bearer(writer.secret)));
    expect(rollbackTo.code).toBe(Status.PERMISSION_DENIED);
    const unprotect = await failure(stack.gateway.setPromptRollout(proto.SetPromptRolloutRequest.fromPartial({ ...step, weights: { base: 1 }, baselineProtected: false }), bearer(writer.secret)));
    expect(unprotect.code).toBe(Status.PERMISSION_DENIED);
    // Ending the rollout on the baseline is always allowed; an admin may move the baseline.
    const ended = await stack.gateway.rollbackPrompt({ ...step, toVersion: '', reason: 'stop the test', expectedRevision: 0 }, bearer(writer.secret));
    expect(ended.step!.rollout).toMatchObject({ baseline: 'base', weights: { base: 1 } });
    const byAdmin = await stack.gateway.promotePromptVersion({ ...step, versionId: 'next', reason: 'admin says so', expectedRevision: 0 }, bearer(ADMIN_KEY));
    expect(byAdmin.step!.rollout).toMatchObject({ baseline: 'next', baselineProtected: true });
  });

  it('lets one of two writers with the same expected revision win, and lands 20 concurrent publishes', async () => {
    const step = { pipeline: 'generate', step: 'draft' };
    const first = await stack.gateway.publishPromptVersion(publishRequest({ ...step, template: { prompt: 'Draft {{inputs.spec}}', system: '', demos: [] } }), bearer(writer.secret));
    const revision = first.step!.revision;
    const both = await Promise.allSettled(
      ['left', 'right'].map((versionId) =>
        stack.gateway.publishPromptVersion(publishRequest({ ...step, versionId, template: { prompt: `${versionId}: {{inputs.spec}}`, system: '', demos: [] }, expectedRevision: revision }), bearer(writer.secret)),
      ),
    );
    expect(both.filter((outcome) => outcome.status === 'fulfilled')).toHaveLength(1);
    const lost = both.find((outcome): outcome is PromiseRejectedResult => outcome.status === 'rejected')!.reason as ClientError;
    expect(lost.code).toBe(Status.ABORTED);
    expect(lost.details).toMatch(new RegExp(`is at revision \\d+, not ${revision}`));

    const twenty = await Promise.all(
      Array.from({ length: 20 }, (_, index) =>
        stack.gateway.publishPromptVersion(publishRequest({ ...step, template: { prompt: `Variant ${index}: {{inputs.spec}}`, system: '', demos: [] }, reason: `variant ${index}` }), bearer(writer.secret)),
      ),
    );
    const ids = twenty.map((answer) => answer.version!.id);
    expect(new Set(ids).size).toBe(20);
    const listed = await stack.gateway.listPromptVersions(step, bearer(reader.secret));
    expect(listed.steps[0]!.versions).toHaveLength(22);
    const history = await eventually('the history has all 22 publishes', async () => {
      const answer = await stack.gateway.getPromptHistory({ ...step, pageSize: 10, pageToken: '' }, bearer(reader.secret));
      const all = [...answer.changes];
      let token = answer.nextPageToken;
      while (token) {
        const page = await stack.gateway.getPromptHistory({ ...step, pageSize: 10, pageToken: token }, bearer(reader.secret));
        all.push(...page.changes);
        token = page.nextPageToken;
      }
      return all.length === 22 ? all : undefined;
    });
    expect(new Set(history.map((change) => change.version))).toEqual(new Set([first.version!.id, ...ids, ...both.flatMap((outcome) => (outcome.status === 'fulfilled' ? [outcome.value.version!.id] : []))]));
    // Newest first: revisions go down.
    const revisions = history.map((change) => change.revision);
    expect([...revisions].sort((a, b) => b - a)).toEqual(revisions);
  });

  it('runs candidates for one run, tagged "candidate", and refuses them where they cannot go', async () => {
    const name = `candidates-${randomBytes(3).toString('hex')}`;
    const request = (fields: Partial<proto.ExecutePipelineRequest>) => proto.ExecutePipelineRequest.fromPartial({ inlineYaml: ANSWER_YAML(name), inputs: { message: 'the question' }, ...fields });
    const plain = await stack.gateway.executePipeline(request({}), bearer(writer.secret));
    expect(plain.steps[0]!.promptVersion).toBe('yaml');
    const candidate = await stack.gateway.executePipeline(
      request({ promptCandidates: { answer: { prompt: 'Candidate wording about {{inputs.message}}', system: '', demos: [{ input: 'example in', output: 'example out' }] } } }),
      bearer(writer.secret),
    );
    expect(candidate.steps[0]!.promptVersion).toBe('candidate');
    expect(candidate.result).toContain('Candidate wording about the question');
    expect(candidate.result).not.toBe(plain.result);
    const both = await failure(
      stack.gateway.executePipeline(request({ promptOverrides: { answer: 'x' }, promptCandidates: { answer: { prompt: 'y', system: '', demos: [] } } }), bearer(writer.secret)),
    );
    expect(both.code).toBe(Status.INVALID_ARGUMENT);
    expect(both.details).toContain('prompt_candidates.answer');
    const unknown = await failure(stack.gateway.executePipeline(request({ promptCandidates: { ghost: { prompt: 'y', system: '', demos: [] } } }), bearer(writer.secret)));
    expect(unknown.code).toBe(Status.INVALID_ARGUMENT);
    expect(unknown.details).toContain('prompt_candidates.ghost');
    const badReference = await failure(stack.gateway.executePipeline(request({ promptCandidates: { answer: { prompt: '{{inputs.other}}', system: '', demos: [] } } }), bearer(writer.secret)));
    expect(badReference.details).toContain('prompt_candidates.answer.prompt');
  });

  it("records the key's name, never the client's own caller metadata, and the monitor's decisions as the guard's", async () => {
    const step = { pipeline: 'refactor', step: 'summary' };
    // A client claiming another name and the admin scope: the gateway replaces both.
    const spoofed = Metadata({ authorization: `Bearer ${writer.secret}`, 'x-elexirion-caller': 'mallory', 'x-elexirion-caller-admin': 'true' });
    const published = await stack.gateway.publishPromptVersion(publishRequest({ ...step, versionId: 's1', template: { prompt: 'Summarize {{steps.plan.output}}', system: '', demos: [] }, rolloutWeight: 0.5 }), { metadata: spoofed });
    expect(published.version!.createdBy).toBe(writer.name);
    // Only the protection: the rollout stays as it is.
    const protectedStep = await stack.gateway.setPromptRollout(proto.SetPromptRolloutRequest.fromPartial({ ...step, baselineProtected: true }), { metadata: spoofed });
    expect(protectedStep.step!.rollout).toMatchObject({ baseline: 'yaml', weights: { yaml: 0.5, s1: 0.5 }, candidate: 's1', baselineProtected: true });
    const denied = await failure(stack.gateway.promotePromptVersion({ ...step, versionId: 's1', reason: '', expectedRevision: 0 }, { metadata: spoofed }));
    expect(denied.code).toBe(Status.PERMISSION_DENIED);

    // The monitor calls the executor itself (the all-in-one process serves it on the same port).
    const executor = createClient(proto.ExecutorDefinition, stack.channel);
    const asMonitor = { metadata: Metadata({ 'x-elexirion-caller': 'monitor', 'x-elexirion-guard': 'true' }) };
    const refused = await failure(executor.promotePromptVersion({ ...step, versionId: 's1', reason: 'guard: better', expectedRevision: 0 }, asMonitor));
    expect(refused.code).toBe(Status.PERMISSION_DENIED);
    const rolledBack = await executor.rollbackPrompt({ ...step, toVersion: '', reason: 'guard: worse (p=0.01)', expectedRevision: 0 }, asMonitor);
    expect(rolledBack.step!.rollout).toMatchObject({ baseline: 'yaml', weights: { yaml: 1 }, candidate: '' });
    const history = await eventually('the guard rollback in the history', async () => {
      const answer = await stack.gateway.getPromptHistory({ ...step, pageSize: 0, pageToken: '' }, bearer(reader.secret));
      return answer.changes[0]?.action === 'guard_rollback' ? answer.changes : undefined;
    });
    expect(history[0]).toMatchObject({ by: 'monitor', version: 's1', reason: 'guard: worse (p=0.01)', before: { candidate: 's1' } });
    expect(history.map((change) => change.by)).toEqual(['monitor', writer.name, writer.name]);

    // A key named like the monitor, claiming the guard's marker, is a person all the same.
    const impostor = await createKey('monitor', ['pipelines', 'prompts:write']);
    await stack.gateway.setPromptRollout(proto.SetPromptRolloutRequest.fromPartial({ ...step, weights: { yaml: 0.5, s1: 0.5 }, candidate: 's1', reason: 'again' }), bearer(writer.secret));
    await stack.gateway.rollbackPrompt({ ...step, toVersion: '', reason: 'by hand', expectedRevision: 0 }, { metadata: Metadata({ authorization: `Bearer ${impostor.secret}`, 'x-elexirion-guard': 'true' }) });
    const manual = await eventually('the impostor rollback in the history', async () => {
      const answer = await stack.gateway.getPromptHistory({ ...step, pageSize: 0, pageToken: '' }, bearer(reader.secret));
      return answer.changes[0]?.reason === 'by hand' ? answer.changes[0] : undefined;
    });
    expect(manual).toMatchObject({ action: 'rollback', by: 'monitor' });
  });

  it('answers GetPipeline, streams candidates, and lists the routes in /openapi.json', async () => {
    const pipeline = await stack.gateway.getPipeline({ pipeline: 'general', inlineYaml: '' }, bearer(reader.secret));
    expect(pipeline.yaml).toContain('name: general');
    expect(pipeline.stepModels.map((model) => model.step)).toContain('answer');
    const overRest = await rest('GET', '/v1/pipelines/general', reader.secret);
    expect(overRest.status).toBe(200);
    expect(overRest.body.summary.name).toBe('general');

    const name = `streamed-${randomBytes(3).toString('hex')}`;
    const events = stack.gateway.executePipelineStream(
      proto.ExecutePipelineRequest.fromPartial({ inlineYaml: ANSWER_YAML(name), inputs: { message: 'streamed question' }, promptCandidates: { answer: { prompt: 'Streamed candidate on {{inputs.message}}' } } }),
      bearer(writer.secret),
    );
    let text = '';
    const versions: string[] = [];
    for await (const event of events) {
      if (event.textDelta) text += event.textDelta.text;
      if (event.stepFinished) versions.push(event.stepFinished.promptVersion);
    }
    expect(text).toContain('Streamed candidate on streamed question');
    expect(versions).toEqual(['candidate']);

    const document = (await (await fetch(`http://127.0.0.1:${stack.ports.gatewayHttp}/openapi.json`)).json()) as { paths: Record<string, Record<string, unknown>> };
    expect(Object.keys(document.paths['/v1/prompts']!)).toContain('get');
    for (const action of ['versions', 'rollout', 'promote', 'rollback']) expect(Object.keys(document.paths[`/v1/prompts/{pipeline}/{step}/${action}`]!)).toContain('post');
    expect(Object.keys(document.paths['/v1/prompts/{pipeline}/history']!)).toContain('get');
    expect(Object.keys(document.paths['/v1/pipelines/{pipeline}']!)).toContain('get');
  });

  it("keeps a run's candidates in its checkpoint, and a resume takes none of its own", async () => {
    const executor = createClient(proto.ExecutorDefinition, stack.channel);
    const name = `resumable-${randomBytes(3).toString('hex')}`;
    const yaml = twoStepPipeline(name);
    const candidate = { prompt: 'Second candidate: {{inputs.message}}', system: 'Checked.', demos: [{ input: 'q', output: 'a' }] };
    const run = await executor.execute(proto.ExecuteRequest.fromPartial({ inlineYaml: yaml, inputs: { message: 'keep me' }, promptCandidates: { second: candidate } }));
    expect(run.steps.map((step) => step.promptVersion)).toEqual(['yaml', 'candidate']);
    const connection = await connect({ servers: nats.url });
    try {
      const stored = await eventually('the final checkpoint', async () => {
        const entry = await (await new Kvm(connection).open('elexirion_checkpoints')).get(run.runId);
        const value = entry?.operation === 'PUT' ? (JSON.parse(entry.string()) as { status: string; promptCandidates?: unknown }) : undefined;
        return value?.status === 'completed' ? value : undefined;
      });
      expect(stored.promptCandidates).toEqual({ second: candidate });
    } finally {
      await connection.close();
    }
    const refused = await failure(executor.execute(proto.ExecuteRequest.fromPartial({ resumeRunId: run.runId, promptCandidates: { second: candidate } })));
    expect(refused.code).toBe(Status.INVALID_ARGUMENT);
    expect(refused.details).toContain('prompt_candidates: a resumed run keeps the candidates it started with');
  });

  it("publishes a failed run's steps, the failed one with its prompt version, and a prompt event per change", async () => {
    const listener = await collectEvents(nats.url);
    try {
      const name = `fails-${randomBytes(3).toString('hex')}`;
      const yaml = twoStepPipeline(name);
      // The candidate reads a JSON field of an answer that is not JSON: the step fails when it renders.
      const failed = await failure(
        stack.gateway.executePipeline(
          proto.ExecutePipelineRequest.fromPartial({ inlineYaml: yaml, inputs: { message: 'hello' }, promptCandidates: { second: { prompt: 'Use {{steps.first.json.field}}', system: '', demos: [] } } }),
          bearer(writer.secret),
        ),
      );
      expect(failed.details).toContain('second');
      const run = await waitFor('the failed run event', () => listener.events.find((item) => item.event.executorRun?.pipeline === name)?.event);
      expect(run.status).toBe('INVALID_ARGUMENT');
      expect(run.executorRun!.errorMessage).toContain('second');
      expect(run.executorRun!.steps.map((step) => [step.name, step.status, step.promptVersion])).toEqual([
        ['first', 'completed', 'yaml'],
        ['second', 'failed', 'candidate'],
      ]);
      // What the steps that ran used (the first step's call) is told too.
      expect(run.executorRun!.usage!.inputTokens).toBeGreaterThan(0);

      const published = await stack.gateway.publishPromptVersion(publishRequest({ pipeline: 'refactor', step: 'plan', template: { prompt: 'Plan for {{inputs.code}}', system: '', demos: [] }, reason: 'event' }), bearer(writer.secret));
      const event = await waitFor('the prompt event', () => listener.events.find((item) => item.event.executorPrompt?.change?.pipeline === 'refactor')?.event);
      expect(event.kind).toBe('prompt');
      expect(event.executorPrompt!.change).toMatchObject({ action: 'publish', step: 'plan', by: writer.name, reason: 'event', version: published.version!.id, revision: published.step!.revision });
    } finally {
      await listener.close();
    }
  });
});
