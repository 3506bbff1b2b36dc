// The benchmark harness (bench/) in a tiny mode: it starts NATS, the fake upstream, both service
// shapes and a baseline (this checkout standing in for another), measures the overhead scenario,
// and writes well-formed results. No figure is asserted: speed is reported by `npm run bench`,
// not tested.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot, spawnProcess } from '@elexirion/testing';

const DATE = '2000-01-01';
const out = mkdtempSync(join(tmpdir(), 'elexirion-bench-test-'));

async function runHarness(args: string[]): Promise<{ code: number | string; output: string }> {
  const harness = spawnProcess('bench', process.execPath, ['--disable-warning=ExperimentalWarning', '--import', './bench/src/ts-hooks.mjs', 'bench/src/main.ts', ...args]);
  const code = await harness.exited;
  return { code, output: harness.output() };
}

const finite = (value: unknown) => typeof value === 'number' && Number.isFinite(value);

describe('bench harness (tiny run)', () => {
  let run: { code: number | string; output: string };

  // One run for the file: every test reads what it wrote, whichever tests are selected.
  beforeAll(async () => {
    run = await runHarness(['--quick', '--scenarios', 'overhead', '--requests', '40', '--rounds', '2', '--no-anchor', '--baseline', repoRoot, '--date', DATE, '--out', out]);
  }, 150_000);

  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it('runs the overhead scenario and exits 0', () => {
    expect(run.code, run.output).toBe(0);
  });

  it('refuses a baseline that is not a built checkout, before starting anything', async () => {
    const refused = await runHarness(['--scenarios', 'overhead', '--baseline', join(out, 'no-such-checkout'), '--out', out]);
    expect(refused.code).toBe(64);
    expect(refused.output).toMatch(/--baseline: .*no-such-checkout is not built/);
  });

  it('writes the scenario JSON with machine info and per-configuration figures', () => {
    const file = join(out, `${DATE}-overhead.json`);
    expect(existsSync(file), run?.output).toBe(true);
    const result = JSON.parse(readFileSync(file, 'utf8'));
    expect(result).toMatchObject({ scenario: 'overhead', date: DATE, mode: 'quick' });
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

  it('writes the Markdown summary with the targets table', () => {
    const summary = readFileSync(join(out, `${DATE}-summary.md`), 'utf8');
    expect(summary).toContain('| scenario | target | measured | Portkey (same run) | ratio to anchor | result |');
    expect(summary).toMatch(/\| overhead \| one process per service adds <= 2\.5 ms p50.*\| (pass|FAIL) \|/);
    expect(summary).toMatch(/\| overhead \| baseline all-in-one \([0-9a-f]{12}.*\) adds, p50, c=1 \(HTTP\): for comparison \| .*\(this build: .* \| for comparison \|/);
    expect(summary).toContain('| configuration | c | requests | errors | p50 ms |');
    expect(summary).toMatch(/\| direct \| 1 \| \d+ \| 0 \|/);
  });

  it('renders the chart to PNG (when Debian Chromium is installed)', () => {
    const png = join(out, `${DATE}-chart.png`);
    if (!existsSync('/usr/bin/chromium')) {
      expect(readFileSync(join(out, `${DATE}-summary.md`), 'utf8')).toContain('/usr/bin/chromium is not installed');
      return;
    }
    const bytes = readFileSync(png);
    expect([...bytes.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    expect(bytes.length).toBeGreaterThan(1000);
  });
});
