import { STATUS_CODES, maxHeaderSize } from 'node:http';
import type { Duplex } from 'node:stream';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import {
  hasZodFastifySchemaValidationErrors,
  jsonSchemaTransform,
  serializerCompiler,
  validatorCompiler,
  type FastifyPluginAsyncZod,
} from 'fastify-type-provider-zod';
import { ClientError, ElexirionError, ServerError, Status, failureMessage, httpStatusFromGrpc, statusOf } from '../rpc/errors.js';
import type { Logger } from '../telemetry/logger.js';

/**
 * A service's HTTP routes: a Fastify plugin registered, encapsulated, under `prefix` on its
 * process's HTTP port. Route schemas are zod schemas: they validate requests (a bad body is a 400
 * naming the field) and make the OpenAPI document at `/openapi.json`.
 */
export interface HttpRoutes {
  prefix: string;
  plugin: FastifyPluginAsyncZod;
}

/** Typed sugar for a service's `http` entries. */
export function httpRoutes(prefix: string, plugin: FastifyPluginAsyncZod): HttpRoutes {
  return { prefix, plugin };
}

/** The JSON body of every HTTP error: `{"error":{"code":"NOT_FOUND","message":"..."}}`. */
export function httpErrorBody(code: Status, message: string): { error: { code: string; message: string } } {
  return { error: { code: Status[code] ?? 'UNKNOWN', message } };
}

/**
 * A process's HTTP server: the services' route plugins, and the error and not-found handling
 * they share. A failure is answered with the HTTP status that matches its gRPC status.
 */
export function createHttpServer(options: { logger: Logger; title: string }): FastifyInstance {
  const app = Fastify({ logger: false, bodyLimit: 8 * 1024 * 1024, clientErrorHandler: answerClientError });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.setErrorHandler((error, request, reply) => sendError(error, request, reply, options.logger));
  app.setNotFoundHandler((request, reply) => {
    reply.code(404).send(httpErrorBody(Status.NOT_FOUND, `no route ${request.method} ${request.url.split('?')[0]}`));
  });
  void app.register(swagger, {
    openapi: { info: { title: options.title, version: '1' } },
    transform: jsonSchemaTransform,
  });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  return app;
}

/**
 * A request Node's HTTP parser refuses before Fastify sees it (headers over the limit, a request
 * that was not received in time, a malformed one), answered in the project's error shape instead
 * of Fastify's default body; the connection is closed after it, as Node and Fastify do.
 */
function answerClientError(error: NodeJS.ErrnoException, socket: Duplex): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, code, message] =
    error.code === 'HPE_HEADER_OVERFLOW'
      ? [431, Status.INVALID_ARGUMENT, `headers: over the ${maxHeaderSize} bytes this server accepts`]
      : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, Status.DEADLINE_EXCEEDED, 'the request was not received in time']
        : [400, Status.INVALID_ARGUMENT, 'malformed HTTP request'];
  if (socket.writable) {
    const body = JSON.stringify(httpErrorBody(code, message));
    socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  }
  socket.destroy(error);
}

/** Registers each route plugin under its prefix, encapsulated. */
export async function registerRoutes(app: FastifyInstance, routes: readonly HttpRoutes[]): Promise<void> {
  for (const { prefix, plugin } of routes) await app.register(plugin, { prefix });
}

function sendError(error: unknown, request: FastifyRequest, reply: FastifyReply, logger: Logger): void {
  if (error instanceof ClientError || error instanceof ServerError || error instanceof ElexirionError) {
    const code = statusOf(error);
    reply.code(httpStatusFromGrpc(code)).send(httpErrorBody(code, failureMessage(error)));
    return;
  }
  if (hasZodFastifySchemaValidationErrors(error)) {
    const where = error.validationContext ?? 'body';
    const problems = error.validation.map((issue) => `${where}${issue.instancePath.replaceAll('/', '.').replace(/\.$/, '')}: ${issue.message}`);
    reply.code(400).send(httpErrorBody(Status.INVALID_ARGUMENT, problems.join('; ')));
    return;
  }
  // Fastify's own refusals: malformed JSON, a body over the limit, an unsupported content type.
  const status = (error as Partial<FastifyError>).statusCode;
  if (status !== undefined && status >= 400 && status < 500) {
    reply.code(status).send(httpErrorBody(Status.INVALID_ARGUMENT, `body: ${(error as Error).message}`));
    return;
  }
  logger.error({ err: error, method: request.method, url: request.url }, 'unexpected error in an HTTP route');
  reply.code(500).send(httpErrorBody(Status.INTERNAL, 'internal error'));
}
