import { describe, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { nanos } from '@nats-io/transport-node';
import { z } from 'zod';
import {
  KvCorruptEntryError,
  KvInvalidKeyError,
  KvRejectedValueError,
  KvRevisionConflictError,
  KvStore,
  Status,
  type KvBucketSpec,
} from '@elexirion/kit';
import { connectNats, eventually, temporaryBucket } from '@elexirion/testing';
import { cleanupAfterEach, natsForFile } from '@elexirion/testing/fixtures';

interface Counter {
  id: string;
  count: number;
  note?: string;
}

const counterSchema = z.object({ id: z.string().min(1), count: z.number().int().nonnegative(), note: z.string().optional() });

const nats = natsForFile({ connect: true });
const later = cleanupAfterEach();

/** The spec of a bucket of its own for one test, destroyed afterwards. */
function counters(overrides: Partial<KvBucketSpec<Counter>> = {}): KvBucketSpec<Counter> {
  return {
    bucket: temporaryBucket(nats.connection, 'counters', later),
    schema: counterSchema,
    key: { pattern: /^[a-z0-9-]{1,32}$/, description: '1-32 characters of a-z 0-9 -', name: 'counter id' },
    check: (key, counter) => (counter.id === key ? undefined : `entry belongs to counter ${counter.id}`),
    ...overrides,
  };
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => expect.unreachable('expected a rejection'),
    (error: unknown) => error,
  );
}

describe('KvStore', () => {
  it('reads back the value it wrote with the revision of the write, and nothing for a key never written', async () => {
    const store = await KvStore.open(nats.connection, counters());
    const revision = await store.put('visits', { id: 'visits', count: 3 });
    expect(await store.get('visits')).toEqual({ value: { id: 'visits', count: 3 }, revision });
    expect(await store.get('absent')).toBeUndefined();
  });

  it('rejects a value that fails the schema or the check before anything is written', async () => {
    const spec = counters();
    const store = await KvStore.open(nats.connection, spec);
    const invalid = await rejection(store.put('visits', { id: 'visits', count: -1 }));
    expect(invalid).toBeInstanceOf(KvRejectedValueError);
    expect((invalid as KvRejectedValueError).code).toBe(Status.INVALID_ARGUMENT);
    expect((invalid as KvRejectedValueError).problems).toEqual([expect.stringMatching(/^count: /)]);
    await expect(store.put('visits', { id: 'other', count: 1 })).rejects.toBeInstanceOf(KvRejectedValueError);
    await expect(store.create('visits', { id: 'visits', count: 1.5 })).rejects.toBeInstanceOf(KvRejectedValueError);
    expect(await store.isEmpty()).toBe(true);
  });

  it("refuses a value larger than the server's max payload", async () => {
    const store = await KvStore.open(nats.connection, counters());
    const maxPayload = nats.connection.info!.max_payload;
    const error = await rejection(store.put('big', { id: 'big', count: 1, note: 'x'.repeat(maxPayload) }));
    expect(error).toBeInstanceOf(KvRejectedValueError);
    expect(await store.isEmpty()).toBe(true);
  });

  it('throws KvCorruptEntryError for a stored value that is not JSON, fails the schema or fails the check', async () => {
    const spec = counters();
    const store = await KvStore.open(nats.connection, spec);
    const raw = await new Kvm(nats.connection).open(spec.bucket);
    await raw.put('garbled', 'not json');
    await raw.put('shapeless', JSON.stringify({ hello: 'world' }));
    await raw.put('misfiled', JSON.stringify({ id: 'someone-else', count: 1 }));

    const garbled = await rejection(store.get('garbled'));
    expect(garbled).toBeInstanceOf(KvCorruptEntryError);
    expect(garbled).toMatchObject({ key: 'garbled', bucket: spec.bucket, code: Status.DATA_LOSS });
    expect((garbled as Error).cause).toBeInstanceOf(SyntaxError);
    const shapeless = await rejection(store.get('shapeless'));
    expect(shapeless).toBeInstanceOf(KvCorruptEntryError);
    expect((shapeless as KvCorruptEntryError).problems.length).toBeGreaterThan(0);
    await expect(store.get('misfiled')).rejects.toBeInstanceOf(KvCorruptEntryError);
  });

  it('refuses keys outside its key rule in every operation, before touching NATS', async () => {
    const store = await KvStore.open(nats.connection, counters());
    const counter = { id: 'a.b', count: 1 };
    for (const key of ['a.b', '', 'has space', 'UPPER', '*', 'x'.repeat(33)]) {
      const attempts = [store.get(key), store.put(key, counter), store.create(key, counter), store.update(key, counter, 1), store.delete(key)];
      for (const attempt of attempts) {
        const error = await rejection(attempt);
        expect(error).toBeInstanceOf(KvInvalidKeyError);
        expect((error as KvInvalidKeyError).code).toBe(Status.INVALID_ARGUMENT);
      }
    }
    expect(await store.isEmpty()).toBe(true);
  });

  it('creates a key only when it has no value, a deleted key included', async () => {
    const store = await KvStore.open(nats.connection, counters());
    const first = await store.create('visits', { id: 'visits', count: 1 });
    const taken = await rejection(store.create('visits', { id: 'visits', count: 2 }));
    expect(taken).toBeInstanceOf(KvRevisionConflictError);
    expect(taken).toMatchObject({ code: Status.ABORTED, key: 'visits', expectedRevision: 0 });
    expect(await store.get('visits')).toEqual({ value: { id: 'visits', count: 1 }, revision: first });

    await store.delete('visits');
    expect(await store.get('visits')).toBeUndefined();
    await store.create('visits', { id: 'visits', count: 5 });
    expect((await store.get('visits'))?.value.count).toBe(5);
  });

  it('lets only one of two writers on different connections update from the same revision', async () => {
    const spec = counters();
    const first = await KvStore.open(nats.connection, spec);
    const second = await KvStore.open(await connectNats(nats.url, { later }), spec);
    await first.put('visits', { id: 'visits', count: 1 });
    const [seenByFirst, seenBySecond] = await Promise.all([first.get('visits'), second.get('visits')]);
    expect(seenByFirst?.revision).toBe(seenBySecond?.revision);

    const outcomes = await Promise.allSettled([
      first.update('visits', { id: 'visits', count: seenByFirst!.value.count + 1 }, seenByFirst!.revision),
      second.update('visits', { id: 'visits', count: seenBySecond!.value.count + 10 }, seenBySecond!.revision),
    ]);
    const won = outcomes.filter((outcome) => outcome.status === 'fulfilled');
    const lost = outcomes.filter((outcome) => outcome.status === 'rejected');
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(1);
    expect(lost[0]!.reason).toBeInstanceOf(KvRevisionConflictError);
    expect(lost[0]!.reason).toMatchObject({ code: Status.ABORTED, expectedRevision: seenByFirst!.revision });

    // The loser reads again and retries from the winner's revision.
    const latest = await second.get('visits');
    expect(latest?.revision).toBe((won[0] as PromiseFulfilledResult<number>).value);
    await second.update('visits', { id: 'visits', count: latest!.value.count + 100 }, latest!.revision);
    expect([111, 102]).toContain((await first.get('visits'))?.value.count);
  });

  it('deletes at an expected revision only while the key is still there', async () => {
    const store = await KvStore.open(nats.connection, counters());
    const old = await store.put('visits', { id: 'visits', count: 1 });
    const current = await store.put('visits', { id: 'visits', count: 2 });
    await expect(store.delete('visits', old)).rejects.toBeInstanceOf(KvRevisionConflictError);
    expect((await store.get('visits'))?.value.count).toBe(2);
    await store.delete('visits', current);
    expect(await store.get('visits')).toBeUndefined();
  });

  it('lists the keys that have a value', async () => {
    const store = await KvStore.open(nats.connection, counters());
    expect(await store.keys()).toEqual([]);
    for (const id of ['a', 'b', 'c']) await store.put(id, { id, count: 0 });
    await store.delete('b');
    expect((await store.keys()).sort()).toEqual(['a', 'c']);
  });

  it('creates the bucket with its history, max age and description, and uses an existing bucket as it is', async () => {
    const spec = counters({ ttlMs: 90_000, history: 3, description: 'test counters' });
    await KvStore.open(nats.connection, spec);
    const jsm = await jetstreamManager(nats.connection);
    const created = await jsm.streams.info(`KV_${spec.bucket}`);
    expect(created.config).toMatchObject({ max_age: nanos(90_000), max_msgs_per_subject: 3, description: 'test counters', storage: 'file' });

    await KvStore.open(nats.connection, { ...spec, ttlMs: 5_000, history: 1 });
    const reopened = await jsm.streams.info(`KV_${spec.bucket}`);
    expect(reopened.config).toMatchObject({ max_age: nanos(90_000), max_msgs_per_subject: 3 });
  });

  it("loses an entry once the bucket's max age has passed", async () => {
    const store = await KvStore.open(nats.connection, counters({ ttlMs: 1_000 }));
    await store.put('short-lived', { id: 'short-lived', count: 1 });
    expect(await store.get('short-lived')).toBeDefined();
    const started = Date.now();
    await eventually('the entry to expire', async () => ((await store.get('short-lived')) === undefined ? true : undefined), 10_000);
    expect(Date.now() - started).toBeGreaterThan(500);
  });
});
