import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { proto } from '@elexirion/kit';
import { freePort, waitForPort } from './ports.js';
import { spawnProcess, type Spawned } from './processes.js';

export interface NatsServer {
  url: string;
  port: number;
  /** The HTTP monitoring port (`/connz`, `/varz`), when asked for. */
  monitorPort?: number;
  process: Spawned;
  stop(): Promise<void>;
}

/** A real nats-server with JetStream on a free port and a temporary store (and monitoring, when asked). */
export async function startNats(port?: number, storeDir?: string, options: { monitor?: boolean } = {}): Promise<NatsServer> {
  const chosen = port ?? (await freePort());
  const store = storeDir ?? mkdtempSync(join(tmpdir(), 'elexirion-nats-'));
  const monitorPort = options.monitor ? await freePort() : undefined;
  const monitorArgs = monitorPort ? ['-m', String(monitorPort)] : [];
  const spawned = spawnProcess('nats-server', 'nats-server', ['-a', '127.0.0.1', '-p', String(chosen), '-js', '-sd', store, ...monitorArgs]);
  await waitForPort(chosen, 10_000);
  if (monitorPort) await waitForPort(monitorPort, 10_000);
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
