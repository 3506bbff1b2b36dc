import { createServer as createNetServer } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createServer } from 'nice-grpc';
import { HealthDefinition, HealthServiceImpl, HealthState } from 'nice-grpc-server-health';
import { freePort } from './ports.js';
import { onFreshPorts, PortTakenError, spawnNode, spawnProcess, stopAll, waitForOutput, waitServing } from './processes.js';
import { startProvider, type ProviderUnderTest } from './provider.js';

// What a developer's shell may hold: vendor credentials (stand-ins, nothing like a real key) and endpoints.
const CALLER_ENV = {
  ANTHROPIC_API_KEY: 'not-a-key-the-callers-anthropic-setting',
  ANTHROPIC_BASE_URL: 'https://api.anthropic.com',
  ANTHROPIC_AUTH_TOKEN: 'caller-auth-token-0123456789',
  OPENAI_API_KEY: 'not-a-key-the-callers-openai-setting',
  GEMINI_API_KEY: 'caller-gemini-key-0123456789',
  GOOGLE_API_KEY: 'caller-google-key-0123456789',
  PROVIDER_SECRETS_DIR: '/run/secrets/caller',
};

let provider: ProviderUnderTest | undefined;
const saved = new Map<string, string | undefined>();

/** Sets the caller's vendor variables in this process, as if the tests ran from that shell. */
function callerHasVendorKeys(): void {
  for (const [name, value] of Object.entries(CALLER_ENV)) {
    saved.set(name, process.env[name]);
    process.env[name] = value;
  }
}

afterEach(async () => {
  for (const [name, value] of saved) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
  saved.clear();
  await provider?.stop();
  provider = undefined;
  await stopAll();
});

describe('spawnProcess', () => {
  it('keeps the caller\'s vendor credentials and endpoints from the process, and passes what the test gives it', async () => {
    callerHasVendorKeys();
    const spawned = spawnProcess('env', process.execPath, ['-e', 'process.stdout.write(JSON.stringify(process.env))'], { OPENAI_API_KEY: 'not-a-key-passed-explicitly' });
    expect(await spawned.exited, spawned.output()).toBe(0);
    const seen = JSON.parse(spawned.output()) as Record<string, string>;
    for (const name of Object.keys(CALLER_ENV).filter((name) => name !== 'OPENAI_API_KEY')) expect(seen, name).not.toHaveProperty(name);
    expect(seen.OPENAI_API_KEY).toBe('not-a-key-passed-explicitly');
    expect(seen.PATH).toBe(process.env.PATH);
  });

  it('starts a provider that stays offline although the caller has vendor keys', async () => {
    callerHasVendorKeys();
    provider = await startProvider({ vendors: false });
    expect((await provider.client.listModels({})).offline).toBe(true);
    for (const value of Object.values(CALLER_ENV)) expect(provider.process.output()).not.toContain(value);
  });
});

describe('the package index', () => {
  it('loads without vitest, so the benchmark\'s processes can import it', async () => {
    // Node runs the support's TypeScript the way the benchmark does (bench/src/ts-hooks.mjs);
    // a second hook refuses any import of vitest and names the importer.
    const refuseVitest = `data:text/javascript,${encodeURIComponent(
      "import { registerHooks } from 'node:module';" +
        "registerHooks({ resolve(specifier, context, next) { if (specifier === 'vitest' || specifier.startsWith('vitest/')) throw new Error('vitest imported by ' + context.parentURL); return next(specifier, context); } });",
    )}`;
    const spawned = spawnProcess('import @elexirion/testing', process.execPath, [
      '--disable-warning=ExperimentalWarning',
      '--import',
      './bench/src/ts-hooks.mjs',
      '--import',
      refuseVitest,
      '--input-type=module',
      '-e',
      "const support = await import('@elexirion/testing'); console.log(typeof support.startStack);",
    ]);
    expect(await spawned.exited, spawned.output()).toBe(0);
    expect(spawned.output().trim()).toBe('function');
  });
});

describe('ports taken by another process between freePort() and the bind', () => {
  it('does not take another process\'s SERVING for the one it started, and says the port was taken', async () => {
    // Another process on the port, answering SERVING for the very service the test starts.
    const health = HealthState();
    health.setStatus('healthy', 'elexirion.v1.Provider');
    const impostor = createServer();
    impostor.add(HealthDefinition, HealthServiceImpl(health));
    const port = await impostor.listen('127.0.0.1:0');
    try {
      const provider = spawnNode('provider', 'services/provider/dist/main.js', { BIND_HOST: '127.0.0.1', PROVIDER_GRPC_PORT: String(port), PROVIDER_HTTP_PORT: '0', TELEMETRY_EVENTS: 'false', LOG_LEVEL: 'info' });
      const error = await waitServing(port, 'elexirion.v1.Provider', provider).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(PortTakenError);
      expect(String(error)).toMatch(/PROVIDER_GRPC_PORT: port \d+ on 127.0.0.1 is already in use/);
    } finally {
      await impostor.shutdown();
    }
  });

  it('starts again on fresh ports when the first one was taken', async () => {
    const holder = createNetServer();
    const taken = await new Promise<number>((resolve) => holder.listen(0, '127.0.0.1', () => resolve((holder.address() as { port: number }).port)));
    try {
      const tried: number[] = [];
      const nats = await onFreshPorts(async () => {
        const port = tried.length === 0 ? taken : await freePort();
        tried.push(port);
        const spawned = spawnProcess('nats-server', 'nats-server', ['-a', '127.0.0.1', '-p', String(port)]);
        await waitForOutput(spawned, 'Server is ready', true);
        return spawned;
      });
      expect(tried).toHaveLength(2);
      expect(nats.output()).toContain(`Listening for client connections on 127.0.0.1:${tried[1]}`);
      await nats.stop();
    } finally {
      await new Promise((resolve) => holder.close(resolve));
    }
  });

  it('keeps a port the caller chose: a taken one is an error, not a retry', async () => {
    const holder = createNetServer();
    const taken = await new Promise<number>((resolve) => holder.listen(0, '127.0.0.1', () => resolve((holder.address() as { port: number }).port)));
    try {
      let attempts = 0;
      const error = await onFreshPorts(async () => {
        attempts += 1;
        await waitForOutput(spawnProcess('nats-server', 'nats-server', ['-a', '127.0.0.1', '-p', String(taken)]), 'Server is ready', false);
      }).catch((caught: unknown) => caught);
      expect(attempts).toBe(1);
      expect(error).toBeInstanceOf(Error);
      expect(error).not.toBeInstanceOf(PortTakenError);
      expect(String(error)).toContain('address already in use');
    } finally {
      await new Promise((resolve) => holder.close(resolve));
    }
  });
});
