#!/usr/bin/env node
// Waits until grpc.health.v1 reports SERVING for every named service at an address.
//   elexirion-health-check 127.0.0.1:50051 elexirion.v1.Gateway [--timeout-ms 30000]
// Exit 0 when all serve, 1 when the time runs out (printing what did not).
import { parseArgs } from 'node:util';
import { createChannel, createClient } from 'nice-grpc';
import { HealthDefinition } from 'nice-grpc-server-health';

// Not the kit's parseCommandLine: loading the kit would triple this command's start-up time.
const USAGE = 'usage: elexirion-health-check HOST:PORT [SERVICE ...] [--timeout-ms N] [--help]';
const HELP = `${USAGE}

Waits until grpc.health.v1 at HOST:PORT reports SERVING for every SERVICE (a full name such as
elexirion.v1.Gateway; the server as a whole when none is named), asking every 200 ms.
Exits 0 once all serve, 1 when the time runs out (printing what did not), 64 on bad usage.

Options:
  --timeout-ms N   how long to wait, in milliseconds (default 30000)
  -h, --help       this help`;

function usageError(message: string): never {
  console.error(`elexirion-health-check: ${message}\n${USAGE}`);
  process.exit(64); // EX_USAGE
}

let parsed;
try {
  parsed = parseArgs({
    options: { 'timeout-ms': { type: 'string', default: '30000' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
  });
} catch (error) {
  usageError((error as Error).message);
}
const { values, positionals } = parsed;
if (values.help) {
  console.log(HELP);
  process.exit(0);
}
const [address, ...services] = positionals;
if (!address) usageError('HOST:PORT is missing');
const timeoutMs = Number(values['timeout-ms']);
if (!Number.isInteger(timeoutMs) || timeoutMs < 0) usageError(`--timeout-ms: expected whole milliseconds, got ${JSON.stringify(values['timeout-ms'])}`);
const until = Date.now() + timeoutMs;
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
