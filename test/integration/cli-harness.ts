// For the CLI tests: the built `elexirion` binary run as a child process, and a real gRPC server
// implementing elexirion.v1.Gateway on a loopback port whose answers each test scripts (most of
// the real gateway's calls are built by other work in parallel). Every call it receives is
// recorded with its request and `authorization` metadata.
import { spawn } from 'node:child_process';
import { createServer, ServerError, Status, type CallContext, type Server } from 'nice-grpc';
import { proto } from '@elexirion/kit';
import { repoRoot } from '@elexirion/testing';

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface CliRun {
  /** Resolves when the process has exited. */
  result: Promise<CliResult>;
  /** Resolves once stdout contains `text`; rejects if the process exits first. */
  stdoutContains(text: string): Promise<void>;
  stdout(): string;
  kill(signal?: NodeJS.Signals): void;
}

/**
 * Starts `node server/dist/main.js ...args` with only `env` (plus PATH and HOME): no
 * ELEXIRION_API_KEY or ELEXIRION_ADDRESS from whoever runs the tests. `stdin` is written and closed.
 */
export function startCli(args: string[], env: NodeJS.ProcessEnv = {}, stdin = ''): CliRun {
  const child = spawn(process.execPath, ['server/dist/main.js', ...args], {
    cwd: repoRoot,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const waiters: { text: string; resolve: () => void; reject: (error: Error) => void }[] = [];
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    for (const waiter of [...waiters]) if (stdout.includes(waiter.text)) {
      waiters.splice(waiters.indexOf(waiter), 1);
      waiter.resolve();
    }
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  child.stdin.end(stdin);
  const result = new Promise<CliResult>((resolve) => {
    child.once('close', (code, signal) => {
      for (const waiter of waiters.splice(0)) waiter.reject(new Error(`exited (${code}) before stdout had ${JSON.stringify(waiter.text)}:\n${stdout}\n${stderr}`));
      resolve({ code, signal, stdout, stderr });
    });
  });
  return {
    result,
    stdout: () => stdout,
    stdoutContains: (text) => (stdout.includes(text) ? Promise.resolve() : new Promise((resolve, reject) => waiters.push({ text, resolve, reject }))),
    kill: (signal = 'SIGTERM') => child.kill(signal),
  };
}

/** Runs the CLI to its end. */
export function cli(args: string[], env: NodeJS.ProcessEnv = {}, stdin = ''): Promise<CliResult> {
  return startCli(args, env, stdin).result;
}

export interface RecordedCall {
  method: string;
  request: any;
  authorization: string | undefined;
  /** Aborted when the client cancelled the call (or it ended). */
  signal: AbortSignal;
}

type Handler = (request: any, context: CallContext) => unknown;

/** A Gateway whose calls answer as the test scripts them; UNIMPLEMENTED otherwise. */
export class ScriptedGateway {
  readonly calls: RecordedCall[] = [];
  private readonly handlers = new Map<string, Handler>();
  private server: Server | undefined;
  port = 0;

  /** Scripts one call (by its generated method name, e.g. "chatStream"): a value, or a generator for a stream. */
  on(method: keyof typeof proto.GatewayDefinition.methods, handler: Handler): this {
    this.handlers.set(method, handler);
    return this;
  }

  reset(): void {
    this.calls.length = 0;
    this.handlers.clear();
  }

  callsOf(method: string): RecordedCall[] {
    return this.calls.filter((call) => call.method === method);
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const server = createServer();
    const implementation: Record<string, unknown> = {};
    for (const [method, definition] of Object.entries(proto.GatewayDefinition.methods)) {
      const record = (request: unknown, context: CallContext) => {
        this.calls.push({ method, request, authorization: context.metadata.get('authorization'), signal: context.signal });
        const handler = this.handlers.get(method);
        if (!handler) throw new ServerError(Status.UNIMPLEMENTED, `${method} is not scripted`);
        return handler(request, context);
      };
      implementation[method] = definition.responseStream
        ? async function* (request: unknown, context: CallContext) {
            yield* record(request, context) as AsyncIterable<unknown>;
          }
        : async (request: unknown, context: CallContext) => record(request, context);
    }
    server.add(proto.GatewayDefinition, implementation as any);
    this.port = await server.listen('127.0.0.1:0');
    this.server = server;
  }

  async stop(): Promise<void> {
    await this.server?.shutdown();
  }
}

/** A promise and its resolve function, to hold a scripted stream until the test says. */
export function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

/**
 * Runs the CLI on a pseudo-terminal (util-linux `script`), as a person at a terminal would:
 * stdout and stderr are both the terminal, and its output is what the terminal showed.
 */
export function cliOnTerminal(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; output: string }> {
  const quote = (word: string) => `'${word.replace(/'/g, `'\\''`)}'`;
  const command = [process.execPath, 'server/dist/main.js', ...args].map(quote).join(' ');
  const child = spawn('script', ['-qefc', command, '/dev/null'], {
    cwd: repoRoot,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, TERM: 'xterm', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, output })));
}
