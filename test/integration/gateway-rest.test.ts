// The gateway's REST mirror (/v1, generated from the proto's http options) against a real stack:
// requests in the proto3 JSON mapping from the body, the path and the query string, refusals that
// name the field (400), bodies over each call's limit (413), unknown routes (404), every error as
// {"error":{"code":"<gRPC status name>","message"}}, CORS, the security headers, and the one
// access-log line per request with the key id (never the secret) and the trace id.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectEvents, startNats, startStack, stopAll, waitFor, type NatsServer, type Stack } from '@elexirion/testing';

const ALLOWED_ORIGIN = 'https://console.example.com';

let nats: NatsServer;
let stack: Stack;

beforeAll(async () => {
  nats = await startNats();
  stack = await startStack('all-in-one', nats.url, { GATEWAY_CORS_ORIGINS: ALLOWED_ORIGIN, GATEWAY_ACCESS_LOG_LEVEL: 'info' });
});

afterAll(async () => {
  await stack?.stop();
  await nats?.stop();
  await stopAll();
});

const url = (path: string) => `http://127.0.0.1:${stack.ports.gatewayHttp}${path}`;

function post(path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(url(path), { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
}

/** The body of an error answer, checked to be the project's shape. */
async function errorOf(reply: Response): Promise<{ code: string; message: string }> {
  expect(reply.headers.get('content-type')).toMatch(/^application\/json/);
  const body = (await reply.json()) as { error: { code: string; message: string } };
  expect(Object.keys(body)).toEqual(['error']);
  expect(Object.keys(body.error).sort()).toEqual(['code', 'message']);
  return body.error;
}

function accessLines(): Record<string, unknown>[] {
  return stack.processes.all!
    .output()
    .split('\n')
    .filter((line) => line.includes('"http request"'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

describe('the REST mirror of the Gateway calls', () => {
  it('answers Chat from a body in either field naming, with the response in proto3 JSON', async () => {
    for (const body of [{ message: 'ping', sessionId: 's-1' }, { message: 'ping', session_id: 's-1' }]) {
      const reply = await post('/v1/chat', body);
      expect(reply.status).toBe(200);
      const answer = (await reply.json()) as Record<string, unknown>;
      expect(answer).toMatchObject({ response: 'pong', pipelineUsed: 'general' });
      expect(answer.jobId).toMatch(/^[0-9a-f-]{36}$/);
      // int64 and nested messages as the mapping writes them (camelCase names).
      expect(answer).toHaveProperty('usage.outputTokens');
      expect(answer).not.toHaveProperty('pipeline_used');
    }
  });

  it('answers ExecutePipeline with the pipeline from the path and the inputs from the body', async () => {
    const reply = await post('/v1/pipelines/general/execute', { inputs: { message: 'ping' } });
    expect(reply.status).toBe(200);
    expect(await reply.json()).toMatchObject({ result: 'pong', pipeline: 'general' });
  });

  it('refuses a path field the body contradicts', async () => {
    const reply = await post('/v1/pipelines/general/execute', { pipeline: 'triage', inputs: { message: 'ping' } });
    expect(reply.status).toBe(400);
    expect(await errorOf(reply)).toEqual({ code: 'INVALID_ARGUMENT', message: 'body.pipeline: differs from the path\'s {pipeline}' });
  });

  it('refuses wrong shapes with 400 naming each field, unknown fields included', async () => {
    const cases: [string, unknown, string][] = [
      ['/v1/pipelines/general/execute', { inputs: { message: 1 } }, 'body.inputs.message: Invalid input: expected string, received number'],
      ['/v1/pipelines/general/execute', { inputs: ['ping'] }, 'body.inputs: Invalid input: expected object, received array'],
      ['/v1/pipelines/general/execute', { inputs: {}, colour: 'red' }, 'body.colour: unknown field'],
      ['/v1/chat', { message: 'hi', sessionId: 'a', session_id: 'b' }, 'body.session_id: given twice (as "sessionId" and "session_id")'],
      ['/v1/chat', ['hi'], 'body: Invalid input: expected object, received array'],
      ['/v1/keys', { name: 'k', expiresAt: 'tomorrow' }, 'body.expiresAt: expected an RFC 3339 timestamp such as "2026-01-31T12:00:00Z"'],
      ['/v1/keys', { name: 'k', limits: { requestsPerMinute: 'many' } }, 'body.limits.requestsPerMinute: expected an integer, received "many"'],
      ['/v1/keys', { name: 'k', limits: { requests_per_minute: 10, burst: 1 } }, 'body.limits.burst: unknown field'],
    ];
    for (const [path, body, message] of cases) {
      const reply = await post(path, body);
      expect(reply.status, `${path} ${JSON.stringify(body)}`).toBe(400);
      expect(await errorOf(reply)).toEqual({ code: 'INVALID_ARGUMENT', message });
    }
  });

  it('reads GET requests from the query string, refusing wrong values by parameter', async () => {
    const cases: [string, string][] = [
      ['/v1/jobs?statuses=JOB_STATUS_QUEUED&statuses=SOMETIMES', 'query.statuses.1: expected one of '],
      ['/v1/jobs?created_after=yesterday', 'query.createdAfter: expected an RFC 3339 timestamp'],
      ['/v1/jobs?pipeline=a&pipeline=b', 'query.pipeline: given 2 times; it takes one value'],
      ['/v1/jobs?colour=red', 'query.colour: unknown field'],
      ['/v1/jobs?__proto__=x&__proto__=y', 'query.__proto__: unknown field'],
      ['/v1/keys?include_inactive=maybe', 'query.includeInactive: Invalid input: expected boolean, received string'],
      ['/v1/jobs?page_size=ten', 'query.pageSize: expected an integer, received "ten"'],
      ['/v1/jobs/abc/events?after_sequence=-1', 'query.afterSequence: expected a non-negative integer, received "-1"'],
    ];
    for (const [path, message] of cases) {
      const reply = await fetch(url(path));
      expect(reply.status, path).toBe(400);
      const error = await errorOf(reply);
      expect(error.code).toBe('INVALID_ARGUMENT');
      expect(error.message.startsWith(message), `${path}: ${error.message}`).toBe(true);
    }
  });

  it('answers every mirrored route with JSON whose error code matches its HTTP status', async () => {
    // Valid requests for each kind of route; a call not built in this tree answers
    // UNIMPLEMENTED (501), a built one its answer or its own refusal: JSON either way.
    const requests: [string, RequestInit][] = [
      ['/v1/jobs?statuses=JOB_STATUS_QUEUED&statuses=2&created_after=2026-01-01T00:00:00Z', {}],
      ['/v1/jobs/00000000-0000-4000-8000-000000000000', {}],
      ['/v1/jobs/00000000-0000-4000-8000-000000000000/cancel', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"reason":"test"}' }],
      ['/v1/pipelines', {}],
      ['/v1/model-aliases', {}],
      ['/v1/keys?includeInactive=true', {}],
    ];
    const statusOfCode: Record<string, number> = { UNIMPLEMENTED: 501, NOT_FOUND: 404, INVALID_ARGUMENT: 400, UNAUTHENTICATED: 401, PERMISSION_DENIED: 403, FAILED_PRECONDITION: 400 };
    for (const [path, init] of requests) {
      const reply = await fetch(url(path), init);
      expect(reply.headers.get('content-type'), path).toMatch(/^application\/json/);
      if (reply.status === 200) continue;
      const error = await errorOf(reply);
      expect(statusOfCode[error.code], `${path}: ${error.code} ${error.message}`).toBe(reply.status);
    }
  });

  it('answers a streamed call as Server-Sent Events ending with done, or, refused before its first event, as a JSON error', async () => {
    // ChatStream and ExecutePipelineStream: a call not built in this tree is refused (501) before
    // any event, which must be an ordinary HTTP error, not a 200 stream.
    for (const [path, body] of [['/v1/chat/stream', { message: 'ping' }], ['/v1/pipelines/general/execute/stream', { inputs: { message: 'ping' } }]] as const) {
      const reply = await post(path, body);
      if (reply.status !== 200) {
        const error = await errorOf(reply);
        expect(reply.status === 501 ? error.code : 'built', path).toBe(reply.status === 501 ? 'UNIMPLEMENTED' : 'built');
        continue;
      }
      expect(reply.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
      expect(reply.headers.get('x-content-type-options')).toBe('nosniff');
      const events = (await reply.text()).split('\n\n').filter((block) => block.includes('data: '));
      const last = JSON.parse(events.at(-1)!.split('data: ')[1]!) as Record<string, unknown>;
      expect(Object.keys(last), path).toEqual(['done']);
    }
  });

  it('refuses a Last-Event-ID that is not a sequence before calling WatchJob', async () => {
    const reply = await fetch(url('/v1/jobs/00000000-0000-4000-8000-000000000000/events'), { headers: { 'last-event-id': 'abc' } });
    expect(reply.status).toBe(400);
    expect(await errorOf(reply)).toEqual({ code: 'INVALID_ARGUMENT', message: 'headers.last-event-id: expected an event id (a sequence number) this stream sent' });
  });

  it('refuses bodies over each call\'s limit with 413 RESOURCE_EXHAUSTED', async () => {
    // Chat takes 512 KiB (a 100 000-character message in UTF-8); cancelling a job 64 KiB.
    const chat = await post('/v1/chat', { message: 'x'.repeat(600 * 1024) });
    expect(chat.status).toBe(413);
    expect(await errorOf(chat)).toEqual({ code: 'RESOURCE_EXHAUSTED', message: `body: over the ${512 * 1024} bytes POST /v1/chat accepts` });
    const cancel = await post('/v1/jobs/x/cancel', { reason: 'x'.repeat(70 * 1024) });
    expect(cancel.status).toBe(413);
    expect((await errorOf(cancel)).code).toBe('RESOURCE_EXHAUSTED');
    // A body just under Chat's limit is read (and refused by the call's own check, 100 000 characters).
    const long = await post('/v1/chat', { message: 'x'.repeat(200_000) });
    expect(long.status).toBe(400);
    expect((await errorOf(long)).message).toBe('message: 200000 characters is over the limit of 100000');
  });

  it('says through GetCaller that keys are off, so every call is allowed', async () => {
    const caller = await fetch(url('/v1/caller'));
    expect(caller.status).toBe(200);
    // proto3 JSON leaves out default values: keysEnabled false, no key, no scopes.
    expect(await caller.json()).toEqual({});
  });

  it('answers unknown routes 404 in the error shape, and keeps /healthz, /readyz and /metrics', async () => {
    const missing = await fetch(url('/v1/nothing-here'));
    expect(missing.status).toBe(404);
    expect(await errorOf(missing)).toEqual({ code: 'NOT_FOUND', message: 'no route GET /v1/nothing-here' });
    expect((await fetch(url('/healthz'))).status).toBe(200);
    expect(await (await fetch(url('/readyz'))).json()).toMatchObject({ status: 'serving' });
    const metrics = await fetch(url('/metrics'));
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toContain('# TYPE');
  });
});

describe('the HTTP surface', () => {
  it('puts the security headers on answers, errors and refusals alike', async () => {
    const replies = [await post('/v1/chat', { message: 'ping' }), await post('/v1/chat', { message: 1 }), await fetch(url('/nope')), await post('/v1/chat', { message: 'x'.repeat(600 * 1024) }), await fetch(url('/healthz'))];
    for (const reply of replies) {
      expect(reply.headers.get('x-content-type-options')).toBe('nosniff');
      expect(reply.headers.get('x-frame-options')).toBe('DENY');
      expect(reply.headers.get('referrer-policy')).toBe('no-referrer');
      expect(reply.headers.get('content-security-policy')).toBe("default-src 'none'; frame-ancestors 'none'");
      expect(reply.headers.get('cache-control')).toBe('no-store');
    }
  });

  it('answers a CORS preflight from an allowed origin, and not from others', async () => {
    const preflight = (origin: string) =>
      fetch(url('/v1/chat'), { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' } });
    const allowed = await preflight(ALLOWED_ORIGIN);
    expect(allowed.status).toBe(204);
    expect(allowed.headers.get('access-control-allow-origin')).toBe(ALLOWED_ORIGIN);
    expect(allowed.headers.get('access-control-allow-methods')).toContain('POST');
    expect(allowed.headers.get('access-control-allow-headers')).toContain('authorization');
    const other = await preflight('https://evil.example.net');
    expect(other.headers.get('access-control-allow-origin')).toBeNull();

    const answer = await post('/v1/chat', { message: 'ping' }, { origin: ALLOWED_ORIGIN });
    expect(answer.status).toBe(200);
    expect(answer.headers.get('access-control-allow-origin')).toBe(ALLOWED_ORIGIN);
    expect(answer.headers.get('access-control-expose-headers')).toContain('retry-after');
  });

  it('logs one line per request, failed ones too, with the key id and never the secret', async () => {
    const secret = 'Zq8sEcReTpArT0fTheKey';
    const missingPath = `/v1/nothing-here-${Date.now()}`;
    await fetch(url(missingPath), { headers: { authorization: `Bearer elx_k7test_${secret}` } });
    const bad = await post('/v1/chat', { message: 1 }, { authorization: `Bearer elx_k7test_${secret}` });
    const traceId = bad.headers.get('x-trace-id');
    expect(traceId).toMatch(/^[0-9a-f]{32}$/);
    const lines = await waitFor('both requests\' access-log lines', () => {
      const missing = accessLines().filter((line) => line.path === missingPath);
      const refused = accessLines().filter((line) => line.trace_id === traceId);
      return missing.length > 0 && refused.length > 0 ? [...missing, ...refused] : undefined;
    });
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatchObject({ level: 'info', method: 'GET', route: null, status: 404, keyId: 'k7test' });
    expect(lines[1]).toMatchObject({ method: 'POST', route: '/v1/chat', path: '/v1/chat', status: 400, keyId: 'k7test' });
    expect(typeof lines[1]!.durationMs).toBe('number');
    expect(stack.processes.all!.output()).not.toContain(secret);
  });

  it('logs a line for a request refused before it is parsed (headers over the limit)', async () => {
    const countRefused = () => accessLines().filter((line) => line.status === 431).length;
    const before = countRefused();
    const reply = await fetch(url('/v1/chat'), { method: 'POST', headers: { 'x-padding': 'a'.repeat(20_000) }, body: '{}' });
    expect(reply.status).toBe(431);
    expect(reply.headers.get('x-content-type-options')).toBe('nosniff');
    await waitFor('the refusal\'s access-log line', () => countRefused() > before);
    expect(accessLines().filter((line) => line.status === 431).at(-1)).toMatchObject({ method: null, route: null, error: 'HPE_HEADER_OVERFLOW' });
  });

  it('runs the call under the HTTP request\'s trace (its traceparent, or a new trace)', async () => {
    const listener = await collectEvents(nats.url);
    try {
      const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
      const reply = await post('/v1/chat', { message: 'ping' }, { traceparent: `00-${traceId}-00f067aa0ba902b7-01` });
      expect(reply.status).toBe(200);
      expect(reply.headers.get('x-trace-id')).toBe(traceId);
      const event = await waitFor('the gateway\'s request event', () => listener.events.find((item) => item.subject === 'elexirion.events.gateway.request' && item.event.traceId === traceId));
      expect(event.event.status).toBe('OK');
    } finally {
      await listener.close();
    }
  });
});
