// The monitor's calls through the gateway over HTTP, with API keys on, against real processes
// (nats-server and one process per service, the monitor its own, so it can be stopped): every
// monitor route reaches the monitor and answers what it says; scopes hold (a chat key may record
// feedback but not read executions); the gateway's request events say how a chat was routed and
// which run answered (the executor's run when the agent was bypassed); and a monitor that is
// down is a clear 503 on its routes only.
import { randomBytes } from 'node:crypto';
import { Metadata } from 'nice-grpc';
import { ClientError, Status } from 'nice-grpc-common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { proto } from '@elexirion/kit';
import { eventually, startNats, startStack, stopAll, type NatsServer, type Stack } from '@elexirion/testing';

const ADMIN_KEY = `admin-${randomBytes(24).toString('base64url')}`;
const bearer = (secret: string) => ({ metadata: Metadata({ authorization: `Bearer ${secret}` }) });

let nats: NatsServer;
let stack: Stack;

interface Answer {
  status: number;
  body: { error?: { code: string; message: string } } & Record<string, unknown>;
}

/** One HTTP call to the gateway; an event stream's first event stands for its body. */
async function http(path: string, key: string, body?: unknown): Promise<Answer> {
  const controller = new AbortController();
  const reply = await fetch(`http://127.0.0.1:${stack.ports.gatewayHttp}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    signal: controller.signal,
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  try {
    if (reply.headers.get('content-type')?.startsWith('text/event-stream')) {
      // The first event is enough: a watch never ends by itself.
      const reader = reply.body!.getReader();
      let text = '';
      while (!/^data: .*$/m.test(text)) {
        const { value, done } = await reader.read();
        if (done) break;
        text += new TextDecoder().decode(value);
      }
      const event = /^event: (.*)$/m.exec(text)?.[1];
      const data = JSON.parse(/^data: (.*)$/m.exec(text)![1]!) as Answer['body'];
      return { status: event === 'error' ? 0 : reply.status, body: data };
    }
    return { status: reply.status, body: (await reply.json()) as Answer['body'] };
  } finally {
    controller.abort();
  }
}

/** Every monitor route of the gateway, with a request it accepts the shape of. */
const MONITOR_ROUTES: { method: string; path: string; body?: unknown }[] = [
  { method: 'GetMetrics', path: '/v1/monitor/metrics', body: { groupBy: [] } },
  { method: 'ListExecutions', path: '/v1/executions?pageSize=5' },
  { method: 'GetExecution', path: '/v1/executions/run-that-does-not-exist' },
  { method: 'RecordFeedback', path: '/v1/executions/run-that-does-not-exist/feedback', body: { feedback: { name: 'thumbs', score: 1, source: 'FEEDBACK_SOURCE_HUMAN' } } },
  { method: 'GetPromptVersionStats', path: '/v1/pipelines/general/prompt-stats' },
  { method: 'ListAlerts', path: '/v1/alerts' },
  { method: 'GetSystemHealth', path: '/v1/health' },
  { method: 'WatchSystemHealth', path: '/v1/health/watch' },
];

/**
 * What the monitor may answer while its areas are being built: an answer, or one of the statuses
 * its calls are documented to fail with. Never a gateway-made 401/403/503.
 */
const FORWARDED = new Map<number, string>([
  [400, 'INVALID_ARGUMENT'],
  [404, 'NOT_FOUND'],
  [501, 'UNIMPLEMENTED'],
]);

async function createKey(name: string, scopes: string[]): Promise<proto.CreateKeyResponse> {
  return stack.gateway.createKey(proto.CreateKeyRequest.fromPartial({ name, scopes }), bearer(ADMIN_KEY));
}

beforeAll(async () => {
  nats = await startNats();
  stack = await startStack('one-process-per-service', nats.url, { GATEWAY_AUTH: 'on', GATEWAY_ADMIN_KEY: ADMIN_KEY });
  // The key store attaches to NATS just after the gateway serves.
  await eventually('the key store attached', () => stack.gateway.listKeys({}, bearer(ADMIN_KEY)).then(() => true, () => undefined));
}, 120_000);

afterAll(async () => {
  await stack?.stop();
  await nats?.stop();
  await stopAll();
});

describe('the monitor through the gateway', () => {
  it('forwards every monitor route to the monitor and answers what it says', async () => {
    const { secret } = await createKey(`reader-${randomBytes(3).toString('hex')}`, ['telemetry', 'chat']);
    for (const route of MONITOR_ROUTES) {
      const answer = await http(route.path, secret, route.body);
      if (answer.status === 200) {
        expect(answer.body.error, `${route.method} answered an error with 200`).toBeUndefined();
        continue;
      }
      const code = FORWARDED.get(answer.status);
      expect(code, `${route.method}: HTTP ${answer.status} ${JSON.stringify(answer.body)}`).toBeDefined();
      expect(answer.body.error?.code, route.method).toBe(code);
      // The monitor's own words, naming its call, not the gateway's.
      if (code === 'UNIMPLEMENTED') expect(answer.body.error?.message).toContain(`Monitor.${route.method}`);
    }
  });

  it('enforces scopes: a chat key may record feedback but not read executions', async () => {
    const name = `chat-only-${randomBytes(3).toString('hex')}`;
    const { secret } = await createKey(name, ['chat']);
    for (const path of ['/v1/executions', '/v1/executions/some-run', '/v1/alerts', '/v1/health']) {
      const refused = await http(path, secret);
      expect(refused.status, path).toBe(403);
      expect(refused.body.error?.code).toBe('PERMISSION_DENIED');
      expect(refused.body.error?.message).toContain('telemetry');
    }
    const metrics = await http('/v1/monitor/metrics', secret, {});
    expect(metrics.status).toBe(403);

    // Feedback on a real run: a chat's job id is its run's id.
    const chat = await stack.gateway.chat({ message: 'feedback target' }, bearer(secret));
    const feedback = await http(`/v1/executions/${chat.jobId}/feedback`, secret, { feedback: { name: 'thumbs', score: 1, source: 'FEEDBACK_SOURCE_HUMAN' } });
    expect([200, 404, 501], JSON.stringify(feedback.body)).toContain(feedback.status);
    if (feedback.status === 200) {
      // The monitor was told which key recorded it (x-elexirion-caller), not the client's word.
      expect((feedback.body.feedback as { recordedBy: string }).recordedBy).toBe(name);
    } else {
      expect(feedback.body.error?.code).toBe(FORWARDED.get(feedback.status));
    }
    // No key at all: 401 before anything reaches the monitor.
    const anonymous = await fetch(`http://127.0.0.1:${stack.ports.gatewayHttp}/v1/health`);
    expect(anonymous.status).toBe(401);
  });

  it("names the route and the run in the gateway's request events", async () => {
    const { secret } = await createKey(`events-${randomBytes(3).toString('hex')}`, ['chat', 'pipelines', 'telemetry']);
    const since = new Date();
    const routed = await stack.gateway.chat({ message: 'route me by the table' }, bearer(secret));
    const explicit = await stack.gateway.chat({ message: 'this one names its pipeline', pipeline: 'general' }, bearer(secret));
    const direct = await stack.gateway.executePipeline({ pipeline: 'general', inputs: { message: 'direct' } }, bearer(secret));

    const requestEventOf = async (jobId: string, method: string) => {
      const controller = new AbortController();
      try {
        for await (const { event } of stack.gateway.streamTelemetry({ services: ['gateway'], kinds: ['request'], pipeline: '', jobId, since }, { ...bearer(secret), signal: controller.signal })) {
          if (event?.gatewayRequest?.method === method) return event.gatewayRequest;
        }
      } finally {
        controller.abort();
      }
      throw new Error(`no ${method} request event for ${jobId}`);
    };

    const routedEvent = await requestEventOf(routed.jobId, 'Chat');
    expect(routed.route?.matchedBy).toMatch(/^(rule|default|classifier)$/);
    expect(routedEvent).toMatchObject({ jobId: routed.jobId, runId: routed.jobId, route: routed.route!.matchedBy });

    const explicitEvent = await requestEventOf(explicit.jobId, 'Chat');
    expect(explicitEvent).toMatchObject({ jobId: explicit.jobId, runId: explicit.jobId, route: 'explicit' });

    const directEvent = await requestEventOf(direct.jobId, 'ExecutePipeline');
    expect(directEvent).toMatchObject({ jobId: direct.jobId, runId: direct.jobId, route: '' });

    // A stream's event takes the route and the run from the events that passed.
    let streamRoute = '';
    let streamRun = '';
    for await (const event of stack.gateway.chatStream({ message: 'please refactor this to use async/await' }, bearer(secret))) {
      streamRoute ||= event.route?.matchedBy ?? '';
      streamRun ||= event.runStarted?.runId ?? '';
    }
    expect(streamRoute).toBe('rule');
    expect(streamRun).not.toBe('');
    expect(await requestEventOf(streamRun, 'ChatStream')).toMatchObject({ jobId: streamRun, runId: streamRun, route: 'rule' });
  });

  it('answers 503 naming the monitor while it is down, and the rest of the gateway works', async () => {
    const name = `while-down-${randomBytes(3).toString('hex')}`;
    const { secret } = await createKey(name, ['telemetry', 'chat']);
    await stack.processes.monitor!.stop();
    for (const route of MONITOR_ROUTES) {
      const answer = await http(route.path, secret, route.body);
      expect(answer.status, `${route.method}: ${JSON.stringify(answer.body)}`).toBe(503);
      expect(answer.body.error?.code).toBe('UNAVAILABLE');
      expect(answer.body.error?.message).toBe(`${route.method}: the monitor cannot be reached (monitoring calls are unavailable until it is back; the rest of the gateway works)`);
      // Where the monitor was is for the log, not for callers.
      expect(answer.body.error?.message).not.toMatch(/127\.0\.0\.1|ECONNREFUSED|:\d{4,5}/);
    }
    // gRPC says the same.
    const refused = await stack.gateway.getSystemHealth({}, bearer(secret)).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(refused).toBeInstanceOf(ClientError);
    expect((refused as ClientError).code).toBe(Status.UNAVAILABLE);
    expect((refused as ClientError).details).toContain('the monitor cannot be reached');
    // Chat does not need the monitor.
    const chat = await stack.gateway.chat({ message: 'still here' }, bearer(secret));
    expect(chat.response).not.toBe('');
  });

  it("names the executor's run in a degraded chat's request event (the agent bypassed)", async () => {
    const { secret } = await createKey(`degraded-${randomBytes(3).toString('hex')}`, ['chat', 'telemetry']);
    const since = new Date();
    await stack.processes.agent!.stop();
    const answer = await stack.gateway.chat({ message: 'what is the weather like' }, bearer(secret));
    expect(answer).toMatchObject({ degraded: true, jobId: '', route: { matchedBy: 'default' } });

    /** The first event of `kinds` about `jobId` (any id when empty) that `accept` takes, replayed from `since`. */
    const firstEvent = async (kinds: string[], jobId: string, accept: (event: proto.TelemetryEvent) => boolean) => {
      const controller = new AbortController();
      try {
        for await (const { event } of stack.gateway.streamTelemetry({ services: [], kinds, pipeline: '', jobId, since }, { ...bearer(secret), signal: controller.signal })) {
          if (event && accept(event)) return event;
        }
      } finally {
        controller.abort();
      }
      throw new Error('the stream ended');
    };
    const request = (await firstEvent(['request'], '', (event) => event.gatewayRequest?.method === 'Chat' && event.gatewayRequest.degraded)).gatewayRequest!;
    expect(request).toMatchObject({ jobId: '', route: 'default', degraded: true });
    expect(request.runId).not.toBe('');
    // The run it names is the executor's run of that chat (and the telemetry filter finds it by that id).
    const run = await firstEvent(['run'], request.runId, () => true);
    expect(run.executorRun).toMatchObject({ runId: request.runId, pipeline: 'general' });
  });
});
