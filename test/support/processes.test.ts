import { afterEach, describe, expect, it } from 'vitest';
import { spawnProcess, stopAll } from './processes.js';
import { startProvider, type ProviderUnderTest } from './provider.js';

// What a developer's shell may hold: real-looking vendor credentials and endpoints.
const CALLER_ENV = {
  ANTHROPIC_API_KEY: 'sk-ant-caller-own-key-0123456789abcdef',
  ANTHROPIC_BASE_URL: 'https://api.anthropic.com',
  ANTHROPIC_AUTH_TOKEN: 'caller-auth-token-0123456789',
  OPENAI_API_KEY: 'sk-caller-openai-0123456789abcdef',
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
    const spawned = spawnProcess('env', process.execPath, ['-e', 'process.stdout.write(JSON.stringify(process.env))'], { OPENAI_API_KEY: 'sk-fake-for-this-test' });
    expect(await spawned.exited, spawned.output()).toBe(0);
    const seen = JSON.parse(spawned.output()) as Record<string, string>;
    for (const name of Object.keys(CALLER_ENV).filter((name) => name !== 'OPENAI_API_KEY')) expect(seen, name).not.toHaveProperty(name);
    expect(seen.OPENAI_API_KEY).toBe('sk-fake-for-this-test');
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
