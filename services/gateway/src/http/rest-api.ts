import { ScalarType, type DescField, type DescMessage } from '@bufbuild/protobuf';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ServerError, Status, httpRoutes, proto, type HttpRoutes, type OpenApiFragment, type ServiceClient } from '@elexirion/kit';
import { httpCallOptions } from '../caller.js';
import type { GatewayConfig } from '../gateway-config.js';
import { gatewayMethods, type GatewayMethod, type GatewayMethodName } from '../method-options.js';
import { JsonValidator } from './json-validation.js';
import { buildProtoSchemas, normalizeFieldNames, toOpenApiRefs, type JsonSchema, type ProtoSchemas } from './proto-schemas.js';
import { maxRequestBytes } from './request-limits.js';
import { sendEventStream, type ServerSentEvent } from './sse.js';

// The REST mirror of the Gateway service, generated from the proto: each call's `(http)` option
// is its route; path parameters ({job_id}) and the query string (GET) or JSON body (POST) make
// the request in the proto3 JSON mapping, validated against JSON Schemas built from the same
// descriptors that the OpenAPI document shows; the route calls the gateway's own gRPC
// implementation in-process (keys, scopes, limits and telemetry apply once, on one path) and
// answers its response's JSON, or, for a server stream, Server-Sent Events.

/** Largest client-supplied timeout (x-timeout-ms) the HTTP API accepts. */
const MAX_TIMEOUT_MS = 15 * 60 * 1000;

/** How a streamed call resumes: the request field Last-Event-ID sets, and each event's id. */
interface Resumable {
  requestField: string;
  idOf(message: unknown): string | undefined;
}

// WatchJob's events carry their sequence; an EventSource that reconnects sends the last one back
// as Last-Event-ID, which is the call's after_sequence.
const RESUMABLE: Partial<Record<GatewayMethodName, Resumable>> = {
  watchJob: {
    requestField: 'afterSequence',
    idOf: (message) => {
      const sequence = (message as proto.WatchJobResponse).event?.sequence;
      return sequence === undefined ? undefined : String(sequence);
    },
  },
};

interface MirrorRoute {
  method: GatewayMethod;
  input: DescMessage;
  output: DescMessage;
  /** Fastify's form of the path (":job_id"). */
  url: string;
  /** The request fields the path sets, in order. */
  pathFields: DescField[];
  bodyLimit: number;
  resumable: Resumable | undefined;
}

type GatewayCall = (request: unknown, options: object) => Promise<unknown> | AsyncIterable<unknown>;

function invalid(message: string): never {
  throw new ServerError(Status.INVALID_ARGUMENT, message);
}

function kindOf(value: unknown): string {
  if (value === null) return 'null';
  return Array.isArray(value) ? 'array' : typeof value;
}

/** A query-string or path value as the JSON value the field takes (the schema then checks it). */
function fromText(field: DescField, text: string): unknown {
  const scalar = field.fieldKind === 'scalar' || (field.fieldKind === 'list' && field.listKind === 'scalar') ? field.scalar : undefined;
  const isEnum = field.fieldKind === 'enum' || (field.fieldKind === 'list' && field.listKind === 'enum');
  if (scalar === ScalarType.BOOL) return text === 'true' ? true : text === 'false' ? false : text;
  if (isEnum && /^-?[0-9]+$/.test(text)) return Number(text);
  // Numbers stay strings: the proto3 JSON mapping accepts decimal strings for every number type.
  return text;
}

function fieldOf(desc: DescMessage, name: string): DescField | undefined {
  return desc.fields.find((field) => field.jsonName === name || field.name === name);
}

/** GET: the query string's parameters as the request's JSON (a repeated field: the key repeated). */
function fromQuery(desc: DescMessage, query: unknown): Record<string, unknown> {
  const json: Record<string, unknown> = {};
  for (const [key, raw] of Object.entries((query ?? {}) as Record<string, string | string[]>)) {
    const field = fieldOf(desc, key);
    // Refused here, not left to the schema: a key such as "__proto__" must never be assigned.
    if (!field) invalid(`query.${key}: unknown field`);
    if (field.jsonName in json) invalid(`query.${key}: given twice (as "${field.jsonName}" and "${field.name}")`);
    const values = [raw].flat();
    if (field.fieldKind === 'map' || (field.fieldKind === 'message' && field.message.typeName !== 'google.protobuf.Timestamp') || (field.fieldKind === 'list' && field.listKind === 'message')) {
      invalid(`query.${key}: a message or map field cannot be given in the query string`);
    }
    if (field.fieldKind === 'list') json[field.jsonName] = values.map((value) => fromText(field, value));
    else if (values.length > 1) invalid(`query.${key}: given ${values.length} times; it takes one value`);
    else json[field.jsonName] = fromText(field, values[0]!);
  }
  return json;
}

function timeoutOf(request: FastifyRequest): { deadline?: Date } {
  const raw = request.headers['x-timeout-ms'];
  if (raw === undefined) return {};
  const ms = Number(raw);
  if (!Number.isInteger(ms) || ms <= 0 || ms > MAX_TIMEOUT_MS) invalid(`headers.x-timeout-ms: expected whole milliseconds from 1 to ${MAX_TIMEOUT_MS}`);
  return { deadline: new Date(Date.now() + ms) };
}

/** The route's request in the proto3 JSON mapping, validated; problems are INVALID_ARGUMENT naming the field. */
function requestJson(route: MirrorRoute, request: FastifyRequest, validator: JsonValidator): Record<string, unknown> {
  const where = route.method.http.method === 'GET' ? 'query' : 'body';
  let json: Record<string, unknown>;
  if (route.method.http.method === 'GET') json = fromQuery(route.input, request.query);
  else {
    const query = Object.keys((request.query ?? {}) as object);
    if (query.length > 0) invalid(`query.${query[0]}: unknown field (a POST takes its fields in the JSON body)`);
    const body = request.body;
    if (body !== undefined && (typeof body !== 'object' || body === null || Array.isArray(body))) invalid(`body: Invalid input: expected object, received ${kindOf(body)}`);
    json = (body === undefined ? {} : normalizeFieldNames(route.input, body, 'body', invalid)) as Record<string, unknown>;
  }
  const params = (request.params ?? {}) as Record<string, string>;
  for (const field of route.pathFields) {
    const value = fromText(field, params[field.name] ?? '');
    if (field.jsonName in json && json[field.jsonName] !== value) invalid(`${where}.${field.jsonName}: differs from the path's {${field.name}}`);
    json[field.jsonName] = value;
  }
  if (route.resumable) {
    const lastEventId = request.headers['last-event-id'];
    if (typeof lastEventId === 'string' && lastEventId !== '') {
      if (!/^[0-9]+$/.test(lastEventId)) invalid('headers.last-event-id: expected an event id (a sequence number) this stream sent');
      json[route.resumable.requestField] = lastEventId;
    }
  }
  const problems = validator.check(route.input.typeName, json, where);
  // A few problems are enough to fix a request; a huge wrong array would otherwise make a huge answer.
  if (problems.length > 0) invalid(problems.length > 10 ? `${problems.slice(0, 10).join('; ')}; and ${problems.length - 10} more` : problems.join('; '));
  return json;
}

function mirrorRoutes(schemas: ProtoSchemas, config: GatewayConfig): MirrorRoute[] {
  return gatewayMethods.map((method) => {
    const desc = schemas.method(proto.GatewayDefinition.fullName, method.name);
    const pathFields = [...method.http.path.matchAll(/\{([a-z0-9_]+)\}/g)].map(([, name]) => {
      const field = desc.input.fields.find((candidate) => candidate.name === name);
      if (!field || field.fieldKind !== 'scalar') throw new Error(`Gateway.${method.name}: the path parameter {${name}} is not a scalar field of ${desc.input.typeName}`);
      return field;
    });
    if (method.http.method !== 'GET' && method.http.method !== 'POST') throw new Error(`Gateway.${method.name}: the http option's method must be GET or POST, not "${method.http.method}"`);
    return {
      method,
      input: desc.input,
      output: desc.output,
      url: method.http.path.replace(/\{([a-z0-9_]+)\}/g, ':$1'),
      pathFields,
      bodyLimit: maxRequestBytes(config, method.key),
      resumable: RESUMABLE[method.key],
    };
  });
}

function summaryOf(text: string | undefined, fallback: string): string {
  if (!text) return fallback;
  const sentence = /^(.+?[.:])(\s|$)/.exec(text)?.[1] ?? text;
  return sentence.length > 120 ? `${sentence.slice(0, 117)}...` : sentence;
}

/** The mirror's part of /openapi.json, from the same schemas that validate its requests. */
function openApiOf(routes: readonly MirrorRoute[], schemas: ProtoSchemas): OpenApiFragment {
  const paths: Record<string, Record<string, unknown>> = {};
  const errorResponse = { description: 'An error: its gRPC status name and a message naming the field at fault.', content: { 'application/json': { schema: { $ref: '#/components/schemas/ErrorBody' } } } };
  for (const route of routes) {
    const { method } = route;
    const comment = schemas.comment(`${proto.GatewayDefinition.fullName}.${method.name}`);
    const inputSchema = schemas.defs[route.input.typeName] as { properties: Record<string, JsonSchema> };
    const pathNames = new Set(route.pathFields.map((field) => field.jsonName));
    const parameters: unknown[] = route.pathFields.map((field) => ({ name: field.name, in: 'path', required: true, schema: inputSchema.properties[field.jsonName] }));
    if (method.http.method === 'GET') {
      for (const field of route.input.fields) {
        if (pathNames.has(field.jsonName) || field.fieldKind === 'map' || (field.fieldKind === 'message' && field.message.typeName !== 'google.protobuf.Timestamp')) continue;
        const schema = inputSchema.properties[field.jsonName]!;
        parameters.push({ name: field.jsonName, in: 'query', required: false, ...(field.fieldKind === 'list' ? { style: 'form', explode: true } : {}), schema });
      }
    }
    if (route.resumable) parameters.push({ name: 'Last-Event-ID', in: 'header', required: false, description: 'Resume after this event id (what an EventSource sends when it reconnects).', schema: { type: 'string', pattern: '^[0-9]+$' } });
    parameters.push({ name: 'x-timeout-ms', in: 'header', required: false, description: 'The call\'s deadline, in milliseconds.', schema: { type: 'integer', minimum: 1, maximum: MAX_TIMEOUT_MS } });
    const output = { $ref: `#/components/schemas/${route.output.typeName}` };
    const success = method.responseStream
      ? {
          description: `Server-Sent Events: each event's data is one ${route.output.typeName} in JSON${route.resumable ? ', its id the sequence to resume after' : ''}; a failure after the first event is an "error" event with an ErrorBody.`,
          content: { 'text/event-stream': { schema: { type: 'string' }, 'x-event-data': output } },
        }
      : { description: route.output.typeName, content: { 'application/json': { schema: output } } };
    paths[method.http.path] = {
      ...paths[method.http.path],
      [method.http.method.toLowerCase()]: {
        operationId: method.name,
        summary: summaryOf(comment, method.name),
        ...(comment ? { description: comment } : {}),
        tags: ['Gateway'],
        security: [{ bearer: [] }],
        'x-grpc-method': method.path,
        'x-required-scope': method.requiredScope,
        parameters,
        ...(method.http.method === 'POST'
          ? { requestBody: { required: false, description: pathNames.size > 0 ? 'The request; fields in the path come from the path.' : 'The request.', content: { 'application/json': { schema: { $ref: `#/components/schemas/${route.input.typeName}` } } } } }
          : {}),
        responses: { '200': success, '400': errorResponse, ...(method.http.method === 'POST' ? { '413': errorResponse } : {}), default: errorResponse },
      },
    };
  }
  return { paths, components: { schemas: toOpenApiRefs(schemas.defs) } };
}

/**
 * The gateway's REST API under /v1: one route per Gateway call, from the proto (see the module
 * comment), each with its call's body limit.
 */
export function httpApi(gateway: () => ServiceClient<'gateway'>, config: GatewayConfig): HttpRoutes {
  const schemas = buildProtoSchemas(proto.GatewayDefinition.fullName);
  const validator = new JsonValidator(schemas.defs);
  const routes = mirrorRoutes(schemas, config);

  const serve = async (route: MirrorRoute, request: FastifyRequest, reply: FastifyReply) => {
    const { definition, key } = route.method;
    const message = definition.requestType.fromJSON(requestJson(route, request, validator));
    const options = { ...httpCallOptions(request, reply), ...timeoutOf(request) };
    const client = gateway() as unknown as Record<GatewayMethodName, GatewayCall>;
    const call = client[key].bind(client);
    const toJson = (response: unknown) => (definition.responseType.toJSON as (message: unknown) => unknown)(response);
    if (!route.method.responseStream) return toJson(await call(message, options));
    const idOf = route.resumable?.idOf;
    await sendEventStream(reply, async function* events(signal): AsyncIterable<ServerSentEvent> {
      for await (const response of call(message, { ...options, signal }) as AsyncIterable<unknown>) {
        const id = idOf?.(response);
        yield id === undefined ? { data: toJson(response) } : { id, data: toJson(response) };
      }
    });
    return reply;
  };

  return httpRoutes(
    '',
    async (app) => {
      for (const route of routes) {
        app.route({
          method: route.method.http.method as 'GET' | 'POST',
          url: route.url,
          bodyLimit: route.bodyLimit,
          // Described in the fragment below (the proto's schemas), not by @fastify/swagger.
          schema: { hide: true },
          handler: (request, reply) => serve(route, request, reply),
        });
      }
    },
    openApiOf(routes, schemas),
  );
}
