import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as delay } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { credentials, makeGenericClientConstructor, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';
import { createChannel, createClient, type Channel } from 'nice-grpc';
import { HealthDefinition } from 'nice-grpc-server-health';
import { ServerReflectionService } from 'nice-grpc-server-reflection';
import { z } from 'zod';
import {
  ClientError,
  ConfigError,
  ServerError,
  Status,
  defineService,
  httpRoutes,
  incomingDeadline,
  proto,
  startHost,
  type Host,
} from '@elexirion/kit';
import { rawUnaryCall, captureLogs, freePort, gate, hostEnv, implement, repoRoot, sleep, waitFor } from '@elexirion/testing';

// The reflection package's generated (google-protobuf) message classes: its service definition
// only serializes instances of these very classes.
const require = createRequire(import.meta.url);
const reflectionPb = require('nice-grpc-server-reflection/lib/proto/grpc/reflection/v1/reflection_pb.js');
const descriptorPb = require('google-protobuf/google/protobuf/descriptor_pb.js');

const execFileAsync = promisify(execFile);
const bufBinary = join(repoRoot, 'node_modules/.bin/buf');

/** Sends `requests` on one reflection stream of the given version and returns its answers. */
async function reflect(port: number, version: string, requests: unknown[]): Promise<any[]> {
  const method = ServerReflectionService.serverReflectionInfo;
  const definition = { serverReflectionInfo: { ...method, path: `/grpc.reflection.${version}.ServerReflection/ServerReflectionInfo` } };
  const Client = makeGenericClientConstructor(definition as never, 'ServerReflection');
  const client = new Client(`127.0.0.1:${port}`, credentials.createInsecure()) as any;
  try {
    const stream: ClientDuplexStream<any, any> = client.serverReflectionInfo();
    const responses: any[] = [];
    let failure: Error | undefined;
    const ended = new Promise<void>((resolve) => {
      stream.on('data', (response: any) => responses.push(response));
      stream.on('error', (error: Error) => {
        failure = error;
        resolve();
      });
      stream.on('end', resolve);
    });
    for (const request of requests) stream.write(request);
    await waitFor(`${requests.length} reflection answers`, () => failure ?? responses.length >= requests.length);
    if (failure) throw failure;
    stream.end();
    await ended;
    for (const response of responses) expect(response.getErrorResponse()?.getErrorMessage()).toBeUndefined();
    return responses;
  } finally {
    client.close();
  }
}

/** The grpc-js error a raw call failed with. */
function failureOf(call: Promise<unknown>): Promise<ServiceError> {
  return call.then(
    () => {
      throw new Error('expected the call to fail');
    },
    (error: ServiceError) => error,
  );
}

const SERVING = 1;
const NOT_SERVING = 2;

interface State {
  entered: number;
  finished: number;
  aborted: number;
  deadlines: (Date | undefined)[];
  closedAt: number | undefined;
  finishedAt: number | undefined;
  release: ReturnType<typeof gate>;
}
let state: State;
function resetState(): void {
  state = { entered: 0, finished: 0, aborted: 0, deadlines: [], closedAt: undefined, finishedAt: undefined, release: gate() };
}
resetState();

/** A provider whose `model` picks a behaviour: "slow:<ms>" ignores cancellation, "forever" only ends when cancelled. */
const providerModule = defineService({
  name: 'provider',
  create: () => ({
    implementation: implement<proto.ProviderServiceImplementation>(proto.ProviderDefinition, {
      async complete(request, context) {
        state.entered += 1;
        state.deadlines.push(incomingDeadline(context));
        context.signal.addEventListener('abort', () => {
          state.aborted += 1;
        });
        if (request.model.startsWith('slow:')) {
          await Promise.race([delay(Number(request.model.slice(5))), state.release.promise]);
        } else if (request.model === 'forever') {
          await Promise.race([new Promise((resolve) => context.signal.addEventListener('abort', resolve)), state.release.promise]);
        }
        state.finished += 1;
        state.finishedAt = Date.now();
        return { text: `done ${request.model}` };
      },
    }),
    async close() {
      state.closedAt = Date.now();
    },
  }),
});

const executorModule = defineService({
  name: 'executor',
  create: () => ({
    implementation: implement<proto.ExecutorServiceImplementation>(proto.ExecutorDefinition, {
      async execute(request) {
        return { pipeline: request.pipeline };
      },
    }),
    http: [
      httpRoutes('/v1', async (app) => {
        app.get('/ping', async () => ({ pong: true }));
        app.post('/echo', { schema: { body: z.object({ text: z.string().min(1), times: z.number().int().max(3).optional() }) } }, async (request) => ({
          echoed: request.body.text.repeat(request.body.times ?? 1),
        }));
        app.get('/fails', async () => {
          throw new ServerError(Status.NOT_FOUND, 'nothing here');
        });
        app.get('/crashes', async () => {
          throw new Error('db password is hunter2');
        });
      }),
      httpRoutes('/other', async (app) => {
        app.get('/ping', async () => ({ other: true }));
      }),
    ],
  }),
});

let hosts: Host[] = [];
let channels: Channel[] = [];

async function start(modules: Parameters<typeof startHost>[0], extra: NodeJS.ProcessEnv = {}) {
  const env = await hostEnv(extra);
  const host = await startHost(modules, { env });
  hosts.push(host);
  const channel = createChannel(`127.0.0.1:${host.grpcPort}`);
  channels.push(channel);
  return {
    host,
    env,
    provider: createClient(proto.ProviderDefinition, channel),
    health: createClient(HealthDefinition, channel),
    http: `http://127.0.0.1:${host.httpPort}`,
  };
}

afterEach(async () => {
  state.release.open();
  for (const channel of channels) channel.close();
  channels = [];
  for (const host of hosts) await host.stop('test over');
  hosts = [];
  resetState();
});

async function healthOf(health: ReturnType<typeof createClient<typeof HealthDefinition>>, service: string) {
  return (await health.check({ service }, { signal: AbortSignal.timeout(5_000) })).status;
}

describe('startHost', () => {
  it('listens on the ports of the outermost service it hosts', async () => {
    // Ports chosen here (elsewhere 0, bound by the host): which configured port it uses is the point.
    const { host, env } = await start([providerModule, executorModule], { EXECUTOR_GRPC_PORT: String(await freePort()), EXECUTOR_HTTP_PORT: String(await freePort()) });
    expect(host.services).toEqual(['provider', 'executor']);
    expect(host.grpcPort).toBe(Number(env.EXECUTOR_GRPC_PORT));
    expect(host.httpPort).toBe(Number(env.EXECUTOR_HTTP_PORT));
  });

  it('reports SERVING for "" and for each hosted service by its full name once started', async () => {
    const { health } = await start([providerModule, executorModule]);
    expect(await healthOf(health, '')).toBe(SERVING);
    expect(await healthOf(health, 'elexirion.v1.Provider')).toBe(SERVING);
    expect(await healthOf(health, 'elexirion.v1.Executor')).toBe(SERVING);
    const unknown = await health.check({ service: 'elexirion.v1.Gateway' }).catch((error: unknown) => error);
    expect((unknown as ClientError).code).toBe(Status.NOT_FOUND);
  });

  it('serves Prometheus text on GET /metrics with the go-grpc-prometheus series and labels for calls it handled', async () => {
    const { provider, http } = await start([providerModule]);
    await provider.complete({ model: 'ok' });
    await provider.complete({ model: 'ok' });
    const reply = await fetch(`${http}/metrics`);
    expect(reply.status).toBe(200);
    expect(reply.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await reply.text();
    const complete = 'service="provider",grpc_type="unary",grpc_service="elexirion.v1.Provider",grpc_method="Complete"';
    expect(text).toContain('# TYPE grpc_server_started_total counter');
    expect(text).toContain(`grpc_server_started_total{${complete}} 2`);
    expect(text).toContain('# TYPE grpc_server_handled_total counter');
    expect(text).toContain(`grpc_server_handled_total{${complete},grpc_code="OK"} 2`);
    expect(text).toContain('# TYPE grpc_server_handling_seconds histogram');
    expect(text).toContain(`grpc_server_handling_seconds_count{${complete}} 2`);
    // Buckets are cumulative, in increasing bounds, ending with +Inf = the count.
    const buckets = [...text.matchAll(new RegExp(`^grpc_server_handling_seconds_bucket\\{${complete},le="([^"]+)"\\} (\\d+)$`, 'gm'))].map((match) => [match[1], Number(match[2])] as const);
    expect(buckets.at(-1)).toEqual(['+Inf', 2]);
    expect(buckets.length).toBeGreaterThan(10);
    for (let index = 1; index < buckets.length; index += 1) expect(buckets[index]![1]).toBeGreaterThanOrEqual(buckets[index - 1]![1]);
    expect(buckets.find(([le]) => le === '60')?.[1]).toBe(2);
    expect(text).toMatch(new RegExp(`^grpc_server_handling_seconds_sum\\{${complete}\\} [0-9.e-]+$`, 'm'));
    expect(text).toContain('process_cpu_user_seconds_total');
  });

  it('labels a server-streaming method grpc_type="server_stream" and counts its status when the stream ends', async () => {
    const { provider, host } = await start([providerModule]);
    const stream = provider.streamComplete({ request: { model: 'ok' } });
    const failure = await (async () => {
      for await (const _message of stream) void _message;
    })().catch((error: unknown) => error);
    expect((failure as ClientError).code).toBe(Status.UNIMPLEMENTED);
    const rows = (await host.metrics.serverHandled.get()).values.filter((row) => row.labels.grpc_method === 'StreamComplete');
    expect(rows.map((row) => row.labels)).toEqual([
      { service: 'provider', grpc_type: 'server_stream', grpc_service: 'elexirion.v1.Provider', grpc_method: 'StreamComplete', grpc_code: 'UNIMPLEMENTED' },
    ]);
    const started = (await host.metrics.serverStarted.get()).values.find((row) => row.labels.grpc_method === 'StreamComplete');
    expect(started?.value).toBe(1);
  });

  it('answers INVALID_ARGUMENT, naming the method, when the request bytes are not a protobuf message', async () => {
    const { host } = await start([providerModule]);
    // Field 1 says 5 bytes follow; one does.
    const undecodable = { encode: () => ({ finish: () => Uint8Array.from([0x0a, 0x05, 0x61]) }) };
    const error = await failureOf(rawUnaryCall(`127.0.0.1:${host.grpcPort}`, '/elexirion.v1.Provider/Complete', { request: undecodable, response: proto.CompleteResponse }, {}, 5_000));
    expect(error.code).toBe(Status.INVALID_ARGUMENT);
    expect(error.details).toMatch(/^\/elexirion\.v1\.Provider\/Complete: the request is not a valid protobuf message for this method \(.+\)$/);
    expect(state.entered).toBe(0);
    const counted = (await host.metrics.serverHandled.get()).values.find((row) => row.labels.grpc_method === 'Complete');
    expect(counted?.labels.grpc_code).toBe('INVALID_ARGUMENT');
    // The standard services too.
    const health = await failureOf(rawUnaryCall(`127.0.0.1:${host.grpcPort}`, '/grpc.health.v1.Health/Check', { request: undecodable, response: proto.CompleteResponse }, {}, 5_000));
    expect(health.code).toBe(Status.INVALID_ARGUMENT);
    expect(health.details).toContain('/grpc.health.v1.Health/Check: the request is not a valid protobuf message');
  });

  it.each(['GRPC', 'HTTP'])('refuses at once, naming the port and PROVIDER_%s_PORT, when its port is taken', async (kind) => {
    const taken = createNetServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as AddressInfo).port;
    try {
      const env = await hostEnv({ [`PROVIDER_${kind}_PORT`]: String(port) });
      const error = await startHost([providerModule], { env }).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).issues).toEqual([
        `PROVIDER_${kind}_PORT: port ${port} on 127.0.0.1 is already in use: stop what listens there, or set PROVIDER_${kind}_PORT to a free port`,
      ]);
      // Nothing of the failed start is left listening.
      hosts.push(await startHost([providerModule], { env: { ...env, [`PROVIDER_${kind}_PORT`]: String(await freePort()) } }));
    } finally {
      taken.close();
    }
  });

  it('answers /healthz and /readyz, and serves the routes a service registers', async () => {
    const { http } = await start([providerModule, executorModule]);
    expect(await (await fetch(`${http}/healthz`)).json()).toEqual({ status: 'ok' });
    const ready = await fetch(`${http}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: 'serving', services: ['provider', 'executor'], nats: { state: 'off', uses: [] } });
    expect(await (await fetch(`${http}/v1/ping`)).json()).toEqual({ pong: true });
  });

  it("serves each route plugin under its own prefix, with the kit's JSON errors for unknown routes and failures", async () => {
    const { http } = await start([providerModule, executorModule]);
    expect(await (await fetch(`${http}/other/ping`)).json()).toEqual({ other: true });
    const unknown = await fetch(`${http}/v2/ping?x=1`);
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toEqual({ error: { code: 'NOT_FOUND', message: 'no route GET /v2/ping' } });
    const failed = await fetch(`${http}/v1/fails`);
    expect(failed.status).toBe(404);
    expect(await failed.json()).toEqual({ error: { code: 'NOT_FOUND', message: 'nothing here' } });
    const crashed = await fetch(`${http}/v1/crashes`);
    expect(crashed.status).toBe(500);
    expect(await crashed.json()).toEqual({ error: { code: 'INTERNAL', message: 'internal error' } });
  });

  it('validates request bodies from the route schema, naming each bad field, and documents them in /openapi.json', async () => {
    const { http } = await start([providerModule, executorModule]);
    const post = (body: string) => fetch(`${http}/v1/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    expect(await (await post('{"text":"ab","times":2}')).json()).toEqual({ echoed: 'abab' });
    const bad = await post('{"text":"","times":9}');
    expect(bad.status).toBe(400);
    const { error } = (await bad.json()) as { error: { code: string; message: string } };
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toMatch(/^body\.text: .*; body\.times: /);
    const malformed = await post('{"text":');
    expect(malformed.status).toBe(400);
    expect(((await malformed.json()) as { error: { code: string } }).error.code).toBe('INVALID_ARGUMENT');
    const openapi = (await (await fetch(`${http}/openapi.json`)).json()) as { openapi: string; paths: Record<string, any> };
    expect(openapi.openapi).toMatch(/^3\./);
    // The kit's own routes are documented beside the services' (every route is in the document).
    expect(Object.keys(openapi.paths).sort()).toEqual(['/healthz', '/metrics', '/openapi.json', '/other/ping', '/readyz', '/v1/crashes', '/v1/echo', '/v1/fails', '/v1/ping']);
    const schema = openapi.paths['/v1/echo'].post.requestBody.content['application/json'].schema;
    expect(schema.required).toEqual(['text']);
    expect(schema.properties.times.maximum).toBe(3);
  });

  it.each(['v1', 'v1alpha'])('lists every service it serves through grpc.reflection.%s and serves their descriptors, health included', async (version) => {
    const { host } = await start([providerModule, executorModule]);
    const [list, provider, health] = await reflect(host.grpcPort, version, [
      new reflectionPb.ServerReflectionRequest().setListServices(''),
      new reflectionPb.ServerReflectionRequest().setFileContainingSymbol('elexirion.v1.Provider'),
      new reflectionPb.ServerReflectionRequest().setFileContainingSymbol('grpc.health.v1.Health'),
    ]);

    const names = list.getListServicesResponse().getServiceList().map((service: any) => service.getName());
    expect([...names].sort()).toEqual([
      'elexirion.v1.Executor',
      'elexirion.v1.Provider',
      'grpc.health.v1.Health',
      'grpc.reflection.v1.ServerReflection',
      'grpc.reflection.v1alpha.ServerReflection',
    ]);

    const providerFile = descriptorPb.FileDescriptorProto.deserializeBinary(provider.getFileDescriptorResponse().getFileDescriptorProtoList_asU8()[0]);
    expect(providerFile.getName()).toBe('elexirion/v1/provider.proto');
    expect(providerFile.getPackage()).toBe('elexirion.v1');
    expect(providerFile.getServiceList().map((service: any) => service.getName())).toEqual(['Provider']);

    const healthFile = descriptorPb.FileDescriptorProto.deserializeBinary(health.getFileDescriptorResponse().getFileDescriptorProtoList_asU8()[0]);
    expect(healthFile.getName()).toBe('grpc/health/v1/health.proto');
    const [healthService] = healthFile.getServiceList();
    expect(healthService.getName()).toBe('Health');
    // Exactly the methods nice-grpc-server-health serves.
    expect(healthService.getMethodList().map((method: any) => method.getName())).toEqual(['Check', 'Watch']);
  });

  it.each(['grpc-v1', 'grpc-v1alpha'])('lets a client without proto files call grpc.health.v1.Health/Check through reflection (buf curl, %s)', async (protocol) => {
    const { host } = await start([providerModule]);
    const target = `http://127.0.0.1:${host.grpcPort}`;
    const flags = ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', '--reflect-protocol', protocol];
    const listed = await execFileAsync(bufBinary, [...flags, '--list-methods', target]);
    expect(listed.stdout.trim().split('\n')).toEqual(expect.arrayContaining(['grpc.health.v1.Health/Check', 'grpc.health.v1.Health/Watch', 'elexirion.v1.Provider/Complete']));
    const checked = await execFileAsync(bufBinary, [...flags, '-d', '{"service":"elexirion.v1.Provider"}', `${target}/grpc.health.v1.Health/Check`]);
    expect(JSON.parse(checked.stdout)).toEqual({ status: 'SERVING' });
  });

  it("turns a plain gRPC client's grpc-timeout into the handler's incomingDeadline", async () => {
    const { host } = await start([providerModule]);
    const before = Date.now();
    const response = await rawUnaryCall(
      `127.0.0.1:${host.grpcPort}`,
      '/elexirion.v1.Provider/Complete',
      { request: proto.CompleteRequest, response: proto.CompleteResponse },
      proto.CompleteRequest.fromPartial({ model: 'ok' }),
      2_000,
    );
    expect(response.text).toBe('done ok');
    const seen = state.deadlines[0];
    expect(seen).toBeInstanceOf(Date);
    expect(seen!.getTime()).toBeGreaterThan(before + 1_000);
    expect(seen!.getTime()).toBeLessThanOrEqual(Date.now() + 2_000);
  });

  it('ignores an elexirion-deadline-at header a caller sends itself', async () => {
    const { provider } = await start([providerModule]);
    const { Metadata } = await import('nice-grpc');
    await provider.complete({ model: 'ok' }, { metadata: Metadata({ 'elexirion-deadline-at': '1' }) });
    expect(state.deadlines).toEqual([undefined]);
  });

  it('rejects a bad environment with one ConfigError naming host and service variables, hiding secret values', async () => {
    const withConfig = defineService({
      name: 'provider',
      configSchema: z.object({ ANTHROPIC_API_KEY: z.string().min(40), PROVIDER_RETRIES: z.coerce.number().int() }),
      create: () => ({ implementation: implement<proto.ProviderServiceImplementation>(proto.ProviderDefinition, { complete: async () => ({}) }) }),
    });
    const env = await hostEnv({ GATEWAY_GRPC_PORT: 'abc', ANTHROPIC_API_KEY: 'fake-anthropic-too-short-secret', PROVIDER_RETRIES: 'lots' });
    const error = await startHost([withConfig], { env }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ConfigError);
    const message = (error as ConfigError).message;
    expect(message).toContain('GATEWAY_GRPC_PORT');
    expect(message).toContain('"abc"');
    expect(message).toContain('PROVIDER_RETRIES');
    expect(message).toContain('"lots"');
    expect(message).toContain('ANTHROPIC_API_KEY');
    expect(message).not.toContain('fake-anthropic-too-short-secret');
    // Nothing was left listening: the same ports start cleanly once the environment is fixed.
    const fixed = { ...env, GATEWAY_GRPC_PORT: undefined, ANTHROPIC_API_KEY: 'k'.repeat(40), PROVIDER_RETRIES: '2' };
    hosts.push(await startHost([withConfig], { env: fixed }));
  });

  it('refuses to host nothing or the same service twice', async () => {
    await expect(startHost([], { env: await hostEnv() })).rejects.toBeInstanceOf(ConfigError);
    await expect(startHost([providerModule, providerModule], { env: await hostEnv() })).rejects.toThrow(/listed twice/);
  });

  it('hands each service its own parsed config and a logger that writes to the given destination', async () => {
    const logs = captureLogs();
    let seenConfig: unknown;
    const configured = defineService({
      name: 'provider',
      configSchema: z.object({ PROVIDER_RETRIES: z.coerce.number().int().default(3) }),
      create: (context) => {
        seenConfig = context.config;
        context.logger.info('created');
        return { implementation: implement<proto.ProviderServiceImplementation>(proto.ProviderDefinition, { complete: async () => ({}) }) };
      },
    });
    const host = await startHost([configured], { env: await hostEnv({ LOG_LEVEL: 'info', PROVIDER_RETRIES: '5' }), logDestination: logs });
    hosts.push(host);
    expect(seenConfig).toEqual({ PROVIDER_RETRIES: 5 });
    expect(logs.records().find((record) => record.msg === 'created')).toMatchObject({ service: 'provider', process: 'provider' });
    expect(logs.records().find((record) => record.msg === 'serving')).toMatchObject({ services: ['provider'], nats: 'off' });
  });
});

describe('Host.stop', () => {
  it('says NOT_SERVING and /readyz 503 during the drain delay, lets the in-flight call finish, then refuses calls', async () => {
    // The drain delay is a duration: the checks below must land inside it (/readyz first).
    const { host, provider, health, http } = await start([providerModule], { DRAIN_DELAY_MS: '1500' });
    expect(await healthOf(health, '')).toBe(SERVING);
    // Held until the test releases it, so it is in flight whatever the checks take.
    const inFlight = provider.complete({ model: 'slow:600000' });
    await waitFor('the call to reach its handler', () => state.entered === 1);

    const stopped = host.stop('test drain');
    const ready = await fetch(`${http}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.json()).toMatchObject({ status: 'draining' });
    expect(await healthOf(health, '')).toBe(NOT_SERVING);
    expect(await healthOf(health, 'elexirion.v1.Provider')).toBe(NOT_SERVING);

    // Started before stop(), it still completes successfully.
    state.release.open();
    expect((await inFlight).text).toBe('done slow:600000');
    await stopped;
    expect(state.closedAt).toBeDefined();
    expect(state.closedAt!).toBeGreaterThanOrEqual(state.finishedAt!); // close() runs after in-flight calls
    expect(host.stop()).toBe(stopped); // idempotent

    const after = await provider.complete({ model: 'ok' }, { signal: AbortSignal.timeout(10_000) }).catch((error: unknown) => error);
    expect(after).toBeInstanceOf(ClientError);
    expect((after as ClientError).code).toBe(Status.UNAVAILABLE);
    await expect(fetch(`${http}/readyz`)).rejects.toThrow();
  });

  it('pushes NOT_SERVING to a health watcher as soon as stop() begins, with no drain delay', async () => {
    const { host, provider, health } = await start([providerModule]);
    const inFlight = provider.complete({ model: 'slow:600000' }); // until the test releases it
    await waitFor('the call to reach its handler', () => state.entered === 1);

    const watcher = new AbortController();
    const statuses: number[] = [];
    const watching = (async () => {
      for await (const { status } of health.watch({ service: 'elexirion.v1.Provider' }, { signal: watcher.signal })) {
        statuses.push(status);
        if (status === NOT_SERVING) return;
      }
    })().catch(() => undefined);
    await waitFor('the watcher to see SERVING', () => statuses[0] === SERVING);

    const stopped = host.stop('test drain');
    await watching;
    expect(statuses).toEqual([SERVING, NOT_SERVING]);
    expect(state.finished).toBe(0); // the held call was still running when NOT_SERVING went out

    state.release.open();
    expect((await inFlight).text).toBe('done slow:600000');
    await stopped;
  });

  it('forces shutdown of a call that never ends once DRAIN_GRACE_MS has passed', async () => {
    const { host, provider } = await start([providerModule], { DRAIN_GRACE_MS: '300' });
    const neverEnding = provider.complete({ model: 'forever' }).catch((error: unknown) => error);
    await waitFor('the call to reach its handler', () => state.entered === 1);

    // The call ends only when cancelled: stop() returning at all means the grace period forced it.
    const began = Date.now();
    await host.stop('test grace');
    expect(Date.now() - began).toBeGreaterThanOrEqual(250);
    const outcome = await neverEnding;
    expect(outcome).toBeInstanceOf(ClientError);
    await waitFor('the handler to be cancelled', () => state.aborted === 1);
  });

  it('stops promptly when nothing is in flight', async () => {
    // A grace period longer than the test's timeout: a stop that waited it out would fail the test.
    const { host, provider } = await start([providerModule], { DRAIN_GRACE_MS: '600000' });
    await provider.complete({ model: 'ok' });
    await host.stop();
    await sleep(0);
  });
});
