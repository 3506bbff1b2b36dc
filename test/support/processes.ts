import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createChannel, createClient } from 'nice-grpc';
import { HealthDefinition } from 'nice-grpc-server-health';

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));

/**
 * Variables that give a process a vendor's credentials or endpoint: the provider reads some, the
 * vendors' SDKs read others by themselves (ANTHROPIC_AUTH_TOKEN, GOOGLE_API_KEY,
 * GOOGLE_GENAI_USE_VERTEXAI, OPENAI_ORG_ID ...). A spawned process never inherits them from
 * whoever runs the tests, or a developer's real key would send test traffic to the vendor; a test
 * that wants a vendor passes its fake's key and URL explicitly.
 */
const VENDOR_VARIABLE = /^(ANTHROPIC|CLAUDE|OPENAI|AZURE_OPENAI|GEMINI|GOOGLE|VERTEXAI)_|^PROVIDER_SECRETS_DIR$/;

/** `env` without the vendor credentials and endpoints (see VENDOR_VARIABLE). */
export function withoutVendorVariables(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(env).filter(([name]) => !VENDOR_VARIABLE.test(name)));
}

/** A child process whose output is kept, so a failing test can show it. */
export interface Spawned {
  name: string;
  child: ChildProcess;
  /** The environment it was started with. */
  env: NodeJS.ProcessEnv;
  output(): string;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  exited: Promise<number | string>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once exited. */
  stop(graceMs?: number): Promise<number | string>;
}

const running = new Set<Spawned>();

/**
 * Starts a process with this process's environment, less any vendor credentials, plus `env`.
 * `cwd`: where it runs (the repository by default; the benchmark runs another checkout's build).
 */
export function spawnProcess(name: string, command: string, args: string[], env: NodeJS.ProcessEnv = {}, cwd = repoRoot): Spawned {
  const fullEnv = { ...withoutVendorVariables(process.env), ...env };
  const child = spawn(command, args, {
    cwd,
    env: fullEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const chunks: string[] = [];
  child.stdout?.on('data', (data: Buffer) => chunks.push(data.toString()));
  child.stderr?.on('data', (data: Buffer) => chunks.push(data.toString()));
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'));
  });
  const spawned: Spawned = {
    name,
    child,
    env: fullEnv,
    output: () => chunks.join(''),
    exited,
    async stop(graceMs = 10_000) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }
      running.delete(spawned);
      return exited;
    },
  };
  running.add(spawned);
  void exited.then(() => running.delete(spawned));
  return spawned;
}

/** Stops every process a test started and has not stopped (for afterAll/afterEach). */
export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((spawned) => spawned.stop(5_000)));
}

/** Starts a compiled entry point (e.g. "server/dist/main.js") with Node. */
export function spawnNode(name: string, entry: string, env: NodeJS.ProcessEnv, args: string[] = [], cwd = repoRoot): Spawned {
  return spawnProcess(name, process.execPath, [entry, ...args], env, cwd);
}

/** Waits until grpc.health.v1 says SERVING for `service` at 127.0.0.1:port. */
export async function waitServing(port: number, service: string, spawned?: Spawned, timeoutMs = 20_000): Promise<void> {
  const channel = createChannel(`127.0.0.1:${port}`);
  const client = createClient(HealthDefinition, channel);
  const until = Date.now() + timeoutMs;
  try {
    while (Date.now() < until) {
      if (spawned && (spawned.child.exitCode !== null || spawned.child.signalCode !== null)) {
        throw new Error(`${spawned.name} exited before serving:\n${spawned.output()}`);
      }
      try {
        const { status } = await client.check({ service }, { signal: AbortSignal.timeout(1_000) });
        if (status === 1) return;
      } catch {
        // not up yet
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    throw new Error(`${service} at 127.0.0.1:${port} did not report SERVING within ${timeoutMs} ms${spawned ? `:\n${spawned.output()}` : ''}`);
  } finally {
    channel.close();
  }
}
