// The stack and its one NATS connection per process: counted on the server, and NATS stopped
// under a running stack, which keeps answering (degraded) and recovers when NATS is back.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually, natsConnectionNames, startNats, startStack, stopAll, type NatsServer, type Stack, type StackShape } from '@elexirion/testing';

let stack: Stack | undefined;
let nats: NatsServer | undefined;
const stores: string[] = [];

afterEach(async () => {
  await stack?.stop();
  stack = undefined;
  await nats?.stop();
  nats = undefined;
  await stopAll();
  for (const store of stores.splice(0)) rmSync(store, { recursive: true, force: true });
});

interface Readiness {
  status: string;
  nats: { state: string; uses: { service: string; purpose: string; attached: boolean }[] };
}

async function readyz(port: string | undefined): Promise<Readiness> {
  return (await (await fetch(`http://127.0.0.1:${port}/readyz`)).json()) as Readiness;
}

/** The HTTP ports of every process of the stack (the all-in-one process listens on the gateway's). */
function httpPorts(current: Stack): Record<string, string | undefined> {
  if (current.shape === 'all-in-one') return { all: current.env.GATEWAY_HTTP_PORT };
  return {
    gateway: current.env.GATEWAY_HTTP_PORT,
    agent: current.env.AGENT_HTTP_PORT,
    executor: current.env.EXECUTOR_HTTP_PORT,
    provider: current.env.PROVIDER_HTTP_PORT,
  };
}

async function allServing(current: Stack): Promise<void> {
  for (const [name, port] of Object.entries(httpPorts(current))) {
    await eventually(`${name} to attach to NATS`, async () => ((await readyz(port)).status === 'serving' ? true : undefined), 15_000);
  }
}

describe.each<StackShape>(['one-process-per-service', 'all-in-one'])('NATS under a running stack (%s)', (shape) => {
  it('is one connection per process, named after the process, shared by telemetry and the executor state', async () => {
    nats = await startNats(undefined, undefined, { monitor: true });
    stack = await startStack(shape, nats.url);
    await allServing(stack);
    const names = (await natsConnectionNames(nats)).filter((name) => name.startsWith('elexirion-')).sort();
    const expected = Object.entries(stack.processes).map(([name, spawned]) => `elexirion-${name === 'all' ? 'elexirion' : name}-${spawned.child.pid}`);
    expect(names).toEqual(expected.sort());
    const executorPort = shape === 'all-in-one' ? stack.env.GATEWAY_HTTP_PORT : stack.env.EXECUTOR_HTTP_PORT;
    // The agent's jobs (and the gateway's StreamTelemetry, the provider's recovery actions, the
    // monitor's buckets and consumers) are more uses of their process's connection.
    const uses = (await readyz(executorPort)).nats.uses.filter((use) => !['agent', 'gateway', 'provider', 'monitor'].includes(use.service)).map((use) => use.purpose);
    expect(uses.sort()).toEqual(['checkpoints', 'prompt registry', 'telemetry events']);
    const agentPort = shape === 'all-in-one' ? stack.env.GATEWAY_HTTP_PORT : stack.env.AGENT_HTTP_PORT;
    const agentUses = (await readyz(agentPort)).nats.uses.filter((use) => use.service === 'agent').map((use) => use.purpose);
    expect(agentUses).toContain('jobs');
  });

  it('keeps answering with NATS stopped, says degraded meanwhile, and serves again once NATS is back', async () => {
    const store = mkdtempSync(join(tmpdir(), 'elexirion-nats-'));
    stores.push(store);
    nats = await startNats(undefined, store);
    const { port } = nats; // restarted there below, where the services reconnect
    stack = await startStack(shape, nats.url);
    await allServing(stack);
    expect((await stack.gateway.chat({ message: 'ping' })).response).toBe('pong');

    await nats.stop();
    nats = undefined;
    const executorPort = shape === 'all-in-one' ? stack.env.GATEWAY_HTTP_PORT : stack.env.EXECUTOR_HTTP_PORT;
    await eventually('the executor to notice', async () => ((await readyz(executorPort)).nats.state === 'reconnecting' ? true : undefined), 10_000);
    expect((await readyz(executorPort)).status).toBe('degraded');
    // Runs go on without their checkpoints and with the last known prompts.
    expect((await stack.gateway.chat({ message: 'ping' })).response).toBe('pong');

    nats = await startNats(port, store);
    await eventually('NATS to be back', async () => ((await readyz(executorPort)).nats.state === 'connected' ? true : undefined), 20_000);
    await allServing(stack);
    expect((await stack.gateway.chat({ message: 'ping' })).response).toBe('pong');
  });
});
