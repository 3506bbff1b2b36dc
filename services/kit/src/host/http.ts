import { STATUS_CODES, maxHeaderSize } from 'node:http';
import type { Duplex } from 'node:stream';
import { ROOT_CONTEXT, SpanKind, context, propagation, trace, type Context, type TextMapGetter } from '@opentelemetry/api';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import cors from '@fastify/cors';
import swagger from '@fastify/swagger';
import type { Metadata } from 'nice-grpc-common';
import {
  hasZodFastifySchemaValidationErrors,
  jsonSchemaTransform,
  serializerCompiler,
  validatorCompiler,
  type FastifyPluginAsyncZod,
} from 'fastify-type-provider-zod';
import { ClientError, ElexirionError, ServerError, Status, failureMessage, httpStatusFromGrpc, statusOf } from '../rpc/errors.js';
import type { Logger } from '../telemetry/logger.js';
import { tracer } from '../telemetry/tracing.js';

/**
 * A piece of the OpenAPI 3.1 document for routes whose schemas are not zod's (the gateway's REST
 * mirror, built from the proto): their paths and the components they refer to.
 */
export interface OpenApiFragment {
  paths: Record<string, Record<string, unknown>>;
  components?: { schemas?: Record<string, unknown>; securitySchemes?: Record<string, unknown> };
}

/**
 * A service's HTTP routes: a Fastify plugin registered, encapsulated, under `prefix` on its
 * process's HTTP port. Route schemas are zod schemas: they validate requests (a bad body is a 400
 * naming the field) and make the OpenAPI document at `/openapi.json`; routes described otherwise
 * hide themselves from @fastify/swagger and bring their part of the document as `openapi`.
 */
export interface HttpRoutes {
  prefix: string;
  plugin: FastifyPluginAsyncZod;
  openapi?: OpenApiFragment;
}

/** Typed sugar for a service's `http` entries. */
export function httpRoutes(prefix: string, plugin: FastifyPluginAsyncZod, openapi?: OpenApiFragment): HttpRoutes {
  return openapi ? { prefix, plugin, openapi } : { prefix, plugin };
}

export const ACCESS_LOG_LEVELS = ['off', 'trace', 'debug', 'info', 'warn', 'error'] as const;
export type AccessLogLevel = (typeof ACCESS_LOG_LEVELS)[number];

/** What a service asks of its process's HTTP server (the gateway's public port). */
export interface HttpServerOptions {
  /** Largest request body, in bytes, for routes that set no `bodyLimit` of their own. */
  bodyLimit?: number;
  /** Origins allowed to call from a browser ("*": any); none: CORS off, preflights 404. */
  corsOrigins?: readonly string[];
  /** The level of the one log line per HTTP request; "off": none. */
  accessLogLevel?: AccessLogLevel;
  /** The name of the API key a request's `authorization` header names (for the access log; never the secret). */
  keyNameOf?: (authorization: string | undefined) => string | undefined;
}

/** Before this, the kit's HTTP servers took 8 MiB bodies: what a service that sets nothing gets. */
export const DEFAULT_BODY_LIMIT = 8 * 1024 * 1024;

/** The JSON body of every HTTP error: `{"error":{"code":"NOT_FOUND","message":"..."}}`. */
export function httpErrorBody(code: Status, message: string): { error: { code: string; message: string } } {
  return { error: { code: Status[code] ?? 'UNKNOWN', message } };
}

// Every answer is JSON (or an event stream, or metrics text) for programs, never a page: a
// fixed set of headers says so, so a browser neither sniffs it into HTML, frames it, leaks the
// URL as a referrer, nor keeps a copy of an answer that may carry a key's data. A hook, not
// @fastify/helmet: helmet's defaults are for HTML pages (a CSP with 'self' sources, COOP, DNS
// prefetch and download options) and would need as much configuration to undo as these lines.
const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
  'cache-control': 'no-store',
};

/** Headers a browser may send cross-origin, and the ones its scripts may read from an answer. */
const CORS_ALLOWED_HEADERS = ['authorization', 'content-type', 'last-event-id', 'x-timeout-ms', 'traceparent', 'tracestate'];
const CORS_EXPOSED_HEADERS = ['retry-after', 'x-ratelimit-limit-requests', 'x-ratelimit-remaining-requests', 'x-ratelimit-reset-requests', 'x-ratelimit-limit-tokens', 'x-ratelimit-remaining-tokens', 'x-ratelimit-reset-tokens', 'x-trace-id'];

const headerGetter: TextMapGetter<FastifyRequest['headers']> = {
  get: (carrier, key) => {
    const value = carrier[key];
    return Array.isArray(value) ? value[0] : value;
  },
  keys: (carrier) => Object.keys(carrier),
};

interface RequestState {
  started: number;
  trace: Context;
  traceId: string;
}

const requestStates = new WeakMap<FastifyRequest, RequestState>();
const openApiFragments = new WeakMap<FastifyInstance, OpenApiFragment[]>();
const routeLists = new WeakMap<FastifyInstance, { method: string; url: string }[]>();

/** The trace id an HTTP request runs under (its `traceparent`'s, or a new one). */
export function requestTraceId(request: FastifyRequest): string {
  return requestStates.get(request)?.traceId ?? '';
}

/**
 * Puts the HTTP request's trace context into the metadata of a call made for it, so the call
 * (in-process or not) continues the request's trace: one trace id in the access log, the call's
 * logs and its telemetry events.
 */
export function injectRequestTrace(request: FastifyRequest, metadata: Metadata): void {
  const state = requestStates.get(request);
  if (state) propagation.inject(state.trace, metadata, { set: (carrier, key, value) => carrier.set(key, value) });
}

/** Every route the server registered (method, URL with :params), for checks that each is documented. */
export function registeredRoutes(app: FastifyInstance): readonly { method: string; url: string }[] {
  return routeLists.get(app) ?? [];
}

/** The key id of a bearer key ("elx_<key_id>_<secret>"): public, safe to log; never the secret. */
function keyIdOf(authorization: string | string[] | undefined): string | undefined {
  if (typeof authorization !== 'string') return undefined;
  return /^Bearer\s+elx_([A-Za-z0-9-]{1,64})_/i.exec(authorization)?.[1];
}

/**
 * A process's HTTP server: the services' route plugins, and the error and not-found handling
 * they share. A failure is answered with the HTTP status that matches its gRPC status. Every
 * answer carries the security headers; every request leaves one access-log line (unless off).
 */
export function createHttpServer(options: { logger: Logger; title: string } & HttpServerOptions): FastifyInstance {
  const accessLog = options.logger.child({ component: 'http' });
  // Decided once: a line the logger's level drops is not built on every request either.
  const accessLogLevel = options.accessLogLevel ?? 'off';
  const logAccess = accessLogLevel !== 'off' && accessLog.isLevelEnabled(accessLogLevel) ? (fields: Record<string, unknown>) => accessLog[accessLogLevel](fields, 'http request') : undefined;
  const app = Fastify({
    logger: false,
    bodyLimit: options.bodyLimit ?? DEFAULT_BODY_LIMIT,
    clientErrorHandler: (error, socket) => answerClientError(error, socket, logAccess),
  });
  const fragments: OpenApiFragment[] = [];
  openApiFragments.set(app, fragments);
  const routes: { method: string; url: string }[] = [];
  routeLists.set(app, routes);
  app.addHook('onRoute', (route) => {
    for (const method of [route.method].flat()) routes.push({ method, url: route.url });
  });

  // A callback hook, not an async one: no promise per request.
  app.addHook('onRequest', (request, reply, done) => {
    const started = performance.now();
    const parent = propagation.extract(ROOT_CONTEXT, request.headers, headerGetter);
    const span = tracer.startSpan(`HTTP ${request.method} ${request.routeOptions.url ?? 'unrouted'}`, { kind: SpanKind.SERVER }, parent);
    const { traceId } = span.spanContext();
    requestStates.set(request, { started, trace: trace.setSpan(parent, span), traceId });
    void reply.headers(SECURITY_HEADERS);
    void reply.header('x-trace-id', traceId);
    // On the socket's close, not onResponse: streamed (hijacked) answers and requests whose client
    // went away leave their line too.
    reply.raw.once('close', () => {
      span.end();
      logAccess?.({
        method: request.method,
        route: request.routeOptions.url ?? null,
        path: request.url.split('?')[0],
        // 499 (nginx's "client closed request") when the client left before any answer was sent.
        status: reply.raw.headersSent ? reply.raw.statusCode : 499,
        durationMs: Math.round((performance.now() - started) * 10) / 10,
        ...(reply.raw.writableFinished ? {} : { aborted: true }),
        keyId: keyIdOf(request.headers.authorization) ?? null,
        // The key's name once it was accepted (a 401 names no one).
        key: (reply.raw.statusCode !== 401 && options.keyNameOf?.(request.headers.authorization)) || null,
        trace_id: traceId,
      });
    });
    done();
  });

  // The handler runs in the request's trace context (entered after the body is read: reading it
  // leaves the async context), so in-process calls, their logs and their events continue it.
  app.addHook('preHandler', (request, _reply, done) => {
    const state = requestStates.get(request);
    if (state) context.with(state.trace, done);
    else done();
  });

  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.setErrorHandler((error, request, reply) => sendError(error, request, reply, options.logger));
  app.setNotFoundHandler((request, reply) => {
    reply.code(404).send(httpErrorBody(Status.NOT_FOUND, `no route ${request.method} ${request.url.split('?')[0]}`));
  });
  const origins = options.corsOrigins ?? [];
  void app.register(cors, {
    // Off (false) unless origins are configured: then a preflight is answered at once, before any
    // key check (browsers send no Authorization on a preflight).
    origin: origins.length === 0 ? false : origins.includes('*') ? '*' : [...origins],
    methods: ['GET', 'POST', 'OPTIONS'],
    allowedHeaders: CORS_ALLOWED_HEADERS,
    exposedHeaders: CORS_EXPOSED_HEADERS,
    maxAge: 600,
  });
  void app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: options.title, version: '1' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'An API key, "elx_<key_id>_<secret>"' } } },
    },
    transform: jsonSchemaTransform,
  });
  app.get('/openapi.json', { schema: { hide: true } }, async () => openApiDocument(app.swagger() as unknown as OpenApiDocument, [KIT_ROUTES, ...fragments]));
  return app;
}

interface OpenApiDocument {
  openapi: string;
  paths?: Record<string, Record<string, unknown>>;
  components?: Record<string, Record<string, unknown> | undefined>;
  [key: string]: unknown;
}

const errorBodySchema = {
  type: 'object',
  description: 'Every error: the gRPC status name and a message naming the field when one is at fault.',
  properties: {
    error: {
      type: 'object',
      properties: { code: { type: 'string', description: 'The gRPC status name, e.g. INVALID_ARGUMENT' }, message: { type: 'string' } },
      required: ['code', 'message'],
      additionalProperties: false,
    },
  },
  required: ['error'],
  additionalProperties: false,
};

/** The kit's own routes, described here since they carry no zod schema. */
const KIT_ROUTES: OpenApiFragment = {
  components: { schemas: { ErrorBody: errorBodySchema } },
  paths: {
    '/healthz': { get: { operationId: 'healthz', summary: 'Liveness: the process answers.', tags: ['Operations'], responses: { '200': { description: 'alive', content: { 'application/json': { schema: { type: 'object', properties: { status: { const: 'ok' } }, required: ['status'] } } } } } } },
    '/readyz': {
      get: {
        operationId: 'readyz',
        summary: 'Readiness: 200 while serving (degraded included), 503 while draining.',
        tags: ['Operations'],
        responses: {
          '200': { description: 'serving', content: { 'application/json': { schema: { type: 'object', properties: { status: { type: 'string' }, services: { type: 'array', items: { type: 'string' } }, nats: { type: 'object' } }, required: ['status'] } } } },
          '503': { description: 'draining', content: { 'application/json': { schema: { type: 'object', properties: { status: { const: 'draining' } } } } } },
        },
      },
    },
    '/metrics': { get: { operationId: 'metrics', summary: 'Prometheus metrics.', tags: ['Operations'], responses: { '200': { description: 'Prometheus text format', content: { 'text/plain': { schema: { type: 'string' } } } } } } },
    '/openapi.json': { get: { operationId: 'openapi', summary: 'This document.', tags: ['Operations'], responses: { '200': { description: 'OpenAPI 3.1', content: { 'application/json': { schema: { type: 'object' } } } } } } },
  },
};

/** @fastify/swagger's document (the zod routes) with the fragments' paths and components added. */
function openApiDocument(base: OpenApiDocument, fragments: readonly OpenApiFragment[]): OpenApiDocument {
  const paths: Record<string, Record<string, unknown>> = { ...base.paths };
  const schemas: Record<string, unknown> = { ...base.components?.schemas };
  const securitySchemes: Record<string, unknown> = { ...base.components?.securitySchemes };
  for (const fragment of fragments) {
    for (const [path, operations] of Object.entries(fragment.paths)) paths[path] = { ...paths[path], ...operations };
    Object.assign(schemas, fragment.components?.schemas);
    Object.assign(securitySchemes, fragment.components?.securitySchemes);
  }
  return { ...base, paths, components: { ...base.components, schemas, securitySchemes } };
}

/**
 * A request Node's HTTP parser refuses before Fastify sees it (headers over the limit, a request
 * that was not received in time, a malformed one), answered in the project's error shape instead
 * of Fastify's default body; the connection is closed after it, as Node and Fastify do.
 */
function answerClientError(error: NodeJS.ErrnoException, socket: Duplex, logAccess: ((fields: Record<string, unknown>) => void) | undefined): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, code, message] =
    error.code === 'HPE_HEADER_OVERFLOW'
      ? [431, Status.INVALID_ARGUMENT, `headers: over the ${maxHeaderSize} bytes this server accepts`]
      : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, Status.DEADLINE_EXCEEDED, 'the request was not received in time']
        : [400, Status.INVALID_ARGUMENT, 'malformed HTTP request'];
  if (socket.writable) {
    const body = JSON.stringify(httpErrorBody(code, message));
    const security = Object.entries(SECURITY_HEADERS).map(([name, value]) => `${name}: ${value}\r\n`).join('');
    socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${security}Connection: close\r\n\r\n${body}`);
  }
  // Refused before it was parsed: no method or route to name, but the refusal leaves its line.
  logAccess?.({ method: null, route: null, status, error: error.code ?? 'unknown' });
  socket.destroy(error);
}

/** Registers each route plugin under its prefix, encapsulated. */
export async function registerRoutes(app: FastifyInstance, routes: readonly HttpRoutes[]): Promise<void> {
  for (const { prefix, plugin, openapi } of routes) {
    await app.register(plugin, { prefix });
    if (openapi) openApiFragments.get(app)?.push(openapi);
  }
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
  // Over the route's body limit: RESOURCE_EXHAUSTED, the status gRPC answers for a message over the
  // server's receive limit, so one condition has one name on both paths; 413 says it is the size.
  if ((error as Partial<FastifyError>).code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
    reply.code(413).send(httpErrorBody(Status.RESOURCE_EXHAUSTED, `body: over the ${request.routeOptions.bodyLimit ?? DEFAULT_BODY_LIMIT} bytes ${request.method} ${request.routeOptions.url ?? request.url} accepts`));
    return;
  }
  // Fastify's own refusals: malformed JSON, an unsupported content type.
  const status = (error as Partial<FastifyError>).statusCode;
  if (status !== undefined && status >= 400 && status < 500) {
    reply.code(status).send(httpErrorBody(Status.INVALID_ARGUMENT, `body: ${(error as Error).message}`));
    return;
  }
  logger.error({ err: error, method: request.method, url: request.url }, 'unexpected error in an HTTP route');
  reply.code(500).send(httpErrorBody(Status.INTERNAL, 'internal error'));
}
