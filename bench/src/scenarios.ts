// The scenarios of the benchmark: each starts what it measures, runs, stops it, and returns
// figures for its results file.
import { execFile, spawn } from 'node:child_process';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { jetstreamManager, JetStreamApiCodes, JetStreamApiError, type JetStreamManager } from '@nats-io/jetstream';
import { type NatsServer, connectNats, eventually, freePort, repoRoot, spawnNode, waitServing, type StackShape } from '@elexirion/testing';
import {
  benchDir,
  directBody,
  grpcEntry,
  log,
  MESSAGE,
  portkeyHeaders,
  PROVIDER_REQUEST,
  runInterleaved,
  serviceEnv,
  SHAPE_LABEL,
  startPortkey,
  startShape,
  type Anchor,
  type BenchConfig,
  type ConfigResult,
  type Shape,
  type Shared,
} from './harness.ts';
import { cpuMs, peakRssKiB, resetPeakRss, rssKiB, RssSampler, type Proc } from './procstat.ts';
import type { ScenarioOutput } from './results.ts';
import { round, summarize } from './stats.ts';

export interface Options {
  quick: boolean;
  scenarios: string[];
  /** Overrides the request count per configuration (overhead, streaming, optimizer). */
  requests?: number;
  outDir: string;
  anchor: boolean;
  shapes: StackShape[];
  inflight?: number;
  soakSeconds?: number;
  rounds?: number;
  /** Overrides the length of a round of the closed-loop load phases (throughput, pipeline at c=64, telemetry). */
  roundSeconds?: number;
  /** Another checkout, built, whose all-in-one shape overhead and throughput measure in the same run (`aio-baseline-http`). */
  baseline?: { root: string; commit: string };
}

export type { ScenarioOutput } from './results.ts';

export interface Context {
  opts: Options;
  shared: Shared;
  nats: NatsServer;
  providerConfig: string;
  /** Why the Portkey anchor is missing, once it failed to start. */
  anchorError?: string;
  anchorInfo?: { version: string; listen: string[] };
}

/** Starts the shapes, and the baseline's all-in-one too when `withBaseline` and `--baseline` ask for it. */
export async function withShapes<T>(ctx: Context, shapes: StackShape[], env: NodeJS.ProcessEnv, body: (started: Shape[]) => Promise<T>, withBaseline = false): Promise<T> {
  const started: Shape[] = [];
  try {
    for (const shape of shapes) {
      log(`starting the services (${shape})`);
      started.push(await startShape(shape, ctx.nats.url, serviceEnv(ctx.shared.upstream, ctx.providerConfig, env)));
    }
    const baseline = withBaseline ? ctx.opts.baseline : undefined;
    if (baseline) {
      log(`starting the baseline's services (all-in-one, ${baseline.root} at ${baseline.commit})`);
      started.push(await startShape('all-in-one', ctx.nats.url, serviceEnv(ctx.shared.upstream, ctx.providerConfig, env), baseline.root));
    }
    return await body(started);
  } finally {
    for (const shape of started) await shape.stack.stop();
  }
}

export async function withAnchor<T>(ctx: Context, body: (anchor: Anchor | undefined) => Promise<T>): Promise<T> {
  if (!ctx.opts.anchor || ctx.anchorError) return body(undefined);
  let anchor: Anchor | undefined;
  try {
    log('starting the Portkey anchor');
    anchor = await startPortkey(ctx.shared.upstream);
    ctx.anchorInfo = { version: anchor.version, listen: anchor.listen };
  } catch (error) {
    ctx.anchorError = `Portkey could not be installed or started: ${(error as Error).message}`;
    log(ctx.anchorError);
  }
  try {
    return await body(anchor);
  } finally {
    await anchor?.spawned.stop();
  }
}

export function directConfig(ctx: Context): BenchConfig {
  return {
    name: 'direct',
    description: 'the fake OpenAI upstream called directly (POST /v1/chat/completions)',
    target: { type: 'http', url: `${ctx.shared.upstream.openaiUrl}/chat/completions`, headers: { authorization: 'Bearer sk-bench-fake' }, body: directBody() },
    procs: [],
  };
}

export function portkeyConfig(ctx: Context, anchor: Anchor): BenchConfig {
  return {
    name: 'portkey',
    description: `Portkey AI gateway ${anchor.version} (one hop, provider openai, x-portkey-custom-host = the fake)`,
    target: { type: 'http', url: `http://127.0.0.1:${anchor.port}/v1/chat/completions`, headers: portkeyHeaders(ctx.shared.upstream), body: directBody() },
    procs: [anchor.proc],
  };
}

function chainHttp(shape: Shape, name = `${SHAPE_LABEL[shape.shape]}${shape.baseline ? '-baseline' : ''}-http`): BenchConfig {
  return {
    name,
    description: `the whole chain, ${shape.shape}${shape.baseline ? ' (the baseline checkout)' : ''}, HTTP POST /v1/chat on the gateway`,
    target: { type: 'http', url: `${shape.httpUrl}/v1/chat`, headers: shape.auth, body: { message: MESSAGE } },
    procs: shape.procs,
  };
}

function chainGrpc(shape: Shape): BenchConfig {
  return {
    name: `${SHAPE_LABEL[shape.shape]}-grpc`,
    description: `the whole chain, ${shape.shape}, gRPC elexirion.v1.Gateway/Chat`,
    target: grpcEntry('gateway', shape.grpcPort, shape.auth),
    procs: shape.procs,
  };
}

export function byName(configs: ConfigResult[], name: string): ConfigResult | undefined {
  return configs.find((config) => config.name === name);
}

/** A round's length and the warm-up of the closed-loop load phases; `--round-seconds` shortens both. */
export function loadRounds(opts: Options): { durationMsPerRound: number; warmupMs: number } {
  const durationMsPerRound = opts.roundSeconds !== undefined ? opts.roundSeconds * 1000 : opts.quick ? 3_000 : 10_000;
  return { durationMsPerRound, warmupMs: Math.min(opts.quick ? 1_500 : 5_000, durationMsPerRound) };
}

/** Each configuration's figures minus the reference configuration's, at the same percentiles. */
function addedOver(results: ConfigResult[], reference: ConfigResult): Record<string, { p50: number; p90: number; p99: number }> {
  const added: Record<string, { p50: number; p90: number; p99: number }> = {};
  for (const result of results) {
    if (result === reference) continue;
    added[result.name] = {
      p50: round(result.latencyMs.p50 - reference.latencyMs.p50),
      p90: round(result.latencyMs.p90 - reference.latencyMs.p90),
      p99: round(result.latencyMs.p99 - reference.latencyMs.p99),
    };
  }
  return added;
}

// ---------------------------------------------------------------- 1. overhead at c=1

/** The processes every configuration shares, nats-server included (its CPU counts for runs that use NATS). */
export function sharedWithNats(ctx: Context): Shared {
  return { ...ctx.shared, shared: [...ctx.shared.shared, { name: 'nats-server', pid: ctx.nats.process.child.pid! }] };
}

export async function overhead(ctx: Context): Promise<ScenarioOutput> {
  const { quick } = ctx.opts;
  const rounds = ctx.opts.rounds ?? (quick ? 3 : 5);
  // 10,000: a p99 of 3,000 rests on the 30 slowest requests, and on this machine it moved by a
  // third between runs of one build (Portkey's too); with 10,000 it moved by a tenth.
  const total = ctx.opts.requests ?? (quick ? 600 : 10_000);
  const requestsPerRound = Math.max(1, Math.ceil(total / rounds));
  const warmupRequests = quick ? Math.min(200, Math.max(20, total)) : 500;
  return withAnchor(ctx, (anchor) =>
    withShapes(ctx, ctx.opts.shapes, {}, async (shapes) => {
      const configs: BenchConfig[] = [directConfig(ctx)];
      if (anchor) configs.push(portkeyConfig(ctx, anchor));
      for (const shape of shapes) configs.push(chainHttp(shape), ...(shape.baseline ? [] : [chainGrpc(shape)]));
      const split = shapes.find((shape) => shape.shape === 'one-process-per-service');
      if (split) {
        const ports = split.stack.ports;
        configs.push(
          {
            name: 'split-hop-agent',
            description: 'agent -> executor -> provider -> upstream (split; gRPC Agent/HandleChat)',
            target: grpcEntry('agent', ports.agent),
            procs: split.procs.filter((proc) => proc.name !== 'gateway'),
          },
          {
            name: 'split-hop-executor',
            description: 'executor -> provider -> upstream (split; gRPC Executor/Execute, pipeline general)',
            target: grpcEntry('executor', ports.executor),
            procs: split.procs.filter((proc) => proc.name === 'executor' || proc.name === 'provider'),
          },
          {
            name: 'split-hop-provider',
            description: 'provider -> upstream (split; gRPC Provider/Complete, alias claude_smart, preset chat)',
            target: grpcEntry('provider', ports.provider),
            procs: split.procs.filter((proc) => proc.name === 'provider'),
          },
        );
      }
      log(`overhead: ${configs.length} configurations x ${rounds} rounds x ${requestsPerRound} requests at c=1`);
      const results = await runInterleaved(
        sharedWithNats(ctx),
        configs,
        { mode: 'closed', concurrency: 1, rounds, requestsPerRound, warmupRequests, timeoutMs: 30_000 },
      );
      const addedMs = addedOver(results, byName(results, 'direct')!);
      const hopsP50Ms: Record<string, number> = {};
      const p50 = (name: string) => byName(results, name)?.latencyMs.p50 ?? Number.NaN;
      if (split) {
        hopsP50Ms.gateway = round(p50('split-grpc') - p50('split-hop-agent'));
        hopsP50Ms.agent = round(p50('split-hop-agent') - p50('split-hop-executor'));
        hopsP50Ms.executor = round(p50('split-hop-executor') - p50('split-hop-provider'));
        hopsP50Ms['provider (incl. its SDK call vs the driver call)'] = round(p50('split-hop-provider') - p50('direct'));
      }
      return {
        scenario: 'overhead',
        title: 'Overhead at concurrency 1',
        settings: { concurrency: 1, rounds, requestsPerRound, warmupRequests, shapes: ctx.opts.shapes, anchor: anchor ? `portkey ${anchor.version}` : (ctx.anchorError ?? 'off'), baseline: ctx.opts.baseline ?? 'none' },
        notes: [
          'Added latency = configuration percentile minus the direct call\'s percentile, same driver (undici, one connection), same fake upstream, interleaved rounds.',
          'The chain figures that compare with Portkey and with the direct call are the HTTP ones (same protocol at the client edge); gRPC figures are shown beside them.',
          'Per-hop p50 figures come from calling each service of the split shape directly and subtracting the next one (differences of medians, indicative).',
        ],
        configs: results,
        addedMs,
        hopsP50Ms,
      };
    }, true),
  );
}

// ---------------------------------------------------------------- 2. throughput at c=64 and c=256

export async function throughput(ctx: Context): Promise<ScenarioOutput> {
  const { quick } = ctx.opts;
  const rounds = ctx.opts.rounds ?? (quick ? 2 : 3);
  const { durationMsPerRound, warmupMs } = loadRounds(ctx.opts);
  const levels = [64, 256];
  return withAnchor(ctx, (anchor) =>
    withShapes(ctx, ctx.opts.shapes, {}, async (shapes) => {
      const configs: BenchConfig[] = [directConfig(ctx)];
      if (anchor) configs.push(portkeyConfig(ctx, anchor));
      for (const shape of shapes) configs.push(chainHttp(shape));
      const byConcurrency: Record<string, ConfigResult[]> = {};
      for (const concurrency of levels) {
        log(`throughput: c=${concurrency}, ${configs.length} configurations x ${rounds} rounds x ${durationMsPerRound} ms`);
        byConcurrency[`c${concurrency}`] = await runInterleaved(
          sharedWithNats(ctx),
          configs,
          { mode: 'closed', concurrency, rounds, durationMsPerRound, warmupMs, timeoutMs: 60_000 },
        );
      }
      return {
        scenario: 'throughput',
        title: 'Throughput at concurrency 64 and 256',
        settings: { levels, rounds, durationMsPerRound, warmupMs, shapes: ctx.opts.shapes, telemetry: true, baseline: ctx.opts.baseline ?? 'none' },
        notes: [
          'Closed loop: N workers, each sends its next request when the last one answered; req/s = successful requests / wall time, summed over rounds.',
          'cpuMsPerRequest is read from /proc/<pid>/stat (utime+stime) around each segment; peakRssMiB is VmHWM (reset at the scenario start) or the highest sampled VmRSS.',
          'The driver, the fake upstream and NATS share the same two cores as the system under test; their CPU per request is listed too.',
        ],
        configs: Object.values(byConcurrency).flat(),
        byConcurrency,
      };
    }, true),
  );
}

// ---------------------------------------------------------------- 3. a multi-step pipeline, checkpoints on

/** The benchmark's pipeline, bench/pipelines/bench-three-step.yaml: three LLM steps in sequence. */
export const PIPELINE = { name: 'bench-three-step', dir: join(benchDir, 'pipelines'), llmSteps: 3 } as const;
/** The stream behind the executor's checkpoint bucket (its CheckpointStore's default, elexirion_checkpoints). */
const CHECKPOINT_STREAM = 'KV_elexirion_checkpoints';

function pipelineHttp(shape: Shape): BenchConfig {
  return {
    name: `${SHAPE_LABEL[shape.shape]}-pipeline-http`,
    description: `${PIPELINE.name} (${PIPELINE.llmSteps} LLM steps, checkpoints on) through the whole chain, ${shape.shape}, HTTP POST /v1/pipelines/${PIPELINE.name}/execute on the gateway`,
    target: { type: 'http', url: `${shape.httpUrl}/v1/pipelines/${PIPELINE.name}/execute`, headers: shape.auth, body: { inputs: { message: MESSAGE } } },
    procs: shape.procs,
  };
}

/** Every checkpoint write so far (the stream's last sequence: one message per KV put). */
async function checkpointWrites(jsm: JetStreamManager): Promise<number> {
  try {
    return (await jsm.streams.info(CHECKPOINT_STREAM)).state.last_seq;
  } catch (error) {
    // No executor has created the bucket yet, so nothing was written.
    if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound) return 0;
    throw error;
  }
}

/**
 * One run through `shape`, repeated until its checkpoints appear in NATS (the executor attaches
 * to NATS in the background after it serves): the figures are then those of runs that write
 * checkpoints. Returns the writes of that run.
 */
async function firstCheckpointedRun(shape: Shape, jsm: JetStreamManager): Promise<number> {
  const { url, body, headers } = pipelineHttp(shape).target as { url: string; body: unknown; headers: Record<string, string> };
  return eventually(
    `a ${PIPELINE.name} run through the ${SHAPE_LABEL[shape.shape]} shape that writes checkpoints`,
    async () => {
      const before = await checkpointWrites(jsm);
      const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
      const answer = (await response.json()) as { steps?: unknown[] };
      if (!response.ok) throw new Error(`HTTP ${response.status}: ${JSON.stringify(answer).slice(0, 300)}`);
      if (answer.steps?.length !== PIPELINE.llmSteps) throw new Error(`expected ${PIPELINE.llmSteps} steps in the answer, got ${answer.steps?.length}`);
      const written = (await checkpointWrites(jsm)) - before;
      return written > 0 ? written : undefined;
    },
    30_000,
  );
}

export async function pipeline(ctx: Context): Promise<ScenarioOutput> {
  const { quick } = ctx.opts;
  const latencyRounds = ctx.opts.rounds ?? (quick ? 3 : 5);
  const total = ctx.opts.requests ?? (quick ? 300 : 1500);
  const requestsPerRound = Math.max(1, Math.ceil(total / latencyRounds));
  const warmupRequests = Math.min(quick ? 100 : 300, Math.max(10, total));
  const loadRoundCount = ctx.opts.rounds ?? (quick ? 2 : 3);
  const { durationMsPerRound, warmupMs } = loadRounds(ctx.opts);
  const concurrency = 64;
  const env = { PIPELINES_DIR: PIPELINE.dir, EXECUTOR_CHECKPOINTS: 'true' };
  return withAnchor(ctx, (anchor) =>
    withShapes(ctx, ctx.opts.shapes, env, async (shapes) => {
      const connection = await connectNats(ctx.nats.url);
      try {
        const jsm = await jetstreamManager(connection);
        const firstRunCheckpointWrites: Record<string, number> = {};
        for (const shape of shapes) firstRunCheckpointWrites[SHAPE_LABEL[shape.shape]] = await firstCheckpointedRun(shape, jsm);
        const direct = directConfig(ctx);
        const configs: BenchConfig[] = [
          {
            ...direct,
            name: 'direct-x3',
            description: `${PIPELINE.llmSteps} calls to the fake OpenAI upstream in sequence, timed as one`,
            target: { ...(direct.target as Extract<BenchConfig['target'], { type: 'http' }>), sequence: PIPELINE.llmSteps },
          },
        ];
        if (anchor) {
          const portkey = portkeyConfig(ctx, anchor);
          configs.push({
            ...portkey,
            name: 'portkey-x3',
            description: `${PIPELINE.llmSteps} calls through Portkey ${anchor.version} in sequence, timed as one (the client runs the steps; no checkpoints)`,
            target: { ...(portkey.target as Extract<BenchConfig['target'], { type: 'http' }>), sequence: PIPELINE.llmSteps },
          });
        }
        for (const shape of shapes) configs.push(pipelineHttp(shape));
        const shared = sharedWithNats(ctx);
        const writesBefore = await checkpointWrites(jsm);
        log(`pipeline: c=1, ${configs.length} configurations x ${latencyRounds} rounds x ${requestsPerRound} runs`);
        const c1 = await runInterleaved(shared, configs, { mode: 'closed', concurrency: 1, rounds: latencyRounds, requestsPerRound, warmupRequests, timeoutMs: 30_000 });
        log(`pipeline: c=${concurrency}, ${configs.length} configurations x ${loadRoundCount} rounds x ${durationMsPerRound} ms`);
        const c64 = await runInterleaved(shared, configs, { mode: 'closed', concurrency, rounds: loadRoundCount, durationMsPerRound, warmupMs, timeoutMs: 60_000 });
        const writes = (await checkpointWrites(jsm)) - writesBefore;
        const pipelineResults = [...c1, ...c64].filter((result) => result.name.endsWith('-pipeline-http'));
        const runs = pipelineResults.reduce((sum, result) => sum + result.count + result.warmup.count, 0);
        const addedMs = addedOver(c1, byName(c1, 'direct-x3')!);
        const perStepAddedMs: Record<string, { p50: number; p99: number }> = {};
        for (const [name, added] of Object.entries(addedMs)) {
          perStepAddedMs[name] = { p50: round(added.p50 / PIPELINE.llmSteps), p99: round(added.p99 / PIPELINE.llmSteps) };
        }
        return {
          scenario: 'pipeline',
          title: `A ${PIPELINE.llmSteps}-step pipeline with checkpoints, at concurrency 1 and ${concurrency}`,
          settings: {
            pipeline: `${PIPELINE.name} (bench/pipelines), ${PIPELINE.llmSteps} LLM steps in sequence`,
            checkpoints: 'EXECUTOR_CHECKPOINTS=true, JetStream KV on the harness nats-server',
            latency: { concurrency: 1, rounds: latencyRounds, requestsPerRound, warmupRequests },
            load: { concurrency, rounds: loadRoundCount, durationMsPerRound, warmupMs },
            shapes: ctx.opts.shapes,
            anchor: anchor ? `portkey ${anchor.version}, ${PIPELINE.llmSteps} calls in sequence` : (ctx.anchorError ?? 'off'),
          },
          notes: [
            `One request is one whole run: a pipeline run through the gateway, or ${PIPELINE.llmSteps} calls in sequence made by the driver (direct-x3 to the upstream, portkey-x3 through Portkey). req/s counts runs; LLM calls per second are ${PIPELINE.llmSteps}x that.`,
            `Added latency = a configuration's percentile minus direct-x3's at c=1; per step = added / ${PIPELINE.llmSteps}.`,
            'Compared with Portkey doing the three calls for a client that runs the steps itself: the pipeline also renders templates, keeps the run and writes a checkpoint after each step; Portkey does none of that.',
            'The later steps send the earlier answers in their prompts, so their bodies are a little larger than the single call the direct and Portkey configurations repeat.',
          ],
          configs: [...c1, ...c64],
          byConcurrency: { c1, [`c${concurrency}`]: c64 },
          addedMs,
          perStepAddedMs,
          checkpoints: {
            firstRunWrites: firstRunCheckpointWrites,
            writesDuringMeasurement: writes,
            successfulRuns: runs,
            writesPerRun: round(writes / Math.max(1, runs), 2),
          },
        };
      } finally {
        await connection.close();
      }
    }),
  );
}

// ---------------------------------------------------------------- 4. streaming TTFT

export async function streaming(ctx: Context): Promise<ScenarioOutput> {
  const { quick } = ctx.opts;
  const rounds = ctx.opts.rounds ?? (quick ? 3 : 5);
  const total = ctx.opts.requests ?? (quick ? 300 : 2000);
  const chunkDelayMs = 10;
  const port = await freePort();
  const env = {
    ...serviceEnv(ctx.shared.upstream, ctx.providerConfig),
    LOG_LEVEL: 'warn',
    BIND_HOST: '127.0.0.1',
    NATS_URL: ctx.nats.url,
    PROVIDER_GRPC_PORT: String(port),
    PROVIDER_HTTP_PORT: String(await freePort()),
  };
  log('starting the provider alone');
  const provider = spawnNode('provider', 'services/provider/dist/main.js', env);
  try {
    await waitServing(port, 'elexirion.v1.Provider', provider);
    await ctx.shared.upstream.setDefault({ chunkDelayMs });
    const configs: BenchConfig[] = [
      {
        name: 'direct-sse',
        description: 'the fake OpenAI upstream, stream: true, time to the first non-empty content delta',
        target: { type: 'http-sse', url: `${ctx.shared.upstream.openaiUrl}/chat/completions`, headers: { authorization: 'Bearer sk-bench-fake' }, body: directBody(true) },
        procs: [],
      },
      {
        name: 'provider-stream',
        description: 'provider service alone, gRPC Provider/StreamComplete (alias claude_smart, preset chat), time to the first delta',
        target: { type: 'grpc-stream', port, request: { request: PROVIDER_REQUEST } },
        procs: [{ name: 'provider', pid: provider.child.pid! }],
      },
    ];
    const results = await runInterleaved({ ...ctx.shared }, configs, {
      mode: 'closed',
      concurrency: 1,
      rounds,
      requestsPerRound: Math.max(1, Math.ceil(total / rounds)),
      warmupRequests: quick ? 50 : 200,
      timeoutMs: 30_000,
    });
    const direct = byName(results, 'direct-sse')!;
    const viaProvider = byName(results, 'provider-stream')!;
    return {
      scenario: 'streaming',
      title: 'Streaming: time to first token',
      settings: { concurrency: 1, rounds, requests: total, upstreamChunkDelayMs: chunkDelayMs },
      notes: [
        'The provider service\'s StreamComplete (gRPC) against the upstream\'s SSE called directly: the provider\'s share; the whole chain\'s time to first token is the ttft scenario.',
        `The fake upstream sends the reply in 3 chunks, ${chunkDelayMs} ms apart, so the first token (TTFT) and the whole stream (latencyMs) differ.`,
      ],
      configs: results,
      addedTtftMs: {
        p50: round((viaProvider.ttftMs?.p50 ?? Number.NaN) - (direct.ttftMs?.p50 ?? Number.NaN)),
        p99: round((viaProvider.ttftMs?.p99 ?? Number.NaN) - (direct.ttftMs?.p99 ?? Number.NaN)),
      },
    };
  } finally {
    await ctx.shared.upstream.setDefault({});
    await provider.stop();
  }
}

// ---------------------------------------------------------------- 5. held in flight

export async function inflight(ctx: Context): Promise<ScenarioOutput> {
  const count = ctx.opts.inflight ?? (ctx.opts.quick ? 1_000 : 10_000);
  const delayMs = 2_000;
  const perShape: Record<string, unknown>[] = [];
  // The same burst straight at the upstream: what the driver and the fake alone take.
  await ctx.shared.upstream.setDefault({ delayMs });
  log(`inflight (direct): ${count} concurrent calls to the upstream`);
  const direct = await ctx.shared.driver.run({ target: directConfig(ctx).target, mode: 'closed', concurrency: count, requests: count, timeoutMs: 300_000, closeAfter: true });
  await ctx.shared.upstream.setDefault({});
  const directStats = await ctx.shared.upstream.stats();
  await ctx.shared.upstream.clear();
  const directBaseline = {
    completed: direct.latencies.length,
    errors: direct.errors,
    errorSamples: direct.errorSamples,
    upstreamMaxConcurrent: directStats.maxConcurrent,
    wallSec: round(direct.wallMs / 1000, 2),
    latencyMs: summarize(direct.latencies),
  };
  for (const shapeName of ctx.opts.shapes) {
    await withShapes(ctx, [shapeName], {}, async ([shape]) => {
      const procs = shape!.procs;
      // Warm-up at zero latency: JIT, connections, pools.
      await ctx.shared.driver.run({ target: chainGrpc(shape!).target, mode: 'closed', concurrency: 16, requests: 400 });
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      const baseline: Record<string, number> = {};
      for (const proc of procs) {
        baseline[proc.name] = rssKiB(proc.pid) ?? Number.NaN;
        resetPeakRss(proc.pid);
      }
      await ctx.shared.upstream.setDefault({ delayMs });
      await ctx.shared.upstream.clear();
      const sampler = new RssSampler(procs, 100);
      const cpuBefore = procs.map((proc) => cpuMs(proc.pid) ?? Number.NaN);
      log(`inflight (${shapeName}): ${count} concurrent chats, upstream answers after ${delayMs} ms`);
      let result;
      try {
        result = await ctx.shared.driver.run({ target: chainGrpc(shape!).target, mode: 'closed', concurrency: count, requests: count, timeoutMs: 300_000, closeAfter: true });
      } finally {
        sampler.stop();
        await ctx.shared.upstream.setDefault({});
      }
      const upstreamStats = await ctx.shared.upstream.stats();
      await ctx.shared.upstream.clear();
      const services: Record<string, unknown> = {};
      let totalDeltaKiB = 0;
      procs.forEach((proc, index) => {
        const peak = Math.max(peakRssKiB(proc.pid) ?? 0, sampler.peak.get(proc.pid) ?? 0);
        const delta = peak - baseline[proc.name]!;
        totalDeltaKiB += delta;
        services[proc.name] = {
          baselineRssMiB: round(baseline[proc.name]! / 1024, 1),
          peakRssMiB: round(peak / 1024, 1),
          deltaMiB: round(delta / 1024, 1),
          cpuMs: round((cpuMs(proc.pid) ?? Number.NaN) - cpuBefore[index]!, 0),
        };
      });
      perShape.push({
        shape: shapeName,
        name: SHAPE_LABEL[shapeName],
        requested: count,
        completed: result.latencies.length,
        errors: result.errors,
        errorSamples: result.errorSamples,
        driverMaxInFlight: result.maxInFlight,
        upstreamMaxConcurrent: upstreamStats.maxConcurrent,
        upstreamRequests: upstreamStats.count,
        wallSec: round(result.wallMs / 1000, 2),
        latencyMs: summarize(result.latencies),
        services,
        totalDeltaMiB: round(totalDeltaKiB / 1024, 1),
        kbPerInFlightRun: round((totalDeltaKiB * 1024) / 1000 / count, 2),
        kbPerRunHeldAtUpstream: round((totalDeltaKiB * 1024) / 1000 / Math.max(1, upstreamStats.maxConcurrent), 2),
      });
    });
  }
  return {
    scenario: 'inflight',
    title: `Held in flight: ${count} concurrent runs against a ${delayMs / 1000} s upstream`,
    settings: { count, upstreamDelayMs: delayMs, shapes: ctx.opts.shapes, client: 'one gRPC channel to Gateway/Chat', providerLimits: 'openai max_concurrency and max_queue raised to 1,000,000 in the harness\'s PROVIDER_CONFIG' },
    notes: [
      'Memory per in-flight run = sum over the service processes of (peak RSS during the burst - RSS after warm-up) / runs requested. KB = 1000 bytes.',
      'direct is the same burst sent straight to the fake upstream over HTTP (one connection per call): its latency is the floor the chain is compared with.',
      'upstreamMaxConcurrent is how many upstream requests were open at once (from the fake\'s receive/finish times): when it is below the count, the chain did not hold every run at the same moment.',
    ],
    direct: directBaseline,
    shapes: perShape,
  };
}

// ---------------------------------------------------------------- 6. soak

export async function soak(ctx: Context): Promise<ScenarioOutput> {
  const durationSec = ctx.opts.soakSeconds ?? (ctx.opts.quick ? 30 : 600);
  // A Node process's heap takes about two minutes at this rate to reach its working size (the
  // 2026-11-23 run with a 30 s warm-up grew 25-29% in the first 120 s, then stayed flat): growth
  // is measured from there, so that it shows leaks rather than heap sizing.
  const warmupSec = ctx.opts.quick ? 5 : 150;
  const ratePerSec = 100;
  const shapeName: StackShape = ctx.opts.shapes.includes('one-process-per-service') ? 'one-process-per-service' : ctx.opts.shapes[0]!;
  return withShapes(ctx, [shapeName], {}, async ([shape]) => {
    const target = chainHttp(shape!).target;
    log(`soak (${shapeName}): warm-up ${warmupSec} s, then ${durationSec} s at ${ratePerSec} req/s`);
    await ctx.shared.driver.run({ target, mode: 'open', ratePerSec, durationMs: warmupSec * 1000, maxInFlight: 512, timeoutMs: 30_000 });
    const procs = shape!.procs;
    const start: Record<string, number> = {};
    for (const proc of procs) start[proc.name] = rssKiB(proc.pid) ?? Number.NaN;
    const sampler = new RssSampler(procs, 500, Math.max(1_000, (durationSec * 1000) / 60));
    const latencies: number[] = [];
    let errors = 0;
    const errorSamples = new Set<string>();
    const segmentMs = Math.min(30_000, durationSec * 1000);
    const began = performance.now();
    try {
      while (performance.now() - began < durationSec * 1000 - 50) {
        const left = durationSec * 1000 - (performance.now() - began);
        const result = await ctx.shared.driver.run({ target, mode: 'open', ratePerSec, durationMs: Math.min(segmentMs, left), maxInFlight: 512, timeoutMs: 30_000 });
        for (const value of result.latencies) latencies.push(value);
        errors += result.errors;
        for (const sample of result.errorSamples) errorSamples.add(sample);
        await ctx.shared.upstream.clear();
      }
    } finally {
      sampler.stop();
    }
    const services: Record<string, unknown> = {};
    const lastT = sampler.series.at(-1)?.t ?? 0;
    const mid = sampler.series.reduce<(typeof sampler.series)[number] | undefined>(
      (best, point) => (!best || Math.abs(point.t - lastT / 2) < Math.abs(best.t - lastT / 2) ? point : best),
      undefined,
    );
    for (const proc of procs) {
      const end = rssKiB(proc.pid) ?? Number.NaN;
      const midRss = mid?.rssKiB[proc.name] ?? Number.NaN;
      services[proc.name] = {
        startRssMiB: round(start[proc.name]! / 1024, 1),
        midRssMiB: round(midRss / 1024, 1),
        secondHalfGrowthPct: round(((end - midRss) / midRss) * 100, 2),
        endRssMiB: round(end / 1024, 1),
        peakRssMiB: round((sampler.peak.get(proc.pid) ?? Number.NaN) / 1024, 1),
        growthPct: round(((end - start[proc.name]!) / start[proc.name]!) * 100, 2),
      };
    }
    const elapsed = (performance.now() - began) / 1000;
    return {
      scenario: 'soak',
      title: `Soak: ${durationSec} s at ${ratePerSec} req/s`,
      settings: { durationSec, warmupSec, ratePerSec, shape: shapeName, client: 'HTTP POST /v1/chat, open loop' },
      notes: [
        `"start" is the RSS right after the warm-up (${warmupSec} s at the same rate, on the same processes); "end" the RSS when the last request answered; "mid" the sample nearest half-way. Growth = (end - start) / start (the target); growth over the 2nd half = (end - mid) / mid.`,
        'RSS includes memory the garbage collector has not returned yet, so short soaks mostly show heap sizing, not leaks.',
      ],
      requests: latencies.length,
      errors,
      errorSamples: [...errorSamples].slice(0, 5),
      achievedReqPerSec: round(latencies.length / elapsed, 1),
      latencyMs: summarize(latencies),
      services,
      rssSeriesMiB: sampler.series.map((point) => ({ t: round(point.t / 1000, 1), ...Object.fromEntries(Object.entries(point.rssKiB).map(([name, value]) => [name, round(value / 1024, 1)])) })),
    };
  });
}

// ---------------------------------------------------------------- 7. telemetry on vs off

export async function telemetry(ctx: Context): Promise<ScenarioOutput> {
  const { quick } = ctx.opts;
  // On this kind of machine the cost measured in one pair of ten-second rounds ranges from -8% to
  // +23%: ten pairs, not five, and each pair's cost printed beside the total.
  const rounds = ctx.opts.rounds ?? (quick ? 3 : 10);
  const { durationMsPerRound, warmupMs } = loadRounds(ctx.opts);
  const concurrency = 64;
  const shapeName: StackShape = ctx.opts.shapes.includes('all-in-one') ? 'all-in-one' : ctx.opts.shapes[0]!;
  return withShapes(ctx, [shapeName], { TELEMETRY_EVENTS: 'true' }, ([on]) =>
    withShapes(ctx, [shapeName], { TELEMETRY_EVENTS: 'false' }, async ([off]) => {
      const label = SHAPE_LABEL[shapeName];
      const configs = [chainHttp(on!, `${label}-telemetry-on`), chainHttp(off!, `${label}-telemetry-off`)];
      configs[0]!.description += ', TELEMETRY_EVENTS=true';
      configs[1]!.description += ', TELEMETRY_EVENTS=false';
      log(`telemetry: ${label} on vs off at c=${concurrency}, ${rounds} rounds x ${durationMsPerRound} ms`);
      const results = await runInterleaved(
        sharedWithNats(ctx),
        configs,
        { mode: 'closed', concurrency, rounds, durationMsPerRound, warmupMs, timeoutMs: 60_000 },
      );
      const [withEvents, without] = results as [ConfigResult, ConfigResult];
      return {
        scenario: 'telemetry',
        title: 'Telemetry events on versus off',
        settings: { concurrency, rounds, durationMsPerRound, shape: shapeName, nats: 'running in both' },
        notes: ['Both stacks run at once against the same NATS; only one is driven at a time. NATS CPU per request is listed with each configuration.'],
        configs: results,
        throughputCostPct: round((1 - withEvents.reqPerSec / without.reqPerSec) * 100, 2),
        // Each round drives both back to back: the spread of these says how far to trust the total.
        roundThroughputCostPct: withEvents.roundReqPerSec.map((rate, index) => round((1 - rate / without.roundReqPerSec[index]!) * 100, 1)),
        cpuCostMsPerRequest: round(withEvents.sutCpuMsPerRequest + (withEvents.cpuMsPerRequest['nats-server'] ?? 0) - without.sutCpuMsPerRequest - (without.cpuMsPerRequest['nats-server'] ?? 0)),
      };
    }),
  );
}

// ---------------------------------------------------------------- 8. optimizer transport

const PYTHON_DRIVER = String.raw`
import json, resource, subprocess, sys, time
mode, target, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
ONE_SHOT = (
    "import sys\n"
    "from elexirion_optimizer.client import GatewayClient\n"
    "with GatewayClient(sys.argv[1], timeout=30) as client:\n"
    "    assert client.chat('hello').response\n"
)
latencies = []
if mode == "grpc":
    from elexirion_optimizer.client import GatewayClient
    with GatewayClient(target, timeout=30) as client:
        for _ in range(10):
            client.chat("hello")
        cpu0 = time.process_time()
        for _ in range(n):
            t = time.perf_counter()
            assert client.chat("hello").response
            latencies.append((time.perf_counter() - t) * 1000)
        cpu = (time.process_time() - cpu0) * 1000
else:
    subprocess.run([sys.executable, "-c", ONE_SHOT, target], check=True)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", ONE_SHOT, target], check=True)
        latencies.append((time.perf_counter() - t) * 1000)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) * 1000
print(json.dumps({"latencies": latencies, "clientCpuMs": cpu}))
`;

function runPython(args: string[]): Promise<{ latencies: number[]; clientCpuMs: number }> {
  const python = join(repoRoot, 'optimizer-py', '.venv', 'bin', 'python');
  return new Promise((resolve, reject) => {
    execFile(python, ['-c', PYTHON_DRIVER, ...args], { cwd: repoRoot, maxBuffer: 64 * 1024 * 1024, timeout: 600_000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`python driver failed: ${error.message}\n${stderr}`));
      else resolve(JSON.parse(stdout.trim().split('\n').pop()!));
    });
  });
}

export async function optimizer(ctx: Context): Promise<ScenarioOutput> {
  const { quick } = ctx.opts;
  const rounds = ctx.opts.rounds ?? 3;
  const grpcPerRound = Math.ceil((ctx.opts.requests ?? (quick ? 300 : 1500)) / rounds);
  const subprocessPerRound = quick ? 4 : 15;
  const shapeName: StackShape = ctx.opts.shapes.includes('all-in-one') ? 'all-in-one' : ctx.opts.shapes[0]!;
  // Make sure the venv and its generated stubs are there (scripts/setup-python.sh makes them).
  await new Promise<void>((resolve, reject) => {
    const check = spawn(join(repoRoot, 'optimizer-py', '.venv', 'bin', 'python'), ['-c', 'import elexirion_optimizer.client'], { cwd: repoRoot, stdio: 'ignore' });
    check.on('error', (error) => reject(new Error(`optimizer-py venv missing (run bash scripts/setup-python.sh): ${error.message}`)));
    check.on('exit', (code) => (code === 0 ? resolve() : reject(new Error('optimizer-py cannot import its client: run bash scripts/setup-python.sh'))));
  });
  // The Python client (GatewayClient) sends no API key: this scenario measures it with keys off.
  return withShapes(ctx, [shapeName], { GATEWAY_AUTH: 'off' }, async ([shape]) => {
    const target = `127.0.0.1:${shape!.grpcPort}`;
    const acc = {
      grpc: { latencies: [] as number[], clientCpuMs: 0, serverCpuMs: 0, count: 0 },
      subprocess: { latencies: [] as number[], clientCpuMs: 0, serverCpuMs: 0, count: 0 },
    };
    const serverCpu = (procs: Proc[]) => procs.reduce((sum, proc) => sum + (cpuMs(proc.pid) ?? 0), 0);
    for (let r = 0; r < rounds; r++) {
      const order: Array<'grpc' | 'subprocess'> = r % 2 === 0 ? ['grpc', 'subprocess'] : ['subprocess', 'grpc'];
      for (const mode of order) {
        const n = mode === 'grpc' ? grpcPerRound : subprocessPerRound;
        log(`optimizer: round ${r + 1}/${rounds}, ${mode} x ${n}`);
        const before = serverCpu(shape!.procs);
        const result = await runPython([mode, target, String(n)]);
        const slot = acc[mode];
        slot.serverCpuMs += serverCpu(shape!.procs) - before;
        slot.clientCpuMs += result.clientCpuMs;
        slot.count += result.latencies.length;
        for (const value of result.latencies) slot.latencies.push(value);
      }
    }
    const describe = (slot: typeof acc.grpc) => ({
      evaluations: slot.count,
      wallMsPerEvaluation: summarize(slot.latencies),
      clientCpuMsPerEvaluation: round(slot.clientCpuMs / slot.count),
      serverCpuMsPerEvaluation: round(slot.serverCpuMs / slot.count),
    });
    const grpc = describe(acc.grpc);
    const sub = describe(acc.subprocess);
    return {
      scenario: 'optimizer',
      title: 'Optimizer transport: one evaluation over gRPC versus a process per evaluation',
      settings: { rounds, grpcPerRound, subprocessPerRound, shape: shapeName, python: 'optimizer-py/.venv, GatewayClient.chat' },
      notes: [
        'gRPC: one Python process keeps a GatewayClient and calls chat() per evaluation (after 10 warm-up calls).',
        'Subprocess: a new `python -c` per evaluation that imports the client, opens a channel, calls chat() once and exits (what an optimizer shelling out to a CLI pays).',
        'Two costs are judged: client CPU per evaluation (process_time, or getrusage of the children: what the transport costs the optimizer) and mean wall time per evaluation (which also contains the chain\'s own work, the same in both).',
      ],
      grpc,
      subprocess: sub,
      wallRatio: round(sub.wallMsPerEvaluation.mean / grpc.wallMsPerEvaluation.mean, 1),
      clientCpuRatio: round(sub.clientCpuMsPerEvaluation / grpc.clientCpuMsPerEvaluation, 1),
    };
  });
}

export const SCENARIOS = { overhead, throughput, pipeline, streaming, inflight, soak, telemetry, optimizer } as const;
export type ScenarioName = keyof typeof SCENARIOS | 'anchor';

