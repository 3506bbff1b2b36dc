// Time to first token through the whole chain (client -> gateway -> agent -> executor ->
// provider -> the fake upstream, streaming all the way) against the upstream's own, at c=1.
import { MESSAGE, SHAPE_LABEL, directBody, log, runInterleaved, type BenchConfig } from './harness.ts';
import type { Context, ScenarioOutput } from './scenarios.ts';
import { withShapes } from './scenarios.ts';
import { round } from './stats.ts';

export async function ttft(ctx: Context): Promise<ScenarioOutput> {
  const { quick } = ctx.opts;
  const rounds = ctx.opts.rounds ?? (quick ? 3 : 5);
  const total = ctx.opts.requests ?? (quick ? 300 : 2000);
  // The upstream sends the reply in 3 chunks this far apart: its first token comes well before its end.
  const chunkDelayMs = 10;
  return withShapes(ctx, ctx.opts.shapes, {}, async (shapes) => {
    await ctx.shared.upstream.setDefault({ chunkDelayMs });
    try {
      const configs: BenchConfig[] = [
        {
          name: 'direct-sse',
          description: 'the fake OpenAI upstream, stream: true, time to the first non-empty content delta',
          target: { type: 'http-sse', url: `${ctx.shared.upstream.openaiUrl}/chat/completions`, headers: { authorization: 'Bearer sk-bench-fake' }, body: directBody(true) },
          procs: [],
        },
        ...shapes.flatMap((shape): BenchConfig[] => [
          {
            name: `${SHAPE_LABEL[shape.shape]}-grpc-stream`,
            description: `the whole chain, ${shape.shape}, gRPC Gateway/ChatStream: time to the first text delta`,
            target: { type: 'grpc-chat-stream', port: shape.grpcPort, request: { message: MESSAGE, sessionId: '', pipeline: '' }, metadata: shape.auth },
            procs: shape.procs,
          },
          {
            name: `${SHAPE_LABEL[shape.shape]}-sse`,
            description: `the whole chain, ${shape.shape}, HTTP POST /api/agent/chat/stream (Server-Sent Events): time to the first delta event`,
            target: { type: 'http-sse', url: `${shape.httpUrl}/api/agent/chat/stream`, headers: shape.auth, body: { message: MESSAGE } },
            procs: shape.procs,
          },
        ]),
      ];
      log(`ttft: ${configs.map((config) => config.name).join(', ')}`);
      const results = await runInterleaved({ ...ctx.shared }, configs, {
        mode: 'closed',
        concurrency: 1,
        rounds,
        requestsPerRound: Math.max(1, Math.ceil(total / rounds)),
        warmupRequests: quick ? 50 : 200,
        timeoutMs: 30_000,
      });
      const direct = results.find((each) => each.name === 'direct-sse')!;
      const addedTtftMs = Object.fromEntries(
        results
          .filter((each) => each !== direct)
          .map((each) => [
            each.name,
            { p50: round((each.ttftMs?.p50 ?? Number.NaN) - (direct.ttftMs?.p50 ?? Number.NaN)), p99: round((each.ttftMs?.p99 ?? Number.NaN) - (direct.ttftMs?.p99 ?? Number.NaN)) },
          ]),
      );
      return {
        scenario: 'ttft',
        title: 'Time to first token through the whole chain',
        settings: { concurrency: 1, rounds, requests: total, upstreamChunkDelayMs: chunkDelayMs },
        notes: [
          'Each chain configuration streams the general pipeline (one LLM step, alias claude_smart -> the fake OpenAI upstream, stream: true) through gateway ChatStream -> agent HandleChatStream -> executor ExecuteStream -> provider StreamComplete; the agent routes the message first.',
          `The fake upstream sends the reply in 3 chunks, ${chunkDelayMs} ms apart, so the first token (TTFT) and the whole stream (latencyMs) differ; addedTtftMs is each chain configuration's TTFT minus the upstream's own.`,
        ],
        configs: results,
        addedTtftMs,
      };
    } finally {
      await ctx.shared.upstream.setDefault({});
    }
  });
}
