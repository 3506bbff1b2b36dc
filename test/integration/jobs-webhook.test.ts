// Completion webhooks end to end: real nats-server, provider (fake Anthropic upstream), executor
// and two agent replicas, and a loopback receiver in the test that checks each POST's signature.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { proto } from '@elexirion/kit';
import {
  eventually,
  jobEvents,
  startJobsStack,
  stopAll,
  waitFor,
  type AgentUnderTest,
  type JobsStack,
  type ProviderUnderTest,
} from '@elexirion/testing';

const { JobStatus } = proto;

const ONE_STEP = `
workflow:
  name: one-step
  inputs:
    message: { type: string, required: true }
  steps:
    - { name: answer, type: claude, prompt: "{{inputs.message}}" }
`;

interface Delivery {
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  answered: number;
}

/** A webhook receiver on loopback: records every POST and answers `status` (200 unless changed). */
async function startReceiver(): Promise<{ url: string; deliveries: Delivery[]; status: number; close(): Promise<void> }> {
  const receiver = { url: '', deliveries: [] as Delivery[], status: 200, close: async () => {} };
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const answered = receiver.status;
      receiver.deliveries.push({ path: request.url ?? '', headers: request.headers, body: Buffer.concat(chunks).toString('utf8'), answered });
      response.writeHead(answered).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  receiver.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  receiver.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return receiver;
}

/** Whether the delivery's `elexirion-signature` (t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>) is the secret's. */
function signedWith(delivery: Delivery, secret: string): boolean {
  const header = String(delivery.headers['elexirion-signature'] ?? '');
  const match = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header);
  if (!match) return false;
  const expected = createHmac('sha256', secret).update(`${match[1]}.${delivery.body}`).digest();
  return timingSafeEqual(expected, Buffer.from(match[2]!, 'hex'));
}

let stack: JobsStack;
let provider: ProviderUnderTest;
let agents: AgentUnderTest[] = [];
let receiver: Awaited<ReturnType<typeof startReceiver>>;

beforeAll(async () => {
  receiver = await startReceiver();
  // A short ack wait: a killed replica's job is redelivered within seconds.
  stack = await startJobsStack({
    pipelines: { 'one-step': ONE_STEP },
    agents: ['agent-a', 'agent-b'],
    // The receiver is on loopback, which webhooks may reach only when allowed.
    agentEnv: { AGENT_JOB_ACK_WAIT_MS: '1500', AGENT_ROUTES_FILE: 'none', AGENT_DEFAULT_PIPELINE: 'one-step', AGENT_WEBHOOK_ALLOW_PRIVATE: 'true' },
  });
  ({ provider, agents } = stack);
});

afterAll(async () => {
  await stack?.stop();
  await receiver?.close();
  await stopAll();
});

/** The job once its webhook's delivery is settled (not pending). */
function webhookSettled(agent: AgentUnderTest, jobId: string): Promise<proto.Job> {
  return eventually(
    `job ${jobId}'s webhook to be settled`,
    async () => {
      const { job } = await agent.client.getJob({ jobId });
      return job && job.webhookStatus !== '' && job.webhookStatus !== 'pending' ? job : undefined;
    },
    30_000,
  );
}

describe('a job with a completion webhook', () => {
  it('POSTs the finished job once, signed with the secret; the secret is never answered', async () => {
    const secret = `whsec-${Date.now()}-do-not-show`;
    const before = receiver.deliveries.length;
    const [a, b] = agents as [AgentUnderTest, AgentUnderTest];
    const { job } = await a.client.submitJob({ pipeline: 'one-step', message: 'notify me', webhook: { url: `${receiver.url}/hooks/jobs?token=abc`, secret } });
    const jobId = job!.jobId;
    expect(job!.webhookUrl).toBe(`${receiver.url}/hooks/jobs?token=abc`);

    const settled = await webhookSettled(b, jobId);
    expect(settled).toMatchObject({ status: JobStatus.JOB_STATUS_SUCCEEDED, webhookStatus: 'delivered', output: 'fake anthropic reply to: notify me' });
    const deliveries = receiver.deliveries.slice(before);
    expect(deliveries).toHaveLength(1);
    const [delivery] = deliveries as [Delivery];
    expect(delivery.path).toBe('/hooks/jobs?token=abc');
    expect(delivery.headers['content-type']).toBe('application/json');
    expect(delivery.headers['elexirion-job-id']).toBe(jobId);
    expect(signedWith(delivery, secret)).toBe(true);
    expect(signedWith(delivery, `${secret}-not`)).toBe(false);
    expect(JSON.parse(delivery.body)).toMatchObject({ jobId, status: 'JOB_STATUS_SUCCEEDED', output: 'fake anthropic reply to: notify me' });

    // The secret is nowhere: not in the delivery, GetJob, ListJobs nor the job's events.
    expect(delivery.body).not.toContain(secret);
    expect(JSON.stringify(proto.Job.toJSON(settled))).not.toContain(secret);
    const listed = (await a.client.listJobs({ pageSize: 500 })).jobs;
    expect(listed.some((item) => item.jobId === jobId)).toBe(true);
    expect(JSON.stringify(listed.map((item) => proto.Job.toJSON(item)))).not.toContain(secret);
    const events = await jobEvents(a, jobId);
    expect(events.at(-1)!.statusChanged!.status).toBe(JobStatus.JOB_STATUS_SUCCEEDED);
    expect(JSON.stringify(events.map((event) => proto.JobEvent.toJSON(event)))).not.toContain(secret);
  });

  it('is delivered by the replica that takes the job over when the one that finished it dies before delivering', async () => {
    const secret = 'whsec-takeover';
    const before = receiver.deliveries.length;
    // The receiver is down (503) until the replica delivering is killed: it keeps retrying, and
    // has not acknowledged the job, so JetStream redelivers it to the other replica.
    receiver.status = 503;
    const { job } = await agents[0]!.client.submitJob({ pipeline: 'one-step', message: 'take over the webhook', webhook: { url: `${receiver.url}/takeover`, secret } });
    const jobId = job!.jobId;
    await waitFor('the first (refused) delivery', () => receiver.deliveries.length > before, 20_000);
    const finished = (await agents[0]!.client.getJob({ jobId })).job!;
    expect(finished).toMatchObject({ status: JobStatus.JOB_STATUS_SUCCEEDED, webhookStatus: 'pending' });
    const victim = agents.find((agent) => agent.name === finished.replica)!;
    const survivor = agents.find((agent) => agent !== victim)!;
    victim.process.child.kill('SIGKILL');
    await victim.process.exited;
    const refused = receiver.deliveries.length - before;
    receiver.status = 200;

    const settled = await webhookSettled(survivor, jobId);
    expect(settled).toMatchObject({ status: JobStatus.JOB_STATUS_SUCCEEDED, webhookStatus: 'delivered', replica: victim.name });
    const deliveries = receiver.deliveries.slice(before);
    expect(deliveries.every((delivery) => delivery.path === '/takeover' && signedWith(delivery, secret))).toBe(true);
    // The refused ones, then the survivor's one accepted delivery.
    expect(deliveries.map((delivery) => delivery.answered)).toEqual([...Array<number>(refused).fill(503), 200]);
    expect(JSON.parse(deliveries.at(-1)!.body)).toMatchObject({ jobId, status: 'JOB_STATUS_SUCCEEDED' });
  });
});
