// `npm run bench:profile [-- --shape aio|split --seconds S --concurrency C --telemetry on|off
// --upstream-delay-ms MS --grpc]`
// (or `-- --analyze DIR` for profiles already written):
// runs the chain under the benchmark's closed-loop HTTP load with `node --cpu-prof` on every
// service process, then prints where the CPU went (self time by package and by function). This is
// how the benchmark's misses were traced to their causes; the .cpuprofile files stay in the
// printed folder for Chrome DevTools or speedscope.
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startNats } from '../../test/support/nats.js';
import { stopAll } from '../../test/support/processes.js';
import { summarizeProfile, type CpuProfile } from './cpu-profile.js';
import { Driver, MESSAGE, SHAPE_LABEL, Upstream, checkBuilt, log, serviceEnv, startShape, writeProviderConfig } from './harness.js';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      shape: { type: 'string', default: 'aio' },
      seconds: { type: 'string', default: '20' },
      concurrency: { type: 'string', default: '64' },
      telemetry: { type: 'string', default: 'on' },
      /** The upstream's delay; with a large --concurrency this profiles runs held in flight. */
      'upstream-delay-ms': { type: 'string', default: '0' },
      /** gRPC Gateway/Chat on one channel (as the in-flight scenario) instead of HTTP. */
      grpc: { type: 'boolean', default: false },
      /** Only summarize the .cpuprofile files already in this folder. */
      analyze: { type: 'string' },
    },
  });
  if (values.analyze) return printProfiles(values.analyze);
  const shape = values.shape === 'split' ? 'one-process-per-service' : 'all-in-one';
  const seconds = Number(values.seconds);
  const concurrency = Number(values.concurrency);
  if (!(seconds > 0) || !(concurrency > 0)) throw new Error('--seconds and --concurrency must be positive numbers');
  checkBuilt();
  const profileDir = mkdtempSync(join(tmpdir(), 'elexirion-profile-'));
  const nats = await startNats();
  const upstream = await new Upstream().start();
  const driver = new Driver();
  await driver.ready;
  try {
    const env = serviceEnv(upstream, writeProviderConfig(), {
      TELEMETRY_EVENTS: values.telemetry === 'off' ? 'false' : 'true',
      NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${profileDir}`,
    });
    const system = await startShape(shape, nats.url, env);
    const target = values.grpc
      ? { type: 'grpc' as const, port: system.grpcPort, service: 'gateway' as const, method: 'chat', request: { message: MESSAGE } }
      : { type: 'http' as const, url: `${system.httpUrl}/v1/chat`, body: { message: MESSAGE } };
    log(`warm-up, then ${seconds} s at c=${concurrency} against ${SHAPE_LABEL[shape]}`);
    await driver.run({ target, mode: 'closed', concurrency: 16, durationMs: 3_000 });
    await upstream.setDefault({ delayMs: Number(values['upstream-delay-ms']) });
    const result = await driver.run({ target, mode: 'closed', concurrency, durationMs: seconds * 1000, timeoutMs: 300_000, closeAfter: true });
    log(`${result.latencies.length} requests, ${result.errors} errors`);
    await system.stack.stop();
  } finally {
    await driver.stop();
    await upstream.stop();
    await nats.stop();
    await stopAll();
  }
  printProfiles(profileDir);
}

function printProfiles(profileDir: string): void {
  for (const file of readdirSync(profileDir).filter((name) => name.endsWith('.cpuprofile'))) {
    console.log(`\n== ${join(profileDir, file)}`);
    console.log(summarizeProfile(JSON.parse(readFileSync(join(profileDir, file), 'utf8')) as CpuProfile));
  }
}

await main();
