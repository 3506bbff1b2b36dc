// The benchmark harness (bench/) in a tiny mode: it starts NATS, the fake upstream, both service
// shapes and a baseline (this checkout standing in for another), measures the overhead scenario
// and then the multi-step pipeline scenario, each run into a folder of its own, and writes
// well-formed results. No figure is asserted: speed is reported by `npm run bench`, not tested.
// The targets' verdicts are checked on made-up figures.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot, spawnProcess } from '@elexirion/testing';
import { checkTargets, verdict } from '../../bench/src/report.js';
import { createRunFolder, runName } from '../../bench/src/run-folder.js';

const out = mkdtempSync(join(tmpdir(), 'elexirion-bench-test-'));
const RUN_FOLDER = /^\d{4}-\d{2}-\d{2}T\d{4}-[0-9a-f]{12}(-dirty)?(-\d+)?$/;

async function runHarness(args: string[]): Promise<{ code: number | string; output: string }> {
  const harness = spawnProcess('bench', process.execPath, ['--disable-warning=ExperimentalWarning', '--import', './bench/src/ts-hooks.mjs', 'bench/src/main.ts', ...args]);
  const code = await harness.exited;
  return { code, output: harness.output() };
}

/** Every file of every run folder under `dir`, with its contents. */
function snapshot(dir: string): Map<string, string> {
  const files = new Map<string, string>();
  for (const folder of readdirSync(dir)) {
    for (const file of readdirSync(join(dir, folder))) files.set(join(folder, file), readFileSync(join(dir, folder, file), 'latin1'));
  }
  return files;
}

const finite = (value: unknown) => typeof value === 'number' && Number.isFinite(value);

describe('bench harness (tiny runs)', () => {
  let overheadRun: { code: number | string; output: string };
  let pipelineRun: { code: number | string; output: string };
  let overheadDir = '';
  let pipelineDir = '';
  let beforePipeline = new Map<string, string>();

  // Both runs once for the file: every test reads what they wrote, whichever tests are selected.
  beforeAll(async () => {
    overheadRun = await runHarness(['--quick', '--scenarios', 'overhead', '--requests', '40', '--rounds', '2', '--no-anchor', '--baseline', repoRoot, '--out', out]);
    const folders = readdirSync(out);
    if (folders.length === 1) overheadDir = join(out, folders[0]!);
    beforePipeline = snapshot(out);
    pipelineRun = await runHarness(['--quick', '--scenarios', 'pipeline', '--requests', '6', '--rounds', '1', '--round-seconds', '1', '--no-anchor', '--out', out]);
    const other = readdirSync(out).find((folder) => join(out, folder) !== overheadDir);
    if (other) pipelineDir = join(out, other);
  }, 300_000);

  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it('runs the overhead scenario into a folder named by date, time and commit, and exits 0', () => {
    expect(overheadRun.code, overheadRun.output).toBe(0);
    const folders = readdirSync(out);
    expect(folders).toHaveLength(2);
    expect(overheadDir.split('/').pop()).toMatch(RUN_FOLDER);
    const head = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: repoRoot, encoding: 'utf8' }).trim();
    expect(overheadDir.split('/').pop()!.slice(16, 28)).toBe(head.slice(0, 12));
    expect(readdirSync(overheadDir).sort()).toEqual(expect.arrayContaining(['overhead.json', 'summary.md', 'chart.html']));
  });

  it('runs the pipeline scenario into another folder, leaving the first run as it was', () => {
    expect(pipelineRun.code, pipelineRun.output).toBe(0);
    const folders = readdirSync(out);
    expect(folders).toHaveLength(2);
    for (const folder of folders) expect(folder).toMatch(RUN_FOLDER);
    expect(pipelineDir).not.toBe('');
    const after = snapshot(out);
    expect(beforePipeline.size).toBeGreaterThan(0);
    for (const [file, contents] of beforePipeline) expect(after.get(file), file).toBe(contents);
  });

  it('refuses a baseline that is not a built checkout, before starting anything', async () => {
    const refused = await runHarness(['--scenarios', 'overhead', '--baseline', join(out, 'no-such-checkout'), '--out', out]);
    expect(refused.code).toBe(64);
    expect(refused.output).toMatch(/--baseline: .*no-such-checkout is not built/);
  });

  it('writes the scenario JSON with machine info and per-configuration figures', () => {
    const file = join(overheadDir, 'overhead.json');
    expect(existsSync(file), overheadRun?.output).toBe(true);
    const result = JSON.parse(readFileSync(file, 'utf8'));
    expect(result).toMatchObject({ scenario: 'overhead', mode: 'quick', run: overheadDir.split('/').pop() });
    expect(result.machine.cores).toBeGreaterThan(0);
    expect(result.machine.node).toMatch(/^v\d+/);
    const names = result.configs.map((config: { name: string }) => config.name);
    expect(names).toEqual(expect.arrayContaining(['direct', 'aio-http', 'aio-grpc', 'split-http', 'split-grpc', 'aio-baseline-http']));
    expect(result.settings.baseline.root).toBe(repoRoot.replace(/\/$/, ''));
    expect(result.settings.baseline.commit).toMatch(/^[0-9a-f]{40}(\+changes)?$/);
    for (const config of result.configs) {
      expect(config.concurrency).toBe(1);
      expect(config.count).toBeGreaterThan(0);
      expect(config.errors).toBe(0);
      for (const key of ['p50', 'p90', 'p99', 'max', 'mean']) expect(finite(config.latencyMs[key]), `${config.name} ${key}`).toBe(true);
      expect(config.latencyMs.p50).toBeLessThanOrEqual(config.latencyMs.p99);
      expect(config.latencyMs.p99).toBeLessThanOrEqual(config.latencyMs.max);
      expect(config.reqPerSec).toBeGreaterThan(0);
      expect(config.roundReqPerSec).toHaveLength(2);
      for (const rate of config.roundReqPerSec) expect(rate).toBeGreaterThan(0);
      expect(Object.keys(config.cpuMsPerRequest)).toEqual(expect.arrayContaining(['driver', 'fake-upstream']));
      for (const value of Object.values(config.cpuMsPerRequest)) expect(finite(value)).toBe(true);
      for (const value of Object.values(config.peakRssMiB)) expect(value as number).toBeGreaterThan(0);
    }
    const split = result.configs.find((config: { name: string }) => config.name === 'split-http');
    expect(Object.keys(split.cpuMsPerRequest)).toEqual(expect.arrayContaining(['gateway', 'agent', 'executor', 'provider']));
    for (const name of ['aio-http', 'split-http', 'aio-baseline-http']) expect(finite(result.addedMs[name].p50)).toBe(true);
    const baseline = result.configs.find((config: { name: string }) => config.name === 'aio-baseline-http');
    expect(Object.keys(baseline.cpuMsPerRequest)).toContain('elexirion-all-baseline');
  });

  it('measures the 3-step pipeline through both shapes at c=1 and c=64, checkpoints written', () => {
    const file = join(pipelineDir, 'pipeline.json');
    expect(existsSync(file), pipelineRun?.output).toBe(true);
    const result = JSON.parse(readFileSync(file, 'utf8'));
    expect(result).toMatchObject({ scenario: 'pipeline', mode: 'quick' });
    for (const level of ['c1', 'c64']) {
      const configs = result.byConcurrency[level];
      expect(configs.map((config: { name: string }) => config.name)).toEqual(['direct-x3', 'aio-pipeline-http', 'split-pipeline-http']);
      for (const config of configs) {
        expect(config.concurrency).toBe(level === 'c1' ? 1 : 64);
        expect(config.count, config.name).toBeGreaterThan(0);
        expect(config.errors, `${config.name}: ${config.errorSamples}`).toBe(0);
        expect(config.reqPerSec).toBeGreaterThan(0);
        for (const key of ['p50', 'p99']) expect(finite(config.latencyMs[key]), `${config.name} ${key}`).toBe(true);
      }
    }
    for (const name of ['aio-pipeline-http', 'split-pipeline-http']) {
      expect(finite(result.addedMs[name].p50)).toBe(true);
      expect(result.perStepAddedMs[name].p50).toBeCloseTo(result.addedMs[name].p50 / 3, 2);
    }
    // Checkpoints on: every run writes some (the first run through each shape, and the measured ones).
    expect(result.checkpoints.firstRunWrites.aio).toBeGreaterThan(0);
    expect(result.checkpoints.firstRunWrites.split).toBeGreaterThan(0);
    expect(result.checkpoints.successfulRuns).toBeGreaterThan(0);
    expect(result.checkpoints.writesDuringMeasurement).toBeGreaterThanOrEqual(result.checkpoints.successfulRuns);
    const summary = readFileSync(join(pipelineDir, 'summary.md'), 'utf8');
    expect(summary).toMatch(/## 3\. A 3-step pipeline with checkpoints/);
    expect(summary).toMatch(/\| aio-pipeline-http \| -?\d+\.\d{3} \| -?\d+\.\d{3} \| -?\d+\.\d{3} \| -?\d+\.\d{3} \| \d+ \|/);
    // No Portkey in this run: its comparisons are listed, not judged.
    expect(summary).toMatch(/\| pipeline \| all-in-one 3-step pipeline runs\/s vs Portkey .* \| floor: not measured, goal: not measured \|/);
  });

  it('writes the Markdown summary with the targets table', () => {
    const summary = readFileSync(join(overheadDir, 'summary.md'), 'utf8');
    expect(summary).toContain(`# Elexirion benchmark, ${overheadDir.split('/').pop()} (quick)`);
    expect(summary).toContain('| scenario | target | measured | Portkey (same run) | ratio to anchor | result |');
    expect(summary).toMatch(/\| overhead \| one process per service adds <= 2\.5 ms p50.*\| (pass|FAIL) \|/);
    expect(summary).toMatch(/\| overhead \| baseline all-in-one \([0-9a-f]{12}.*\) adds, p50, c=1 \(HTTP\): for comparison \| .*\(this build: .* \| for comparison \|/);
    expect(summary).toContain('| configuration | c | requests | errors | p50 ms |');
    expect(summary).toMatch(/\| direct \| 1 \| \d+ \| 0 \|/);
  });

  it('renders the chart to PNG (when Debian Chromium is installed)', () => {
    const png = join(overheadDir, 'chart.png');
    if (!existsSync('/usr/bin/chromium')) {
      expect(readFileSync(join(overheadDir, 'summary.md'), 'utf8')).toContain('/usr/bin/chromium is not installed');
      return;
    }
    const bytes = readFileSync(png);
    expect([...bytes.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    expect(bytes.length).toBeGreaterThan(1000);
  });
});

describe('run folders', () => {
  const SHA = '0123456789abcdef0123456789abcdef01234567';

  it('are named by UTC date, time to the minute, the commit, and -dirty for uncommitted changes', () => {
    const at = new Date('2026-12-01T09:05:59.900Z');
    expect(runName(at, SHA)).toBe('2026-12-01T0905-0123456789ab');
    expect(runName(at, `${SHA}+changes`)).toBe('2026-12-01T0905-0123456789ab-dirty');
    expect(runName(at, 'unknown')).toBe('2026-12-01T0905-unknown');
  });

  it('never hand a second run the folder of the first, even in the same minute on the same commit', () => {
    const dir = mkdtempSync(join(tmpdir(), 'elexirion-bench-folders-'));
    try {
      const name = runName(new Date('2026-12-01T09:05:00Z'), SHA);
      const first = createRunFolder(dir, name);
      writeFileSync(join(first.dir, 'summary.md'), 'the first run');
      const second = createRunFolder(dir, name);
      const third = createRunFolder(dir, name);
      expect([first.name, second.name, third.name]).toEqual([name, `${name}-2`, `${name}-3`]);
      expect(readFileSync(join(first.dir, 'summary.md'), 'utf8')).toBe('the first run');
      expect(readdirSync(second.dir)).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('targets', () => {
  /** A configuration's result with the figures a target reads. */
  const result = (name: string, figures: { p50?: number; p99?: number; reqPerSec?: number; errors?: number; concurrency?: number }) => ({
    name,
    description: name,
    concurrency: figures.concurrency ?? 1,
    rounds: 1,
    count: 100,
    errors: figures.errors ?? 0,
    errorSamples: figures.errors ? ['HTTP 503: unavailable'] : [],
    latencyMs: { count: 100, p50: figures.p50 ?? 1, p90: figures.p99 ?? 1, p99: figures.p99 ?? 1, max: figures.p99 ?? 1, mean: figures.p50 ?? 1 },
    reqPerSec: figures.reqPerSec ?? 100,
    roundReqPerSec: [figures.reqPerSec ?? 100],
    wallSec: 1,
    cpuMsPerRequest: {},
    sutCpuMsPerRequest: 0,
    peakRssMiB: {},
    warmup: { count: 10, errors: 0 },
  });

  /** overhead and throughput outputs: the all-in-one adds `aioAdded` ms where Portkey adds 1.0, and serves `aio` req/s against Portkey's 1000. */
  function outputs(figures: { aioAdded: number; aioErrors?: number; aio: number; split: number; splitErrors?: number }) {
    const overheadConfigs = [result('direct', { p50: 1, p99: 2 }), result('portkey', { p50: 2, p99: 4 }), result('aio-http', { p50: 1 + figures.aioAdded, p99: 2 + 2 * figures.aioAdded, errors: figures.aioErrors ?? 0 })];
    const c64 = [
      result('direct', { reqPerSec: 20_000, concurrency: 64 }),
      result('portkey', { reqPerSec: 1000, concurrency: 64 }),
      result('aio-http', { reqPerSec: figures.aio, concurrency: 64, errors: figures.aioErrors ?? 0 }),
      result('split-http', { reqPerSec: figures.split, concurrency: 64, errors: figures.splitErrors ?? 0 }),
    ];
    return new Map([
      [
        'overhead',
        {
          scenario: 'overhead',
          title: 'overhead',
          settings: {},
          notes: [],
          configs: overheadConfigs,
          addedMs: { portkey: { p50: 1, p90: 2, p99: 2 }, 'aio-http': { p50: figures.aioAdded, p90: 2 * figures.aioAdded, p99: 2 * figures.aioAdded } },
        },
      ],
      ['throughput', { scenario: 'throughput', title: 'throughput', settings: {}, notes: [], configs: c64, byConcurrency: { c64 } }],
    ]);
  }

  const row = (checks: ReturnType<typeof checkTargets>, start: string) => {
    const found = checks.find((check) => check.target.startsWith(start));
    expect(found, start).toBeDefined();
    return { ...found!, verdict: verdict(found!) };
  };

  it("show the all-in-one's floor (1.0x Portkey) and goal (half its overhead, twice its req/s) separately", () => {
    const between = checkTargets(outputs({ aioAdded: 0.8, aio: 1500, split: 100 }), true);
    expect(row(between, "all-in-one chain's added latency vs Portkey's single hop, p50").verdict).toBe('floor: pass, goal: miss');
    expect(row(between, "all-in-one's req/s vs Portkey's at c=64").verdict).toBe('floor: pass, goal: miss');
    const beyond = checkTargets(outputs({ aioAdded: 0.4, aio: 2100, split: 100 }), true);
    expect(row(beyond, "all-in-one chain's added latency vs Portkey's single hop, p50").verdict).toBe('floor: pass, goal: pass');
    expect(row(beyond, "all-in-one's req/s vs Portkey's at c=64").verdict).toBe('floor: pass, goal: pass');
    const below = checkTargets(outputs({ aioAdded: 1.2, aio: 900, split: 100 }), true);
    expect(row(below, "all-in-one chain's added latency vs Portkey's single hop, p50").verdict).toBe('floor: FAIL, goal: miss');
    expect(row(below, "all-in-one's req/s vs Portkey's at c=64").verdict).toBe('floor: FAIL, goal: miss');
  });

  it('fail when a configuration they read had errors, whatever the ratio', () => {
    const checks = checkTargets(outputs({ aioAdded: 0.4, aioErrors: 3, aio: 2100, split: 1200, splitErrors: 1 }), true);
    const latency = row(checks, "all-in-one chain's added latency vs Portkey's single hop, p50");
    expect(latency.verdict).toBe('floor: FAIL, goal: miss');
    expect(latency.measured).toContain('errors: aio-http 3');
    expect(row(checks, "all-in-one's req/s vs Portkey's at c=64").verdict).toBe('floor: FAIL, goal: miss');
    const split = row(checks, "one process per service >= 1.0x Portkey's req/s at c=64");
    expect(split.verdict).toBe('FAIL');
    expect(split.measured).toContain('errors: split-http 1');
  });

  it("judge the split shape's throughput against Portkey's in the same run, not the direct upstream's", () => {
    // 1,200 req/s is 0.06x the direct upstream's 20,000 and 1.2x Portkey's 1,000.
    expect(row(checkTargets(outputs({ aioAdded: 0.8, aio: 1500, split: 1200 }), true), "one process per service >= 1.0x Portkey's req/s at c=64").verdict).toBe('pass');
    expect(row(checkTargets(outputs({ aioAdded: 0.8, aio: 1500, split: 800 }), true), "one process per service >= 1.0x Portkey's req/s at c=64").verdict).toBe('FAIL');
  });
});
