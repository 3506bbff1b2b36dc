import * as proto from '@elexirion/kit/proto';
import { ClientError, Status } from 'nice-grpc';
import type { CommandSpec } from '../args.js';
import type { Context } from '../context.js';
import { ExitCode } from '../exit-codes.js';
import { formatMs, formatRoute, formatUsage, textArgument } from '../format.js';

export const chatSpec: CommandSpec = {
  path: ['chat'],
  brief: 'send a message; the answer streams as the model writes it',
  usage: 'MESSAGE... | - [--pipeline NAME] [--session ID] [--no-stream]',
  summary:
    'Sends a message to the gateway, which routes it to a pipeline (or runs --pipeline), and prints the answer as the model writes it (ChatStream). The route, pipeline, job id, usage and cost follow on stderr. MESSAGE "-" reads the message from stdin.',
  options: {
    pipeline: { type: 'string', short: 'p', value: 'NAME', description: 'run this pipeline instead of routing' },
    session: { type: 'string', value: 'ID', description: 'session id: the same session gets the same prompt versions' },
    'no-stream': { type: 'boolean', description: 'one unary Chat call: print the answer once it is complete' },
  },
  positionals: { min: 1, max: Infinity, names: 'MESSAGE' },
  details: `Output:
  stdout   the text of each step as it streams (steps separated by a blank line), or the answer
  stderr   progress (on a terminal), then route, pipeline, job, time, usage and cost
  --json   one ChatStreamResponse per line (route, runStarted, stepStarted, textDelta,
           stepFinished, stepFailed, done); with --no-stream one ChatResponse
A stream that ends without its final answer is a failure (exit 1), never a clean end.`,
};

function request(ctx: Context): proto.ChatRequest {
  return {
    message: textArgument(ctx.positionals, 'MESSAGE'),
    pipeline: String(ctx.values.pipeline ?? ''),
    sessionId: String(ctx.values.session ?? ''),
  };
}

function summarize(ctx: Context, done: proto.ChatResponse): void {
  const { output } = ctx;
  if (done.route) output.note(`route: ${formatRoute(done.route)}`);
  output.note(`pipeline: ${done.pipelineUsed} · job ${done.jobId || '-'} · ${formatMs(done.executionTimeMs)}${done.fallbackUsed ? ' · fallback used' : ''}${done.degraded ? ' · degraded (agent unavailable)' : ''}`);
  if (done.fallback) output.note(`fallback: ${done.fallback.pipeline} after ${done.fallback.originalError}`);
  output.note(`usage: ${formatUsage(done.usage)}`);
}

export async function chat(ctx: Context): Promise<number> {
  const chatRequest = request(ctx);
  const { output, progress } = ctx;
  if (ctx.values['no-stream']) {
    progress.set('waiting for the answer');
    const answer = await ctx.gateway.chat(chatRequest, ctx.unary(true));
    progress.stop();
    if (output.json) output.document(proto.ChatResponse.toJSON(answer));
    else {
      output.write(answer.response);
      output.endLine();
      summarize(ctx, answer);
    }
    return ExitCode.OK;
  }

  progress.set('routing');
  // Text per step, so the final answer is printed when no step streamed it (a fallback pipeline,
  // an output assembled from several steps).
  let streamingStep: string | undefined;
  let lastStreamedText = '';
  let streamedAny = false;
  let done: proto.ChatResponse | undefined;
  for await (const event of ctx.gateway.chatStream(chatRequest, ctx.stream())) {
    if (output.json) output.jsonLine(proto.ChatStreamResponse.toJSON(event));
    if (event.route) progress.set(`routed to ${event.route.pipeline}`);
    else if (event.stepStarted) progress.set(`step ${event.stepStarted.step}`);
    else if (event.stepFailed) output.note(`step ${event.stepFailed.step} failed: ${event.stepFailed.code}: ${event.stepFailed.message}`);
    else if (event.textDelta && !output.json) {
      if (event.textDelta.step !== streamingStep) {
        if (streamedAny) {
          output.endLine();
          output.write('\n');
        }
        streamingStep = event.textDelta.step;
        lastStreamedText = '';
      }
      output.write(event.textDelta.text);
      lastStreamedText += event.textDelta.text;
      streamedAny = true;
    } else if (event.done) done = event.done;
  }
  progress.stop();
  if (!done) throw new ClientError('/elexirion.v1.Gateway/ChatStream', Status.UNKNOWN, 'the stream ended without its final answer');
  if (!output.json) {
    if (!streamedAny) output.write(done.response);
    else if (lastStreamedText !== done.response) {
      output.endLine();
      output.write(`\n${done.response}`);
    }
    output.endLine();
    summarize(ctx, done);
  }
  return ExitCode.OK;
}
