#!/usr/bin/env node
// Waits until grpc.health.v1 reports SERVING for every named service at an address.
//   elexirion-health-check 127.0.0.1:50051 elexirion.v1.Gateway [--timeout-ms 30000]
// Exit 0 when all serve, 1 when the time runs out (printing what did not).
import { parseArgs } from 'node:util';
import { createChannel, createClient } from 'nice-grpc';
import { HealthDefinition } from 'nice-grpc-server-health';

const { values, positionals } = parseArgs({
  options: { 'timeout-ms': { type: 'string', default: '30000' } },
  allowPositionals: true,
});
const [address, ...services] = positionals;
if (!address) {
  console.error('usage: health-check HOST:PORT [SERVICE ...] [--timeout-ms N]');
  process.exit(64);
}
const until = Date.now() + Number(values['timeout-ms']);
const channel = createChannel(address);
const client = createClient(HealthDefinition, channel);
const pending = new Set(services.length > 0 ? services : ['']);
let lastProblem = '';
while (pending.size > 0 && Date.now() < until) {
  for (const service of [...pending]) {
    try {
      const { status } = await client.check({ service }, { signal: AbortSignal.timeout(1_000) });
      if (status === 1) pending.delete(service);
      else lastProblem = `${service || '(server)'}: status ${status}`;
    } catch (error) {
      lastProblem = `${service || '(server)'}: ${(error as Error).message}`;
    }
  }
  if (pending.size > 0) await new Promise((resolve) => setTimeout(resolve, 200));
}
channel.close();
if (pending.size > 0) {
  console.error(`not serving at ${address}: ${[...pending].join(', ')} (${lastProblem})`);
  process.exit(1);
}
