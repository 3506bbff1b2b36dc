// /openapi.json: an OpenAPI 3.1 document (checked by @seriousme/openapi-schema-validator against
// the specification's own JSON Schema) that lists every route the gateway's HTTP server has
// registered, whoever registered it (the proto-generated REST mirror, the zod-described routes
// other modules add, the kit's health and metrics), and whose schemas the real answers meet.
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { Validator } from '@seriousme/openapi-schema-validator';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHost, type Host } from '@elexirion/kit';
import { agentService } from '@elexirion/agent';
import { executorService } from '@elexirion/executor';
import { gatewayService } from '@elexirion/gateway';
import { providerService } from '@elexirion/provider';
import { hostEnv, startNats, type NatsServer } from '@elexirion/testing';

const addFormats = ((addFormatsModule as unknown as { default?: typeof addFormatsModule }).default ?? addFormatsModule) as unknown as (ajv: Ajv2020) => Ajv2020;

interface Operation {
  responses: Record<string, { content?: Record<string, { schema?: unknown }> }>;
}
interface OpenApi {
  openapi: string;
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, unknown> };
}

let nats: NatsServer;
let host: Host;
let document: OpenApi;

beforeAll(async () => {
  nats = await startNats();
  host = await startHost([providerService, executorService, agentService, gatewayService], { env: await hostEnv({ NATS_URL: nats.url }) });
  const reply = await fetch(url('/openapi.json'));
  expect(reply.status).toBe(200);
  document = (await reply.json()) as OpenApi;
});

afterAll(async () => {
  await host?.stop();
  await nats?.stop();
});

const url = (path: string) => `http://127.0.0.1:${host.httpPort}${path}`;

/** OpenAPI's form of a Fastify route URL: ":job_id" -> "{job_id}". */
const openApiPath = (route: string) => route.replace(/:([A-Za-z0-9_]+)/g, '{$1}');

/** The document's operation answering `method path` (a concrete path matched against the templates). */
function operationFor(method: string, path: string): Operation {
  for (const [template, operations] of Object.entries(document.paths)) {
    const pattern = new RegExp(`^${template.replace(/\{[^}]+\}/g, '[^/]+')}$`);
    if (pattern.test(path) && operations[method.toLowerCase()]) return operations[method.toLowerCase()]!;
  }
  throw new Error(`no operation for ${method} ${path} in /openapi.json`);
}

describe('/openapi.json', () => {
  it('is a valid OpenAPI 3.1 document', async () => {
    const validator = new Validator();
    const result = await validator.validate(structuredClone(document) as unknown as Parameters<Validator['validate']>[0]);
    expect(result.errors ?? [], JSON.stringify(result.errors, null, 2)).toEqual([]);
    expect(result.valid).toBe(true);
    expect(validator.version).toBe('3.1');
  });

  it('holds only valid JSON Schemas (draft 2020-12, the dialect of OpenAPI 3.1)', () => {
    // The OpenAPI meta-schema leaves schema objects open; each is checked against the dialect here.
    const ajv = new Ajv2020({ strict: false });
    const schemas: [string, unknown][] = Object.entries(document.components.schemas).map(([name, schema]) => [`components.schemas.${name}`, schema]);
    const collect = (value: unknown, where: string) => {
      if (typeof value !== 'object' || value === null) return;
      for (const [key, child] of Object.entries(value)) {
        if (key === 'schema') schemas.push([`${where}.schema`, child]);
        else collect(child, `${where}.${key}`);
      }
    };
    collect(document.paths, 'paths');
    expect(schemas.length).toBeGreaterThan(50);
    const invalid = schemas.filter(([, schema]) => !ajv.validateSchema(schema as object)).map(([where]) => `${where}: ${ajv.errorsText()}`);
    expect(invalid).toEqual([]);
  });

  it('lists every route the HTTP server registered', () => {
    const routes = host.httpRoutes().filter((route) => route.method !== 'HEAD' && route.method !== 'OPTIONS');
    // The mirror alone has one route per Gateway call; the kit's four come on top.
    expect(routes.length).toBeGreaterThanOrEqual(22);
    const missing = routes.filter((route) => document.paths[openApiPath(route.url)]?.[route.method.toLowerCase()] === undefined);
    expect(missing).toEqual([]);
  });

  it('describes the answers the routes really give', async () => {
    const ajv = new Ajv2020({ strict: false, validateSchema: false, allErrors: true });
    addFormats(ajv);
    ajv.addSchema(document, 'openapi');
    const samples: [string, string, unknown?][] = [
      ['POST', '/v1/chat', { message: 'ping', session_id: 'openapi' }],
      ['POST', '/v1/pipelines/general/execute', { inputs: { message: 'ping' } }],
      ['POST', '/v1/chat', { message: 42 }],
      ['POST', '/v1/chat', { message: 'x'.repeat(600 * 1024) }],
      ['GET', '/v1/jobs?statuses=NOPE'],
      ['GET', '/v1/jobs/00000000-0000-4000-8000-000000000000'],
      ['GET', '/healthz'],
      ['GET', '/readyz'],
    ];
    for (const [method, path, body] of samples) {
      const reply = await fetch(url(path), body === undefined ? { method } : { method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      const operation = operationFor(method, path.split('?')[0]!);
      const response = operation.responses[String(reply.status)] ?? operation.responses.default;
      expect(response, `${method} ${path} answered ${reply.status}, which the document does not list`).toBeDefined();
      const schema = response!.content?.['application/json']?.schema;
      expect(schema, `${method} ${path} ${reply.status}: no JSON schema`).toBeDefined();
      const validate = ajv.compile({ $ref: `openapi#/paths/${pointer(operationPathOf(method, path))}/${method.toLowerCase()}/responses/${response === operation.responses[String(reply.status)] ? reply.status : 'default'}/content/application~1json/schema` });
      const answer = await reply.json();
      expect(validate(answer), `${method} ${path} ${reply.status}: ${JSON.stringify(validate.errors)} in ${JSON.stringify(answer).slice(0, 300)}`).toBe(true);
    }
  });
});

function operationPathOf(method: string, path: string): string {
  for (const [template, operations] of Object.entries(document.paths)) {
    const pattern = new RegExp(`^${template.replace(/\{[^}]+\}/g, '[^/]+')}$`);
    if (pattern.test(path.split('?')[0]!) && operations[method.toLowerCase()]) return template;
  }
  throw new Error(`no path for ${method} ${path}`);
}

/** A JSON pointer segment. */
function pointer(segment: string): string {
  return segment.replaceAll('~', '~0').replaceAll('/', '~1').replaceAll('{', '%7B').replaceAll('}', '%7D');
}
