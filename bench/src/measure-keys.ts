/**
 * What API keys, limits and budgets cost NATS per request: two gateway replicas with keys on
 * (one process each, against one agent, executor and provider, telemetry events off so the
 * gateways' NATS traffic is only keys and limits), a real nats-server with monitoring, the fake
 * OpenAI upstream reporting tokens that the provider prices. For each kind of key, `--requests`
 * chats at `--concurrency` spread over both replicas; the figures are the messages each gateway's
 * NATS connection sent (KV writes, compare-and-sets, reads) and received (their acks, and the
 * watched buckets' updates), from the server's /connz, per request.
 *
 *   source scripts/env.sh && npx tsc -b && \
 *   node --disable-warning=ExperimentalWarning --import ./bench/src/ts-hooks.mjs bench/src/measure-keys.ts --requests 3000
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { createChannel, createClient, Metadata } from 'nice-grpc';
import { KvRevisionConflictError, KvStore, proto } from '@elexirion/kit';
import { z } from 'zod';
import { connectNats, freePort, spawnNode, startFakeOpenAI, startNats, startStack, stopAll, waitServing } from '@elexirion/testing';
import { MESSAGE, writeProviderConfig } from './harness.ts';

const { values } = parseArgs({
  options: { requests: { type: 'string', default: '3000' }, concurrency: { type: 'string', default: '32' }, 'kv-only': { type: 'boolean', default: false } },
});
const requests = Number(values.requests);
const concurrency = Number(values.concurrency);
if (!(requests > 0) || !(concurrency > 0)) throw new Error('--requests and --concurrency must be positive numbers');

const ADMIN_KEY = `measure-admin-${randomBytes(24).toString('base64url')}`;
const UPSTREAM_KEY = 'sk-measure-keys-fake';
const none = { requestsPerMinute: 0, tokensPerMinute: 0, dailyBudgetUsd: 0, monthlyBudgetUsd: 0 };
const kinds: { name: string; limits: proto.KeyLimits }[] = [
  { name: 'no limits (usage still counted)', limits: none },
  { name: 'every limit, too high to refuse (the bench key)', limits: { requestsPerMinute: 1e9, tokensPerMinute: 1e12, dailyBudgetUsd: 1e9, monthlyBudgetUsd: 1e9 } },
  { name: 'requests per minute only, 100000 (blocks of 1000)', limits: { ...none, requestsPerMinute: 100_000 } },
  { name: 'requests per minute only, 10000 (blocks of 100)', limits: { ...none, requestsPerMinute: 10_000 } },
];

interface Connection {
  name: string;
  in_msgs: number;
  out_msgs: number;
}

async function gatewayTraffic(monitorPort: number, pids: number[]): Promise<{ sent: number; received: number }> {
  const response = await fetch(`http://127.0.0.1:${monitorPort}/connz?limit=4096`);
  const { connections } = (await response.json()) as { connections: Connection[] };
  const mine = connections.filter((connection) => pids.some((pid) => connection.name === `elexirion-gateway-${pid}`));
  if (mine.length !== pids.length) throw new Error(`found ${mine.length} of ${pids.length} gateway connections in /connz`);
  // The server's in_msgs are what the client sent; its out_msgs what the client received.
  return { sent: mine.reduce((sum, c) => sum + c.in_msgs, 0), received: mine.reduce((sum, c) => sum + c.out_msgs, 0) };
}

/**
 * What one NATS server sustains of the writes the limits make: compare-and-set updates of a KV
 * entry, each waiting for its ack, by `workers` concurrent writers, each on a key of its own
 * (many keys) or all on one key (one hot key: conflicts, then a read and another attempt).
 */
async function kvUpdatesPerSecond(natsUrl: string, workers: number, oneKey: boolean, ms = 3_000): Promise<number> {
  const connection = await connectNats(natsUrl);
  try {
    const store = await KvStore.open(connection, {
      bucket: `measure_cas_${randomBytes(4).toString('hex')}`,
      schema: z.object({ count: z.number() }),
      key: { pattern: /^k\d+$/, description: 'k<n>' },
    });
    let done = 0;
    const until = performance.now() + ms;
    await Promise.all(
      Array.from({ length: workers }, async (_, worker) => {
        const key = oneKey ? 'k0' : `k${worker}`;
        let record = await store.get(key);
        while (performance.now() < until) {
          try {
            const revision = record ? await store.update(key, { count: record.value.count + 1 }, record.revision) : await store.create(key, { count: 1 });
            record = { value: { count: (record?.value.count ?? 0) + 1 }, revision };
            done += 1;
          } catch (error) {
            if (!(error instanceof KvRevisionConflictError)) throw error;
            record = await store.get(key);
          }
        }
      }),
    );
    return Math.round(done / (ms / 1000));
  } finally {
    await connection.close();
  }
}

const nats = await startNats(undefined, undefined, { monitor: true });
const upstream = await startFakeOpenAI({ apiKey: UPSTREAM_KEY });
try {
  console.log('KV compare-and-set updates per second on this nats-server (one server, file storage, each write acked):');
  for (const workers of [32, 128]) {
    console.log(`  ${workers} writers, a key each: ${await kvUpdatesPerSecond(nats.url, workers, false)}/s; all on one key: ${await kvUpdatesPerSecond(nats.url, workers, true)}/s`);
  }
  console.log('');
  if (!values['kv-only']) await measureChain(nats.monitorPort!, nats.url, upstream.url);

} finally {
  await upstream.close();
  await nats.stop();
  await stopAll();
}

async function measureChain(monitorPort: number, natsUrl: string, upstreamUrl: string): Promise<void> {
  const env = {
    LOG_LEVEL: 'warn',
    TELEMETRY_EVENTS: 'false',
    GATEWAY_AUTH: 'on',
    GATEWAY_ADMIN_KEY: ADMIN_KEY,
    OPENAI_API_KEY: UPSTREAM_KEY,
    OPENAI_BASE_URL: upstreamUrl,
    PROVIDER_CONFIG: writeProviderConfig(),
  };
  const stack = await startStack('one-process-per-service', natsUrl, env);
  const grpcPort = await freePort();
  const second = spawnNode('gateway-2', 'services/gateway/dist/main.js', {
    ...stack.env,
    GATEWAY_GRPC_PORT: String(grpcPort),
    GATEWAY_HTTP_PORT: String(await freePort()),
    AGENT_ADDRESS: `127.0.0.1:${stack.ports.agent}`,
    EXECUTOR_ADDRESS: `127.0.0.1:${stack.ports.executor}`,
    PROVIDER_ADDRESS: `127.0.0.1:${stack.ports.provider}`,
  });
  try {
    await waitServing(grpcPort, 'elexirion.v1.Gateway', second);
    const channels = [stack.channel, createChannel(`127.0.0.1:${grpcPort}`)];
    const gateways = channels.map((channel) => createClient(proto.GatewayDefinition, channel));
    const pids = [stack.processes.gateway!.child.pid!, second.child.pid!];
    const admin = { metadata: Metadata({ authorization: `Bearer ${ADMIN_KEY}` }) };
    console.log(`${requests} chats per kind of key at concurrency ${concurrency}, alternating between 2 gateway replicas\n`);
    console.log('| key | requests/s | NATS messages sent per request | received per request |');
    console.log('|---|---:|---:|---:|');
    for (const kind of kinds) {
      const { secret } = await gateways[0]!.createKey({ name: `measure-${randomBytes(4).toString('hex')}`, scopes: ['chat'], limits: kind.limits }, admin);
      const options = { metadata: Metadata({ authorization: `Bearer ${secret}` }) };
      for (const gateway of gateways) await gateway.chat({ message: MESSAGE }, options); // first use on each replica
      // Let the warm-up's writes and their watcher deliveries settle before counting.
      await new Promise((resolve) => setTimeout(resolve, 500));
      const before = await gatewayTraffic(monitorPort, pids);
      let next = 0;
      let failures = 0;
      const started = performance.now();
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (next < requests) {
            const index = next++;
            await gateways[index % 2]!.chat({ message: MESSAGE }, options).catch(() => (failures += 1));
          }
        }),
      );
      const seconds = (performance.now() - started) / 1000;
      await new Promise((resolve) => setTimeout(resolve, 500));
      const after = await gatewayTraffic(monitorPort, pids);
      if (failures > 0) throw new Error(`${failures} of ${requests} chats failed with ${kind.name}`);
      const per = (count: number) => (count / requests).toFixed(3);
      console.log(`| ${kind.name} | ${Math.round(requests / seconds)} | ${per(after.sent - before.sent)} | ${per(after.received - before.received)} |`);
    }
    for (const channel of channels) channel.close();
  } finally {
    await second.stop();
    await stack.stop();
  }
}
