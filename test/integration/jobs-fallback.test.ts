// A submitted job whose run fails with a failure class gets its emergent fallback, as an inline
// chat does: real nats-server, provider (fake Anthropic and Gemini upstreams), executor and agent.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { proto } from '@elexirion/kit';
import {
  jobEnded,
  jobEvents,
  startJobsStack,
  stopAll,
  type AgentUnderTest,
  type JobsStack,
  type ProviderUnderTest,
} from '@elexirion/testing';

const { FailureClass, JobStatus } = proto;

// On the "claude" alias: anthropic only, so an overloaded anthropic fails the step.
const PLAIN = `
workflow:
  name: plain
  inputs:
    message: { type: string, required: true }
  steps:
    - { name: answer, type: claude, prompt: "{{inputs.message}}" }
`;

let stack: JobsStack;
let provider: ProviderUnderTest;
let agent: AgentUnderTest;

beforeAll(async () => {
  stack = await startJobsStack({ pipelines: { plain: PLAIN }, agents: ['agent-fallback'], agentEnv: { AGENT_ROUTES_FILE: 'none', AGENT_DEFAULT_PIPELINE: 'plain' } });
  provider = stack.provider;
  agent = stack.agents[0]!;
});

afterAll(async () => {
  await stack?.stop();
  await stopAll();
});

afterEach(() => {
  for (const fake of Object.values(provider.fakes)) fake.reset();
});

describe('a submitted job whose run fails with a failure class', () => {
  it('overloaded (every target 529): ends SUCCEEDED through its fallback on another vendor\'s chain, and says so', async () => {
    provider.fakes.anthropic.setDefault({ status: 529, errorMessage: 'Overloaded' });
    provider.fakes.gemini.script({ text: 'Gemini answered the job.' });
    const { job } = await agent.client.submitJob({ pipeline: 'plain', message: 'Hello there' });
    const done = await jobEnded(agent, job!.jobId);
    expect(done).toMatchObject({ status: JobStatus.JOB_STATUS_SUCCEEDED, output: 'Gemini answered the job.', fallbackUsed: true, errorCode: '', error: '' });
    expect(done.fallback).toMatchObject({ failureClass: FailureClass.FAILURE_CLASS_OVERLOADED, pipeline: 'plain--fallback-overloaded', succeeded: true });
    expect(done.fallback!.originalError).toMatch(/^answer: UNAVAILABLE: plain: step "answer": every target of "claude" failed/);
    expect(done.fallback!.yaml).toContain('name: plain--fallback-overloaded');
    expect(done.fallback!.yaml).toContain('model: gemini');
    expect(provider.fakes.gemini.requests).toHaveLength(1);

    // The events: the step failed with its class, the fallback was tried, the job succeeded.
    const events = await jobEvents(agent, job!.jobId);
    expect(events.find((event) => event.stepFailed)?.stepFailed).toMatchObject({ step: 'answer', failureClass: FailureClass.FAILURE_CLASS_OVERLOADED });
    expect(events.some((event) => event.statusChanged?.status === JobStatus.JOB_STATUS_RUNNING && /trying its emergent fallback/.test(event.statusChanged.detail))).toBe(true);
    const last = events.at(-1)!.statusChanged!;
    expect(last.status).toBe(JobStatus.JOB_STATUS_SUCCEEDED);
    expect(last.job).toMatchObject({ fallbackUsed: true, fallback: { pipeline: 'plain--fallback-overloaded', succeeded: true } });
  });

  it('ends FAILED naming both failures when its fallback fails too', async () => {
    provider.fakes.anthropic.setDefault({ status: 529, errorMessage: 'Overloaded' });
    provider.fakes.gemini.setDefault({ status: 401, errorMessage: 'bad key' });
    const { job } = await agent.client.submitJob({ pipeline: 'plain', message: 'Hello there' });
    const done = await jobEnded(agent, job!.jobId);
    expect(done).toMatchObject({ status: JobStatus.JOB_STATUS_FAILED, errorCode: 'FAILED_PRECONDITION', fallbackUsed: true });
    expect(done.error).toMatch(/^answer: UNAVAILABLE: plain: step "answer": every target of "claude" failed: anthropic\/claude-sonnet-5: .*; then the fallback plain--fallback-overloaded failed too: FAILED_PRECONDITION: plain--fallback-overloaded: step "answer": every target of "gemini" failed/);
    expect(done.fallback).toMatchObject({ failureClass: FailureClass.FAILURE_CLASS_OVERLOADED, pipeline: 'plain--fallback-overloaded', succeeded: false });
    const last = (await jobEvents(agent, job!.jobId)).at(-1)!.statusChanged!;
    expect(last.status).toBe(JobStatus.JOB_STATUS_FAILED);
    expect(last.detail).toBe(done.error);
  });
});
