// `npm run bench:profile [-- --shape aio|split --seconds S --concurrency C --telemetry on|off]`
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
import { Driver, MESSAGE, SHAPE_LABEL, Upstream, checkBuilt, log, serviceEnv, startShape, writeProviderConfig } from './harness.js';

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }[];
  samples: number[];
  timeDeltas: number[];
}

function where(url: string): { pkg: string; file: string } {
  const dependency = /node_modules\/((?:@[^/]+\/)?[^/]+)\/(.*)$/.exec(url);
  if (dependency) return { pkg: dependency[1]!, file: `${dependency[1]}/${dependency[2]}` };
  const project = /\/((?:services|server)\/[^/]+|server)\/dist\/(.*)$/.exec(url);
  if (project) return { pkg: project[1]!, file: `${project[1]}/${project[2]}` };
  if (url.startsWith('node:')) return { pkg: url, file: url };
  return { pkg: url ? url.replace(/^.*\//, '') : '(native)', file: url };
}

/** Self time per package and per function, as percentages of all samples. */
export function summarizeProfile(profile: CpuProfile, top = 30): string {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const selfTime = new Map<number, number>();
  profile.samples.forEach((id, index) => selfTime.set(id, (selfTime.get(id) ?? 0) + (profile.timeDeltas[index] ?? 0)));
  const parentOf = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parentOf.set(child, node.id);
  const nameOf = (id: number) => {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
    return url ? `${functionName || '(anonymous)'}  ${where(url).file}:${lineNumber + 1}` : `(${functionName})`;
  };
  const isProject = (id: number) => /\/(services|server)\/[^/]+\/dist\/|\/server\/dist\//.test(byId.get(id)!.callFrame.url);
  const byPackage = new Map<string, number>();
  const byFunction = new Map<string, number>();
  // A library's time charged to the project function that called into it: which of our code paths cost.
  const byProjectCaller = new Map<string, number>();
  let total = 0;
  for (const [id, micros] of selfTime) {
    const { pkg } = where(byId.get(id)!.callFrame.url);
    byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + micros);
    byFunction.set(nameOf(id), (byFunction.get(nameOf(id)) ?? 0) + micros);
    let caller: number | undefined = id;
    while (caller !== undefined && !isProject(caller)) caller = parentOf.get(caller);
    const charged = caller === undefined ? '(not under project code)' : nameOf(caller);
    byProjectCaller.set(charged, (byProjectCaller.get(charged) ?? 0) + micros);
    total += micros;
  }
  const table = (counts: Map<string, number>) =>
    [...counts]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([key, micros]) => `${((micros / total) * 100).toFixed(1).padStart(5)}%  ${key}`)
      .join('\n');
  return `sampled ${(total / 1000).toFixed(0)} ms\n-- self time by package\n${table(byPackage)}\n-- self time by function\n${table(byFunction)}\n-- time charged to the nearest project function on the stack\n${table(byProjectCaller)}`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      shape: { type: 'string', default: 'aio' },
      seconds: { type: 'string', default: '20' },
      concurrency: { type: 'string', default: '64' },
      telemetry: { type: 'string', default: 'on' },
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
    const target = { type: 'http' as const, url: `${system.httpUrl}/v1/chat`, body: { message: MESSAGE } };
    log(`warm-up, then ${seconds} s at c=${concurrency} against ${SHAPE_LABEL[shape]}`);
    await driver.run({ target, mode: 'closed', concurrency, durationMs: 3_000 });
    const result = await driver.run({ target, mode: 'closed', concurrency, durationMs: seconds * 1000 });
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
