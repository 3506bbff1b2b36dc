import { setTimeout as delay } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isAbortError } from 'abort-controller-x';
import {
  ChannelPool,
  ClientError,
  Metrics,
  REDACTED,
  ServerError,
  ServiceClients,
  Status,
  callOptions,
  defineService,
  incomingDeadline,
  proto,
  registerSecret,
  serviceNames,
  startHost,
  type Host,
  type ServiceClient,
  type ServiceName,
} from '@elexirion/kit';
import { freePort, captureLogs, gate, hostEnv, implement, waitFor, type CapturedLogs } from '@elexirion/testing';

/**
 * Two test services built from the catalog's contracts: a provider whose behaviour is chosen by
 * the request's `model`, and an executor that calls it with `callOptions(context)`. The test is
 * the executor's caller. They run hosted together (in-process call) or in two hosts (gRPC).
 */
const SECRET = 'sk-clients-test-7f3a9c2e1b';
registerSecret(SECRET);
const CRASH_MESSAGE = 'pool exhausted at db-internal-7.corp:5432';

interface State {
  providerRequests: proto.CompleteRequest[];
  providerDeadlines: (Date | undefined)[];
  executorDeadlines: (Date | undefined)[];
  executorSawResponse: proto.CompleteResponse | undefined;
  providerIsLocal: boolean | undefined;
  entered: boolean;
  providerAbortedAt: number | undefined;
  slowFinishedAt: number | undefined;
  streamed: proto.StreamCompleteResponse[];
  streamSent: number;
  release: ReturnType<typeof gate>;
  cleanup: AbortController;
}

let state: State;
/** The test's clients of every service, all at `address`, over gRPC channels from `pool`. */
function remoteClients(address: string, pool: ChannelPool): ServiceClients {
  return new ServiceClients({
    caller: 'test',
    addresses: Object.fromEntries(serviceNames.map((name) => [name, address])) as Record<ServiceName, string>,
    local: new Map(),
    metrics: new Metrics({ defaultMetrics: false }),
    channelFor: (target) => pool.get(target),
  });
}

function resetState(): void {
  state = {
    providerRequests: [],
    providerDeadlines: [],
    executorDeadlines: [],
    executorSawResponse: undefined,
    providerIsLocal: undefined,
    entered: false,
    providerAbortedAt: undefined,
    slowFinishedAt: undefined,
    streamed: [],
    streamSent: 0,
    release: gate(),
    cleanup: new AbortController(),
  };
}
resetState();

const providerImplementation = implement<proto.ProviderServiceImplementation>(proto.ProviderDefinition, {
  async complete(request, context) {
    state.providerRequests.push(request);
    state.providerDeadlines.push(incomingDeadline(context));
    context.signal.addEventListener('abort', () => {
      state.providerAbortedAt ??= Date.now();
    });
    switch (request.model) {
      case 'invalid':
        throw new ServerError(Status.INVALID_ARGUMENT, 'x: bad');
      case 'crash':
        throw new Error(CRASH_MESSAGE);
      case 'unavailable':
        throw new ServerError(Status.UNAVAILABLE, 'every upstream is down');
      case 'leaky':
        throw new ServerError(Status.PERMISSION_DENIED, `upstream refused key ${SECRET}`);
      case 'hang': {
        // Waits for its signal (or the test's cleanup): only cancellation ends it.
        state.entered = true;
        const aborted = new Promise<void>((resolve) => context.signal.addEventListener('abort', () => resolve()));
        await Promise.race([aborted, state.release.promise]);
        return { text: 'released' };
      }
      case 'slow':
        // Ignores its signal: takes 10 s whatever happens to the caller.
        state.entered = true;
        await delay(10_000, undefined, { signal: state.cleanup.signal }).catch(() => {});
        state.slowFinishedAt = Date.now();
        return { text: 'slow answer' };
      default:
        return { text: `ok: ${request.messages.map((message) => message.content).join('|')}`, provider: 'test' };
    }
  },

  async *streamComplete(streamRequest, context) {
    const request = streamRequest.request!;
    state.providerRequests.push(request);
    context.signal.addEventListener('abort', () => {
      state.providerAbortedAt ??= Date.now();
    });
    if (request.model === 'stream-forever') {
      // Produces until cancelled (or the test's cleanup).
      while (!context.signal.aborted && !state.cleanup.signal.aborted) {
        state.streamSent += 1;
        yield { delta: `d${state.streamSent} ` };
        await delay(20, undefined, { signal: state.cleanup.signal }).catch(() => {});
      }
      return;
    }
    for (const delta of ['a', 'b', 'c']) {
      state.streamSent += 1;
      yield { delta };
    }
    if (request.model === 'stream-then-fail') throw new ServerError(Status.RESOURCE_EXHAUSTED, 'upstream quota gone');
    yield { done: { text: 'abc', provider: 'test' } };
  },
});

const providerModule = defineService({
  name: 'provider',
  create: () => ({ implementation: providerImplementation }),
});

const executorModule = defineService({
  name: 'executor',
  create: ({ clients }) => {
    const implementation = implement<proto.ExecutorServiceImplementation>(proto.ExecutorDefinition, {
      async execute(request, context) {
        state.providerIsLocal = clients.isLocal('provider');
        state.executorDeadlines.push(incomingDeadline(context));
        if (request.pipeline.startsWith('stream')) {
          const stream = clients
            .get('provider')
            .streamComplete({ request: { model: request.pipeline, messages: [{ role: proto.Role.ROLE_USER, content: 'hi' }] } }, callOptions(context));
          for await (const message of stream) {
            state.streamed.push(message);
            if (request.pipeline === 'stream-forever') break; // the consumer stops reading
          }
          return { pipeline: request.pipeline, output: state.streamed.map((message) => message.delta ?? '').join('') };
        }
        // inputs.timeoutMs: the executor's own bound on the provider call (callOptions picks the tighter).
        const own = request.inputs.timeoutMs ? { timeoutMs: Number(request.inputs.timeoutMs) } : {};
        const response = await clients
          .get('provider')
          .complete({ model: request.pipeline, messages: [{ role: proto.Role.ROLE_USER, content: request.inputs.message ?? 'hi' }] }, callOptions(context, own));
        state.executorSawResponse = response;
        return { pipeline: request.pipeline, output: response.text };
      },
    });
    return { implementation };
  },
});

type Mode = 'in_process' | 'grpc';

describe.each<Mode>(['in_process', 'grpc'])('an executor calling a provider (transport %s)', (mode) => {
  let hosts: Host[] = [];
  let executorHost: Host;
  let providerHost: Host;
  let logs: CapturedLogs;
  let pool: ChannelPool;
  let executor: ServiceClient<'executor'>;

  beforeEach(async () => {
    resetState();
    logs = captureLogs();
    if (mode === 'in_process') {
      // PROVIDER_ADDRESS points nowhere: a provider hosted here must never be called through it.
      const env = await hostEnv({ LOG_LEVEL: 'error', PROVIDER_ADDRESS: `dns:///127.0.0.1:${await freePort()}` });
      executorHost = await startHost([executorModule, providerModule], { env, logDestination: logs });
      providerHost = executorHost;
      hosts = [executorHost];
    } else {
      providerHost = await startHost([providerModule], { env: await hostEnv({ LOG_LEVEL: 'error' }), logDestination: logs });
      hosts = [providerHost];
      const env = await hostEnv({ LOG_LEVEL: 'error', PROVIDER_ADDRESS: `dns:///127.0.0.1:${providerHost.grpcPort}` });
      executorHost = await startHost([executorModule], { env, logDestination: logs });
      hosts.unshift(executorHost);
    }
    pool = new ChannelPool();
    const address = `dns:///127.0.0.1:${executorHost.grpcPort}`;
    const callers = remoteClients(address, pool);
    executor = callers.get('executor');
    // Warm both hops up (connections, lazy modules) so timing assertions measure the calls only.
    await executor.execute({ pipeline: 'ok' }, { deadline: new Date(Date.now() + 10_000) });
    resetState();
  });

  afterEach(async () => {
    state.cleanup.abort();
    state.release.open();
    pool?.close();
    for (const host of hosts) await host.stop('test over');
    hosts = [];
  });

  it(`reaches the provider ${mode === 'in_process' ? 'in-process' : 'over gRPC'}, counted with transport="${mode}"`, async () => {
    const response = await executor.execute({ pipeline: 'ok', inputs: { message: 'hello' } });
    expect(response.output).toBe('ok: hello');
    expect(state.providerIsLocal).toBe(mode === 'in_process');
    const complete = { grpc_type: 'unary', grpc_service: 'elexirion.v1.Provider', grpc_method: 'Complete' };
    const rows = (await executorHost.metrics.clientHandled.get()).values.filter((row) => row.labels.grpc_method === 'Complete');
    expect(rows.length).toBeGreaterThan(0);
    for (const row of rows) expect(row.labels).toEqual({ service: 'executor', transport: mode, grpc_code: 'OK', ...complete });
    expect(rows.reduce((sum, row) => sum + row.value, 0)).toBeGreaterThanOrEqual(2); // the warm-up and this call
    const started = (await executorHost.metrics.clientStarted.get()).values.filter((row) => row.labels.grpc_method === 'Complete');
    expect(started.map((row) => row.labels)).toEqual([{ service: 'executor', transport: mode, ...complete }]);
    expect(started[0]!.value).toBe(rows.reduce((sum, row) => sum + row.value, 0));

    // The provider's server middleware ran for the call either way.
    const served = (await providerHost.metrics.serverHandled.get()).values.find(
      (row) => row.labels.service === 'provider' && row.labels.grpc_code === 'OK',
    );
    expect(served?.value).toBeGreaterThanOrEqual(2);
  });

  it('passes a provider ServerError(INVALID_ARGUMENT, "x: bad") to the executor caller as a ClientError with the same code and details', async () => {
    const error = await executor.execute({ pipeline: 'invalid' }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ClientError);
    expect((error as ClientError).code).toBe(Status.INVALID_ARGUMENT);
    expect((error as ClientError).details).toBe('x: bad');
    const failed = (await executorHost.metrics.clientHandled.get()).values.find(
      (row) => row.labels.grpc_method === 'Complete' && row.labels.grpc_code === 'INVALID_ARGUMENT',
    );
    expect(failed?.labels.transport).toBe(mode);
  });

  it('turns an unexpected provider exception into INTERNAL whose details do not leak its message, and logs the original', async () => {
    const error = await executor.execute({ pipeline: 'crash' }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ClientError);
    expect((error as ClientError).code).toBe(Status.INTERNAL);
    expect((error as ClientError).details).toMatch(/internal error in \/elexirion\.v1\.Provider\/Complete/);
    expect((error as ClientError).details).not.toContain(CRASH_MESSAGE);
    expect((error as ClientError).details).not.toContain('db-internal');
    // The operator still gets the cause, in the provider's log.
    const logged = await waitFor('the provider to log the crash', () =>
      logs.records().find((record) => record.msg === 'unhandled error in handler' && record.service === 'provider'),
    );
    expect(logged.err.message).toBe(CRASH_MESSAGE);
    expect(logged.err.stack).toContain('clients.test.ts');
  });

  it('never carries a registered secret back in error details', async () => {
    const error = await executor.execute({ pipeline: 'leaky' }).catch((caught: unknown) => caught);
    expect((error as ClientError).code).toBe(Status.PERMISSION_DENIED);
    expect((error as ClientError).details).toBe(`upstream refused key ${REDACTED}`);
  });

  it('gives the provider handler a complete request and the executor a complete response, defaults filled', async () => {
    await executor.execute({ pipeline: 'ok', inputs: { message: 'm' } });
    const request = state.providerRequests[0]!;
    expect(request.system).toBe('');
    expect(request.metadata).toEqual({});
    expect(request.stopSequences).toEqual([]);
    expect(request.preset).toBe('');
    expect(request.temperature).toBeUndefined();
    expect(request.messages).toEqual([{ role: proto.Role.ROLE_USER, content: 'm' }]);
    // The handler returned only text and provider: the caller still sees every field.
    expect(state.executorSawResponse).toEqual(proto.CompleteResponse.fromPartial({ text: 'ok: m', provider: 'test' }));
    expect(state.executorSawResponse).toMatchObject({ finishReason: '', model: '', attempts: 0, latencyMs: 0 });
  });

  it("hands the caller's deadline on to the provider handler, never meaningfully later", async () => {
    const deadline = new Date(Date.now() + 10_000);
    const sent = Date.now();
    await executor.execute({ pipeline: 'ok' }, { deadline });
    const took = Date.now() - sent;
    const atExecutor = state.executorDeadlines[0];
    const atProvider = state.providerDeadlines[0];
    expect(atExecutor).toBeInstanceOf(Date);
    expect(atProvider).toBeInstanceOf(Date);
    // Budgets travel as relative milliseconds, so each hop over the wire may add its transit time,
    // which lies within the call's own duration, and never more; they must never grow otherwise.
    expect(atExecutor!.getTime()).toBeLessThanOrEqual(deadline.getTime() + took);
    expect(atProvider!.getTime()).toBeLessThanOrEqual(deadline.getTime() + took);
    expect(atProvider!.getTime()).toBeGreaterThan(deadline.getTime() - 100);
  });

  it("aborts the provider handler's signal when the outer caller aborts", async () => {
    const controller = new AbortController();
    const call = executor.execute({ pipeline: 'hang' }, { signal: controller.signal }).then(
      () => 'resolved',
      (error: unknown) => error,
    );
    await waitFor('the provider handler to start', () => state.entered);
    controller.abort();
    const outcome = await call;
    expect(isAbortError(outcome)).toBe(true);
    // The handler ends only when cancelled (or released by the test's cleanup).
    await waitFor('the provider handler to see the cancellation', () => state.providerAbortedAt);
  });

  it('gives the caller DEADLINE_EXCEEDED promptly when the provider is slower than the deadline', async () => {
    const started = Date.now();
    const error = await executor.execute({ pipeline: 'slow' }, { deadline: new Date(started + 500) }).catch((caught: unknown) => caught);
    const elapsed = Date.now() - started;
    expect(error).toBeInstanceOf(ClientError);
    expect((error as ClientError).code).toBe(Status.DEADLINE_EXCEEDED);
    expect(elapsed).toBeGreaterThanOrEqual(450);
    expect(state.entered).toBe(true);
    expect(state.slowFinishedAt).toBeUndefined(); // answered before the handler's 10 s were over
    // The provider was told to stop, even though this handler ignores it.
    await waitFor('the provider handler signal to abort', () => state.providerAbortedAt, 5_000);
  });

  it("bounds the provider call by the executor's own timeoutMs when the caller set no deadline", async () => {
    const error = await executor.execute({ pipeline: 'slow', inputs: { timeoutMs: '300' } }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ClientError);
    expect((error as ClientError).code).toBe(Status.DEADLINE_EXCEEDED);
    expect(state.slowFinishedAt).toBeUndefined(); // answered before the handler's 10 s were over
    await waitFor('the provider handler signal to abort', () => state.providerAbortedAt, 5_000);
  });

  it('passes a downstream UNAVAILABLE up without multiplying retries: the provider sees at most 3 attempts', async () => {
    const error = await executor.execute({ pipeline: 'unavailable' }).catch((caught: unknown) => caught);
    expect((error as ClientError).code).toBe(Status.UNAVAILABLE);
    expect((error as ClientError).details).toBe('every upstream is down');
    expect(state.providerRequests.length).toBeGreaterThanOrEqual(1);
    expect(state.providerRequests.length).toBeLessThanOrEqual(3);
  });

  it('streams every message of a server-streaming call to the consumer, each one complete', async () => {
    const response = await executor.execute({ pipeline: 'stream' });
    expect(response.output).toBe('abc');
    expect(state.streamed.slice(0, 3)).toEqual([{ delta: 'a', done: undefined }, { delta: 'b', done: undefined }, { delta: 'c', done: undefined }]);
    expect(state.streamed).toHaveLength(4);
    expect(state.streamed[3]!.done).toEqual(proto.CompleteResponse.fromPartial({ text: 'abc', provider: 'test' }));
    expect(state.providerRequests[0]!.metadata).toEqual({});
  });

  it("ends a stream with the producer's status and details after the messages it already sent", async () => {
    const error = await executor.execute({ pipeline: 'stream-then-fail' }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ClientError);
    expect((error as ClientError).code).toBe(Status.RESOURCE_EXHAUSTED);
    expect((error as ClientError).details).toBe('upstream quota gone');
    expect(state.streamed.map((message) => message.delta)).toEqual(['a', 'b', 'c']);
  });

  it('cancels the producer of a stream when the consumer stops reading', async () => {
    const response = await executor.execute({ pipeline: 'stream-forever' });
    expect(response.output).toBe('d1 ');
    await waitFor('the provider stream to be cancelled', () => state.providerAbortedAt, 5_000);
    const sentWhenCancelled = state.streamSent;
    await delay(200);
    expect(state.streamSent - sentWhenCancelled).toBeLessThanOrEqual(1);
  });

  it('counts a provider call that ran out of time as DEADLINE_EXCEEDED in grpc_client_handled_total', async () => {
    await executor.execute({ pipeline: 'slow', inputs: { timeoutMs: '300' } }).catch(() => undefined);
    const rows = (await executorHost.metrics.clientHandled.get()).values.filter(
      (row) => row.labels.grpc_method === 'Complete' && row.labels.grpc_code !== 'OK',
    );
    expect(rows.map((row) => row.labels.grpc_code)).toEqual(['DEADLINE_EXCEEDED']);
  });
});

describe('a kit client with a deadline', () => {
  it('puts the deadline on the call, so the handler reads it with incomingDeadline()', async () => {
    let seen: Date | undefined | 'not called' = 'not called';
    const implementation = implement<proto.ProviderServiceImplementation>(proto.ProviderDefinition, {
      async complete(_request, context) {
        seen = incomingDeadline(context);
        return {};
      },
    });
    const clients = new ServiceClients({
      caller: 'test',
      addresses: Object.fromEntries(serviceNames.map((name) => [name, 'dns:///127.0.0.1:1'])) as Record<ServiceName, string>,
      local: new Map([['provider', { implementation, serverMiddleware: async function* (call, context) { return yield* call.next(call.request, context); } }]]),
      metrics: new Metrics({ defaultMetrics: false }),
      channelFor: () => {
        throw new Error('an in-process call must not open a channel');
      },
    });
    const deadline = new Date(Date.now() + 5_000);
    const sent = Date.now();
    await clients.get('provider').complete({}, { deadline });
    expect(seen).toBeInstanceOf(Date);
    // As a budget it may gain the time the call took, never more.
    expect((seen as unknown as Date).getTime()).toBeLessThanOrEqual(deadline.getTime() + (Date.now() - sent));
    expect((seen as unknown as Date).getTime()).toBeGreaterThan(deadline.getTime() - 1_000);
  });
});

describe('a client for a service that is not running', () => {
  it('fails with UNAVAILABLE instead of hanging, saying which service, not where or why', async () => {
    const pool = new ChannelPool();
    try {
      const address = `dns:///127.0.0.1:${await freePort()}`;
      const clients = remoteClients(address, pool);
      const error = await clients
        .get('provider')
        .complete({}, { deadline: new Date(Date.now() + 10_000) })
        .catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(ClientError);
      // UNAVAILABLE, not DEADLINE_EXCEEDED: it failed before the deadline instead of waiting for it.
      expect((error as ClientError).code).toBe(Status.UNAVAILABLE);
      expect((error as ClientError).details).toBe('the provider service is unavailable');
    } finally {
      pool.close();
    }
  });

  it("tells the service's own callers only which service is unavailable, and logs what grpc-js said", async () => {
    const logs = captureLogs();
    const port = await freePort();
    const env = await hostEnv({ LOG_LEVEL: 'warn', PROVIDER_ADDRESS: `ipv4:127.0.0.1:${port}` });
    const executorHost = await startHost([executorModule], { env, logDestination: logs });
    const pool = new ChannelPool();
    try {
      const address = `dns:///127.0.0.1:${executorHost.grpcPort}`;
      const callers = remoteClients(address, pool);
      const error = await callers
        .get('executor')
        .execute({ pipeline: 'ok' }, { deadline: new Date(Date.now() + 10_000) })
        .catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(ClientError);
      expect((error as ClientError).code).toBe(Status.UNAVAILABLE);
      expect((error as ClientError).details).toBe('the provider service is unavailable');
      const logged = await waitFor('the executor to log why', () => logs.records().find((record) => record.msg === 'the provider service is unavailable'));
      expect(logged).toMatchObject({ level: 'warn', service: 'executor', callee: 'provider', method: '/elexirion.v1.Provider/Complete' });
      expect(logged.detail).toContain(`127.0.0.1:${port}`);
    } finally {
      pool.close();
      await executorHost.stop('test over');
    }
  });
});
