// Targets, the Markdown summary and the PNG chart (an HTML/SVG page rendered by Debian's Chromium).
import { existsSync, writeFileSync } from 'node:fs';
import type { ConfigResult, ScenarioOutput } from './results.ts';

export const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'];

/** PERFORMANCE.md's figures for Portkey 1.15.2 on this kind of machine. */
export const PORTKEY_REFERENCE = { addedP50Ms: 0.97, addedP99Ms: 5.3, reqPerSecC64: 1150 };

export interface TargetCheck {
  scenario: string;
  target: string;
  measured: string;
  anchor: string;
  ratio: string;
  /**
   * The target, or its floor when it has a goal too. Never true when a configuration it reads had
   * errors. null: not measured in this run (scenario skipped, anchor missing, ...); 'info': a
   * figure to compare with, no target.
   */
  pass: boolean | null | 'info';
  /** The goal beyond the floor, when there is one: missing it is reported as a miss, not a failure. */
  goal?: boolean | null;
}

const fmt = (value: number | undefined, digits = 2) => (value === undefined || !Number.isFinite(value) ? 'n/a' : value.toFixed(digits));
const ratio = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined || !Number.isFinite(a / b) ? 'n/a' : `${(a / b).toFixed(2)}x`);

function config(output: ScenarioOutput | undefined, name: string, group?: string): ConfigResult | undefined {
  if (!output) return undefined;
  const list = group ? ((output.byConcurrency as Record<string, ConfigResult[]> | undefined)?.[group] ?? []) : (output.configs ?? []);
  return list.find((each) => each.name === name);
}

/** "0123456789ab", and "with uncommitted changes" when the work tree differed. */
export function shortCommit(commit: unknown): string {
  const text = String(commit ?? '?');
  return text.endsWith('+changes') ? `${text.slice(0, 12)} with uncommitted changes` : text.slice(0, 12);
}

/** "pass", "FAIL"; with a goal, both: "floor: pass, goal: miss". */
export function verdict(check: TargetCheck): string {
  if (check.pass === 'info') return 'for comparison';
  const word = (pass: boolean | null, otherwise: string) => (pass === null ? 'not measured' : pass ? 'pass' : otherwise);
  if (check.goal === undefined) return word(check.pass, 'FAIL');
  return `floor: ${word(check.pass, 'FAIL')}, goal: ${word(check.goal, 'miss')}`;
}

/** Errors in the configurations a check reads: their total, and "; errors: name n, ..." for the measured column. */
function errorsIn(configs: Array<ConfigResult | undefined>): { count: number; note: string } {
  const failed = configs.filter((each): each is ConfigResult => each !== undefined && each.errors > 0);
  return {
    count: failed.reduce((sum, each) => sum + each.errors, 0),
    note: failed.length ? `; errors: ${failed.map((each) => `${each.name} ${each.errors}`).join(', ')}` : '',
  };
}

/** A req/s target of at least Portkey's in the same run, passed only when `from` had no errors. */
function atLeastPortkey(scenario: string, target: string, mine: number | undefined, portkey: number | undefined, from: Array<ConfigResult | undefined>): TargetCheck {
  const errors = errorsIn(from);
  return {
    scenario,
    target,
    measured: `${fmt(mine, 0)} req/s${errors.note}`,
    anchor: `${fmt(portkey, 0)} req/s`,
    ratio: ratio(mine, portkey),
    pass: mine === undefined || portkey === undefined ? null : errors.count === 0 && mine >= portkey,
  };
}

/** The all-in-one's floor (must hold) and goal against Portkey measured in the same run. */
const AIO_FLOOR = 1;
const AIO_GOAL = { overhead: 0.5, throughput: 2 };

/**
 * An all-in-one figure against Portkey's: the floor is 1.0x (added latency no higher, req/s no
 * lower), the goal half Portkey's added latency or twice its req/s. `from` are the configurations
 * the two figures come from: an error in any of them fails both.
 */
function floorAndGoal(args: {
  scenario: string;
  target: string;
  mine: number | undefined;
  anchor: number | undefined;
  unit: 'ms' | 'req/s';
  from: Array<ConfigResult | undefined>;
}): TargetCheck {
  const { mine, anchor, unit } = args;
  const latency = unit === 'ms';
  const goalFactor = latency ? AIO_GOAL.overhead : AIO_GOAL.throughput;
  const errors = errorsIn(args.from);
  const meets = (factor: number) => mine !== undefined && anchor !== undefined && errors.count === 0 && (latency ? mine <= factor * anchor : mine >= factor * anchor);
  const measured = mine !== undefined && anchor !== undefined;
  return {
    scenario: args.scenario,
    target: `${args.target}: floor ${latency ? '<=' : '>='} ${AIO_FLOOR.toFixed(1)}x Portkey's, goal ${latency ? '<=' : '>='} ${goalFactor}x`,
    measured: `${fmt(mine, latency ? 3 : 0)} ${unit}${errors.note}`,
    anchor: `${fmt(anchor, latency ? 3 : 0)} ${unit}`,
    ratio: ratio(mine, anchor),
    pass: measured ? meets(AIO_FLOOR) : null,
    goal: measured ? meets(goalFactor) : null,
  };
}

export function checkTargets(outputs: Map<string, ScenarioOutput>, quick: boolean): TargetCheck[] {
  const checks: TargetCheck[] = [];
  const over = outputs.get('overhead');
  const added = over?.addedMs as Record<string, { p50: number; p99: number }> | undefined;
  const anchorAdded = added?.portkey;
  for (const p of ['p50', 'p99'] as const) {
    checks.push(
      floorAndGoal({
        scenario: 'overhead',
        target: `all-in-one chain's added latency vs Portkey's single hop, ${p}, c=1 (HTTP)`,
        mine: added?.['aio-http']?.[p],
        anchor: anchorAdded?.[p],
        unit: 'ms',
        from: [config(over, 'direct'), config(over, 'portkey'), config(over, 'aio-http')],
      }),
    );
  }
  // --baseline: the other checkout's all-in-one, measured in the same rounds (informational).
  const baselineCommit = shortCommit((over?.settings as { baseline?: { commit?: string } } | undefined)?.baseline?.commit);
  for (const p of ['p50', 'p99'] as const) {
    const base = added?.['aio-baseline-http']?.[p];
    if (base === undefined) continue;
    checks.push({
      scenario: 'overhead',
      target: `baseline all-in-one (${baselineCommit}) adds, ${p}, c=1 (HTTP): for comparison`,
      measured: `${fmt(base, 3)} ms (this build: ${fmt(added?.['aio-http']?.[p], 3)} ms, ${ratio(added?.['aio-http']?.[p], base)} of it)`,
      anchor: `${fmt(anchorAdded?.[p], 3)} ms`,
      ratio: ratio(base, anchorAdded?.[p]),
      pass: 'info',
    });
  }
  const splitP50 = added?.['split-http']?.p50;
  const splitOverheadErrors = errorsIn([config(over, 'direct'), config(over, 'split-http')]);
  checks.push({
    scenario: 'overhead',
    target: 'one process per service adds <= 2.5 ms p50, c=1 (HTTP)',
    measured: `${fmt(splitP50, 3)} ms${splitOverheadErrors.note}`,
    anchor: `${fmt(anchorAdded?.p50, 3)} ms`,
    ratio: ratio(splitP50, anchorAdded?.p50),
    pass: splitP50 === undefined ? null : splitOverheadErrors.count === 0 && splitP50 <= 2.5,
  });
  const thr = outputs.get('throughput');
  const portkey64 = config(thr, 'portkey', 'c64')?.reqPerSec;
  checks.push(
    floorAndGoal({
      scenario: 'throughput',
      target: "all-in-one's req/s vs Portkey's at c=64, telemetry on",
      mine: config(thr, 'aio-http', 'c64')?.reqPerSec,
      anchor: portkey64,
      unit: 'req/s',
      from: [config(thr, 'portkey', 'c64'), config(thr, 'aio-http', 'c64')],
    }),
  );
  const thrBaselineCommit = shortCommit((thr?.settings as { baseline?: { commit?: string } } | undefined)?.baseline?.commit);
  for (const level of ['c64', 'c256']) {
    const base = config(thr, 'aio-baseline-http', level)?.reqPerSec;
    if (base === undefined) continue;
    const mine = config(thr, 'aio-http', level)?.reqPerSec;
    const anchor = config(thr, 'portkey', level)?.reqPerSec;
    checks.push({
      scenario: 'throughput',
      target: `baseline all-in-one (${thrBaselineCommit}) req/s at c=${level.slice(1)}: for comparison`,
      measured: `${fmt(base, 0)} req/s (this build: ${fmt(mine, 0)}, ${ratio(mine, base)} of it)`,
      anchor: `${fmt(anchor, 0)} req/s`,
      ratio: ratio(base, anchor),
      pass: 'info',
    });
  }
  // The split shape against Portkey in the same run, not against the direct upstream: no gateway
  // here comes near the zero-latency fake's req/s, so a share of it said nothing.
  const split64 = config(thr, 'split-http', 'c64')?.reqPerSec;
  checks.push(
    atLeastPortkey('throughput', "one process per service >= 1.0x Portkey's req/s at c=64", split64, portkey64, [config(thr, 'portkey', 'c64'), config(thr, 'split-http', 'c64')]),
  );
  const pipe = outputs.get('pipeline');
  const pipeAdded = pipe?.addedMs as Record<string, { p50: number; p99: number }> | undefined;
  for (const p of ['p50', 'p99'] as const) {
    checks.push(
      floorAndGoal({
        scenario: 'pipeline',
        target: `all-in-one 3-step pipeline (checkpoints on) adds vs Portkey making the 3 calls, ${p}, c=1 (HTTP)`,
        mine: pipeAdded?.['aio-pipeline-http']?.[p],
        anchor: pipeAdded?.['portkey-x3']?.[p],
        unit: 'ms',
        from: [config(pipe, 'direct-x3', 'c1'), config(pipe, 'portkey-x3', 'c1'), config(pipe, 'aio-pipeline-http', 'c1')],
      }),
    );
  }
  const portkeyRuns64 = config(pipe, 'portkey-x3', 'c64')?.reqPerSec;
  checks.push(
    floorAndGoal({
      scenario: 'pipeline',
      target: 'all-in-one 3-step pipeline runs/s vs Portkey making the 3 calls, c=64',
      mine: config(pipe, 'aio-pipeline-http', 'c64')?.reqPerSec,
      anchor: portkeyRuns64,
      unit: 'req/s',
      from: [config(pipe, 'portkey-x3', 'c64'), config(pipe, 'aio-pipeline-http', 'c64')],
    }),
  );
  const splitRuns64 = config(pipe, 'split-pipeline-http', 'c64')?.reqPerSec;
  checks.push(
    atLeastPortkey(
      'pipeline',
      "one process per service, 3-step pipeline >= 1.0x Portkey's runs/s making the 3 calls, c=64",
      splitRuns64,
      portkeyRuns64,
      [config(pipe, 'portkey-x3', 'c64'), config(pipe, 'split-pipeline-http', 'c64')],
    ),
  );
  const held = outputs.get('inflight');
  for (const shape of (held?.shapes as Array<Record<string, any>> | undefined) ?? []) {
    const full = shape.requested >= 10_000;
    checks.push({
      scenario: 'inflight',
      target: `${shape.requested} in flight (${shape.name}): all held at once, 0 errors, <= 50 KB per run${full ? '' : ' (target is for 10,000)'}`,
      measured: `${shape.errors} errors, ${fmt(shape.kbPerInFlightRun, 1)} KB/run, ${shape.upstreamMaxConcurrent} held at once`,
      anchor: '-',
      ratio: '-',
      pass: shape.errors === 0 && shape.kbPerInFlightRun <= 50 && shape.upstreamMaxConcurrent >= shape.requested,
    });
  }
  const soaked = outputs.get('soak');
  if (soaked) {
    const services = soaked.services as Record<string, { growthPct: number }>;
    const worst = Object.entries(services).sort((a, b) => b[1].growthPct - a[1].growthPct)[0];
    checks.push({
      scenario: 'soak',
      target: `soak RSS growth <= 5% per service (${(soaked.settings as any).durationSec} s${quick ? ', quick' : ''})`,
      measured: worst ? `worst ${worst[0]} ${fmt(worst[1].growthPct, 1)}%, ${soaked.errors} errors` : 'n/a',
      anchor: '-',
      ratio: '-',
      pass: worst ? Object.values(services).every((each) => each.growthPct <= 5) && soaked.errors === 0 : null,
    });
  }
  const tel = outputs.get('telemetry');
  if (tel) {
    const cost = tel.throughputCostPct as number;
    const errors = errorsIn(tel.configs ?? []);
    checks.push({
      scenario: 'telemetry',
      target: 'telemetry events cost <= 5% of throughput (c=64)',
      measured: `${fmt(cost, 1)}%${errors.note}`,
      anchor: '-',
      ratio: '-',
      pass: errors.count === 0 && cost <= 5,
    });
  }
  const opt = outputs.get('optimizer');
  if (opt) {
    const wall = opt.wallRatio as number;
    const cpu = opt.clientCpuRatio as number;
    const grpc = opt.grpc as any;
    const sub = opt.subprocess as any;
    checks.push({
      scenario: 'optimizer',
      target: 'a gRPC evaluation >= 100x cheaper than a subprocess: client CPU per evaluation',
      measured: `${fmt(cpu, 1)}x (${fmt(grpc.clientCpuMsPerEvaluation, 2)} vs ${fmt(sub.clientCpuMsPerEvaluation, 1)} ms)`,
      anchor: '-',
      ratio: '-',
      pass: cpu >= 100,
    });
    checks.push({
      scenario: 'optimizer',
      target: 'a gRPC evaluation >= 100x cheaper than a subprocess: mean wall time per evaluation (includes the chain itself)',
      measured: `${fmt(wall, 1)}x (${fmt(grpc.wallMsPerEvaluation.mean, 2)} vs ${fmt(sub.wallMsPerEvaluation.mean, 1)} ms)`,
      anchor: '-',
      ratio: '-',
      pass: wall >= 100,
    });
  }
  return checks;
}

function table(headers: string[], rows: Array<Array<string | number>>): string {
  const line = (cells: Array<string | number>) => `| ${cells.map((cell) => String(cell).replace(/\|/g, '\\|')).join(' | ')} |`;
  return [line(headers), line(headers.map(() => '---')), ...rows.map(line)].join('\n');
}

function configRows(configs: ConfigResult[], ttft = false): Array<Array<string | number>> {
  return configs.map((each) => [
    each.name,
    each.concurrency,
    each.count,
    each.errors,
    ...(ttft ? [fmt(each.ttftMs?.p50, 3), fmt(each.ttftMs?.p99, 3)] : []),
    fmt(each.latencyMs.p50, 3),
    fmt(each.latencyMs.p90, 3),
    fmt(each.latencyMs.p99, 3),
    fmt(each.latencyMs.max, 1),
    fmt(each.reqPerSec, 0),
    fmt(each.sutCpuMsPerRequest, 3),
    Object.entries(each.cpuMsPerRequest)
      .map(([name, value]) => `${name} ${fmt(value, 3)}`)
      .join(', '),
    Object.entries(each.peakRssMiB)
      .filter(([name]) => name !== 'driver')
      .map(([name, value]) => `${name} ${fmt(value, 0)}`)
      .join(', '),
  ]);
}

const CONFIG_HEADERS = ['configuration', 'c', 'requests', 'errors', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'req/s', 'SUT CPU ms/req', 'CPU ms/req per process', 'peak RSS MiB'];

export function summaryMarkdown(args: {
  run: string;
  mode: string;
  command: string;
  machine: Record<string, unknown>;
  checks: TargetCheck[];
  outputs: Map<string, ScenarioOutput>;
  anchorNote: string;
  chartNote: string;
}): string {
  const { machine, outputs } = args;
  const parts: string[] = [];
  parts.push(`# Elexirion benchmark, ${args.run} (${args.mode})`);
  parts.push(
    `Machine: ${machine.cores} cores (${machine.cpuModel}), ${machine.memoryGiB} GiB, Node ${machine.node}, Linux ${machine.kernel}, ${machine.natsServer ?? 'nats-server ?'}; commit ${shortCommit(machine.commit)}.`,
  );
  parts.push(`Command: \`${args.command}\``);
  parts.push(args.anchorNote);
  parts.push('## Targets');
  parts.push(
    table(
      ['scenario', 'target', 'measured', 'Portkey (same run)', 'ratio to anchor', 'result'],
      args.checks.map((check) => [check.scenario, check.target, check.measured, check.anchor, check.ratio, verdict(check)]),
    ),
  );
  const over = outputs.get('overhead');
  if (over) {
    parts.push('## 1. Overhead at c=1');
    const added = over.addedMs as Record<string, { p50: number; p90: number; p99: number }>;
    parts.push(table(['configuration', 'added p50 ms', 'added p90 ms', 'added p99 ms'], Object.entries(added).map(([name, value]) => [name, fmt(value.p50, 3), fmt(value.p90, 3), fmt(value.p99, 3)])));
    const hops = over.hopsP50Ms as Record<string, number>;
    if (Object.keys(hops).length) parts.push(`Per hop (split shape, p50 differences): ${Object.entries(hops).map(([name, value]) => `${name} ${fmt(value, 3)} ms`).join('; ')}.`);
    parts.push(table(CONFIG_HEADERS, configRows(over.configs ?? [])));
  }
  const thr = outputs.get('throughput');
  if (thr) {
    parts.push('## 2. Throughput');
    parts.push(table(CONFIG_HEADERS, configRows(thr.configs ?? [])));
  }
  const pipe = outputs.get('pipeline');
  if (pipe) {
    parts.push(`## 3. ${pipe.title}`);
    const added = pipe.addedMs as Record<string, { p50: number; p90: number; p99: number }>;
    const perStep = pipe.perStepAddedMs as Record<string, { p50: number; p99: number }>;
    const groups = pipe.byConcurrency as Record<string, ConfigResult[]>;
    parts.push(
      table(
        ['configuration', 'added p50 ms', 'added p99 ms', 'per step p50 ms', 'per step p99 ms', 'runs/s at c=64'],
        Object.entries(added).map(([name, value]) => [
          name,
          fmt(value.p50, 3),
          fmt(value.p99, 3),
          fmt(perStep[name]?.p50, 3),
          fmt(perStep[name]?.p99, 3),
          fmt(groups.c64?.find((each) => each.name === name)?.reqPerSec, 0),
        ]),
      ),
    );
    const checkpoints = pipe.checkpoints as { writesDuringMeasurement: number; successfulRuns: number; writesPerRun: number };
    parts.push(`Checkpoints: ${checkpoints.writesDuringMeasurement} writes for ${checkpoints.successfulRuns} pipeline runs (${fmt(checkpoints.writesPerRun, 2)} per run).`);
    parts.push(table(CONFIG_HEADERS, configRows(pipe.configs ?? [])));
  }
  const str = outputs.get('streaming');
  if (str) {
    parts.push('## 4. Streaming (provider StreamComplete vs direct SSE; the whole chain is 4b)');
    const headers = [...CONFIG_HEADERS.slice(0, 4), 'TTFT p50 ms', 'TTFT p99 ms', ...CONFIG_HEADERS.slice(4)];
    parts.push(table(headers, configRows(str.configs ?? [], true)));
    const addedTtft = str.addedTtftMs as { p50: number; p99: number };
    parts.push(`Added time to first token: p50 ${fmt(addedTtft.p50, 3)} ms, p99 ${fmt(addedTtft.p99, 3)} ms.`);
  }
  const firstToken = outputs.get('ttft');
  if (firstToken) {
    parts.push(`## 4b. ${firstToken.title}`);
    const added = firstToken.addedTtftMs as Record<string, { p50: number; p99: number }>;
    parts.push(table(['configuration', 'added TTFT p50 ms', 'added TTFT p99 ms'], Object.entries(added).map(([name, value]) => [name, fmt(value.p50, 3), fmt(value.p99, 3)])));
    parts.push(table([...CONFIG_HEADERS.slice(0, 4), 'TTFT p50 ms', 'TTFT p99 ms', ...CONFIG_HEADERS.slice(4)], configRows(firstToken.configs ?? [], true)));
  }
  const oai = outputs.get('openai');
  if (oai) parts.push(`## ${oai.title}`, String(oai.markdown ?? ''));
  const held = outputs.get('inflight');
  if (held) {
    parts.push(`## 5. ${held.title}`);
    const shapes = held.shapes as Array<Record<string, any>>;
    parts.push(
      table(
        ['shape', 'runs', 'completed', 'errors', 'held at once (upstream)', 'wall s', 'p50 ms', 'p99 ms', 'KB per run', 'KB per run held at once', 'per process: baseline -> peak MiB'],
        shapes.map((shape) => [
          shape.name,
          shape.requested,
          shape.completed,
          shape.errors,
          shape.upstreamMaxConcurrent,
          fmt(shape.wallSec, 1),
          fmt(shape.latencyMs.p50, 0),
          fmt(shape.latencyMs.p99, 0),
          fmt(shape.kbPerInFlightRun, 1),
          fmt(shape.kbPerRunHeldAtUpstream, 1),
          Object.entries(shape.services as Record<string, any>)
            .map(([name, value]) => `${name} ${fmt(value.baselineRssMiB, 0)} -> ${fmt(value.peakRssMiB, 0)}`)
            .join(', '),
        ]),
      ),
    );
    const direct = held.direct as Record<string, any> | undefined;
    if (direct) {
      parts.push(
        `Direct to the upstream, same burst: ${direct.completed} completed, ${direct.errors} errors, ${direct.upstreamMaxConcurrent} held at once, p50 ${fmt(direct.latencyMs.p50, 0)} ms, p99 ${fmt(direct.latencyMs.p99, 0)} ms, ${fmt(direct.wallSec, 1)} s.`,
      );
    }
    for (const shape of shapes) if (shape.errorSamples?.length) parts.push(`Errors (${shape.name}): ${shape.errorSamples.join('; ')}`);
  }
  const soaked = outputs.get('soak');
  if (soaked) {
    parts.push(`## 6. ${soaked.title} (${(soaked.settings as any).shape})`);
    parts.push(
      `${soaked.requests} requests, ${soaked.errors} errors, ${fmt(soaked.achievedReqPerSec as number, 1)} req/s achieved, p50 ${fmt((soaked.latencyMs as any).p50, 3)} ms, p99 ${fmt((soaked.latencyMs as any).p99, 3)} ms.`,
    );
    parts.push(
      table(
        ['service', 'RSS start MiB', 'RSS mid MiB', 'RSS end MiB', 'peak MiB', 'growth', 'growth over the 2nd half'],
        Object.entries(soaked.services as Record<string, any>).map(([name, value]) => [
          name,
          fmt(value.startRssMiB, 1),
          fmt(value.midRssMiB, 1),
          fmt(value.endRssMiB, 1),
          fmt(value.peakRssMiB, 1),
          `${fmt(value.growthPct, 1)}%`,
          `${fmt(value.secondHalfGrowthPct, 1)}%`,
        ]),
      ),
    );
  }
  const tel = outputs.get('telemetry');
  if (tel) {
    parts.push('## 7. Telemetry on vs off');
    parts.push(`Throughput cost ${fmt(tel.throughputCostPct as number, 1)}%; CPU cost ${fmt(tel.cpuCostMsPerRequest as number, 3)} ms per request (services + NATS).`);
    const perRound = tel.roundThroughputCostPct as number[] | undefined;
    if (perRound?.length) parts.push(`Cost in each round (on and off back to back): ${perRound.map((pct) => `${fmt(pct, 1)}%`).join(', ')}.`);
    parts.push(table(CONFIG_HEADERS, configRows(tel.configs ?? [])));
  }
  const opt = outputs.get('optimizer');
  if (opt) {
    parts.push('## 8. Optimizer transport');
    const row = (name: string, value: any) => [name, value.evaluations, fmt(value.wallMsPerEvaluation.mean, 2), fmt(value.wallMsPerEvaluation.p50, 2), fmt(value.wallMsPerEvaluation.p99, 2), fmt(value.clientCpuMsPerEvaluation, 2), fmt(value.serverCpuMsPerEvaluation, 2)];
    parts.push(
      table(['transport', 'evaluations', 'mean ms', 'p50 ms', 'p99 ms', 'client CPU ms', 'server CPU ms'], [row('gRPC (GatewayClient kept open)', opt.grpc), row('subprocess per evaluation', opt.subprocess)]),
    );
    parts.push(`Subprocess / gRPC: ${fmt(opt.wallRatio as number, 1)}x wall time, ${fmt(opt.clientCpuRatio as number, 1)}x client CPU.`);
  }
  const mon = outputs.get('monitor');
  if (mon) {
    const figures = mon.monitor as Record<string, number>;
    parts.push('## Monitor under the throughput load');
    parts.push(
      `Consumer lag (event batches): max ${fmt(figures.lagMax!, 0)}, at the end of the load ${fmt(figures.lagAtLoadEnd!, 0)}, drained ${fmt(figures.drainMsAfterLoad!, 0)} ms after it; ` +
        `${fmt(figures.eventsApplied!, 0)} events applied (${fmt(figures.eventsPerRequest!, 2)} per request); monitor CPU ${fmt(figures.cpuUsPerEvent!, 1)} µs per event.`,
    );
    parts.push(table(CONFIG_HEADERS, configRows(mon.configs ?? [])));
  }
  parts.push('## Notes');
  const notes: string[] = [];
  for (const output of outputs.values()) for (const note of output.notes) notes.push(`- ${output.scenario}: ${note}`);
  notes.push(`- chart: ${args.chartNote}`);
  parts.push(notes.join('\n'));
  return `${parts.join('\n\n')}\n`;
}

// ---------------------------------------------------------------- the chart

interface Series {
  name: string;
  color: string;
  values: Array<number | undefined>;
}

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** A grouped bar chart as SVG: one group per category, one bar per series. */
export function barChart(title: string, unit: string, categories: string[], series: Series[], width = 560, height = 300): string {
  const margin = { top: 40, right: 16, bottom: 70, left: 64 };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const all = series.flatMap((each) => each.values).filter((value): value is number => value !== undefined && Number.isFinite(value));
  const nice = (value: number) => {
    if (value <= 0) return 0;
    const power = 10 ** Math.floor(Math.log10(value));
    return [1, 2, 2.5, 5, 10].map((step) => step * power).find((candidate) => candidate >= value)!;
  };
  const maxValue = nice(Math.max(1e-9, ...all));
  const minValue = -nice(-Math.min(0, ...all));
  const span = maxValue - minValue || 1;
  const y = (value: number) => margin.top + plotH - ((value - minValue) / span) * plotH;
  const groupW = plotW / Math.max(1, categories.length);
  const barW = Math.max(4, (groupW * 0.8) / Math.max(1, series.length));
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`);
  out.push(`<text x="${width / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">${escapeXml(title)}</text>`);
  for (let i = 0; i <= 4; i++) {
    const value = minValue + (span * i) / 4;
    out.push(`<line x1="${margin.left}" x2="${width - margin.right}" y1="${y(value)}" y2="${y(value)}" stroke="#ddd"/>`);
    out.push(`<text x="${margin.left - 6}" y="${y(value) + 4}" text-anchor="end">${value >= 100 ? value.toFixed(0) : value.toFixed(2)}</text>`);
  }
  out.push(`<text transform="translate(14 ${margin.top + plotH / 2}) rotate(-90)" text-anchor="middle">${escapeXml(unit)}</text>`);
  out.push(`<line x1="${margin.left}" x2="${width - margin.right}" y1="${y(0)}" y2="${y(0)}" stroke="#333"/>`);
  categories.forEach((category, c) => {
    const x0 = margin.left + c * groupW + groupW * 0.1;
    series.forEach((each, s) => {
      const value = each.values[c];
      if (value === undefined || !Number.isFinite(value)) return;
      const top = Math.min(y(value), y(0));
      const barH = Math.abs(y(value) - y(0));
      out.push(`<rect x="${x0 + s * barW}" y="${top}" width="${barW - 2}" height="${Math.max(0.5, barH)}" fill="${each.color}"><title>${escapeXml(`${each.name} ${category}: ${value}`)}</title></rect>`);
      out.push(`<text x="${x0 + s * barW + (barW - 2) / 2}" y="${top - 3}" text-anchor="middle" font-size="9">${value >= 100 ? value.toFixed(0) : value.toFixed(2)}</text>`);
    });
    out.push(`<text x="${x0 + (barW * series.length) / 2}" y="${margin.top + plotH + 16}" text-anchor="middle">${escapeXml(category)}</text>`);
  });
  series.forEach((each, s) => {
    const lx = margin.left + s * 120;
    out.push(`<rect x="${lx}" y="${height - 22}" width="10" height="10" fill="${each.color}"/><text x="${lx + 14}" y="${height - 13}">${escapeXml(each.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('');
}

/** The colour of a verdict: a failed target or floor is red, a met floor with a missed goal amber. */
function verdictClass(check: TargetCheck): string {
  if (check.pass === null || check.pass === 'info') return 'na';
  if (!check.pass) return 'fail';
  return check.goal === false ? 'miss' : 'pass';
}

export function chartHtml(run: string, mode: string, outputs: Map<string, ScenarioOutput>, checks: TargetCheck[], machine: Record<string, unknown>): string {
  const panels: string[] = [];
  const over = outputs.get('overhead');
  if (over) {
    const added = over.addedMs as Record<string, { p50: number; p99: number }>;
    const names = Object.keys(added).filter((name) => !name.startsWith('split-hop'));
    panels.push(
      barChart('Added latency over the direct call, c=1', 'ms', names, [
        { name: 'p50', color: '#4e79a7', values: names.map((name) => added[name]!.p50) },
        { name: 'p99', color: '#f28e2b', values: names.map((name) => added[name]!.p99) },
      ]),
    );
  }
  const thr = outputs.get('throughput');
  if (thr) {
    const groups = thr.byConcurrency as Record<string, ConfigResult[]>;
    const names = (groups.c64 ?? []).map((each) => each.name);
    panels.push(
      barChart(
        'Throughput',
        'req/s',
        names,
        Object.entries(groups).map(([level, list], index) => ({
          name: level.replace('c', 'c='),
          color: ['#59a14f', '#e15759'][index % 2]!,
          values: names.map((name) => list.find((each) => each.name === name)?.reqPerSec),
        })),
      ),
    );
    panels.push(
      barChart('CPU per request at c=64 (system under test)', 'ms', names.filter((name) => name !== 'direct'), [
        {
          name: 'SUT CPU',
          color: '#76b7b2',
          values: names.filter((name) => name !== 'direct').map((name) => groups.c64?.find((each) => each.name === name)?.sutCpuMsPerRequest),
        },
      ]),
    );
  }
  const pipe = outputs.get('pipeline');
  if (pipe) {
    const perStep = pipe.perStepAddedMs as Record<string, { p50: number; p99: number }>;
    const names = Object.keys(perStep);
    panels.push(
      barChart('3-step pipeline: added latency per step, c=1', 'ms', names, [
        { name: 'p50', color: '#4e79a7', values: names.map((name) => perStep[name]!.p50) },
        { name: 'p99', color: '#f28e2b', values: names.map((name) => perStep[name]!.p99) },
      ]),
    );
    const c64 = (pipe.byConcurrency as Record<string, ConfigResult[]>).c64 ?? [];
    panels.push(
      barChart('3-step pipeline: runs per second, c=64', 'runs/s', c64.map((each) => each.name), [
        { name: 'runs/s', color: '#59a14f', values: c64.map((each) => each.reqPerSec) },
      ]),
    );
  }
  const held = outputs.get('inflight');
  if (held) {
    const shapes = held.shapes as Array<Record<string, any>>;
    panels.push(
      barChart(`Memory per in-flight run (${shapes[0]?.requested ?? ''} runs)`, 'KB', shapes.map((shape) => shape.name), [
        { name: 'KB/run', color: '#b07aa1', values: shapes.map((shape) => shape.kbPerInFlightRun) },
      ]),
    );
  }
  const str = outputs.get('streaming');
  if (str) {
    const configs = str.configs ?? [];
    panels.push(
      barChart('Streaming: time to first token, c=1', 'ms', configs.map((each) => each.name), [
        { name: 'p50', color: '#4e79a7', values: configs.map((each) => each.ttftMs?.p50) },
        { name: 'p99', color: '#f28e2b', values: configs.map((each) => each.ttftMs?.p99) },
      ]),
    );
  }
  const rows = checks
    .map(
      (check) =>
        `<tr><td>${escapeXml(check.target)}</td><td>${escapeXml(check.measured)}</td><td>${escapeXml(check.anchor)}</td><td class="${verdictClass(check)}">${verdict(check)}</td></tr>`,
    )
    .join('');
  return `<!doctype html><html><head><meta charset="utf-8"><style>
body{font-family:sans-serif;margin:16px;width:1160px;background:#fff;color:#222}
h1{font-size:18px;margin:0 0 4px}p{margin:0 0 12px;font-size:12px;color:#555}
.grid{display:flex;flex-wrap:wrap;gap:12px}.grid svg{border:1px solid #eee}
table{border-collapse:collapse;font-size:11px;margin-top:12px;width:100%}td,th{border:1px solid #ddd;padding:3px 6px;text-align:left}
.pass{color:#1a7f37;font-weight:bold}.miss{color:#9a6700;font-weight:bold}.fail{color:#cf222e;font-weight:bold}.na{color:#888}
</style></head><body>
<h1>Elexirion benchmark ${escapeXml(run)} (${escapeXml(mode)})</h1>
<p>${escapeXml(`${machine.cores} cores, ${machine.cpuModel}, Node ${machine.node}`)}</p>
<div class="grid">${panels.join('')}</div>
<table><tr><th>target</th><th>measured</th><th>Portkey (same run)</th><th>result</th></tr>${rows}</table>
</body></html>`;
}

/** Renders the page to PNG with playwright-core driving Debian's Chromium; the reason when it cannot. */
export async function renderPng(html: string, pngPath: string): Promise<string | undefined> {
  if (!existsSync(CHROMIUM)) return `${CHROMIUM} is not installed (Debian package chromium), so no PNG was rendered; the HTML is beside it`;
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS });
  try {
    const page = await browser.newPage({ viewport: { width: 1200, height: 100 } });
    await page.setContent(html, { waitUntil: 'load' });
    await page.screenshot({ path: pngPath, fullPage: true });
  } finally {
    await browser.close();
  }
  return undefined;
}

export function writeJson(path: string, value: unknown): void {
  // NaN (a figure that could not be measured) becomes null.
  writeFileSync(path, `${JSON.stringify(value, (_key, item) => (typeof item === 'number' && !Number.isFinite(item) ? null : item), 2)}\n`);
}
