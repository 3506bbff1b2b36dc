// Scenario `openai`: the gateway's OpenAI-compatible POST /v1/chat/completions side by side with
// Portkey's identical endpoint, on the same fake upstream, by the same driver, in the same run:
// the comparison users make. Non-streaming (latency at c=1, req/s at c=64) and streaming (time to
// first token at c=1, streams/s at c=64).
import { directBody, log, runInterleaved, SHAPE_LABEL, startPortkey, type Anchor, type BenchConfig, type ConfigResult, type Shape } from './harness.ts';
import type { ScenarioOutput } from './results.ts';
import { byName, directConfig, loadRounds, portkeyConfig, sharedWithNats, withAnchor, withShapes, type Context } from './scenarios.ts';
import { round } from './stats.ts';

/** The alias the harness's provider config sends to the fake OpenAI upstream (openai/gpt-4.1). */
const ALIAS = 'claude_smart';
/** Streaming runs with the upstream's chunks this far apart, as the `streaming` scenario does, so first token and whole answer differ. */
const STREAM_CHUNK_DELAY_MS = 10;

/** The gateway's endpoint with the body the direct and Portkey calls send, the model an alias: the same upstream request. */
function gatewayOpenAi(shape: Shape, stream: boolean): BenchConfig {
  return {
    name: `${SHAPE_LABEL[shape.shape]}-openai${stream ? '-sse' : ''}`,
    description: `the gateway's OpenAI-compatible endpoint, ${shape.shape}, POST /v1/chat/completions${stream ? ' (stream, include_usage)' : ''}, model ${ALIAS}`,
    target: { type: stream ? 'http-sse' : 'http', url: `${shape.httpUrl}/v1/chat/completions`, headers: shape.auth, body: { ...directBody(stream), model: ALIAS } },
    procs: shape.procs,
  };
}

/** A configuration's figure over Portkey's: how many times Portkey's. */
function ratio(value: number | undefined, anchor: number | undefined): number | null {
  return value === undefined || anchor === undefined || anchor === 0 ? null : round(value / anchor, 2);
}

function comparison(results: ConfigResult[], pick: (result: ConfigResult) => number | undefined): Record<string, { value: number | null; ratioToPortkey: number | null }> {
  const portkey = byName(results, 'portkey') ?? byName(results, 'portkey-sse');
  const out: Record<string, { value: number | null; ratioToPortkey: number | null }> = {};
  for (const result of results) out[result.name] = { value: pick(result) ?? null, ratioToPortkey: ratio(pick(result), portkey ? pick(portkey) : undefined) };
  return out;
}

export async function openai(ctx: Context): Promise<ScenarioOutput> {
  const { quick } = ctx.opts;
  const rounds = ctx.opts.rounds ?? (quick ? 3 : 5);
  const total = ctx.opts.requests ?? (quick ? 600 : 3000);
  const requestsPerRound = Math.max(1, Math.ceil(total / rounds));
  const warmupRequests = quick ? Math.min(200, Math.max(20, total)) : 500;
  const load = loadRounds(ctx.opts);
  const loadRoundsCount = ctx.opts.rounds ?? (quick ? 2 : 3);
  return withAnchor(ctx, (anchor) =>
    withShapes(ctx, ctx.opts.shapes, {}, async (shapes) => {
      const unary: BenchConfig[] = [directConfig(ctx)];
      if (anchor) unary.push(portkeyConfig(ctx, anchor));
      for (const shape of shapes) unary.push(gatewayOpenAi(shape, false));
      const shared = sharedWithNats(ctx);
      const c1 = await runInterleaved(shared, unary, { mode: 'closed', concurrency: 1, rounds, requestsPerRound, warmupRequests, timeoutMs: 30_000 });
      const c64 = await runInterleaved(shared, unary, { mode: 'closed', concurrency: 64, rounds: loadRoundsCount, ...load, timeoutMs: 60_000 });

      // Portkey 1.15.2 fails every stream on Node unless its upstream fix is applied
      // (portkey-stream-fix.mjs): the streaming comparison runs a second Portkey with it.
      let streamingAnchor: Anchor | undefined;
      if (anchor) {
        log('starting the Portkey anchor for streams (with its upstream fix for streamed responses)');
        streamingAnchor = await startPortkey(ctx.shared.upstream, ['portkey-stream-fix.mjs']);
      }
      const streaming: BenchConfig[] = [
        {
          name: 'direct-sse',
          description: 'the fake OpenAI upstream called directly, stream: true with include_usage',
          target: { type: 'http-sse', url: `${ctx.shared.upstream.openaiUrl}/chat/completions`, headers: { authorization: 'Bearer sk-bench-fake' }, body: directBody(true) },
          procs: [],
        },
      ];
      if (streamingAnchor) {
        const portkey = portkeyConfig(ctx, streamingAnchor);
        streaming.push({ ...portkey, name: 'portkey-sse', description: `${portkey.description}, stream: true with include_usage (portkey-stream-fix.mjs preloaded)`, target: { ...portkey.target, type: 'http-sse', body: directBody(true) } as BenchConfig['target'] });
      }
      for (const shape of shapes) streaming.push(gatewayOpenAi(shape, true));
      let streamC1: ConfigResult[];
      let streamC64: ConfigResult[];
      await ctx.shared.upstream.setDefault({ chunkDelayMs: STREAM_CHUNK_DELAY_MS });
      try {
        streamC1 = await runInterleaved(shared, streaming, { mode: 'closed', concurrency: 1, rounds, requestsPerRound: Math.max(1, Math.ceil(requestsPerRound / 3)), warmupRequests: Math.ceil(warmupRequests / 3), timeoutMs: 30_000 });
        streamC64 = await runInterleaved(shared, streaming, { mode: 'closed', concurrency: 64, rounds: loadRoundsCount, ...load, timeoutMs: 60_000 });
      } finally {
        await ctx.shared.upstream.setDefault({});
        await streamingAnchor?.spawned.stop();
      }

      const direct = byName(c1, 'direct')!;
      const directSse = byName(streamC1, 'direct-sse')!;
      const figures = {
        // Latency added over the direct call, and its ratio to Portkey's added latency.
        addedP50Ms: comparison(c1.filter((each) => each !== direct), (each) => round(each.latencyMs.p50 - direct.latencyMs.p50)),
        addedP99Ms: comparison(c1.filter((each) => each !== direct), (each) => round(each.latencyMs.p99 - direct.latencyMs.p99)),
        reqPerSecC64: comparison(c64, (each) => each.reqPerSec),
        addedTtftP50Ms: comparison(streamC1.filter((each) => each !== directSse), (each) => (each.ttftMs ? round(each.ttftMs.p50 - directSse.ttftMs!.p50) : undefined)),
        addedTtftP99Ms: comparison(streamC1.filter((each) => each !== directSse), (each) => (each.ttftMs ? round(each.ttftMs.p99 - directSse.ttftMs!.p99) : undefined)),
        streamsPerSecC64: comparison(streamC64, (each) => each.reqPerSec),
      };
      const output: ScenarioOutput = {
        scenario: 'openai',
        title: 'OpenAI-compatible endpoint vs Portkey',
        settings: { model: ALIAS, rounds, requestsPerRound, warmupRequests, load: { ...load, rounds: loadRoundsCount }, streamChunkDelayMs: STREAM_CHUNK_DELAY_MS, shapes: ctx.opts.shapes, anchor: anchor ? `portkey ${anchor.version}` : (ctx.anchorError ?? 'off') },
        notes: [
          `Every configuration sends the same body (the system prompt, "hello", max_tokens 2048, temperature 0.7) and makes the same upstream request; the gateway's model is the alias ${ALIAS}, which the harness's provider config sends to openai/gpt-4.1 on the fake.`,
          'The gateway path is the whole public path: HTTP route, OpenAI translation, the gateway\'s Complete/CompleteStream in-process (validation, telemetry event), the provider (alias plan, limiter, breaker, vendor SDK). The key the harness creates is sent when keys are on.',
          'Added = configuration minus the direct call, same percentile; ratioToPortkey = value / Portkey\'s value (for added latency lower is better, for req/s higher is better).',
          `Streaming: the upstream sends 3 chunks ${STREAM_CHUNK_DELAY_MS} ms apart; TTFT is the time to the first non-empty content delta.`,
          'Portkey 1.15.2 answers every streamed chat completion with 500 on Node ("TypeError: immutable" appending headers to the upstream fetch Response; Portkey-AI/gateway issues #1389, #1550). portkey-sse is a second Portkey process with bench/src/portkey-stream-fix.mjs preloaded, which applies the fix proposed upstream (#1551: re-wrap a streamed upstream response in a new Response). The non-streaming figures are the unmodified Portkey.',
        ],
        configs: [...c1, ...c64, ...streamC1, ...streamC64],
        byConcurrency: { c1, c64, streamC1, streamC64 },
        figures,
      };
      output.markdown = openaiSummary(output);
      return output;
    }),
  );
}

/** The scenario's section of summary.md (written into its output: the report does not load the harness). */
function openaiSummary(output: ScenarioOutput): string {
  const figures = output.figures as Record<string, Record<string, { value: number | null; ratioToPortkey: number | null }>>;
  const names = [...new Set(Object.values(figures).flatMap((each) => Object.keys(each)))].filter((name) => !name.startsWith('direct'));
  const cell = (metric: string, name: string) => {
    const entry = figures[metric]?.[name];
    return entry?.value === null || entry?.value === undefined ? '-' : `${entry.value}${entry.ratioToPortkey !== null ? ` (${entry.ratioToPortkey}x)` : ''}`;
  };
  const rows = names
    .filter((name) => !name.endsWith('-sse'))
    .map((name) => `| ${name} | ${cell('addedP50Ms', name)} | ${cell('addedP99Ms', name)} | ${cell('reqPerSecC64', name)} | ${cell('addedTtftP50Ms', `${name}-sse`)} | ${cell('addedTtftP99Ms', `${name}-sse`)} | ${cell('streamsPerSecC64', `${name}-sse`)} |`);
  return [
    '| configuration | added p50 ms (c=1) | added p99 ms (c=1) | req/s (c=64) | added TTFT p50 ms | added TTFT p99 ms | streams/s (c=64) |',
    '|---|---|---|---|---|---|---|',
    ...rows,
    '',
    'In parentheses: the figure over Portkey\'s in the same run.',
  ].join('\n');
}
