// The services read the recovery actions from their KV bucket, never from the monitor, and keep
// the last actions they saw while NATS is away. A gateway (with the offline provider, in one
// process) is put in emergency mode by an emergency_mode entry written to the bucket as the
// monitor writes it; NATS is stopped and low-priority requests are still refused; NATS back, the
// entry's removal is seen and they pass again.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientError, Metadata, Status, createChannel, createClient, type Channel } from 'nice-grpc';
import { KvStore, RECOVERY_ACTIONS_BUCKET, proto, type RecoveryActionRecord } from '@elexirion/kit';
import { connectNats, eventually, freePort, spawnNode, startNats, stopAll, waitServing, type NatsServer, type Spawned } from '@elexirion/testing';

const store = mkdtempSync(join(tmpdir(), 'elexirion-nats-outage-'));
let nats: NatsServer;
let host: Spawned;
let channel: Channel;
let httpPort: number;
let gateway: ReturnType<typeof createClient<typeof proto.GatewayDefinition>>;

beforeAll(async () => {
  nats = await startNats(undefined, store);
  const grpcPort = await freePort();
  host = spawnNode('gateway+provider', 'server/dist/main.js', {
    BIND_HOST: '127.0.0.1',
    NATS_URL: nats.url,
    GATEWAY_GRPC_PORT: String(grpcPort),
    GATEWAY_HTTP_PORT: String((httpPort = await freePort())),
    GATEWAY_AUTH: 'off',
  }, ['--services', 'gateway,provider']);
  await waitServing(grpcPort, 'elexirion.v1.Gateway', host);
  channel = createChannel(`127.0.0.1:${grpcPort}`);
  gateway = createClient(proto.GatewayDefinition, channel);
}, 60_000);

afterAll(async () => {
  channel?.close();
  await host?.stop();
  await nats?.stop();
  await stopAll();
  rmSync(store, { recursive: true, force: true });
});

async function withActions<T>(use: (actions: KvStore<RecoveryActionRecord>) => Promise<T>): Promise<T> {
  const connection = await connectNats(nats.url);
  try {
    return await use(await KvStore.open(connection, RECOVERY_ACTIONS_BUCKET));
  } finally {
    await connection.close();
  }
}

const lowPriority = () => gateway.listModels({}, { metadata: Metadata({ 'x-priority': 'low' }) }).then(() => undefined, (error: unknown) => error as ClientError);

describe('recovery actions while NATS is away', () => {
  it('refuses low priority once the bucket holds emergency_mode', async () => {
    expect(await lowPriority()).toBeUndefined();
    await withActions((actions) => actions.create('emergency_mode', { action: 'emergency_mode', target: '', reason: 'test: critical', since: new Date().toISOString() }));
    const refused = await eventually('low priority refused', async () => (await lowPriority()) ?? undefined);
    expect(refused.code).toBe(Status.RESOURCE_EXHAUSTED);
  });

  it('keeps refusing it with NATS stopped, and lets the rest through', async () => {
    await nats.process.stop();
    await eventually('the gateway without NATS', async () => {
      const ready = (await (await fetch(`http://127.0.0.1:${httpPort}/readyz`)).json()) as { nats: { state: string } };
      return ready.nats.state !== 'connected' ? true : undefined;
    });
    expect((await lowPriority())?.code).toBe(Status.RESOURCE_EXHAUSTED);
    await expect(gateway.listModels({})).resolves.toMatchObject({ offline: true });
  });

  it('lets it through again once NATS is back and the action is gone', async () => {
    nats = await startNats(nats.port, store);
    await withActions((actions) => actions.delete('emergency_mode'));
    await eventually('low priority served again', async () => ((await lowPriority()) === undefined ? true : undefined), 20_000);
  });
});
