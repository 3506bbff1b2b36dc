// `npm run bench:profile [-- --shape aio|split --seconds S --concurrency C --telemetry on|off
// --upstream-delay-ms MS --grpc --pipeline --openai [--stream]]`
// (or `-- --analyze DIR` for profiles already written):
// runs the chain under the benchmark's closed-loop HTTP load with `node --cpu-prof` on every
// service process, then prints where the CPU went (self time by package and by function). This is
// how the benchmark's misses were traced to their causes; the .cpuprofile files stay in the
// printed folder for Chrome DevTools or speedscope.
//
// `npm run bench:profile -- --heap [--runs N --entry gateway|agent|executor|provider]`: heap
// snapshots of the all-in-one process before and while N runs are held in flight (entered over
// gRPC at that service), then what each held run keeps alive, by kind and by suspended function.
import { closeSync, mkdtempSync, openSync, readSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startNats, type NatsServer, stopAll } from '@elexirion/testing';
import { summarizeProfile, type CpuProfile } from './cpu-profile.js';
import { readHeapSnapshot, summarizeHeapGrowth } from './heap-profile.js';
import { Driver, directBody, MESSAGE, SHAPE_LABEL, Upstream, grpcEntry, type EntryService, checkBuilt, log, serviceEnv, startShape, writeProviderConfig } from './harness.js';
import { PIPELINE } from './scenarios.js';

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
      /** The pipeline scenario's 3-step pipeline (checkpoints on) over HTTP instead of the chat. */
      pipeline: { type: 'boolean', default: false },
      /** The OpenAI-compatible POST /v1/chat/completions (scenario openai) instead of the chat. */
      openai: { type: 'boolean', default: false },
      /** With --openai: stream: true (the upstream's 3 chunks 10 ms apart, as the openai scenario streams). */
      stream: { type: 'boolean', default: false },
      /** Only summarize the .cpuprofile files already in this folder. */
      analyze: { type: 'string' },
      /** Heap snapshots with runs held in flight instead of a CPU profile. */
      heap: { type: 'boolean', default: false },
      runs: { type: 'string', default: '2000' },
      entry: { type: 'string', default: 'gateway' },
    },
  });
  if (values.analyze) return printProfiles(values.analyze);
  if (values.heap) return profileHeap(Number(values.runs), values.entry);
  const shape = values.shape === 'split' ? 'one-process-per-service' : 'all-in-one';
  const seconds = Number(values.seconds);
  const concurrency = Number(values.concurrency);
  if (!(seconds > 0) || !(concurrency > 0)) throw new Error('--seconds and --concurrency must be positive numbers');
  checkBuilt();
  const profileDir = mkdtempSync(join(tmpdir(), 'elexirion-profile-'));
  await withLoadRig(async ({ nats, upstream, driver }) => {
    const env = serviceEnv(upstream, writeProviderConfig(), {
      TELEMETRY_EVENTS: values.telemetry === 'off' ? 'false' : 'true',
      NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${profileDir}`,
      ...(values.pipeline ? { PIPELINES_DIR: PIPELINE.dir, EXECUTOR_CHECKPOINTS: 'true' } : {}),
    });
    const system = await startShape(shape, nats.url, env);
    const target = values.grpc
      ? grpcEntry('gateway', system.grpcPort, system.auth)
      : values.pipeline
        ? { type: 'http' as const, url: `${system.httpUrl}/v1/pipelines/${PIPELINE.name}/execute`, headers: system.auth, body: { inputs: { message: MESSAGE } } }
        : values.openai
          ? { type: values.stream ? ('http-sse' as const) : ('http' as const), url: `${system.httpUrl}/v1/chat/completions`, headers: system.auth, body: { ...directBody(values.stream), model: 'claude_smart' } }
          : { type: 'http' as const, url: `${system.httpUrl}/v1/chat`, headers: system.auth, body: { message: MESSAGE } };
    log(`warm-up, then ${seconds} s at c=${concurrency} against ${SHAPE_LABEL[shape]}`);
    await driver.run({ target, mode: 'closed', concurrency: 16, durationMs: 3_000 });
    await upstream.setDefault({ delayMs: Number(values['upstream-delay-ms']), ...(values.stream ? { chunkDelayMs: 10 } : {}) });
    const result = await driver.run({ target, mode: 'closed', concurrency, durationMs: seconds * 1000, timeoutMs: 300_000, closeAfter: true });
    log(`${result.latencies.length} requests, ${result.errors} errors`);
    await system.stack.stop();
  });
  printProfiles(profileDir);
}

const ENTRY_SERVICES: EntryService[] = ['gateway', 'agent', 'executor', 'provider'];
const isEntryService = (name: string): name is EntryService => (ENTRY_SERVICES as string[]).includes(name);

/** NATS, the fake upstream and the load driver for `body`, stopped (with anything started) after it. */
async function withLoadRig(body: (rig: { nats: NatsServer; upstream: Upstream; driver: Driver }) => Promise<void>): Promise<void> {
  let nats: NatsServer | undefined;
  let upstream: Upstream | undefined;
  let driver: Driver | undefined;
  try {
    nats = await startNats();
    upstream = await new Upstream().start();
    driver = new Driver();
    await driver.ready;
    await body({ nats, upstream, driver });
  } finally {
    await driver?.stop();
    await upstream?.stop();
    await nats?.stop();
    await stopAll();
  }
}

async function profileHeap(runs: number, entry: string): Promise<void> {
  if (!Number.isInteger(runs) || runs < 1) throw new Error('--runs must be a positive whole number');
  if (!isEntryService(entry)) throw new Error(`--entry must be one of ${ENTRY_SERVICES.join(', ')}`);
  checkBuilt();
  const snapshotDir = mkdtempSync(join(tmpdir(), 'elexirion-heap-'));
  const snapshots: string[] = [];
  await withLoadRig(async ({ nats, upstream, driver }) => {
    const env = serviceEnv(upstream, writeProviderConfig(), { NODE_OPTIONS: `--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${snapshotDir}` });
    const system = await startShape('all-in-one', nats.url, env);
    const pid = system.procs[0]!.pid;
    const target = grpcEntry(entry, system.grpcPort, entry === 'gateway' ? system.auth : undefined);
    log('warm-up');
    await driver.run({ target, mode: 'closed', concurrency: 16, requests: 400 });
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    snapshots.push(await takeSnapshot(pid, snapshotDir));
    await upstream.setDefault({ delayMs: 300_000 });
    log(`holding ${runs} runs (entered at the ${entry}) at an upstream that answers after 300 s`);
    const burst = driver.run({ target, mode: 'closed', concurrency: runs, requests: runs, timeoutMs: 600_000, closeAfter: true });
    burst.catch(() => {});
    const until = Date.now() + 120_000;
    while ((await upstream.stats()).open < runs) {
      if (Date.now() > until) throw new Error(`only ${(await upstream.stats()).open} of ${runs} runs reached the upstream in 120 s`);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    snapshots.push(await takeSnapshot(pid, snapshotDir));
    await system.stack.stop();
  });
  console.log(`\n== ${snapshots.join(' -> ')}`);
  console.log(summarizeHeapGrowth(readHeapSnapshot(snapshots[0]!), readHeapSnapshot(snapshots[1]!), runs));
}

/** Asks the process for a heap snapshot (SIGUSR2) and waits until the file is whole. */
async function takeSnapshot(pid: number, dir: string): Promise<string> {
  const existing = new Set(readdirSync(dir));
  log('heap snapshot');
  process.kill(pid, 'SIGUSR2');
  const until = Date.now() + 300_000;
  let file: string | undefined;
  let lastSize = -1;
  while (Date.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    file ??= readdirSync(dir).find((name) => name.endsWith('.heapsnapshot') && !existing.has(name));
    if (!file) continue;
    const size = statSync(join(dir, file)).size;
    // Written in one go: done when it stops growing and ends the JSON document.
    if (size === lastSize && size > 0 && endsWithBrace(join(dir, file), size)) return join(dir, file);
    lastSize = size;
  }
  throw new Error('the heap snapshot did not finish within 300 s');
}

function endsWithBrace(path: string, size: number): boolean {
  const tail = Buffer.alloc(Math.min(16, size));
  const fd = openSync(path, 'r');
  try {
    readSync(fd, tail, 0, tail.length, size - tail.length);
  } finally {
    closeSync(fd);
  }
  return tail.toString().trim().endsWith('}');
}

function printProfiles(profileDir: string): void {
  for (const file of readdirSync(profileDir).filter((name) => name.endsWith('.cpuprofile'))) {
    console.log(`\n== ${join(profileDir, file)}`);
    console.log(summarizeProfile(JSON.parse(readFileSync(join(profileDir, file), 'utf8')) as CpuProfile));
  }
}

await main();
