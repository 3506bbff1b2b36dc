import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectService, proto, type ServiceClient } from '@elexirion/kit';
import { startFakeAnthropic, startFakeGemini, startFakeOpenAI, type FakeUpstream } from './fake-upstreams/index.js';
import { freePort } from './ports.js';
import { onFreshPorts, spawnNode, waitServing, type Spawned } from './processes.js';

/** Keys the fakes insist on; a test asserts none of them ever shows up in logs or answers. */
export const TEST_KEYS = {
  anthropic: 'fake-anthropic-test-5f1c9e2a7b3d4c6e8f0a1b2c',
  gemini: 'gemini-test-key-7d2e4f6a8b0c1d3e5f7a9b',
  openai: 'sk-openai-test-3a5c7e9b1d2f4a6c8e0b2d4f',
};

export interface ProviderSettingsOverride {
  max_concurrency?: number;
  max_queue?: number;
  max_attempts?: number;
  timeout_ms?: number;
  breaker?: { window_ms: number; min_requests: number; failure_rate: number; cooldown_ms: number };
}

function settings(override: ProviderSettingsOverride = {}) {
  return {
    max_concurrency: override.max_concurrency ?? 16,
    max_queue: override.max_queue ?? 64,
    requests_per_second: 1000,
    burst: 1000,
    timeout_ms: override.timeout_ms ?? 10_000,
    max_attempts: override.max_attempts ?? 3,
    backoff_base_ms: 20,
    backoff_max_ms: 100,
    breaker: override.breaker ?? { window_ms: 30_000, min_requests: 50, failure_rate: 0.9, cooldown_ms: 1_000 },
  };
}

/** A provider config for tests: short backoffs, every vendor reachable by a plain alias. */
export function testProviderConfig(overrides: Partial<Record<'anthropic' | 'gemini' | 'openai' | 'mock', ProviderSettingsOverride>> = {}) {
  return {
    default_alias: 'claude_smart',
    aliases: {
      claude_smart: {
        targets: ['anthropic/claude-sonnet-5', 'gemini/gemini-2.5-pro'],
        default_preset: 'chat',
        // Every preset the shipped pipelines name: the executor checks them before a run.
        presets: {
          chat: { max_tokens: 256, temperature: 0.5 },
          analysis: { max_tokens: 1024, temperature: 0.1 },
          production: { max_tokens: 512, temperature: 0.3 },
          development: { max_tokens: 256, temperature: 0.7 },
        },
      },
      claude: { targets: ['anthropic/claude-sonnet-5'] },
      gemini: { targets: ['gemini/gemini-2.5-flash'] },
      openai: { targets: ['openai/gpt-4o-mini'] },
      mock: { targets: ['mock/mock'] },
    },
    providers: {
      anthropic: settings(overrides.anthropic),
      gemini: settings(overrides.gemini),
      openai: settings(overrides.openai),
      mock: settings(overrides.mock),
    },
    prices: {
      'anthropic/claude-sonnet-5': { input: 3, output: 15 },
      'gemini/gemini-2.5-pro': { input: 1.25, output: 10 },
      'gemini/gemini-2.5-flash': { input: 0.3, output: 2.5 },
      'openai/gpt-4o-mini': { input: 0.15, output: 0.6 },
      'mock/mock': { input: 0, output: 0 },
    },
  };
}

export interface ProviderUnderTest {
  process: Spawned;
  client: ServiceClient<'provider'>;
  grpcPort: number;
  httpPort: number;
  fakes: { anthropic: FakeUpstream; gemini: FakeUpstream; openai: FakeUpstream };
  metrics(): Promise<string>;
  stop(): Promise<void>;
}

type Fakes = ProviderUnderTest['fakes'];

/**
 * The provider service as a real process, its SDKs pointed at fake upstreams.
 * `config: 'shipped'` runs with the repository's config/providers.yaml; by default a test config.
 * `env` is added to the process's environment; as a function it gets the fakes (for their URLs).
 */
export async function startProvider(
  options: { config?: object | 'shipped'; env?: NodeJS.ProcessEnv | ((fakes: Fakes) => NodeJS.ProcessEnv); vendors?: boolean } = {},
): Promise<ProviderUnderTest> {
  const fakes = {
    anthropic: await startFakeAnthropic({ apiKey: TEST_KEYS.anthropic }),
    gemini: await startFakeGemini({ apiKey: TEST_KEYS.gemini }),
    openai: await startFakeOpenAI({ apiKey: TEST_KEYS.openai }),
  };
  const dir = mkdtempSync(join(tmpdir(), 'elexirion-provider-'));
  const configPath = join(dir, 'providers.yaml');
  // JSON is YAML.
  writeFileSync(configPath, JSON.stringify(options.config === 'shipped' || !options.config ? testProviderConfig() : options.config));
  const vendorEnv =
    options.vendors === false
      ? {}
      : {
          ANTHROPIC_API_KEY: TEST_KEYS.anthropic,
          ANTHROPIC_BASE_URL: fakes.anthropic.url,
          GEMINI_API_KEY: TEST_KEYS.gemini,
          GEMINI_BASE_URL: fakes.gemini.url,
          OPENAI_API_KEY: TEST_KEYS.openai,
          OPENAI_BASE_URL: fakes.openai.url,
        };
  const closeFakes = () => Promise.all(Object.values(fakes).map((fake) => fake.close()));
  const { spawned, grpcPort, httpPort } = await onFreshPorts(async () => {
    const grpcPort = await freePort();
    const httpPort = await freePort();
    const spawned = spawnNode('provider', 'services/provider/dist/main.js', {
      BIND_HOST: '127.0.0.1',
      PROVIDER_GRPC_PORT: String(grpcPort),
      PROVIDER_HTTP_PORT: String(httpPort),
      ...(options.config === 'shipped' ? {} : { PROVIDER_CONFIG: configPath }),
      TELEMETRY_EVENTS: 'false',
      LOG_LEVEL: 'debug',
      ...vendorEnv,
      ...(typeof options.env === 'function' ? options.env(fakes) : options.env),
    });
    await waitServing(grpcPort, 'elexirion.v1.Provider', spawned).catch(async (error: unknown) => {
      await spawned.stop();
      throw error;
    });
    return { spawned, grpcPort, httpPort };
  }).catch(async (error: unknown) => {
    await closeFakes();
    rmSync(dir, { recursive: true, force: true });
    throw error;
  });
  // The client services use between them: the deadline is enforced here and sent on.
  const { client, close } = connectService('provider', `127.0.0.1:${grpcPort}`, { caller: 'test' });
  return {
    process: spawned,
    client,
    grpcPort,
    httpPort,
    fakes,
    metrics: async () => (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text(),
    async stop() {
      close();
      await spawned.stop();
      await closeFakes();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function userMessage(content: string) {
  return { role: proto.Role.ROLE_USER, content };
}

/** Collects a StreamComplete: the deltas, the final message, or the error that ended it. */
export async function collectStream(stream: AsyncIterable<proto.StreamCompleteResponse>) {
  const deltas: string[] = [];
  let done: proto.CompleteResponse | undefined;
  let error: any;
  try {
    for await (const message of stream) {
      if (message.delta !== undefined) deltas.push(message.delta);
      if (message.done) done = message.done;
    }
  } catch (caught) {
    error = caught;
  }
  return { deltas, text: deltas.join(''), done, error };
}
