import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ClientError, Status, httpStatusFromGrpc, proto, type ServiceClient } from '@elexirion/kit';

/** Largest client-supplied timeout (x-timeout-ms) the HTTP API accepts. */
const MAX_TIMEOUT_MS = 15 * 60 * 1000;

function errorBody(code: Status, message: string) {
  return { error: { code: Status[code], message } };
}

/** Aborted when the HTTP client goes away before the answer is written. */
function requestSignal(request: FastifyRequest, reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.on('close', () => {
    if (!reply.raw.writableFinished) controller.abort();
  });
  return controller.signal;
}

function callOptions(request: FastifyRequest, reply: FastifyReply): { signal: AbortSignal; deadline?: Date } {
  const signal = requestSignal(request, reply);
  const raw = request.headers['x-timeout-ms'];
  if (raw === undefined) return { signal };
  const ms = Number(raw);
  if (!Number.isInteger(ms) || ms <= 0 || ms > MAX_TIMEOUT_MS) {
    throw new ClientError('http', Status.INVALID_ARGUMENT, `x-timeout-ms: expected whole milliseconds from 1 to ${MAX_TIMEOUT_MS}`);
  }
  return { signal, deadline: new Date(Date.now() + ms) };
}

function objectBody(request: FastifyRequest): Record<string, unknown> {
  const body = request.body;
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new ClientError('http', Status.INVALID_ARGUMENT, 'body: expected a JSON object');
  }
  return body as Record<string, unknown>;
}

/**
 * The gateway's HTTP/JSON API: the same calls as gRPC (proto3 JSON field names), served by the
 * gRPC implementation itself through the in-process client, so both paths share validation,
 * metrics, tracing and telemetry.
 */
export function registerHttpApi(app: FastifyInstance, gateway: () => ServiceClient<'gateway'>): void {
  app.setErrorHandler((error, _request, reply) => {
    if (error instanceof ClientError) {
      reply.code(httpStatusFromGrpc(error.code)).send(errorBody(error.code, error.details));
      return;
    }
    const status = (error as { statusCode?: number }).statusCode;
    if (status !== undefined && status >= 400 && status < 500) {
      reply.code(status).send(errorBody(Status.INVALID_ARGUMENT, `body: ${(error as Error).message}`));
      return;
    }
    reply.code(500).send(errorBody(Status.INTERNAL, 'internal error'));
  });
  app.setNotFoundHandler((request, reply) => {
    reply.code(404).send(errorBody(Status.NOT_FOUND, `no route ${request.method} ${request.url}`));
  });

  app.post('/v1/chat', async (request, reply) => {
    const body = objectBody(request);
    const response = await gateway().chat(proto.ChatRequest.fromJSON(body), callOptions(request, reply));
    return proto.ChatResponse.toJSON(response);
  });

  app.post<{ Params: { name: string } }>('/v1/pipelines/:name/execute', async (request, reply) => {
    const body = objectBody(request);
    const inputs = body.inputs ?? {};
    if (inputs === null || typeof inputs !== 'object' || Array.isArray(inputs) || Object.values(inputs).some((value) => typeof value !== 'string')) {
      throw new ClientError('http', Status.INVALID_ARGUMENT, 'inputs: expected an object of string values');
    }
    const response = await gateway().executePipeline(
      { pipeline: request.params.name, inputs: inputs as Record<string, string> },
      callOptions(request, reply),
    );
    return proto.ExecutePipelineResponse.toJSON(response);
  });
}
