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
function withoutVendorVariables(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
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

/**
 * A port a process was given was bound by another process first: between freePort() and the bind,
 * which takes a Node process a moment to reach. The caller starts again on fresh ports.
 */
export class PortTakenError extends Error {}

/** Whether `spawned` has exited, and said an address it was to listen on was taken. */
function lostItsPort(spawned: Spawned): boolean {
  return (spawned.child.exitCode !== null || spawned.child.signalCode !== null) && /EADDRINUSE|already in use/.test(spawned.output());
}

function exitedBefore(spawned: Spawned, what: string): Error {
  const message = `${spawned.name} exited before ${what}:\n${spawned.output()}`;
  return lostItsPort(spawned) ? new PortTakenError(message) : new Error(message);
}

/**
 * Runs `start` again when it fails with PortTakenError, so it picks fresh ports; `start` stops
 * whatever it started before it throws.
 */
export async function onFreshPorts<T>(start: () => Promise<T>, attempts = 5): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await start();
    } catch (error) {
      if (!(error instanceof PortTakenError) || attempt >= attempts) throw error;
    }
  }
}

/**
 * Waits until `spawned` has printed `text`. Throws if it exits first: PortTakenError when it lost
 * a port it was given and `portsChosenHere` (the caller may take fresh ones), else an Error with
 * its output.
 */
export async function waitForOutput(spawned: Spawned, text: string, portsChosenHere: boolean, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!spawned.output().includes(text)) {
    if (spawned.child.exitCode !== null || spawned.child.signalCode !== null) {
      const error = exitedBefore(spawned, `printing "${text}"`);
      throw error instanceof PortTakenError && !portsChosenHere ? new Error(error.message) : error;
    }
    if (Date.now() > until) throw new Error(`${spawned.name} did not print "${text}" within ${timeoutMs} ms:\n${spawned.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Levels at which the kit's host does not print its "serving" line (an info line). */
const QUIET_LOG_LEVELS = new Set(['warn', 'error', 'fatal', 'silent']);

/** Whether `spawned` printed the kit's "serving" line naming `port` as its gRPC port. */
function announcedServing(spawned: Spawned, port: number): boolean {
  const own = new RegExp(`"grpc":"[^"]*:${port}"`);
  return spawned.output().split('\n').some((line) => line.includes('"msg":"serving"') && own.test(line));
}

/**
 * Waits until grpc.health.v1 says SERVING for `service` at 127.0.0.1:port. With `spawned`, the
 * answer must be its own: it must not have exited, and unless its LOG_LEVEL hides info lines it
 * must have printed the "serving" line naming the port, since another process may have bound the
 * port first (then this throws PortTakenError).
 */
export async function waitServing(port: number, service: string, spawned?: Spawned, timeoutMs = 20_000): Promise<void> {
  const channel = createChannel(`127.0.0.1:${port}`);
  const client = createClient(HealthDefinition, channel);
  const until = Date.now() + timeoutMs;
  const confirmed = () => !spawned || QUIET_LOG_LEVELS.has(spawned.env.LOG_LEVEL ?? 'info') || announcedServing(spawned, port);
  try {
    while (Date.now() < until) {
      if (spawned && (spawned.child.exitCode !== null || spawned.child.signalCode !== null)) throw exitedBefore(spawned, 'serving');
      try {
        const { status } = await client.check({ service }, { signal: AbortSignal.timeout(1_000) });
        if (status === 1 && confirmed()) return;
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
