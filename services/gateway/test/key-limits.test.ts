// The keys area against a real nats-server, below the gRPC server: two "replicas" (a KeyRegistry
// and KeyLimits each, on connections of their own) sharing the buckets. The request block
// arithmetic at the boundary, the read-through of a key another replica made a moment ago, and
// usage taken from a server stream's final message (the streaming calls' path through the auth
// middleware).
import { Metadata, ServerError, Status, type CallContext, type ServerMiddlewareCall } from 'nice-grpc-common';
import { describe, expect, it } from 'vitest';
import { KvStore, proto } from '@elexirion/kit';
import { z } from 'zod';
import { connectNats, eventually } from '@elexirion/testing';
import { cleanupAfterEach, natsForFile } from '@elexirion/testing/fixtures';
import { authMiddleware, usageIn } from '../src/keys/auth-middleware.js';
import { KeyLimits, USAGE_BUCKET, requestBlock } from '../src/keys/key-limits.js';
import { KeyRegistry } from '../src/keys/key-registry.js';

const nats = natsForFile();
const later = cleanupAfterEach();
const quiet = { info() {}, warn() {}, debug() {} };
const ADMIN = 'an-admin-secret-of-at-least-24-characters';

async function replica() {
  const connection = await connectNats(nats.url);
  const registry = new KeyRegistry({ logger: quiet, adminKey: ADMIN });
  const limits = new KeyLimits({ logger: quiet });
  await registry.attach(connection);
  await limits.attach(connection);
  later(async () => {
    await limits.close();
    await registry.close();
    await connection.close();
  });
  return { registry, limits };
}

function limitsOf(partial: Partial<proto.KeyLimits>): proto.KeyLimits {
  return { requestsPerMinute: 0, tokensPerMinute: 0, dailyBudgetUsd: 0, monthlyBudgetUsd: 0, ...partial };
}

function callContext(secret: string): CallContext {
  return { metadata: Metadata({ authorization: `Bearer ${secret}` }), peer: 'test', signal: new AbortController().signal, header: Metadata(), trailer: Metadata(), sendHeader() {} };
}

describe('per-key limits shared by replicas', () => {
  it('sizes request blocks at 1% of the limit, from 1 to 1000', () => {
    expect([1, 10, 99, 100, 250, 10_000, 100_000, 1e9].map(requestBlock)).toEqual([1, 1, 1, 1, 2, 100, 1000, 1000]);
  });

  it('admits at most the limit over two replicas, and at most one block per replica less', async () => {
    const one = await replica();
    const two = await replica();
    const limit = 1_000; // blocks of 10
    const { key } = await one.registry.create(proto.CreateKeyRequest.fromPartial({ name: 'burst', scopes: ['chat'], limits: limitsOf({ requestsPerMinute: limit }) }), 'test');
    // Not near the end of a minute, or the counters would start again mid-test.
    const left = 60_000 - (Date.now() % 60_000);
    if (left < 5_000) await new Promise((resolve) => setTimeout(resolve, left + 50));
    const outcomes = await Promise.all(
      Array.from({ length: 1_300 }, (_, index) =>
        (index % 2 ? one : two).limits.admit(key, Metadata()).then(
          () => true,
          (error: unknown) => {
            if (error instanceof ServerError && error.code === Status.RESOURCE_EXHAUSTED) return false;
            throw error;
          },
        ),
      ),
    );
    const admitted = outcomes.filter(Boolean).length;
    expect(admitted).toBeLessThanOrEqual(limit);
    expect(admitted).toBeGreaterThanOrEqual(limit - 2 * requestBlock(limit));
    // Reservations are what the shared counter holds: never past the limit.
    expect(one.limits.usage(key.keyId).requests).toBeLessThanOrEqual(limit);
  });

  it('accepts a key made on another replica a moment ago (read through), and refuses it once revoked there', async () => {
    const one = await replica();
    const two = await replica();
    const { key, secret } = await one.registry.create(proto.CreateKeyRequest.fromPartial({ name: 'fresh', scopes: ['jobs'] }), 'test');
    expect((await two.registry.authenticate(secret)).caller).toEqual({ keyId: key.keyId, name: 'fresh', scopes: ['jobs'], admin: false });
    // revoke() answers once its own watch has the change, which the server sent every watch at once.
    await one.registry.revoke(key.keyId);
    await expect(two.registry.authenticate(secret)).rejects.toMatchObject({ code: Status.UNAUTHENTICATED, message: `API key ${key.keyId} was revoked` });
  });

  it('waits for its first attach to NATS: a call in the moment after start is served, not refused UNAVAILABLE', async () => {
    const one = await replica();
    const { key, secret } = await one.registry.create(proto.CreateKeyRequest.fromPartial({ name: 'early', scopes: ['chat'], limits: limitsOf({ requestsPerMinute: 100 }) }), 'test');
    // A replica that has started and not attached yet.
    const connection = await connectNats(nats.url);
    const registry = new KeyRegistry({ logger: quiet, adminKey: ADMIN });
    const limits = new KeyLimits({ logger: quiet });
    later(async () => {
      await limits.close();
      await registry.close();
      await connection.close();
    });
    const early = registry.authenticate(secret).then(async (authenticated) => {
      await limits.admit(authenticated.key!, Metadata());
      return authenticated;
    });
    await new Promise((resolve) => setTimeout(resolve, 300));
    await registry.attach(connection);
    await limits.attach(connection);
    expect((await early).caller.name).toBe('early');
    expect(limits.usage(key.keyId).requests).toBeGreaterThan(0);
  });

  it("adds a stream's final usage to the key and refuses the next call once its tokens are used", async () => {
    const { registry, limits } = await replica();
    const { key, secret } = await registry.create(proto.CreateKeyRequest.fromPartial({ name: 'streamer', scopes: ['chat'], limits: limitsOf({ tokensPerMinute: 100 }) }), 'test');
    const middleware = authMiddleware(registry, limits);
    const events: proto.ChatStreamResponse[] = [
      proto.ChatStreamResponse.fromPartial({ textDelta: { text: 'hel' } }),
      proto.ChatStreamResponse.fromPartial({ textDelta: { text: 'lo' } }),
      proto.ChatStreamResponse.fromPartial({ done: { response: 'hello', usage: { inputTokens: 60, outputTokens: 50, costUsd: 0.002 } } }),
    ];
    const streamCall = {
      method: { path: '/elexirion.v1.Gateway/ChatStream', requestStream: false, responseStream: true, options: {} },
      requestStream: false,
      responseStream: true,
      request: proto.ChatRequest.fromPartial({ message: 'hi' }),
      next: async function* (_request: unknown, context: CallContext & { caller?: { name: string } }) {
        expect(context.caller?.name).toBe('streamer');
        yield* events;
      },
    } as unknown as ServerMiddlewareCall<proto.ChatRequest, proto.ChatStreamResponse>;
    const first = callContext(secret);
    const received: unknown[] = [];
    for await (const event of middleware(streamCall, first)) received.push(event);
    expect(received).toEqual(events);
    expect(first.trailer.get('x-ratelimit-limit-tokens')).toBe('100');
    expect(limits.usage(key.keyId)).toMatchObject({ tokens: 110, spentDay: expect.closeTo(0.002, 9) });

    const second = callContext(secret);
    const refused = await (async () => {
      for await (const _ of middleware(streamCall, second)) throw new Error('the refused call streamed');
    })().catch((error: unknown) => error);
    expect(refused).toMatchObject({ code: Status.RESOURCE_EXHAUSTED });
    expect(second.trailer.get('x-ratelimit-remaining-tokens')).toBe('0');
    expect(Number(second.trailer.get('retry-after'))).toBeGreaterThanOrEqual(1);
  });

  it("sums every replica's usage entry, each written by its replica alone", async () => {
    const one = await replica();
    const two = await replica();
    const { key } = await one.registry.create(proto.CreateKeyRequest.fromPartial({ name: 'summed', scopes: ['chat'] }), 'test');
    one.limits.record(key.keyId, { tokens: 60, costUsd: 0.25 });
    two.limits.record(key.keyId, { tokens: 50, costUsd: 0.5 });
    two.limits.record(key.keyId, { tokens: 5, costUsd: 0 });
    for (const side of [one, two]) {
      await eventually('both replicas to see both entries', async () => (side.limits.usage(key.keyId).tokens === 115 ? true : undefined));
      expect(side.limits.usage(key.keyId)).toMatchObject({ tokens: 115, spentDay: expect.closeTo(0.75, 9), spentMonth: expect.closeTo(0.75, 9) });
    }
  });

  it("folds a stopping replica's usage into the key's shared entry and deletes its own", async () => {
    const one = await replica();
    const connection = await connectNats(nats.url);
    later(() => connection.close());
    const leaving = { registry: new KeyRegistry({ logger: quiet, adminKey: ADMIN }), limits: new KeyLimits({ logger: quiet }) };
    await leaving.registry.attach(connection);
    await leaving.limits.attach(connection);
    const { key } = await one.registry.create(proto.CreateKeyRequest.fromPartial({ name: 'folded', scopes: ['chat'] }), 'test');
    one.limits.record(key.keyId, { tokens: 10, costUsd: 0.1 });
    leaving.limits.record(key.keyId, { tokens: 20, costUsd: 0.2 });
    await leaving.limits.close();
    await leaving.registry.close();
    const store = await KvStore.open(connection, { bucket: USAGE_BUCKET, schema: z.any(), key: { pattern: /^[0-9a-f.]+$/, description: 'usage key' } });
    expect((await store.keys()).filter((name) => name.startsWith(key.keyId)).sort()).toEqual([key.keyId, `${key.keyId}.${one.limits.replicaId}`].sort());
    await eventually('the folded use to reach replica one', async () => (one.limits.usage(key.keyId).tokens === 30 ? true : undefined));
    expect(one.limits.usage(key.keyId)).toMatchObject({ tokens: 30, spentDay: expect.closeTo(0.3, 9), spentMonth: expect.closeTo(0.3, 9) });
  });

  it('reads usage from unary answers and from stream events that end with done', () => {
    expect(usageIn(proto.ChatResponse.fromPartial({ usage: { inputTokens: 3, outputTokens: 4, costUsd: 0.5 } }))).toEqual({ tokens: 7, costUsd: 0.5 });
    expect(usageIn(proto.StreamCompleteResponse.fromPartial({ done: { usage: { inputTokens: 1, outputTokens: 1, costUsd: 0 } } }))).toEqual({ tokens: 2, costUsd: 0 });
    expect(usageIn(proto.ChatStreamResponse.fromPartial({ textDelta: { text: 'x' } }))).toEqual({ tokens: 0, costUsd: 0 });
  });
});
