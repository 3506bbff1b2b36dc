// Request size limits at the gateway, per call, on gRPC and HTTP: a request over its call's
// limit is refused before it is decoded (gRPC RESOURCE_EXHAUSTED, HTTP 413), so a burst of big
// requests cannot take the gateway's memory, and small chats keep being answered meanwhile.
// Before the limits, twelve concurrent 25 MB requests took the gateway to 1.4 GB.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientError, Status } from 'nice-grpc';
import { spawnNode, startNats, startStack, stopAll, waitForOutput, type NatsServer, type Stack } from '@elexirion/testing';

const MIB = 1024 * 1024;
const BURST = 12;
const BIG = 25 * MIB;

let nats: NatsServer;
let stack: Stack;

beforeAll(async () => {
  nats = await startNats();
  stack = await startStack('one-process-per-service', nats.url, { GATEWAY_ACCESS_LOG_LEVEL: 'off' });
});

afterAll(async () => {
  await stack?.stop();
  await nats?.stop();
  await stopAll();
});

const url = (path: string) => `http://127.0.0.1:${stack.ports.gatewayHttp}${path}`;

/** A field of /proc/<pid>/status in bytes (VmRSS: now; VmHWM: the peak so far). */
function memoryOf(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((entry) => entry.startsWith(`${field}:`));
  return Number(/(\d+) kB/.exec(line ?? '')?.[1]) * 1024;
}

async function grpcFailure(call: Promise<unknown>): Promise<ClientError> {
  const error = await call.then(
    () => undefined,
    (failure: unknown) => failure,
  );
  expect(error).toBeInstanceOf(ClientError);
  return error as ClientError;
}

describe('request size limits at the gateway', () => {
  it('refuses a gRPC request over its call\'s limit before decoding it, with RESOURCE_EXHAUSTED', async () => {
    // Under the server's receive limit (2 MiB, the largest call's) but over Chat's 512 KiB.
    const chat = await grpcFailure(stack.gateway.chat({ message: 'x'.repeat(600 * 1024) }));
    expect(chat.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(chat.details).toMatch(/^\/elexirion\.v1\.Gateway\/Chat: the request's \d+ bytes are over the 524288 bytes this call accepts$/);
    // A call that carries only ids takes 64 KiB.
    const cancel = await grpcFailure(stack.gateway.cancelJob({ jobId: 'x', reason: 'x'.repeat(100 * 1024) }));
    expect(cancel.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(cancel.details).toContain('over the 65536 bytes this call accepts');
    // Over the server's limit: grpc-js refuses it from its length prefix.
    const execute = await grpcFailure(stack.gateway.executePipeline({ pipeline: 'general', inputs: { message: 'x'.repeat(3 * MIB) } }));
    expect(execute.code).toBe(Status.RESOURCE_EXHAUSTED);
    // Within the limits, the same calls are served.
    expect((await stack.gateway.executePipeline({ pipeline: 'general', inputs: { message: 'ping' } })).result).toBe('pong');
  });

  it(`keeps the gateway's memory bounded under ${BURST} concurrent ${BIG / MIB} MB requests on each of gRPC and HTTP, and small chats answered`, async () => {
    const pid = stack.processes.gateway!.child.pid!;
    const before = memoryOf(pid, 'VmRSS');
    // The burst comes from another process, on its own connections, so the small chats below
    // measure the gateway, not this process encoding 600 MB.
    const burst = spawnNode('burst', '--input-type=module', {}, ['-e', burstScript(stack.ports.gatewayGrpc, stack.ports.gatewayHttp)]);
    const burstDone = burst.exited.then((code) => {
      expect(code, burst.output()).toBe(0);
      return JSON.parse(burst.output().trim().split('\n').at(-1)!) as { grpc: string[]; http: { status: number; code: string }[] };
    });
    await waitForOutput(burst, 'sending', true);
    // Small chats while the burst is in flight, over both paths.
    const chatLatencies: number[] = [];
    const smallChats = (async () => {
      for (let index = 0; index < 6; index += 1) {
        const started = performance.now();
        const answer = index % 2 === 0 ? await stack.gateway.chat({ message: 'ping' }) : ((await (await fetch(url('/v1/chat'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"message":"ping"}' })).json()) as { response: string });
        chatLatencies.push(Math.round(performance.now() - started));
        expect(answer.response).toBe('pong');
      }
    })();

    const [result] = await Promise.all([burstDone, smallChats]);
    expect(result.grpc).toEqual(Array.from({ length: BURST }, () => 'RESOURCE_EXHAUSTED'));
    // 413 RESOURCE_EXHAUSTED, or the connection closed on a body the server would not read.
    const refused = result.http.filter((reply) => reply.status === 413);
    expect(result.http.every((reply) => (reply.status === 413 && reply.code === 'RESOURCE_EXHAUSTED') || reply.status === 0), JSON.stringify(result.http)).toBe(true);
    expect(refused.length).toBeGreaterThan(0);

    const peak = memoryOf(pid, 'VmHWM');
    const growth = peak - before;
    console.log(`gateway RSS before ${Math.round(before / MIB)} MiB, peak ${Math.round(peak / MIB)} MiB (+${Math.round(growth / MIB)} MiB) for ${2 * BURST} x ${BIG / MIB} MB requests (${(2 * BURST * BIG) / MIB} MB offered); small chat latencies during the burst (ms): ${chatLatencies.join(', ')}`);
    // Measured: about +70 MiB (the gRPC burst's HTTP/2 frames in flight; the HTTP burst alone
    // +5 MiB). Buffering half of either burst would exceed this; before the limits it was 1.4 GB.
    expect(growth).toBeLessThan((BURST * BIG) / 2);
    // The gateway still serves.
    expect((await stack.gateway.chat({ message: 'ping' })).response).toBe('pong');
  });
});

describe('the HTTP defaults', () => {
  it('has CORS off (a preflight is not answered) and, with GATEWAY_ACCESS_LOG_LEVEL=off, no access-log line', async () => {
    const preflight = await fetch(url('/v1/chat'), { method: 'OPTIONS', headers: { origin: 'https://console.example.com', 'access-control-request-method': 'POST' } });
    expect(preflight.status).toBe(404);
    expect(preflight.headers.get('access-control-allow-origin')).toBeNull();
    expect(((await preflight.json()) as { error: { code: string } }).error.code).toBe('NOT_FOUND');
    expect((await fetch(url('/healthz'))).status).toBe(200);
    expect(stack.processes.gateway!.output()).not.toContain('"http request"');
  });
});

/** A Node script that sends BURST big ExecutePipeline requests on gRPC and on HTTP at once and prints what each got. */
function burstScript(grpcPort: number, httpPort: number): string {
  return `
import { createChannel, createClient, ClientError, Status } from 'nice-grpc';
import { proto } from '@elexirion/kit';
const big = 'x'.repeat(${BIG});
const body = JSON.stringify({ inputs: { message: big } });
const channels = Array.from({ length: 4 }, () => createChannel('127.0.0.1:${grpcPort}'));
console.log('sending');
const grpc = Array.from({ length: ${BURST} }, (_, index) =>
  createClient(proto.GatewayDefinition, channels[index % 4]).executePipeline({ pipeline: 'general', inputs: { message: big } })
    .then(() => 'OK', (error) => error instanceof ClientError ? Status[error.code] : String(error)));
const http = Array.from({ length: ${BURST} }, () =>
  fetch('http://127.0.0.1:${httpPort}/v1/pipelines/general/execute', { method: 'POST', headers: { 'content-type': 'application/json' }, body })
    .then(async (reply) => ({ status: reply.status, code: (await reply.json()).error?.code ?? '' }), (error) => ({ status: 0, code: String(error.cause ?? error) })));
const result = { grpc: await Promise.all(grpc), http: await Promise.all(http) };
for (const channel of channels) channel.close();
console.log(JSON.stringify(result));
`;
}
