import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Metadata } from 'nice-grpc-common';
import { z } from 'zod';
import { FALLBACK_USED_TRAILER, ServerError, Status, failureMessage, httpRoutes, httpStatusFromGrpc, proto, statusOf, type HttpRoutes, type ServiceClient } from '@elexirion/kit';
import { httpCallOptions } from '../caller.js';
import { sendEventStream, type ServerSentEvent } from './sse.js';

// The design's chat contract (snake_case JSON, as the design's clients send and read it), served
// by the gateway's own Chat and ChatStream through the in-process client: keys, scopes, limits and
// validation apply once, on the gRPC path.

const chatBody = z.object({
  message: z.string(),
  session_id: z.string().optional(),
  pipeline: z.string().optional(),
});
type ChatBody = z.infer<typeof chatBody>;

const usage = z.object({ input_tokens: z.number(), output_tokens: z.number(), cost_usd: z.number() });

const chatSuccess = z.object({
  status: z.literal('success'),
  response: z.string(),
  /** Seconds, as the design's clients read it. */
  execution_time: z.number(),
  pipeline_used: z.string(),
  fallback_used: z.boolean(),
  job_id: z.string(),
  usage,
});

/** `{"status":"error","error","fallback_used"}`, with `code` the gRPC status name. */
export interface ChatFailure {
  status: 'error';
  error: string;
  code: string;
  fallback_used: boolean;
}

/**
 * POST /api/agent/chat (the design's answer or its error shape, with the failure's HTTP status)
 * and POST /api/agent/chat/stream (Server-Sent Events named by kind: route, run_started,
 * step_started, delta, step_finished, step_failed, then done; or error).
 */
export function agentChatApi(gateway: () => ServiceClient<'gateway'>): HttpRoutes {
  return httpRoutes('/api/agent', async (app) => {
    app.post('/chat', { schema: { body: chatBody, response: { 200: chatSuccess } }, attachValidation: true }, async (request, reply) => {
      const call = new ChatCall(request, reply);
      try {
        const answer = await gateway().chat(call.request(), call.options);
        return successBody(answer);
      } catch (error) {
        return call.fail(error);
      }
    });

    app.post('/chat/stream', { schema: { body: chatBody }, attachValidation: true }, async (request, reply) => {
      const call = new ChatCall(request, reply);
      try {
        const chatRequest = call.request();
        await sendEventStream(reply, (signal) => chatEvents(gateway().chatStream(chatRequest, { ...call.options, signal: AbortSignal.any([signal, call.options.signal]) })));
      } catch (error) {
        // Refused before the first event: an ordinary answer in the design's error shape.
        return call.fail(error);
      }
    });
  });
}

/** One request to the chat routes: its body checked, its call options, and its error answer. */
class ChatCall {
  readonly options: ReturnType<typeof httpCallOptions>;
  /** The agent tried its emergent fallback before the chat failed. */
  #fallbackTried = false;

  constructor(
    private readonly http: FastifyRequest<{ Body: ChatBody }>,
    private readonly reply: FastifyReply,
  ) {
    const options = httpCallOptions(http, reply);
    this.options = {
      ...options,
      onTrailer: (trailer: Metadata) => {
        options.onTrailer(trailer);
        this.#fallbackTried = trailer.get(FALLBACK_USED_TRAILER) === '1';
      },
    };
  }

  /** The gRPC request; a body of the wrong shape is INVALID_ARGUMENT naming the field. */
  request(): proto.ChatRequest {
    const invalid = this.http.validationError;
    if (invalid) throw new ServerError(Status.INVALID_ARGUMENT, describeValidation(invalid));
    const body = this.http.body;
    return { message: body.message, sessionId: body.session_id ?? '', pipeline: body.pipeline ?? '' };
  }

  /** Answers the failure in the design's error shape, with its HTTP status. */
  fail(error: unknown): FastifyReply {
    const code = statusOf(error);
    const body: ChatFailure = { status: 'error', error: failureMessage(error), code: Status[code] ?? 'UNKNOWN', fallback_used: this.#fallbackTried };
    return this.reply.code(httpStatusFromGrpc(code)).send(body);
  }
}

/** "body.message: Invalid input: expected string, received number", as the other routes say it. */
function describeValidation(error: { validation: { instancePath: string; message?: string }[]; validationContext?: string }): string {
  const where = error.validationContext ?? 'body';
  return error.validation.map((issue) => `${where}${issue.instancePath.replaceAll('/', '.').replace(/\.$/, '')}: ${issue.message ?? 'invalid'}`).join('; ');
}

function usageBody(value: proto.Usage | undefined): z.infer<typeof usage> {
  return { input_tokens: value?.inputTokens ?? 0, output_tokens: value?.outputTokens ?? 0, cost_usd: value?.costUsd ?? 0 };
}

function successBody(answer: proto.ChatResponse): z.infer<typeof chatSuccess> {
  return {
    status: 'success',
    response: answer.response,
    execution_time: answer.executionTimeMs / 1000,
    pipeline_used: answer.pipelineUsed,
    fallback_used: answer.fallbackUsed,
    job_id: answer.jobId,
    usage: usageBody(answer.usage),
  };
}

/** ChatStream's messages as the design's events, each named by its kind. */
async function* chatEvents(stream: AsyncIterable<proto.ChatStreamResponse>): AsyncGenerator<ServerSentEvent> {
  for await (const message of stream) {
    if (message.route) yield { event: 'route', data: snakeCase(proto.RouteDecision.toJSON(message.route)) };
    else if (message.runStarted) yield { event: 'run_started', data: snakeCase(proto.RunStarted.toJSON(message.runStarted)) };
    else if (message.stepStarted) yield { event: 'step_started', data: snakeCase(proto.StepStarted.toJSON(message.stepStarted)) };
    else if (message.textDelta) yield { event: 'delta', data: { step: message.textDelta.step, text: message.textDelta.text } };
    else if (message.stepFinished) yield { event: 'step_finished', data: snakeCase(proto.StepResult.toJSON(message.stepFinished)) };
    else if (message.stepFailed) yield { event: 'step_failed', data: snakeCase(proto.StepFailed.toJSON(message.stepFailed)) };
    else if (message.done) yield { event: 'done', data: successBody(message.done) };
  }
}

/** proto3 JSON's camelCase names as the design's snake_case (these messages hold no maps). */
function snakeCase(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(snakeCase);
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(Object.entries(value).map(([key, field]) => [key.replace(/[A-Z]/g, (letter) => `_${letter.toLowerCase()}`), snakeCase(field)]));
}
