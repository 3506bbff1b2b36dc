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
  process: Spawned;
  stop(): Promise<void>;
}

/** A real nats-server with JetStream on a free port and a temporary store. */
export async function startNats(port?: number, storeDir?: string): Promise<NatsServer> {
  const chosen = port ?? (await freePort());
  const store = storeDir ?? mkdtempSync(join(tmpdir(), 'elexirion-nats-'));
  const spawned = spawnProcess('nats-server', 'nats-server', ['-a', '127.0.0.1', '-p', String(chosen), '-js', '-sd', store]);
  await waitForPort(chosen, 10_000);
  return {
    url: `nats://127.0.0.1:${chosen}`,
    port: chosen,
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
