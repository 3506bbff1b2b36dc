import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Kvm } from '@nats-io/kv';
import { connectNats, eventually, startNats, temporaryBucket, uniqueBucketName, waitFor } from '@elexirion/testing';
import { cleanupAfterEach, natsForFile, recordingLogger } from '@elexirion/testing/fixtures';
import type { LegacyPromptEntry } from '../src/state/prompt-entry.js';
import { InvalidPromptEntryError, PromptRegistry, type ServingVersion } from '../src/state/prompt-registry.js';

/** A version in the shape before issue 15 (a weight each), which still loads. */
type PromptVersion = LegacyPromptEntry['versions'][number];

const nats = natsForFile();
const later = cleanupAfterEach();

/** A registry with its own connection and a log it records. */
async function registry(url: string, bucket: string, options: { reconnectForever?: boolean } = {}) {
  const { logger, logs } = recordingLogger();
  const instance = new PromptRegistry({ logger, bucket });
  const connection = await connectNats(url, { ...options, later });
  await instance.attach(connection);
  later(() => instance.close());
  return { registry: instance, connection, logs };
}

/** A bucket of its own for one test, destroyed afterwards. */
function bucketName(): string {
  return temporaryBucket(nats.url, 'prompts', later);
}

function version(id: string, weight: number, prompt = `Prompt ${id}: {{ input }}`): PromptVersion {
  return { id, weight, prompt, createdAt: new Date().toISOString(), source: 'test' };
}

function tally(pick: () => ServingVersion | undefined, times: number): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i < times; i++) {
    const id = pick()?.id ?? 'none';
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
}

describe('PromptRegistry', () => {
  it('selects nothing before anything is published', async () => {
    const { registry: reader } = await registry(nats.url, bucketName());
    expect(reader.attached).toBe(true);
    expect(reader.select('summarize', 'extract')).toBeUndefined();
    expect(reader.select('summarize', 'extract', 'session-1')).toBeUndefined();
    expect(reader.entries()).toEqual([]);
  });

  it('sees a version published by another instance on another connection through its watch', async () => {
    const bucket = bucketName();
    const { registry: reader } = await registry(nats.url, bucket);
    const { registry: writer } = await registry(nats.url, bucket);
    await writer.publish({ pipeline: 'summarize', step: 'extract', versions: [version('v1', 1)] });
    const chosen = await eventually('the reader to see v1', async () => reader.select('summarize', 'extract'));
    expect(chosen).toMatchObject({ id: 'v1', prompt: 'Prompt v1: {{ input }}' });
    expect(reader.entries()).toEqual([expect.objectContaining({ pipeline: 'summarize', step: 'extract', updatedAt: expect.any(String) })]);
  });

  it('loads the entries that exist when it attaches', async () => {
    const bucket = bucketName();
    const { registry: writer } = await registry(nats.url, bucket);
    await writer.publish({ pipeline: 'summarize', step: 'extract', versions: [version('v1', 1)] });
    await writer.publish({ pipeline: 'summarize', step: 'write', versions: [version('w1', 1)] });
    await writer.publish({ pipeline: 'triage', step: 'classify', versions: [version('c1', 1)] });
    await writer.remove('summarize', 'write');
    const { registry: late } = await registry(nats.url, bucket);
    // attach resolves only after the snapshot is in memory: no waiting needed.
    expect(late.select('summarize', 'extract')?.id).toBe('v1');
    expect(late.select('triage', 'classify')?.id).toBe('c1');
    expect(late.select('summarize', 'write')).toBeUndefined();
    expect(late.entries()).toHaveLength(2);
  });

  it('chooses versions in proportion to their weights without a session key', async () => {
    const { registry: reader } = await registry(nats.url, bucketName());
    await reader.publish({ pipeline: 'summarize', step: 'extract', versions: [version('A', 3), version('B', 1)] });
    const counts = tally(() => reader.select('summarize', 'extract'), 4000);
    const shareOfA = (counts.get('A') ?? 0) / 4000;
    expect(shareOfA).toBeGreaterThan(0.7);
    expect(shareOfA).toBeLessThan(0.8);
    expect((counts.get('A') ?? 0) + (counts.get('B') ?? 0)).toBe(4000);
  });

  it('never chooses a version of weight 0, and chooses nothing when every weight is 0', async () => {
    const { registry: reader } = await registry(nats.url, bucketName());
    await reader.publish({ pipeline: 'summarize', step: 'extract', versions: [version('A', 1), version('off', 0), version('B', 1)] });
    const random = tally(() => reader.select('summarize', 'extract'), 2000);
    let session = 0;
    const sticky = tally(() => reader.select('summarize', 'extract', `session-${session++}`), 2000);
    expect(random.get('off')).toBeUndefined();
    expect(sticky.get('off')).toBeUndefined();
    expect(random.get('A')).toBeGreaterThan(0);
    expect(random.get('B')).toBeGreaterThan(0);

    await reader.publish({ pipeline: 'summarize', step: 'extract', versions: [version('off', 0)] });
    expect(reader.select('summarize', 'extract')).toBeUndefined();
    expect(reader.select('summarize', 'extract', 'session-1')).toBeUndefined();
  });

  it('gives a session key the same version every time, on every replica, and spreads session keys over versions', async () => {
    const bucket = bucketName();
    const { registry: first } = await registry(nats.url, bucket);
    const { registry: second } = await registry(nats.url, bucket);
    await first.publish({ pipeline: 'summarize', step: 'extract', versions: [version('A', 1), version('B', 1), version('C', 2)] });
    await eventually('the second replica to see the entry', async () => second.select('summarize', 'extract'));

    for (let s = 0; s < 50; s++) {
      const key = `session-${s}`;
      const chosen = first.select('summarize', 'extract', key)?.id;
      for (let i = 0; i < 20; i++) expect(first.select('summarize', 'extract', key)?.id).toBe(chosen);
      expect(second.select('summarize', 'extract', key)?.id).toBe(chosen);
    }

    let session = 0;
    const spread = tally(() => first.select('summarize', 'extract', `user-${session++}`), 1000);
    expect(spread.get('A')).toBeGreaterThan(150);
    expect(spread.get('B')).toBeGreaterThan(150);
    expect(spread.get('C')).toBeGreaterThan(400);
    // The hash covers the step: a session does not land on the same bucket of every step.
    await first.publish({ pipeline: 'summarize', step: 'write', versions: [version('A', 1), version('B', 1), version('C', 2)] });
    const differs = Array.from({ length: 200 }, (_, s) => `user-${s}`).some(
      (key) => first.select('summarize', 'extract', key)?.id !== first.select('summarize', 'write', key)?.id,
    );
    expect(differs).toBe(true);
  });

  it('ignores a bad entry put straight into the bucket and keeps the previous good value for that key', async () => {
    const bucket = bucketName();
    const { registry: reader, logs } = await registry(nats.url, bucket);
    const { registry: writer, connection } = await registry(nats.url, bucket);
    await writer.publish({ pipeline: 'summarize', step: 'extract', versions: [version('good', 1)] });
    await eventually('the reader to see the good version', async () => reader.select('summarize', 'extract'));

    const kv = await new Kvm(connection).open(bucket);
    await kv.put('summarize.extract', 'not json');
    await kv.put('summarize.extract', JSON.stringify({ pipeline: 'summarize', step: 'extract', versions: [{ id: 'neg', weight: -1, prompt: 'x' }], updatedAt: 'now' }));
    await kv.put('summarize.extract', JSON.stringify({ pipeline: 'other', step: 'extract', versions: [version('misfiled', 1)], updatedAt: 'now' }));
    await kv.put('summarize.orphan', '{"pipeline":');
    // Entries arrive in order: once this one is in, the bad ones have been handled.
    await writer.publish({ pipeline: 'summarize', step: 'marker', versions: [version('m', 1)] });
    await eventually('the reader to see the marker', async () => reader.select('summarize', 'marker'));

    expect(reader.select('summarize', 'extract')?.id).toBe('good');
    expect(reader.select('summarize', 'orphan')).toBeUndefined();
    const rejected = logs.filter((line) => line.level === 'warn' && line.message === 'ignoring invalid prompt entry');
    expect(rejected.map((line) => line.fields.key)).toEqual(['summarize.extract', 'summarize.extract', 'summarize.extract', 'summarize.orphan']);

    // A replica that starts now also ignores the bad current value (it has nothing to keep).
    const { registry: late } = await registry(nats.url, bucket);
    expect(late.select('summarize', 'extract')).toBeUndefined();
    expect(late.select('summarize', 'marker')?.id).toBe('m');
  });

  it('selects nothing for a step after it is removed', async () => {
    const bucket = bucketName();
    const { registry: reader } = await registry(nats.url, bucket);
    const { registry: writer } = await registry(nats.url, bucket);
    await writer.publish({ pipeline: 'summarize', step: 'extract', versions: [version('v1', 1)] });
    await writer.publish({ pipeline: 'summarize', step: 'write', versions: [version('w1', 1)] });
    await eventually('the reader to see both entries', async () => (reader.entries().length === 2 ? true : undefined));
    await writer.remove('summarize', 'extract');
    expect(writer.select('summarize', 'extract')).toBeUndefined();
    await waitFor('the reader to drop the removed entry', () => reader.select('summarize', 'extract') === undefined);
    expect(reader.select('summarize', 'write')?.id).toBe('w1');
  });

  it('rejects invalid entries and names in publish with a clear error', async () => {
    const { registry: writer } = await registry(nats.url, bucketName());
    const cases: [Parameters<PromptRegistry['publish']>[0], RegExp][] = [
      [{ pipeline: 'Summarize', step: 'extract', versions: [version('v1', 1)] }, /pipeline "Summarize" must match/],
      [{ pipeline: 'summarize', step: 'ex.tract', versions: [version('v1', 1)] }, /step "ex.tract" must match/],
      [{ pipeline: 'summarize', step: 'extract', versions: [] }, /at least one version/],
      [{ pipeline: 'summarize', step: 'extract', versions: [version('v1', 1), version('v1', 2)] }, /duplicate version id "v1"/],
      [{ pipeline: 'summarize', step: 'extract', versions: [version('v1', -1)] }, /versions\.0\.weight: must be >= 0/],
      [{ pipeline: 'summarize', step: 'extract', versions: [version('v1', 1, '  ')] }, /versions\.0\.prompt: must not be empty/],
    ];
    for (const [entry, message] of cases) {
      const error = await writer.publish(entry).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(InvalidPromptEntryError);
      expect((error as Error).message).toMatch(message);
    }
    await expect(writer.remove('summarize', '1st')).rejects.toThrow(InvalidPromptEntryError);
    expect(writer.entries()).toEqual([]);
  });

  it('keeps serving the last known good version while NATS is down and follows new publishes after it restarts', async () => {
    const store = mkdtempSync(join(tmpdir(), 'elexirion-prompts-'));
    later(async () => rmSync(store, { recursive: true, force: true }));
    let server = await startNats(undefined, store);
    later(() => server.stop());
    const bucket = uniqueBucketName('prompts');

    const { registry: reader, logs } = await registry(server.url, bucket, { reconnectForever: true });
    await reader.publish({ pipeline: 'summarize', step: 'extract', versions: [version('v1', 1)] });
    expect(reader.select('summarize', 'extract', 'session-1')?.id).toBe('v1');

    await server.stop();
    await waitFor('the registry to notice NATS is gone', () => logs.some((line) => line.message.includes('lost NATS')));
    for (let i = 0; i < 5; i++) {
      expect(reader.select('summarize', 'extract')?.id).toBe('v1');
      expect(reader.select('summarize', 'extract', 'session-1')?.id).toBe('v1');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(reader.attached).toBe(true);

    server = await startNats(server.port, store);
    const { registry: writer } = await registry(server.url, bucket);
    // The bucket survived the restart.
    expect(writer.select('summarize', 'extract')?.id).toBe('v1');
    await writer.publish({ pipeline: 'summarize', step: 'extract', versions: [version('v2', 1)] });
    await eventually('the reader to see v2 after NATS restarted', async () => (reader.select('summarize', 'extract')?.id === 'v2' ? true : undefined), 15_000);
  });

  it("re-reads the bucket after a reconnect when the server no longer has the watcher's consumer", async () => {
    const store = mkdtempSync(join(tmpdir(), 'elexirion-prompts-'));
    later(async () => rmSync(store, { recursive: true, force: true }));
    let server = await startNats(undefined, store);
    later(() => server.stop());
    const bucket = uniqueBucketName('prompts');

    const { registry: reader } = await registry(server.url, bucket, { reconnectForever: true });
    await reader.publish({ pipeline: 'summarize', step: 'extract', versions: [version('v1', 1)] });
    await reader.publish({ pipeline: 'summarize', step: 'write', versions: [version('w1', 1)] });
    await server.stop();

    // As after a failover to a node without it: the watcher's consumer is gone from the store.
    const consumers = join(store, 'jetstream', '$G', 'streams', `KV_${bucket}`, 'obs');
    expect(existsSync(consumers) && readdirSync(consumers).length).toBeGreaterThan(0);
    rmSync(consumers, { recursive: true, force: true });

    server = await startNats(server.port, store);
    const { registry: writer, connection } = await registry(server.url, bucket);
    // Written behind the reader's back while it reconnects: a raw delete and a new version.
    const kv = await new Kvm(connection).open(bucket);
    await kv.delete('summarize.write');
    await writer.publish({ pipeline: 'summarize', step: 'extract', versions: [version('v2', 1)] });
    await eventually('the reader to see v2 without its old consumer', async () => (reader.select('summarize', 'extract')?.id === 'v2' ? true : undefined), 15_000);
    await waitFor('the reader to drop the deleted entry', () => reader.select('summarize', 'write') === undefined);
  });
});
