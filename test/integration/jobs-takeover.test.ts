// A job survives kill -9 of the agent replica running it: JetStream hands it to the other replica
// after the ack wait, which resumes the executor's run from its last checkpoint (the job id is the
// run id). Real nats-server, executor, provider and two agent processes; a fake Anthropic upstream.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Kvm } from '@nats-io/kv';
import { proto } from '@elexirion/kit';
import {
  connectNats,
  eventually,
  jobEnded,
  startJobsStack,
  stopAll,
  waitFor,
  type AgentUnderTest,
  type JobsStack,
  type NatsServer,
  type ProviderUnderTest,
} from '@elexirion/testing';

const threeSteps = `
workflow:
  name: slow-three
  steps:
    - { name: first, type: claude, prompt: "one" }
    - { name: second, type: claude, prompt: "two after {{steps.first.output}}" }
    - { name: third, type: claude, prompt: "three after {{steps.second.output}}" }
`;

let stack: JobsStack;
let nats: NatsServer;
let provider: ProviderUnderTest;
let agents: AgentUnderTest[] = [];

beforeAll(async () => {
  // A short ack wait: a killed replica's job is taken over within seconds.
  stack = await startJobsStack({ pipelines: { 'slow-three': threeSteps }, agents: ['agent-a', 'agent-b'], agentEnv: { AGENT_JOB_ACK_WAIT_MS: '1500' } });
  ({ nats, provider, agents } = stack);
});

afterAll(async () => {
  await stack?.stop();
  await stopAll();
});

/** The last user message of a recorded Anthropic request: which step asked. */
function promptOf(request: { body: { messages: { content: unknown }[] } }): string {
  const content = request.body.messages.at(-1)!.content;
  return typeof content === 'string' ? content : (content as { text: string }[]).map((part) => part.text).join('');
}

describe('a job whose replica is killed (kill -9) mid-run', () => {
  it('is finished by the other replica from the checkpoint: no completed step runs twice', async () => {
    const fake = provider.fakes.anthropic;
    fake.reset();
    // The second step's first call never answers: the replica running it is killed meanwhile.
    fake.script({ text: 'one' }, { hang: true }, { text: 'two' }, { text: 'three' });
    const { job: submitted } = await agents[0]!.client.submitJob({ pipeline: 'slow-three' });
    expect(submitted!.status).toBe(proto.JobStatus.JOB_STATUS_QUEUED);
    const jobId = submitted!.jobId;

    await waitFor('the second step to reach the upstream', () => fake.requests.length >= 2, 20_000);
    // Its checkpoint holds the first step (written while the second runs).
    const connection = await connectNats(nats.url);
    try {
      const checkpoints = await new Kvm(connection).open('elexirion_checkpoints');
      await eventually('the checkpoint after the first step', async () => {
        const entry = await checkpoints.get(jobId);
        return entry?.operation === 'PUT' && (entry.json() as { steps: unknown[] }).steps.length >= 1 ? true : undefined;
      });
    } finally {
      await connection.close();
    }
    const running = (await agents[0]!.client.getJob({ jobId })).job!;
    expect(running).toMatchObject({ status: proto.JobStatus.JOB_STATUS_RUNNING, deliveries: 1, currentStep: 'second' });
    const victim = agents.find((agent) => agent.name === running.replica)!;
    const survivor = agents.find((agent) => agent !== victim)!;
    victim.process.child.kill('SIGKILL');
    await victim.process.exited;

    const finished = await eventually(
      'the job to finish on the other replica',
      async () => {
        const { job } = await survivor.client.getJob({ jobId });
        return job && job.status !== proto.JobStatus.JOB_STATUS_RUNNING ? job : undefined;
      },
      30_000,
    );
    expect(finished).toMatchObject({ status: proto.JobStatus.JOB_STATUS_SUCCEEDED, deliveries: 2, replica: survivor.name, output: 'three' });
    expect(finished.resumedSteps).toBeGreaterThanOrEqual(1);
    expect(finished.steps.map((step) => step.name)).toEqual(['first', 'second', 'third']);

    // At the upstream: the first step once; the second twice, the first of which was the killed
    // replica's, aborted; the third once.
    const prompts = fake.requests.map((request) => [promptOf(request), request.abortedByClient]);
    expect(prompts).toEqual([
      ['one', false],
      ['two after one', true],
      ['two after one', false],
      ['three after two', false],
    ]);
  });

  it('is not taken by another replica while it runs longer than the ack wait: its replica signals progress', async () => {
    const fake = provider.fakes.anthropic;
    fake.reset();
    // The second step alone takes three ack waits.
    fake.script({ text: 'one' }, { text: 'two', delayMs: 4_500 }, { text: 'three' });
    // The replica left from the test before: a redelivery would come back to it, as deliveries 2.
    const alive = agents.filter((agent) => agent.process.child.signalCode === null);
    const { job } = await alive[0]!.client.submitJob({ pipeline: 'slow-three' });
    const finished = await jobEnded(alive[0]!, job!.jobId);
    expect(finished).toMatchObject({ status: proto.JobStatus.JOB_STATUS_SUCCEEDED, deliveries: 1, resumedSteps: 0 });
    expect(fake.requests).toHaveLength(3);
  });
});
