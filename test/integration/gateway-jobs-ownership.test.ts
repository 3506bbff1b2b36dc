// Job ownership at the gateway: a job belongs to the key that submitted it; another key that is
// not admin cannot get, watch, cancel or list it (NOT_FOUND, as for an unknown id), an admin key
// sees every job. The gateway's job calls are called here as the auth middleware calls them, with
// the caller on the call's context, against a real agent process (nats-server, provider with a fake
// Anthropic upstream, executor): the keys themselves are another suite's subject.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Status } from 'nice-grpc';
import { ServerError, proto } from '@elexirion/kit';
import { eventually, gate, startJobsStack, stopAll, type JobsStack } from '@elexirion/testing';
import type { Caller } from '../../services/gateway/src/caller.js';
import { jobCalls } from '../../services/gateway/src/calls/jobs.js';
import { callerContext, startGateway, type GatewayUnderTest } from './gateway-jobs-support.js';

const { JobStatus } = proto;

const ONE_STEP = `
workflow:
  name: one-step
  inputs:
    message: { type: string, required: true }
  steps:
    - { name: answer, type: claude, prompt: "{{inputs.message}}" }
`;

const alice: Caller = { keyId: 'k_alice000001', name: 'alice-ci', scopes: ['jobs'], admin: false };
const bob: Caller = { keyId: 'k_bob00000001', name: 'bob-laptop', scopes: ['jobs'], admin: false };
const admin: Caller = { keyId: 'k_admin000001', name: 'ops', scopes: ['admin'], admin: true };

let stack: JobsStack;
let gateway: GatewayUnderTest;
let calls: ReturnType<typeof jobCalls>;

beforeAll(async () => {
  stack = await startJobsStack({ pipelines: { 'one-step': ONE_STEP }, agents: ['agent-ownership'], agentEnv: { AGENT_ROUTES_FILE: 'none', AGENT_DEFAULT_PIPELINE: 'one-step' } });
  gateway = await startGateway(stack);
  const { context } = gateway;
  // The gateway's own context and clients, as createGateway builds its modules' deps.
  calls = jobCalls({ context, agent: context.clients.get('agent'), executor: context.clients.get('executor'), provider: context.clients.get('provider'), monitor: context.clients.get('monitor') });
});

afterAll(async () => {
  await gateway?.stop();
  await stack?.stop();
  await stopAll();
});

async function refusal(call: Promise<unknown>): Promise<{ code: Status; details: string }> {
  const error = await call.then(
    () => undefined,
    (thrown: unknown) => thrown,
  );
  expect(error).toBeInstanceOf(Error);
  return { code: (error as ServerError).code, details: (error as ServerError).details };
}

async function watchAll(caller: Caller | undefined, jobId: string, afterSequence = 0): Promise<proto.JobEvent[]> {
  const events: proto.JobEvent[] = [];
  for await (const { event } of calls.watchJob({ jobId, afterSequence }, callerContext(caller))) events.push(proto.JobEvent.fromPartial(event!));
  return events;
}

async function listIds(caller: Caller | undefined, request: Partial<proto.ListJobsRequest> = {}): Promise<string[]> {
  const { jobs } = proto.ListJobsResponse.fromPartial(await calls.listJobs(proto.ListJobsRequest.fromPartial(request), callerContext(caller)));
  return jobs.map((job) => job.jobId);
}

async function submit(caller: Caller | undefined, request: Partial<proto.SubmitJobRequest>): Promise<proto.SubmitJobResponse> {
  return proto.SubmitJobResponse.fromPartial(await calls.submitJob(proto.SubmitJobRequest.fromPartial({ pipeline: 'one-step', ...request }), callerContext(caller)));
}

describe('job ownership at the gateway', () => {
  it('keeps a key\'s jobs to that key: another key gets NOT_FOUND as for an unknown id, an admin key sees them all', async () => {
    const fake = stack.provider.fakes.anthropic;
    fake.reset();
    const release = gate();
    // Both jobs wait for the test (either may reach the upstream first), so alice's is still running when she cancels it.
    fake.script({ until: release.promise, text: 'held answer' }, { until: release.promise, text: 'held answer' });
    // The owner a client claims is replaced by the key's id.
    const { job: submitted } = await submit(alice, { message: 'alice asks', owner: bob.keyId });
    expect(submitted!.owner).toBe(alice.keyId);
    const jobId = submitted!.jobId;
    const { job: bobs } = await submit(bob, { message: 'bob asks' });
    expect(bobs!.owner).toBe(bob.keyId);

    expect((await calls.getJob({ jobId }, callerContext(alice))).job).toMatchObject({ jobId, owner: alice.keyId });
    expect((await calls.getJob({ jobId }, callerContext(admin))).job).toMatchObject({ jobId, owner: alice.keyId });
    // Keys off: no caller, every job.
    expect((await calls.getJob({ jobId }, callerContext(undefined))).job).toMatchObject({ jobId });

    // Bob is told what an unknown id tells him, word for word.
    const unknownId = '3f0a1b6e-0000-4000-8000-000000000000';
    const unknown = await refusal(calls.getJob({ jobId: unknownId }, callerContext(bob)));
    const hidden = await refusal(calls.getJob({ jobId }, callerContext(bob)));
    expect(hidden).toEqual({ code: Status.NOT_FOUND, details: unknown.details.replace(unknownId, jobId) });
    expect(await refusal(watchAll(bob, jobId))).toEqual(hidden);
    expect(await refusal(calls.cancelJob(proto.CancelJobRequest.fromPartial({ jobId, reason: 'bob tries' }), callerContext(bob)))).toEqual(hidden);
    // ... and his cancel did nothing.
    expect((await calls.getJob({ jobId }, callerContext(alice))).job!.status).not.toBe(JobStatus.JOB_STATUS_CANCELLED);

    // Lists: each key its own, whatever owner it asks for; admin all, or one owner's.
    expect(await listIds(alice)).toContain(jobId);
    expect(await listIds(alice)).not.toContain(bobs!.jobId);
    expect(await listIds(bob)).toEqual([bobs!.jobId]);
    expect(await listIds(bob, { owner: alice.keyId })).toEqual([bobs!.jobId]);
    expect(await listIds(admin)).toEqual(expect.arrayContaining([jobId, bobs!.jobId]));
    expect(await listIds(admin, { owner: alice.keyId })).toEqual([jobId]);
    expect(await listIds(undefined, { owner: bob.keyId })).toEqual([bobs!.jobId]);

    // Alice cancels her job: the record names her key, not what the client said.
    const { job: cancelled } = await calls.cancelJob(proto.CancelJobRequest.fromPartial({ jobId, requestedBy: 'admin', reason: 'not needed' }), callerContext(alice));
    expect(cancelled).toMatchObject({ status: JobStatus.JOB_STATUS_CANCELLED, cancelledBy: 'alice-ci', error: 'cancelled by alice-ci: not needed' });
    release.open();
    // Her watch sees the end; the last event carries the record, owner included.
    const events = await watchAll(alice, jobId);
    expect(events.at(-1)!.statusChanged).toMatchObject({ status: JobStatus.JOB_STATUS_CANCELLED, job: { owner: alice.keyId, cancelledBy: 'alice-ci' } });
    await eventually('bob\'s job to end', async () => {
      const { job } = await calls.getJob({ jobId: bobs!.jobId }, callerContext(bob));
      return job!.status === JobStatus.JOB_STATUS_SUCCEEDED ? job : undefined;
    }, 30_000);
  });

  it('keeps idempotency keys per owner: the same key from another owner is a new job, not the first owner\'s', async () => {
    stack.provider.fakes.anthropic.reset();
    const first = await submit(alice, { message: 'once', idempotencyKey: 'nightly-report-2026-12-01' });
    const again = await submit(alice, { message: 'once', idempotencyKey: 'nightly-report-2026-12-01' });
    expect(again).toMatchObject({ deduplicated: true, job: { jobId: first.job!.jobId, owner: alice.keyId } });
    const other = await submit(bob, { message: 'once', idempotencyKey: 'nightly-report-2026-12-01' });
    expect(other.deduplicated).toBe(false);
    expect(other.job).toMatchObject({ owner: bob.keyId });
    expect(other.job!.jobId).not.toBe(first.job!.jobId);
  });
});
