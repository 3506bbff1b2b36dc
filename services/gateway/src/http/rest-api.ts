import type { FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { httpCallOptions } from '../caller.js';
import { ClientError, Status, httpRoutes, proto, type HttpRoutes, type ServiceClient } from '@elexirion/kit';

/** Largest client-supplied timeout (x-timeout-ms) the HTTP API accepts. */
const MAX_TIMEOUT_MS = 15 * 60 * 1000;

// Bodies in proto3 JSON (camelCase, snake_case accepted as protobuf's JSON mapping does); the
// gRPC implementation checks what they say (an empty message, a bad pipeline name).
const chatBody = z.looseObject({
  message: z.string().optional(),
  sessionId: z.string().optional(),
  session_id: z.string().optional(),
  pipeline: z.string().optional(),
});

const executeBody = z.looseObject({
  inputs: z.record(z.string(), z.string(), { error: 'expected an object of string values' }).optional(),
});

const pipelineParams = z.object({ name: z.string() });

// The request's key as metadata, cancellation when the client goes away, the rate-limit trailer
// as headers (httpCallOptions), and the client's own timeout.
function callOptions(request: FastifyRequest, reply: FastifyReply): ReturnType<typeof httpCallOptions> & { deadline?: Date } {
  const options = httpCallOptions(request, reply);
  const raw = request.headers['x-timeout-ms'];
  if (raw === undefined) return options;
  const ms = Number(raw);
  if (!Number.isInteger(ms) || ms <= 0 || ms > MAX_TIMEOUT_MS) {
    throw new ClientError('http', Status.INVALID_ARGUMENT, `x-timeout-ms: expected whole milliseconds from 1 to ${MAX_TIMEOUT_MS}`);
  }
  return { ...options, deadline: new Date(Date.now() + ms) };
}

/**
 * The gateway's HTTP/JSON API under /v1: the same calls as gRPC (proto3 JSON field names), served
 * by the gRPC implementation itself through the in-process client, so both paths share
 * validation, metrics, tracing and telemetry.
 */
export function httpApi(gateway: () => ServiceClient<'gateway'>): HttpRoutes {
  return httpRoutes('/v1', async (app) => {
    app.post('/chat', { schema: { body: chatBody } }, async (request, reply) => {
      const response = await gateway().chat(proto.ChatRequest.fromJSON(request.body), callOptions(request, reply));
      return proto.ChatResponse.toJSON(response);
    });

    app.post('/pipelines/:name/execute', { schema: { params: pipelineParams, body: executeBody } }, async (request, reply) => {
      const response = await gateway().executePipeline({ pipeline: request.params.name, inputs: request.body.inputs ?? {} }, callOptions(request, reply));
      return proto.ExecutePipelineResponse.toJSON(response);
    });
  });
}
