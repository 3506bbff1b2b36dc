// @elexirion/testing/fixtures: vitest fixtures. Cleanups that run when each test ends, a logger
// that records its lines, and a nats-server for a whole test file. Apart from the package index,
// which never loads vitest, so the benchmark can import the rest.
import type { NatsConnection } from '@nats-io/transport-node';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { connectNats, startNats, type NatsServer } from './nats.js';
import { stopAll } from './processes.js';

/** Undoes something a test set up: closes a connection, stops a server, deletes a bucket. */
export type Cleanup = () => unknown;

/** Registers a cleanup to run when the current test ends. */
export type Later = (cleanup: Cleanup) => void;

/**
 * Registers a vitest `afterEach` that runs the cleanups registered during the test, the last
 * registered first, ignoring any that fail; returns `later`, which registers one. Call it once,
 * at the top of a test file (or of a describe block).
 */
export function cleanupAfterEach(): Later {
  const cleanups: Cleanup[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) {
      try {
        await cleanup();
      } catch {
        // A cleanup that fails must not hide the test's own outcome, nor skip the others.
      }
    }
  });
  return (cleanup) => {
    cleanups.push(cleanup);
  };
}

export interface RecordedLog {
  level: 'info' | 'warn' | 'debug' | 'error';
  fields: Record<string, unknown>;
  message: string;
}

/** Pino's call shape, `(fields, message)`: fits the kit's KvViewLogger and the PromptRegistry's logger. */
export interface RecordingLogger {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  debug(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

/** A logger that records every line it is given, in order, in `logs`. */
export function recordingLogger(): { logger: RecordingLogger; logs: RecordedLog[] } {
  const logs: RecordedLog[] = [];
  const record = (level: RecordedLog['level']) => (fields: object, message: string) => {
    logs.push({ level, fields: fields as Record<string, unknown>, message });
  };
  return { logger: { info: record('info'), warn: record('warn'), debug: record('debug'), error: record('error') }, logs };
}

/** A nats-server shared by every test of a file, and, when asked, one connection to it. */
export interface FileNats {
  readonly server: NatsServer;
  readonly url: string;
  /** Only with `{ connect: true }`. */
  readonly connection: NatsConnection;
}

/**
 * Starts a nats-server before the file's first test (and connects to it when asked) and stops
 * both, and every process the file started, after its last. Call it once, at the top of a file.
 */
export function natsForFile(options: { connect?: boolean } = {}): FileNats {
  let server: NatsServer | undefined;
  let connection: NatsConnection | undefined;
  beforeAll(async () => {
    server = await startNats();
    if (options.connect) connection = await connectNats(server.url);
  });
  afterAll(async () => {
    await connection?.close();
    await server?.stop();
    await stopAll();
  });
  const started = <T>(value: T | undefined, what: string): T => {
    if (value === undefined) throw new Error(`natsForFile: no ${what} outside the file's tests${what === 'connection' && !options.connect ? ' (ask for it with { connect: true })' : ''}`);
    return value;
  };
  return {
    get server() {
      return started(server, 'server');
    },
    get url() {
      return started(server, 'server').url;
    },
    get connection() {
      return started(connection, 'connection');
    },
  };
}
