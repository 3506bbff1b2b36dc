// API keys, scopes, limits and budgets on TWO gateway replicas sharing one NATS: each replica is
// an all-in-one process (gateway, agent, executor, provider) started with keys on, the provider
// pointed at a fake Anthropic upstream that reports tokens, which the provider prices. A key made
// on one replica works on the other at once, a revoked one is refused everywhere, and limits hold
// for the two replicas together.
import { randomBytes } from 'node:crypto';
import { createChannel, createClient, Metadata, type Channel } from 'nice-grpc';
import { ClientError, Status } from 'nice-grpc-common';
import { HealthDefinition } from 'nice-grpc-server-health';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { proto } from '@elexirion/kit';
import { eventually, freePort, sleep, spawnNode, startFakeAnthropic, startNats, startStack, stopAll, waitServing, type FakeUpstream, type NatsServer, type Stack } from '@elexirion/testing';

const ANTHROPIC_KEY = 'fake-anthropic-keys-test-5e6f7a8b9c0d';
const ADMIN_KEY = `admin-${randomBytes(24).toString('base64url')}`;

type GatewayClient = ReturnType<typeof createClient<typeof proto.GatewayDefinition>>;

interface Replica {
  stack: Stack;
  gateway: GatewayClient;
  channel: Channel;
  http(path: string, init?: { method?: string; key?: string; body?: unknown }): Promise<Response>;
}

let nats: NatsServer;
let anthropic: FakeUpstream;
let replicas: Replica[] = [];

const bearer = (secret: string) => ({ metadata: Metadata({ authorization: `Bearer ${secret}` }) });

async function startReplica(): Promise<Replica> {
  const stack = await startStack('all-in-one', nats.url, {
    GATEWAY_AUTH: 'on',
    GATEWAY_ADMIN_KEY: ADMIN_KEY,
    GATEWAY_ACCESS_LOG_LEVEL: 'info',
    ANTHROPIC_API_KEY: ANTHROPIC_KEY,
    ANTHROPIC_BASE_URL: anthropic.url,
  });
  // The gateway serves before its key store has attached to NATS (key calls are UNAVAILABLE until then).
  await eventually('the key store attached', () => stack.gateway.listKeys({}, bearer(ADMIN_KEY)).then(() => true, () => undefined));
  return {
    stack,
    gateway: stack.gateway,
    channel: stack.channel,
    http: (path, init = {}) =>
      fetch(`http://127.0.0.1:${stack.ports.gatewayHttp}${path}`, {
        method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
        headers: { 'content-type': 'application/json', ...(init.key ? { authorization: `Bearer ${init.key}` } : {}) },
        ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
      }),
  };
}

async function createKey(replica: Replica, request: Partial<proto.CreateKeyRequest>): Promise<proto.CreateKeyResponse> {
  return replica.gateway.createKey(proto.CreateKeyRequest.fromPartial({ name: `key-${randomBytes(4).toString('hex')}`, scopes: ['chat'], ...request }), bearer(ADMIN_KEY));
}

async function failure(promise: Promise<unknown>): Promise<ClientError> {
  const outcome = await promise.then(
    () => undefined,
    (error: unknown) => error,
  );
  if (!(outcome instanceof ClientError)) throw new Error(`expected the call to fail with a gRPC status, got ${outcome === undefined ? 'success' : String(outcome)}`);
  return outcome;
}

/** Waits out the end of the UTC minute when it is close, so a minute's counters are not reset mid-test. */
async function awayFromMinuteEnd(marginMs = 8_000): Promise<void> {
  const left = 60_000 - (Date.now() % 60_000);
  if (left < marginMs) await sleep(left + 100);
}

beforeAll(async () => {
  nats = await startNats();
  anthropic = await startFakeAnthropic({ apiKey: ANTHROPIC_KEY });
  replicas = await Promise.all([startReplica(), startReplica()]);
}, 120_000);

afterAll(async () => {
  await Promise.all(replicas.map((replica) => replica.stack.stop()));
  await anthropic?.close();
  await nats?.stop();
  await stopAll();
});

describe('API keys across two gateway replicas', () => {
  it('answers GetCaller with the key, its scopes and usage, never its secret; refuses no key', async () => {
    const [one, two] = replicas as [Replica, Replica];
    const { key, secret } = await createKey(one, { name: 'who-am-i', scopes: ['chat', 'jobs'] });
    const asked = await eventually('the new key is known on replica 2', () => two.gateway.getCaller({}, bearer(secret)).catch(() => undefined));
    expect(asked).toMatchObject({ keysEnabled: true, name: 'who-am-i', scopes: ['chat', 'jobs'], admin: false, key: { keyId: key!.keyId, name: 'who-am-i' } });
    const overHttp = await two.http('/v1/caller', { key: secret });
    expect(overHttp.status).toBe(200);
    const body = await overHttp.text();
    // proto3 JSON leaves out default values (admin false).
    expect(JSON.parse(body)).toMatchObject({ keysEnabled: true, name: 'who-am-i', scopes: ['chat', 'jobs'] });
    expect(JSON.parse(body)).not.toHaveProperty('admin');
    expect(body).not.toContain(secret);
    expect(await one.gateway.getCaller({}, bearer(ADMIN_KEY))).toMatchObject({ keysEnabled: true, name: 'bootstrap', admin: true });
    expect((await failure(one.gateway.getCaller({}))).code).toBe(Status.UNAUTHENTICATED);
    expect((await one.http('/v1/caller')).status).toBe(401);
  });

  it('uses a key made on replica 1 on replica 2 at once, over gRPC and HTTP', async () => {
    const [one, two] = replicas as [Replica, Replica];
    const created = await createKey(one, { name: 'made-on-one', scopes: ['chat'] });
    expect(created.secret).toMatch(new RegExp(`^elx_${created.key!.keyId}_[A-Za-z0-9_-]{43}$`));
    expect(created.key).toMatchObject({ name: 'made-on-one', scopes: ['chat'], createdBy: 'bootstrap' });

    anthropic.script({ text: 'hello from replica two' });
    const chat = await two.gateway.chat({ message: 'hi' }, bearer(created.secret));
    expect(chat.response).toBe('hello from replica two');

    anthropic.script({ text: 'hello over HTTP' });
    const reply = await two.http('/v1/chat', { key: created.secret, body: { message: 'hi' } });
    expect(reply.status).toBe(200);
    expect(((await reply.json()) as { response: string }).response).toBe('hello over HTTP');

    const listed = await two.gateway.listKeys({}, bearer(ADMIN_KEY));
    const mine = listed.keys.find((key) => key.keyId === created.key!.keyId);
    expect(mine).toMatchObject({ name: 'made-on-one', createdBy: 'bootstrap' });
    expect(JSON.stringify(listed)).not.toContain(created.secret);
  });

  it('refuses a key revoked on replica 2 on replica 1 at once', async () => {
    const [one, two] = replicas as [Replica, Replica];
    const { key, secret } = await createKey(two, { scopes: ['chat'] });
    anthropic.script({ text: 'before the revoke' });
    expect((await one.gateway.chat({ message: 'hi' }, bearer(secret))).response).toBe('before the revoke');

    const revoked = await two.gateway.revokeKey({ keyId: key!.keyId }, bearer(ADMIN_KEY));
    expect(revoked.key!.revokedAt).toBeInstanceOf(Date);

    const refused = await failure(one.gateway.chat({ message: 'hi' }, bearer(secret)));
    expect(refused.code).toBe(Status.UNAUTHENTICATED);
    expect(refused.details).toBe(`API key ${key!.keyId} was revoked`);
    const overHttp = await one.http('/v1/chat', { key: secret, body: { message: 'hi' } });
    expect(overHttp.status).toBe(401);
    expect(await overHttp.json()).toEqual({ error: { code: 'UNAUTHENTICATED', message: `API key ${key!.keyId} was revoked` } });

    const active = await one.gateway.listKeys({}, bearer(ADMIN_KEY));
    expect(active.keys.map((listed) => listed.keyId)).not.toContain(key!.keyId);
    const all = await one.gateway.listKeys({ includeInactive: true }, bearer(ADMIN_KEY));
    expect(all.keys.find((listed) => listed.keyId === key!.keyId)?.revokedAt).toBeInstanceOf(Date);
  });

  it('answers a missing or wrong key with UNAUTHENTICATED / 401, and a key without the scope with PERMISSION_DENIED / 403', async () => {
    const [one] = replicas as [Replica];
    const missing = await failure(one.gateway.chat({ message: 'hi' }));
    expect(missing.code).toBe(Status.UNAUTHENTICATED);
    expect(missing.details).toBe('missing API key: send "authorization: Bearer <key>"');

    const { key, secret } = await createKey(one, { scopes: ['jobs'] });
    const forged = secret.slice(0, -4) + (secret.endsWith('AAAA') ? 'BBBB' : 'AAAA');
    for (const wrong of [forged, 'not-a-key', `elx_${'0'.repeat(16)}_${'A'.repeat(43)}`]) {
      const refused = await failure(one.gateway.chat({ message: 'hi' }, bearer(wrong)));
      expect(refused.code).toBe(Status.UNAUTHENTICATED);
      expect(refused.details).toBe('invalid API key');
    }
    const noKeyHttp = await one.http('/v1/chat', { body: { message: 'hi' } });
    expect(noKeyHttp.status).toBe(401);
    expect(await noKeyHttp.json()).toEqual({ error: { code: 'UNAUTHENTICATED', message: 'missing API key: send "authorization: Bearer <key>"' } });

    const denied = await failure(one.gateway.chat({ message: 'hi' }, bearer(secret)));
    expect(denied.code).toBe(Status.PERMISSION_DENIED);
    expect(denied.details).toBe(`API key "${key!.name}" lacks the "chat" scope Chat needs`);
    const deniedHttp = await one.http('/v1/chat', { key: secret, body: { message: 'hi' } });
    expect(deniedHttp.status).toBe(403);
    expect(await deniedHttp.json()).toEqual({ error: { code: 'PERMISSION_DENIED', message: `API key "${key!.name}" lacks the "chat" scope Chat needs` } });

    // Key management needs admin; a chat key cannot make itself more keys.
    const chatKey = await createKey(one, { scopes: ['chat'] });
    expect((await failure(one.gateway.createKey({ name: 'escalate', scopes: ['admin'] }, bearer(chatKey.secret)))).code).toBe(Status.PERMISSION_DENIED);

    // Health needs no key.
    const health = createClient(HealthDefinition, one.channel);
    expect((await health.check({ service: 'elexirion.v1.Gateway' })).status).toBe(1); // SERVING
  });

  it('checks what a key is made of, naming the field', async () => {
    const [one] = replicas as [Replica];
    const cases: [Partial<proto.CreateKeyRequest>, string][] = [
      [{ name: '' }, 'name: expected 1 to 64 characters'],
      [{ scopes: [] }, 'scopes: expected at least one of chat, jobs, pipelines, models, telemetry, prompts:write, admin'],
      [{ scopes: ['chat', 'root'] }, 'scopes[1]: unknown scope "root"; expected one of chat, jobs, pipelines, models, telemetry, prompts:write, admin'],
      [{ expiresAt: new Date(Date.now() - 1000) }, 'expires_at: expected a time in the future'],
      [{ limits: { requestsPerMinute: -1, tokensPerMinute: 0, dailyBudgetUsd: 0, monthlyBudgetUsd: 0 } }, 'limits.requests_per_minute: expected 0 (no limit) or more, got -1'],
    ];
    for (const [request, message] of cases) {
      const refused = await failure(createKey(one, request));
      expect(refused.code).toBe(Status.INVALID_ARGUMENT);
      expect(refused.details).toBe(message);
    }
  });

  it('refuses a key after it expires', async () => {
    const [one, two] = replicas as [Replica, Replica];
    const expiresAt = new Date(Date.now() + 1_500);
    const { key, secret } = await createKey(one, { expiresAt });
    anthropic.script({ text: 'still valid' });
    expect((await two.gateway.chat({ message: 'hi' }, bearer(secret))).response).toBe('still valid');
    await sleep(expiresAt.getTime() - Date.now() + 50);
    const refused = await failure(two.gateway.chat({ message: 'hi' }, bearer(secret)));
    expect(refused.code).toBe(Status.UNAUTHENTICATED);
    expect(refused.details).toBe(`API key ${key!.keyId} expired at ${expiresAt.toISOString()}`);
  });

  it('holds a requests-per-minute limit for both replicas together, with concurrent requests at the boundary', async () => {
    await awayFromMinuteEnd();
    const limit = 10;
    const { secret } = await createKey(replicas[0]!, { limits: { requestsPerMinute: limit, tokensPerMinute: 0, dailyBudgetUsd: 0, monthlyBudgetUsd: 0 } });
    anthropic.setDefault({ text: 'counted' });
    const trailers: Metadata[] = [];
    const outcomes = await Promise.all(
      Array.from({ length: 3 * limit }, (_, index) =>
        replicas[index % 2]!.gateway
          .chat({ message: `request ${index}` }, { ...bearer(secret), onTrailer: (trailer) => trailers.push(trailer) })
          .then(
            () => 'ok' as const,
            (error: unknown) => error,
          ),
      ),
    );
    const refused = outcomes.filter((outcome): outcome is ClientError => outcome instanceof ClientError && outcome.code === Status.RESOURCE_EXHAUSTED);
    const accepted = outcomes.filter((outcome) => outcome === 'ok');
    // The replicas reserve blocks of requests from the shared counter (one request at a time
    // under a limit of 10): together they admit the limit, never more.
    expect(accepted.length).toBe(limit);
    expect(refused.length).toBe(2 * limit);
    expect(refused[0]!.details).toMatch(/^API key "key-[0-9a-f]+" has made its 10 requests per minute; retry after \d+ s$/);
    expect(trailers).toHaveLength(3 * limit);
    for (const trailer of trailers) {
      expect(trailer.get('x-ratelimit-limit-requests')).toBe(String(limit));
      expect(trailer.get('x-ratelimit-reset-requests')).toMatch(/^\d+s$/);
    }
    const refusedTrailers = trailers.filter((trailer) => trailer.has('retry-after'));
    expect(refusedTrailers).toHaveLength(2 * limit);
    for (const trailer of refusedTrailers) {
      expect(Number(trailer.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(Number(trailer.get('retry-after'))).toBeLessThanOrEqual(60);
      expect(trailer.get('x-ratelimit-remaining-requests')).toBe('0');
    }

    // Over HTTP, on either replica: 429 with the headers.
    for (const replica of replicas) {
      const reply = await replica.http('/v1/chat', { key: secret, body: { message: 'one more' } });
      expect(reply.status).toBe(429);
      expect(Number(reply.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(reply.headers.get('x-ratelimit-limit-requests')).toBe('10');
      expect(reply.headers.get('x-ratelimit-remaining-requests')).toBe('0');
      expect(((await reply.json()) as { error: { code: string } }).error.code).toBe('RESOURCE_EXHAUSTED');
    }
  });

  it('holds a larger limit within the stated tolerance (one unused block per replica) under a burst over both replicas', async () => {
    await awayFromMinuteEnd();
    const limit = 200; // blocks of 2 (1% of the limit)
    const { secret } = await createKey(replicas[0]!, { scopes: ['chat', 'models'], limits: { requestsPerMinute: limit, tokensPerMinute: 0, dailyBudgetUsd: 0, monthlyBudgetUsd: 0 } });
    // ListModels: admitted calls go no further than the provider's alias table, so only the
    // limit decides what is refused.
    const outcomes = await Promise.all(
      Array.from({ length: 300 }, (_, index) =>
        replicas[index % 2]!.gateway.listModels({}, bearer(secret)).then(
          () => 'admitted' as const,
          (error: unknown) => (error instanceof ClientError && error.code === Status.RESOURCE_EXHAUSTED ? ('refused' as const) : 'admitted'),
        ),
      ),
    );
    const admitted = outcomes.filter((outcome) => outcome === 'admitted').length;
    expect(admitted).toBeLessThanOrEqual(limit);
    expect(admitted).toBeGreaterThanOrEqual(limit - 2 * 2);
  });

  it('refuses the next call with 429 and retry-after once usage has spent the daily budget, on the other replica too', async () => {
    const [one, two] = replicas as [Replica, Replica];
    // 100,000 input and 10,000 output tokens of claude-sonnet-5 ($3 and $15 per million): $0.45.
    const { key, secret } = await createKey(one, { limits: { requestsPerMinute: 0, tokensPerMinute: 0, dailyBudgetUsd: 0.4, monthlyBudgetUsd: 0 } });
    anthropic.script({ text: 'an expensive answer', usage: { inputTokens: 100_000, outputTokens: 10_000 } });
    const chat = await one.gateway.chat({ message: 'spend' }, bearer(secret));
    expect(chat.usage!.costUsd).toBeCloseTo(0.45, 9);

    // The same replica counts it before answering; the other sees it once the shared counter says so.
    const sameReplica = await one.http('/v1/chat', { key: secret, body: { message: 'more' } });
    expect(sameReplica.status).toBe(429);
    await eventually('replica 2 to see the spend', async () => {
      const listed = await two.gateway.listKeys({}, bearer(ADMIN_KEY));
      const usage = listed.keys.find((listedKey) => listedKey.keyId === key!.keyId)?.usage;
      return usage && usage.spentTodayUsd > 0.4 ? usage : undefined;
    });
    const reply = await two.http('/v1/chat', { key: secret, body: { message: 'more' } });
    expect(reply.status).toBe(429);
    const secondsToMidnight = Math.ceil((Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate() + 1) - Date.now()) / 1000);
    expect(Number(reply.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(Number(reply.headers.get('retry-after'))).toBeLessThanOrEqual(secondsToMidnight + 1);
    expect(await reply.json()).toEqual({ error: { code: 'RESOURCE_EXHAUSTED', message: expect.stringMatching(/^API key "key-[0-9a-f]+" has spent its daily budget of \$0\.4; retry after \d+ s$/) } });

    const listed = await two.gateway.listKeys({}, bearer(ADMIN_KEY));
    expect(listed.keys.find((listedKey) => listedKey.keyId === key!.keyId)?.usage).toMatchObject({ tokensThisMinute: expect.any(Number), spentTodayUsd: expect.closeTo(0.45, 9), spentThisMonthUsd: expect.closeTo(0.45, 9) });
  });

  it('refuses calls once the tokens per minute are used', async () => {
    await awayFromMinuteEnd();
    const [one, two] = replicas as [Replica, Replica];
    const { key, secret } = await createKey(two, { limits: { requestsPerMinute: 0, tokensPerMinute: 1_000, dailyBudgetUsd: 0, monthlyBudgetUsd: 0 } });
    anthropic.script({ text: 'many tokens', usage: { inputTokens: 900, outputTokens: 200 } });
    await two.gateway.chat({ message: 'spend tokens' }, bearer(secret));
    await eventually('replica 1 to see the tokens', async () => {
      const listed = await one.gateway.listKeys({}, bearer(ADMIN_KEY));
      return (listed.keys.find((listedKey) => listedKey.keyId === key!.keyId)?.usage?.tokensThisMinute ?? 0) >= 1_100 || undefined;
    });
    const trailers: Metadata[] = [];
    const refused = await failure(one.gateway.chat({ message: 'again' }, { ...bearer(secret), onTrailer: (trailer) => trailers.push(trailer) }));
    expect(refused.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(trailers[0]!.get('x-ratelimit-limit-tokens')).toBe('1000');
    expect(trailers[0]!.get('x-ratelimit-remaining-tokens')).toBe('0');
    expect(Number(trailers[0]!.get('retry-after'))).toBeGreaterThanOrEqual(1);
  });

  it('writes one access-log line per request with the key name, never a secret: gRPC calls, and HTTP requests once', async () => {
    const [one] = replicas as [Replica];
    const { key, secret } = await createKey(one, { name: 'logged-key' });
    anthropic.script({ text: 'logged' });
    await one.gateway.chat({ message: 'log me' }, bearer(secret));
    await failure(one.gateway.chat({ message: 'no key' }));
    // An HTTP request is one line, the HTTP server's, though its route calls the gateway in-process.
    anthropic.script({ text: 'logged over HTTP' });
    expect((await one.http('/v1/chat', { key: secret, body: { message: 'log me too' } })).status).toBe(200);
    expect((await one.http('/v1/chat', { key: 'elx_0123456789abcdef_wrong', body: { message: 'no' } })).status).toBe(401);
    const parse = (line: string) => JSON.parse(line.slice(line.indexOf('{'))) as Record<string, unknown>;
    const logged = () => one.stack.processes.all!.output().split('\n').filter((line) => line.includes('{'));
    const records = await eventually('the access-log lines', async () => {
      const grpc = logged().filter((line) => line.includes('"access":"grpc"')).map(parse);
      const http = logged().filter((line) => line.includes('"msg":"http request"')).map(parse).filter((record) => record.path === '/v1/chat' && record.keyId !== undefined);
      const ours = http.filter((record) => record.keyId === key!.keyId || record.keyId === '0123456789abcdef');
      return grpc.some((record) => record.key === 'logged-key') && ours.length >= 2 ? { grpc, http: ours } : undefined;
    });
    expect(records.grpc).toContainEqual(expect.objectContaining({ method: 'Chat', status: 'OK', key: 'logged-key', durationMs: expect.any(Number) }));
    expect(records.grpc).toContainEqual(expect.objectContaining({ method: 'Chat', status: 'UNAUTHENTICATED', key: '-' }));
    expect(records.grpc).toContainEqual(expect.objectContaining({ method: 'CreateKey', status: 'OK', key: 'bootstrap' }));
    // The HTTP request's call into the gateway left no gRPC line of its own: one line per request.
    expect(records.grpc.filter((record) => record.key === 'logged-key')).toHaveLength(1);
    expect(records.http).toContainEqual(expect.objectContaining({ method: 'POST', route: '/v1/chat', status: 200, keyId: key!.keyId, key: 'logged-key', durationMs: expect.any(Number), trace_id: expect.any(String) }));
    expect(records.http).toContainEqual(expect.objectContaining({ method: 'POST', route: '/v1/chat', status: 401, keyId: '0123456789abcdef', key: null }));
    for (const replica of replicas) {
      const output = replica.stack.processes.all!.output();
      expect(output).not.toContain(secret);
      expect(output).not.toContain(ADMIN_KEY);
      expect(output).not.toContain(key!.keyId + '_');
    }
  });
});

describe('the GATEWAY_AUTH setting', () => {
  async function loneGateway(env: NodeJS.ProcessEnv) {
    const grpcPort = await freePort();
    const spawned = spawnNode('gateway', 'services/gateway/dist/main.js', {
      BIND_HOST: '127.0.0.1',
      NATS_URL: nats.url,
      TELEMETRY_EVENTS: 'false',
      GATEWAY_GRPC_PORT: String(grpcPort),
      GATEWAY_HTTP_PORT: String(await freePort()),
      ...env,
    });
    await waitServing(grpcPort, 'elexirion.v1.Gateway', spawned);
    const channel = createChannel(`127.0.0.1:${grpcPort}`);
    return { spawned, channel, gateway: createClient(proto.GatewayDefinition, channel) };
  }

  it('asks for keys when it is not set (secure by default)', async () => {
    const { spawned, channel, gateway } = await loneGateway({});
    try {
      const refused = await failure(gateway.chat({ message: 'hi' }));
      expect(refused.code).toBe(Status.UNAUTHENTICATED);
    } finally {
      channel.close();
      await spawned.stop();
    }
  });

  it('says at start that keys are off when it is off', async () => {
    const { spawned, channel } = await loneGateway({ GATEWAY_AUTH: 'off' });
    try {
      expect(spawned.output()).toContain('API keys are OFF (GATEWAY_AUTH=off)');
    } finally {
      channel.close();
      await spawned.stop();
    }
  });
});

describe('jobs belong to the key that made them', () => {
  it('lets a key see, watch and cancel only its own jobs, across replicas and over HTTP; an admin key sees all', async () => {
    const [one, two] = replicas as [Replica, Replica];
    const alice = await createKey(one, { name: `alice-${randomBytes(3).toString('hex')}`, scopes: ['jobs', 'chat'] });
    const bob = await createKey(two, { name: `bob-${randomBytes(3).toString('hex')}`, scopes: ['jobs'] });
    // The job's model call waits, so the job is still running when its key cancels it.
    anthropic.script({ text: 'a job answer', delayMs: 20_000 });
    // The owner a client sends is replaced by its key's id.
    const { job } = await one.gateway.submitJob({ pipeline: 'general', message: 'a job', owner: 'someone-else' }, bearer(alice.secret));
    expect(job!.owner).toBe(alice.key!.keyId);
    const jobId = job!.jobId;

    // Another key, on the other replica: the job does not exist for it (not "forbidden").
    const notFound = await failure(two.gateway.getJob({ jobId }, bearer(bob.secret)));
    expect(notFound.code).toBe(Status.NOT_FOUND);
    expect((await failure(two.gateway.cancelJob({ jobId }, bearer(bob.secret)))).code).toBe(Status.NOT_FOUND);
    const watch = failure((async () => {
      for await (const _ of two.gateway.watchJob({ jobId }, bearer(bob.secret))) void _;
    })());
    expect((await watch).code).toBe(Status.NOT_FOUND);
    expect((await two.http(`/api/agent/jobs/${jobId}`, { key: bob.secret })).status).toBe(404);
    expect((await two.http(`/v1/jobs/${jobId}`, { key: bob.secret })).status).toBe(404);
    const bobsList = await two.gateway.listJobs({ pageSize: 500, owner: alice.key!.keyId }, bearer(bob.secret));
    expect(bobsList.jobs.map((each) => each.jobId)).not.toContain(jobId);

    // Its own key sees it on either replica; so does an admin key.
    expect((await two.gateway.getJob({ jobId }, bearer(alice.secret))).job!.jobId).toBe(jobId);
    const status = await one.http(`/api/agent/jobs/${jobId}`, { key: alice.secret });
    expect(status.status).toBe(200);
    expect(((await status.json()) as { job_id: string }).job_id).toBe(jobId);
    const alicesList = await one.gateway.listJobs({ pageSize: 500 }, bearer(alice.secret));
    expect(alicesList.jobs.map((each) => each.jobId)).toContain(jobId);
    expect(alicesList.jobs.every((each) => each.owner === alice.key!.keyId)).toBe(true);
    expect((await one.gateway.getJob({ jobId }, bearer(ADMIN_KEY))).job!.owner).toBe(alice.key!.keyId);

    // Cancelling records the key's name, not what the client says.
    const cancelled = await one.gateway.cancelJob({ jobId, requestedBy: 'not me' }, bearer(alice.secret));
    expect(cancelled.job!.status).toBe(proto.JobStatus.JOB_STATUS_CANCELLED);
    expect(cancelled.job!.cancelledBy).toBe(alice.key!.name);

    // A key without the jobs scope is refused the job calls (403 over HTTP).
    const chatOnly = await createKey(one, { scopes: ['chat'] });
    expect((await failure(one.gateway.listJobs({}, bearer(chatOnly.secret)))).code).toBe(Status.PERMISSION_DENIED);
    expect((await one.http('/v1/jobs', { key: chatOnly.secret })).status).toBe(403);
    expect((await one.http(`/api/agent/jobs/${jobId}`, { key: chatOnly.secret })).status).toBe(403);
  });
});
