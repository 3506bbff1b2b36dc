// npm run bench [-- --quick] [--scenarios overhead,throughput,...] [--requests N] [--out DIR]
//                [--no-anchor] [--shapes aio,split] [--inflight N] [--soak-seconds S] [--rounds N]
//                [--round-seconds S] [--baseline DIR]   (another checkout, built: its all-in-one is measured in the same run)
// Starts what it measures (NATS, the fake upstreams, the services, the Portkey anchor), runs each
// scenario, and writes a folder per run, bench/results/<YYYY-MM-DD>T<HHMM>-<sha>[-dirty]/ (UTC):
// <scenario>.json, anchor.json, summary.md, chart.html and chart.png.
import { writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { startNats, repoRoot, stopAll, type StackShape } from '@elexirion/testing';
import { benchDir, checkBuilt, commitOf, Driver, log, machineInfo, PORTKEY_VERSION, Upstream, writeProviderConfig } from './harness.ts';
import { chartHtml, checkTargets, PORTKEY_REFERENCE, renderPng, summaryMarkdown, writeJson } from './report.ts';
import { createRunFolder, runName } from './run-folder.ts';
import { openai } from './scenario-openai.ts';
import { SCENARIOS, type Context, type Options, type ScenarioOutput } from './scenarios.ts';
import { ttft } from './scenario-ttft.ts';
import { monitor } from './scenario-monitor.ts';

const RUNNERS = { ...SCENARIOS, ttft, openai, monitor };

const ALL = ['overhead', 'throughput', 'pipeline', 'streaming', 'ttft', 'inflight', 'soak', 'telemetry', 'optimizer', 'openai', 'monitor'] as const;
const SHAPES: Record<string, StackShape> = { aio: 'all-in-one', 'all-in-one': 'all-in-one', split: 'one-process-per-service', 'one-process-per-service': 'one-process-per-service' };

function usage(message: string): never {
  console.error(`bench: ${message}\nusage: npm run bench -- [--quick] [--scenarios ${ALL.join(',')},anchor] [--requests N] [--out DIR] [--no-anchor] [--shapes aio,split] [--inflight N] [--soak-seconds S] [--rounds N] [--round-seconds S] [--baseline DIR]`);
  process.exit(64);
}

function positive(name: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (!Number.isInteger(value) || value <= 0) usage(`--${name}: expected a positive whole number, got ${raw}`);
  return value;
}

function parseOptions(): Options {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        quick: { type: 'boolean', default: false },
        scenarios: { type: 'string' },
        requests: { type: 'string' },
        out: { type: 'string' },
        'no-anchor': { type: 'boolean', default: false },
        shapes: { type: 'string' },
        inflight: { type: 'string' },
        'soak-seconds': { type: 'string' },
        rounds: { type: 'string' },
        'round-seconds': { type: 'string' },
        baseline: { type: 'string' },
      },
      strict: true,
    }));
  } catch (error) {
    usage((error as Error).message);
  }
  const scenarios = (values.scenarios ?? ALL.join(',')).split(',').map((each) => each.trim()).filter(Boolean);
  for (const name of scenarios) if (name !== 'anchor' && !(ALL as readonly string[]).includes(name)) usage(`unknown scenario ${name}`);
  const shapes = (values.shapes ?? 'aio,split').split(',').map((each) => SHAPES[each.trim()] ?? usage(`unknown shape ${each}`));
  return {
    quick: values.quick!,
    scenarios,
    requests: positive('requests', values.requests),
    outDir: resolve(values.out ?? join(benchDir, 'results')),
    anchor: !values['no-anchor'],
    shapes: [...new Set(shapes)],
    inflight: positive('inflight', values.inflight),
    soakSeconds: positive('soak-seconds', values['soak-seconds']),
    rounds: positive('rounds', values.rounds),
    roundSeconds: positive('round-seconds', values['round-seconds']),
    ...(values.baseline ? { baseline: { root: resolve(values.baseline), commit: '' } } : {}),
  };
}

async function main(): Promise<void> {
  const opts = parseOptions();
  checkBuilt();
  if (opts.baseline) {
    try {
      checkBuilt(opts.baseline.root);
    } catch (error) {
      usage(`--baseline: ${(error as Error).message}`);
    }
    opts.baseline.commit = await commitOf(opts.baseline.root);
  }
  // Only the fake upstreams serve models here: a vendor key in the caller's environment must
  // not send benchmark traffic anywhere else.
  for (const key of ['ANTHROPIC_API_KEY', 'GEMINI_API_KEY', 'ANTHROPIC_BASE_URL', 'GEMINI_BASE_URL', 'OPENAI_API_KEY', 'OPENAI_BASE_URL', 'PROVIDER_SECRETS_DIR']) delete process.env[key];
  const mode = opts.quick ? 'quick' : 'full';
  const command = `npm run bench --${process.argv.slice(2).length ? ` ${process.argv.slice(2).join(' ')}` : ''}`;
  const machine = await machineInfo();
  const startedAt = new Date();
  const run = createRunFolder(opts.outDir, runName(startedAt, String(machine.commit)));
  const shown = relative(repoRoot, run.dir) || run.dir;
  log(`${mode} run on ${machine.cores} cores, Node ${machine.node}; scenarios: ${opts.scenarios.join(', ')}; results in ${shown}`);

  const nats = await startNats();
  const upstream = await new Upstream().start();
  const driver = new Driver();
  await driver.ready;
  const ctx: Context = {
    opts,
    nats,
    providerConfig: writeProviderConfig(),
    shared: { driver, upstream, shared: [{ name: 'fake-upstream', pid: upstream.pid }] },
  };
  const outputs = new Map<string, ScenarioOutput>();
  const failures: string[] = [];
  const started = Date.now();
  const header = (scenario: string) => ({
    scenario,
    run: run.name,
    date: startedAt.toISOString().slice(0, 10),
    startedAt: startedAt.toISOString(),
    mode,
    generatedAt: new Date().toISOString(),
    machine,
    command,
  });
  try {
    for (const name of ALL) {
      if (!opts.scenarios.includes(name)) continue;
      const t0 = Date.now();
      log(`scenario ${name}`);
      try {
        const output = await RUNNERS[name](ctx);
        outputs.set(name, output);
        writeJson(join(run.dir, `${name}.json`), { ...header(name), ...output, elapsedSec: Math.round((Date.now() - t0) / 1000) });
      } catch (error) {
        const message = `${name}: ${(error as Error).stack ?? String(error)}`;
        failures.push(message);
        log(`scenario failed: ${message}`);
        writeJson(join(run.dir, `${name}.json`), { ...header(name), error: message });
      }
    }
  } finally {
    await driver.stop();
    await upstream.stop();
    await nats.stop();
    await stopAll();
  }

  // 9. The anchor: Portkey's figures from scenarios 1, 2 and 3, next to the reference ones.
  const anchorNote = ctx.anchorError
    ? `Anchor: ${ctx.anchorError}`
    : !opts.anchor
      ? 'Anchor: Portkey not run (--no-anchor).'
      : ctx.anchorInfo
        ? `Anchor: Portkey AI gateway ${ctx.anchorInfo.version} (npm @portkey-ai/gateway, in bench/cache/portkey, not a project dependency), listening on ${ctx.anchorInfo.listen.join(', ')}, provider openai with x-portkey-custom-host at the fake upstream.`
        : 'Anchor: Portkey not needed by the scenarios run.';
  if (opts.anchor && (opts.scenarios.includes('anchor') || outputs.has('overhead') || outputs.has('throughput') || outputs.has('pipeline'))) {
    const over = outputs.get('overhead');
    const thr = outputs.get('throughput');
    const pipe = outputs.get('pipeline');
    const sequenceAdded = (pipe?.addedMs as Record<string, { p50: number; p99: number }> | undefined)?.['portkey-x3'];
    const sequenceC64 = (pipe?.byConcurrency as Record<string, any[]> | undefined)?.c64?.find((each) => each.name === 'portkey-x3');
    const added = (over?.addedMs as Record<string, { p50: number; p99: number }> | undefined)?.portkey;
    const c64 = (thr?.byConcurrency as Record<string, any[]> | undefined)?.c64?.find((each) => each.name === 'portkey');
    const c256 = (thr?.byConcurrency as Record<string, any[]> | undefined)?.c256?.find((each) => each.name === 'portkey');
    writeJson(join(run.dir, 'anchor.json'), {
      ...header('anchor'),
      title: 'Anchor: Portkey AI gateway, measured in the same run',
      package: `@portkey-ai/gateway@${PORTKEY_VERSION}`,
      installedIn: 'bench/cache/portkey',
      listen: ctx.anchorInfo?.listen ?? null,
      error: ctx.anchorError ?? null,
      reference: { source: 'shared/PERFORMANCE.md (same machine kind, Node 20, autocannon)', ...PORTKEY_REFERENCE },
      measured: {
        addedP50Ms: added?.p50 ?? null,
        addedP99Ms: added?.p99 ?? null,
        reqPerSecC64: c64?.reqPerSec ?? null,
        reqPerSecC256: c256?.reqPerSec ?? null,
        cpuMsPerRequestC64: c64?.cpuMsPerRequest?.portkey ?? null,
        peakRssMiB: c64?.peakRssMiB?.portkey ?? null,
        threeCallsAddedP50Ms: sequenceAdded?.p50 ?? null,
        threeCallsAddedP99Ms: sequenceAdded?.p99 ?? null,
        threeCallsPerSecC64: sequenceC64?.reqPerSec ?? null,
      },
      notes: ['Portkey runs with its own start script (--headless), bound to 127.0.0.1 by a preload (bench/src/bind-loopback.mjs) since the script has no host option.'],
    });
  }

  const checks = checkTargets(outputs, opts.quick);
  const html = chartHtml(run.name, mode, outputs, checks, machine);
  writeFileSync(join(run.dir, 'chart.html'), html);
  let chartNote = "chart.png, rendered from chart.html by Debian's Chromium (playwright-core).";
  try {
    const reason = await renderPng(html, join(run.dir, 'chart.png'));
    if (reason) chartNote = reason;
  } catch (error) {
    chartNote = `rendering the PNG failed: ${(error as Error).message}`;
    failures.push(`chart: ${chartNote}`);
  }
  let summary = summaryMarkdown({ run: run.name, mode, command, machine, checks, outputs, anchorNote, chartNote });
  if (failures.length) summary += `\n## Failures\n\n${failures.map((failure) => `- ${failure.split('\n')[0]}`).join('\n')}\n`;
  writeFileSync(join(run.dir, 'summary.md'), summary);
  log(`done in ${Math.round((Date.now() - started) / 1000)} s: ${join(shown, 'summary.md')}`);
  process.stdout.write(summary.split(/\n## \d+\./)[0]!);
  process.exitCode = failures.length ? 1 : 0;
}

main().catch(async (error: unknown) => {
  console.error(`bench: ${(error as Error).stack ?? String(error)}`);
  await stopAll();
  process.exit(1);
});
