import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { proto } from '@elexirion/kit';
import type { Later } from './fixtures.js';
import { freePort } from './ports.js';
import { onFreshPorts, spawnProcess, waitForOutput, type Spawned } from './processes.js';

export interface NatsServer {
  url: string;
  port: number;
  /** The HTTP monitoring port (`/connz`, `/varz`), when asked for. */
  monitorPort?: number;
  process: Spawned;
  stop(): Promise<void>;
}

/**
 * A real nats-server with JetStream on a free port and a temporary store (and monitoring, when
 * asked). It is ready when it says so itself ("Server is ready"): a port that merely answers could
 * belong to another process. When another process took a port between freePort() and the bind,
 * it starts again on fresh ports; a `port` the caller chose (to restart a server where its
 * clients reconnect) is used as given.
 */
export async function startNats(port?: number, storeDir?: string, options: { monitor?: boolean } = {}): Promise<NatsServer> {
  const store = storeDir ?? mkdtempSync(join(tmpdir(), 'elexirion-nats-'));
  try {
    return await onFreshPorts(async () => {
      const chosen = port ?? (await freePort());
      const monitorPort = options.monitor ? await freePort() : undefined;
      const monitorArgs = monitorPort ? ['-m', String(monitorPort)] : [];
      const spawned = spawnProcess('nats-server', 'nats-server', ['-a', '127.0.0.1', '-p', String(chosen), '-js', '-sd', store, ...monitorArgs]);
      await waitForOutput(spawned, 'Server is ready', port === undefined);
      return {
        url: `nats://127.0.0.1:${chosen}`,
        port: chosen,
        ...(monitorPort ? { monitorPort } : {}),
        process: spawned,
        async stop() {
          await spawned.stop();
          if (!storeDir) rmSync(store, { recursive: true, force: true });
        },
      };
    });
  } catch (error) {
    if (!storeDir) rmSync(store, { recursive: true, force: true });
    throw error;
  }
}

/**
 * A plain client connection to `url`. `reconnectForever` keeps it reconnecting every 250 ms for as
 * long as the server is away (for tests that stop and restart it); `later` closes it when the test ends.
 */
export async function connectNats(url: string, options: { reconnectForever?: boolean; later?: Later } = {}): Promise<NatsConnection> {
  const connection = await connect({ servers: url, ...(options.reconnectForever ? { maxReconnectAttempts: -1, reconnectTimeWait: 250 } : {}) });
  options.later?.(() => connection.close());
  return connection;
}

/** A KV bucket name no other test uses: `prefix` and a random suffix. */
export function uniqueBucketName(prefix: string): string {
  return `${prefix}_${randomUUID().replaceAll('-', '')}`;
}

/**
 * A unique bucket name (see uniqueBucketName) whose stream, `KV_<name>`, is deleted when the test
 * ends (through `later`), if the test created it. `nats` is the URL of the server, or a connection
 * to it that is still open then; with a URL the deletion connects on its own.
 */
export function temporaryBucket(nats: string | NatsConnection, prefix: string, later: Later): string {
  const bucket = uniqueBucketName(prefix);
  later(async () => {
    const connection = typeof nats === 'string' ? await connect({ servers: nats }) : nats;
    try {
      await (await jetstreamManager(connection)).streams.delete(`KV_${bucket}`).catch(() => undefined);
    } finally {
      if (connection !== nats) await connection.close();
    }
  });
  return bucket;
}

export interface ReceivedEvent {
  subject: string;
  event: proto.TelemetryEvent;
  traceparent: string | undefined;
}

/** Collects every telemetry event published while it listens. */
export async function collectEvents(url: string): Promise<{ events: ReceivedEvent[]; connection: NatsConnection; close(): Promise<void> }> {
  const connection = await connect({ servers: url });
  const events: ReceivedEvent[] = [];
  const subscription = connection.subscribe('elexirion.events.>');
  void (async () => {
    for await (const message of subscription) {
      // One message is a batch; its traceparent header has one value per event, in order.
      const traceparents = message.headers?.values('traceparent') ?? [];
      proto.TelemetryEventBatch.decode(message.data).events.forEach((event, index) => {
        events.push({ subject: message.subject, event, traceparent: traceparents[index] || undefined });
      });
    }
  })();
  await connection.flush();
  return { events, connection, close: () => connection.close() };
}

/** The names of the client connections a nats-server started with `monitor` has open now. */
export async function natsConnectionNames(server: NatsServer): Promise<string[]> {
  if (!server.monitorPort) throw new Error('start the server with { monitor: true } to list its connections');
  const reply = await fetch(`http://127.0.0.1:${server.monitorPort}/connz?limit=1024`);
  const body = (await reply.json()) as { connections?: { name?: string }[] };
  return (body.connections ?? []).map((connection) => connection.name ?? '');
}
