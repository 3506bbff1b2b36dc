import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Status } from 'nice-grpc';
import { proto } from '@elexirion/kit';
import { eventually, gate, startFakeAnthropic, startNats, type NatsServer, freePort, spawnNode, spawnProcess, stopAll, rawUnaryCall, startStack, stackOutput, waitFor, type Stack } from '@elexirion/testing';

let nats: NatsServer | undefined;
let stack: Stack | undefined;

afterEach(async () => {
  await stack?.stop();
  stack = undefined;
  await stopAll();
});

afterAll(async () => {
  await nats?.stop();
});

async function metricsOf(port: number): Promise<string> {
  return (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
}

describe('graceful drain', () => {
  it('lets a call in flight finish when every service gets SIGTERM, then every process exits 0', async () => {
    nats ??= await startNats();
    const key = 'fake-anthropic-drain-test-5e6f7a8b9c0d';
    const anthropic = await startFakeAnthropic({ apiKey: key });
    try {
      stack = await startStack('one-process-per-service', nats.url, { ANTHROPIC_API_KEY: key, ANTHROPIC_BASE_URL: anthropic.url });
      // The vendor holds its answer until every service is draining: the call is in flight then.
      const release = gate();
      anthropic.script({ until: release.promise, text: 'pong' });
      const inFlight = stack.gateway.chat({ message: 'ping' });
      await waitFor('the call to reach the vendor', () => anthropic.requests.length === 1);
      const processes = Object.values(stack.processes);
      const exits = processes.map((spawned) => {
        spawned.child.kill('SIGTERM');
        return spawned.exited;
      });
      await waitFor('every service to drain', () => processes.every((spawned) => spawned.output().includes('draining: health NOT_SERVING')));
      release.open();
      const response = await inFlight;
      expect(response.response).toBe('pong');
      // Every process the stack started (the four request-path services and the monitor).
      expect(processes.length).toBe(5);
      expect(await Promise.all(exits)).toEqual(processes.map(() => 0));
      expect(stackOutput(stack)).toContain('"msg":"stopped"');
    } finally {
      await anthropic.close();
    }
  });

  it('reports NOT_SERVING while draining and refuses calls once stopped', async () => {
    nats ??= await startNats();
    stack = await startStack('all-in-one', nats.url, { DRAIN_DELAY_MS: '1500' });
    const { createChannel, createClient } = await import('nice-grpc');
    const { HealthDefinition } = await import('nice-grpc-server-health');
    const channel = createChannel(`127.0.0.1:${stack.ports.gatewayGrpc}`);
    const health = createClient(HealthDefinition, channel);
    try {
      // Watched, not polled: the update comes when the drain begins, however short its delay.
      const statuses: number[] = [];
      const watching = (async () => {
        for await (const { status } of health.watch({ service: 'elexirion.v1.Gateway' })) {
          statuses.push(status);
          if (status === 2) return;
        }
      })().catch(() => undefined);
      await waitFor('the watch to see SERVING', () => statuses[0] === 1);
      stack.processes.all!.child.kill('SIGTERM');
      await watching;
      expect(statuses).toEqual([1, 2]);
      expect(await stack.processes.all!.exited).toBe(0);
      const after = await stack.gateway.chat({ message: 'ping' }, { signal: AbortSignal.timeout(3_000) }).catch((error) => error);
      expect(after).toBeInstanceOf(Error);
    } finally {
      channel.close();
    }
  });
});

describe('deadlines and cancellation across processes', () => {
  it('turns a caller deadline into DEADLINE_EXCEEDED and cancels the provider call it was waiting on', async () => {
    nats ??= await startNats();
    // Two minutes: only a cancellation can end the provider's call within the test.
    stack = await startStack('one-process-per-service', nats.url, { PROVIDER_MOCK_LATENCY_MS: '120000' });
    const error = await rawUnaryCall(
      `127.0.0.1:${stack.ports.gatewayGrpc}`,
      '/elexirion.v1.Gateway/Chat',
      { request: proto.ChatRequest, response: proto.ChatResponse },
      proto.ChatRequest.fromPartial({ message: 'ping' }),
      700,
    ).catch((caught) => caught);
    expect(error.code).toBe(Status.DEADLINE_EXCEEDED);
    const providerHttp = Number(stack.env.PROVIDER_HTTP_PORT);
    // The provider's handler saw its call end, long before its latency was over.
    const line = await eventually('the provider call to end', async () => {
      const text = await metricsOf(providerHttp);
      return /grpc_server_handled_total\{service="provider",grpc_type="unary",grpc_service="elexirion\.v1\.Provider",grpc_method="Complete",grpc_code="(CANCELLED|DEADLINE_EXCEEDED)"\} 1/.exec(text)?.[0];
    });
    expect(line).toBeTruthy();
  });
});

describe('configuration', () => {
  it('stops a service whose environment is invalid, naming each bad variable', async () => {
    const spawned = spawnNode('gateway', 'services/gateway/dist/main.js', {
      GATEWAY_GRPC_PORT: 'abc',
      NATS_URL: 'http://not-nats',
      GATEWAY_HTTP_PORT: String(await freePort()),
    });
    expect(await spawned.exited).toBe(78);
    const line = JSON.parse(spawned.output().trim().split('\n').at(-1)!) as { level: string; issues: string[] };
    expect(line.level).toBe('fatal');
    expect(line.issues).toEqual([
      'GATEWAY_GRPC_PORT: expected a port number (got "abc")',
      'NATS_URL: expected a URL such as nats://127.0.0.1:4222 (got "http://not-nats")',
    ]);
  });

  it('never echoes the value of a secret variable in a configuration error', async () => {
    const spawned = spawnNode('provider', 'services/provider/dist/main.js', {
      PROVIDER_GRPC_PORT: String(await freePort()),
      PROVIDER_HTTP_PORT: String(await freePort()),
      PROVIDER_MOCK_LATENCY_MS: 'soon',
      ANTHROPIC_API_KEY: 'sk-test-secret-value-123',
      BIND_HOST: '127.0.0.1',
      TELEMETRY_EVENTS: 'maybe',
    });
    expect(await spawned.exited).toBe(78);
    const output = spawned.output();
    expect(output).toContain('PROVIDER_MOCK_LATENCY_MS');
    expect(output).toContain('TELEMETRY_EVENTS');
    expect(output).not.toContain('sk-test-secret-value-123');
  });

  it('rejects an unknown service name in the all-in-one host', async () => {
    const spawned = spawnNode('elexirion', 'server/dist/main.js', {}, ['--services', 'gateway,billing']);
    expect(await spawned.exited).toBe(2); // the elexirion command line's usage code (cli.test.ts)
    expect(spawned.output()).toContain('unknown service "billing"');
  });
});

describe('command lines', () => {
  const binaries = [
    ['elexirion', 'server/dist/main.js', /^usage: elexirion COMMAND \[OPTIONS\]\n/],
    ['elexirion-health-check', 'server/dist/health-check.js', /^usage: elexirion-health-check HOST:PORT \[SERVICE \.\.\.\]/],
    ...['gateway', 'agent', 'executor', 'provider'].map((name) => [name, `services/${name}/dist/main.js`, new RegExp(`^usage: node services/${name}/dist/main.js \\[--help\\]\\n`)] as const),
  ] as const;

  it.each(binaries)('%s answers --help with its usage and exit code 0', async (name, entry, usage) => {
    const spawned = spawnNode(name, entry, {}, ['--help']);
    expect(await spawned.exited).toBe(0);
    expect(spawned.output()).toMatch(usage);
    expect(spawned.output()).not.toMatch(/\n\s+at /); // no stack trace
  });

  it.each(binaries)('%s refuses an option it does not take with its usage exit code, naming it', async (name, entry) => {
    const spawned = spawnNode(name, entry, {}, ['--frobnicate']);
    // 64 (EX_USAGE) for the service binaries; 2 for elexirion, whose client commands document it.
    expect(await spawned.exited).toBe(name === 'elexirion' ? 2 : 64);
    expect(spawned.output()).toContain("Unknown option '--frobnicate'");
    expect(spawned.output()).toContain('usage: ');
    expect(spawned.output()).not.toMatch(/\n\s+at /);
  });

  it("lists a service's environment in its --help: its ports, the addresses it calls, its own variables", async () => {
    const spawned = spawnNode('executor', 'services/executor/dist/main.js', {}, ['--help']);
    expect(await spawned.exited).toBe(0);
    const help = spawned.output();
    expect(help).toMatch(/^  EXECUTOR_GRPC_PORT +50053$/m);
    expect(help).toMatch(/^  EXECUTOR_HTTP_PORT +8083$/m);
    expect(help).toMatch(/^  PROVIDER_ADDRESS +dns:\/\/\/127\.0\.0\.1:50054$/m);
    expect(help).toMatch(/^  TELEMETRY_EVENTS +true \(/m);
    expect(help).toMatch(/^  EXECUTOR_MAX_CONCURRENT_RUNS +10000$/m);
    expect(help).not.toContain('GATEWAY_GRPC_PORT');
  });

  it.each([
    ['scripts/start.sh', /^usage: npm start/],
    ['scripts/kustomize.sh', /^usage: scripts\/kustomize\.sh/],
    ['scripts/test.sh', /^usage: npm test/],
  ])('%s answers --help with its usage and exit code 0', async (script, usage) => {
    const spawned = spawnProcess(script, 'bash', [script, '--help']);
    expect(await spawned.exited).toBe(0);
    expect(spawned.output()).toMatch(usage);
  });
});

describe('npm start (scripts/start.sh)', () => {
  /** Every port start.sh would use, each free, and the names of their variables. */
  async function startEnv(): Promise<NodeJS.ProcessEnv> {
    const env: NodeJS.ProcessEnv = { NATS_URL: '', NATS_PORT: String(await freePort()) };
    for (const name of ['GATEWAY', 'AGENT', 'EXECUTOR', 'PROVIDER', 'MONITOR']) {
      env[`${name}_GRPC_PORT`] = String(await freePort());
      env[`${name}_HTTP_PORT`] = String(await freePort());
    }
    return env;
  }

  it('stops before starting anything when a service port is taken, naming the port and its variable', async () => {
    const taken = createNetServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as AddressInfo).port;
    try {
      const spawned = spawnProcess('start.sh', 'bash', ['scripts/start.sh'], { ...(await startEnv()), EXECUTOR_HTTP_PORT: String(port) });
      expect(await spawned.exited).toBe(1);
      expect(spawned.output()).toContain(`[elexirion] port ${port} (EXECUTOR_HTTP_PORT) is taken: stop what listens there, or set EXECUTOR_HTTP_PORT to a free port`);
      expect(spawned.output()).not.toContain('building'); // before the set-up, long before any service
    } finally {
      taken.close();
    }
  });

  it('refuses two variables given the same port, naming both', async () => {
    const env = await startEnv();
    const spawned = spawnProcess('start.sh', 'bash', ['scripts/start.sh'], { ...env, PROVIDER_HTTP_PORT: env.AGENT_GRPC_PORT });
    expect(await spawned.exited).toBe(1);
    expect(spawned.output()).toContain(`[elexirion] PROVIDER_HTTP_PORT and AGENT_GRPC_PORT are both ${env.AGENT_GRPC_PORT}: give each its own port`);
  });
});
