// Checkpoint writes while NATS goes away under a running executor: the run goes on, and what
// was not written is logged and counted in elexirion_executor_checkpoints_skipped_total.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Kvm } from '@nats-io/kv';
import { connect } from '@nats-io/transport-node';
import { proto } from '@elexirion/kit';
import { eventually, freePort, gate, startExecutor, startNats, startProvider, stopAll, waitFor, waitForState, type ExecutorUnderTest, type NatsServer, type ProviderUnderTest } from '@elexirion/testing';

let provider: ProviderUnderTest;
let nats: NatsServer | undefined;
let executor: ExecutorUnderTest | undefined;
const stores: string[] = [];

beforeAll(async () => {
  provider = await startProvider();
});

afterEach(async () => {
  await executor?.stop();
  executor = undefined;
  if (nats) {
    nats.process.child.kill('SIGCONT'); // a test may leave it stopped
    await nats.stop();
  }
  nats = undefined;
  for (const store of stores.splice(0)) rmSync(store, { recursive: true, force: true });
  provider.fakes.anthropic.reset();
});

afterAll(async () => {
  await provider?.stop();
  await stopAll();
});

const threeSteps = `
workflow:
  name: three-steps
  steps:
    - { name: first, type: claude, prompt: "one" }
    - { name: second, type: claude, prompt: "two after {{steps.first.output}}" }
    - { name: third, type: claude, prompt: "three after {{steps.second.output}}" }
`;

async function start(env: NodeJS.ProcessEnv = {}, natsPort?: number, store?: string): Promise<ExecutorUnderTest> {
  nats = await startNats(natsPort, store);
  executor = await startExecutor({ providerPort: provider.grpcPort, natsUrl: nats.url, env: { TELEMETRY_EVENTS: 'false', ...env } });
  await waitForState(executor);
  return executor;
}

async function skipped(reason: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${executor!.httpPort}/metrics`)).text();
  const match = new RegExp(`^elexirion_executor_checkpoints_skipped_total\\{reason="${reason}"\\} (\\d+)$`, 'm').exec(text);
  if (!match) throw new Error(`no elexirion_executor_checkpoints_skipped_total{reason="${reason}"} in /metrics`);
  return Number(match[1]);
}

async function natsState(): Promise<string> {
  const body = (await (await fetch(`http://127.0.0.1:${executor!.httpPort}/readyz`)).json()) as { nats: { state: string } };
  return body.nats.state;
}

/** The executor's log records that say a checkpoint of the run was skipped, once there are `count` (its output comes through a pipe). */
function skipLogs(runId: string, count: number): Promise<Record<string, unknown>[]> {
  const read = () =>
    executor!.process
      .output()
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .filter((record) => record.run_id === runId && String(record.msg).startsWith('checkpoint skipped'));
  return waitFor(`${count} "checkpoint skipped" log records`, () => {
    const records = read();
    return records.length >= count ? records : undefined;
  });
}

describe('checkpoint writes with NATS away', () => {
  it('skip at once while NATS is down: the run finishes, the log and the counter say what was skipped, and a resume starts after the last written one', async () => {
    const port = await freePort();
    const store = mkdtempSync(join(tmpdir(), 'elexirion-nats-'));
    stores.push(store);
    await start({}, port, store);
    const secondMayAnswer = gate();
    provider.fakes.anthropic.script({ text: 'one' }, { text: 'two', until: secondMayAnswer.promise }, { text: 'three' });
    const runId = `outage-${Date.now()}`;
    const running = executor!.client.execute({ inlineYaml: threeSteps, runId });

    // The second step is at the vendor, so the checkpoint after the first was written.
    await waitFor('the second step to reach the vendor', () => provider.fakes.anthropic.requests.length >= 2);
    await nats!.stop();
    await eventually('the executor to see NATS gone', async () => ((await natsState()) === 'connected' ? undefined : true));
    secondMayAnswer.open();

    const result = await running;
    expect(result.steps.map((step) => [step.name, step.status])).toEqual([
      ['first', 'completed'],
      ['second', 'completed'],
      ['third', 'completed'],
    ]);
    expect(await skipped('not_connected')).toBe(2);
    expect(await skipped('timeout')).toBe(0);
    expect((await skipLogs(runId, 2)).map((record) => [record.reason, record.run_status, record.last_step])).toEqual([
      ['not_connected', 'running', 'second'],
      ['not_connected', 'completed', 'third'],
    ]);

    // NATS back with its store: the run's checkpoint is the one after "first", so a resume runs
    // "second" and "third" again.
    nats = await startNats(port, store);
    await waitForState(executor!, 20_000);
    provider.fakes.anthropic.script({ text: 'two again' }, { text: 'three again' });
    const resumed = await executor!.client.execute({ resumeRunId: runId });
    expect(resumed).toMatchObject({ resumedSteps: 1, output: 'three again' });
    expect(provider.fakes.anthropic.requests).toHaveLength(5);
  });

  it('give up a write NATS does not answer after EXECUTOR_CHECKPOINT_TIMEOUT_MS, and the run goes on', async () => {
    await start({ EXECUTOR_CHECKPOINT_TIMEOUT_MS: '200' });
    const secondMayAnswer = gate();
    provider.fakes.anthropic.script({ text: 'one' }, { text: 'two', until: secondMayAnswer.promise }, { text: 'three' });
    const runId = `frozen-${Date.now()}`;
    const running = executor!.client.execute({ inlineYaml: threeSteps, runId });
    await waitFor('the second step to reach the vendor', () => provider.fakes.anthropic.requests.length >= 2);
    // Stopped, not gone: the connection stays up and nothing answers on it.
    nats!.process.child.kill('SIGSTOP');
    secondMayAnswer.open();

    expect((await running).output).toBe('three');
    expect(await skipped('timeout')).toBe(2);
    expect(await skipped('not_connected')).toBe(0);
    expect((await skipLogs(runId, 2)).map((record) => [record.reason, record.last_step])).toEqual([
      ['timeout', 'second'],
      ['timeout', 'third'],
    ]);
  });

  it('give up a write in flight the moment the connection drops, not at its timeout', async () => {
    await start({ EXECUTOR_CHECKPOINT_TIMEOUT_MS: '600000' });
    const secondMayAnswer = gate();
    provider.fakes.anthropic.script({ text: 'one' }, { text: 'two', until: secondMayAnswer.promise }, { text: 'three' });
    const runId = `dropped-${Date.now()}`;
    const events: proto.ExecuteStreamResponse[] = [];
    const finished = (async () => {
      for await (const event of executor!.client.executeStream({ request: proto.ExecuteRequest.fromPartial({ inlineYaml: threeSteps, runId }) })) events.push(event);
    })();
    await waitFor('the second step to reach the vendor', () => provider.fakes.anthropic.requests.length >= 2);
    nats!.process.child.kill('SIGSTOP');
    secondMayAnswer.open();
    // The step's result is sent before its checkpoint write starts; the write then waits on a
    // server that does not answer, until the connection goes.
    await waitFor('the second step to finish', () => events.some((event) => event.stepFinished?.name === 'second'));
    nats!.process.child.kill('SIGKILL');

    await finished;
    expect(events.at(-1)?.runFinished?.output).toBe('three');
    expect(await skipped('not_connected')).toBe(2);
    expect(await skipped('timeout')).toBe(0);
  });

  it('write the final state of a run of several steps, which a resume gives back without calling the provider; a one-step run writes none', async () => {
    await start();
    provider.fakes.anthropic.script({ text: 'first answer' }, { text: 'second answer' }, { text: 'only answer' });
    const runId = `final-${Date.now()}`;
    const twoSteps = 'workflow:\n  name: two-steps\n  steps:\n    - { name: first, type: claude, prompt: "hi" }\n    - { name: second, type: claude, prompt: "{{ steps.first.output }}" }\n';
    expect((await executor!.client.execute({ inlineYaml: twoSteps, runId })).output).toBe('second answer');
    const oneStepRunId = `${runId}-one`;
    const oneStep = 'workflow:\n  name: one-step\n  steps:\n    - { name: only, type: claude, prompt: "hi" }\n';
    expect((await executor!.client.execute({ inlineYaml: oneStep, runId: oneStepRunId })).output).toBe('only answer');

    const connection = await connect({ servers: nats!.url });
    try {
      const bucket = await new Kvm(connection).open('elexirion_checkpoints');
      const entry = await bucket.get(runId);
      expect(entry?.json()).toMatchObject({ runId, status: 'completed', steps: [{ name: 'first', output: 'first answer' }, { name: 'second', output: 'second answer' }] });
      expect(await bucket.get(oneStepRunId)).toBeNull();
    } finally {
      await connection.close();
    }
    const resumed = await executor!.client.execute({ resumeRunId: runId });
    expect(resumed).toMatchObject({ output: 'second answer', resumedSteps: 2 });
    expect(provider.fakes.anthropic.requests).toHaveLength(3);
    expect((await skipped('not_connected')) + (await skipped('timeout'))).toBe(0);
  });
});
