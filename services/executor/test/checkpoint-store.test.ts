import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { nanos } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { connectNats, temporaryBucket } from '@elexirion/testing';
import { cleanupAfterEach, natsForFile } from '@elexirion/testing/fixtures';
import {
  CheckpointCorruptError,
  CheckpointStore,
  DEFAULT_CHECKPOINT_BUCKET,
  DEFAULT_CHECKPOINT_TTL_MS,
  type RunCheckpoint,
} from '../src/state/checkpoint-store.js';

const nats = natsForFile({ connect: true });
const later = cleanupAfterEach();

/** A bucket of its own for one test, destroyed afterwards. */
function bucketName(): string {
  return temporaryBucket(nats.connection, 'checkpoints', later);
}

function checkpoint(overrides: Partial<RunCheckpoint> = {}): RunCheckpoint {
  const now = new Date().toISOString();
  return {
    runId: randomUUID(),
    jobId: randomUUID(),
    pipeline: 'summarize',
    source: { kind: 'named', name: 'summarize' },
    inputs: { text: 'a long text' },
    promptOverrides: {},
    sessionKey: 'session-1',
    steps: [
      {
        name: 'extract',
        type: 'llm',
        status: 'completed',
        output: '{"facts":["a","b"]}',
        json: { facts: ['a', 'b'] },
        provider: 'mock',
        model: 'mock-1',
        usage: { inputTokens: 120, outputTokens: 30, costUsd: 0.0012 },
        attempts: 1,
        durationMs: 85,
        promptVersion: 'yaml',
      },
    ],
    vars: { extract: { facts: ['a', 'b'] }, count: 2 },
    status: 'running',
    startedAt: now,
    updatedAt: now,
    ...overrides,
  };
}

describe('CheckpointStore', () => {
  it('loads back exactly the checkpoint that was saved', async () => {
    const store = await CheckpointStore.open(nats.connection, { bucket: bucketName() });
    const saved = checkpoint({ source: { kind: 'inline', yaml: 'name: x\nsteps: []\n' }, error: undefined });
    await store.save(saved);
    expect(await store.load(saved.runId)).toEqual(saved);
  });

  it('loads undefined for a run id that was never saved', async () => {
    const store = await CheckpointStore.open(nats.connection, { bucket: bucketName() });
    await store.save(checkpoint());
    expect(await store.load(randomUUID())).toBeUndefined();
  });

  it('keeps only the latest save of a run', async () => {
    const bucket = bucketName();
    const store = await CheckpointStore.open(nats.connection, { bucket });
    const first = checkpoint();
    const second: RunCheckpoint = {
      ...first,
      steps: [...first.steps, { ...first.steps[0]!, name: 'write', output: 'done', json: undefined }],
      status: 'completed',
      updatedAt: new Date(Date.now() + 1000).toISOString(),
    };
    delete second.steps[1]!.json;
    await store.save(first);
    await store.save(second);
    expect(await store.load(first.runId)).toEqual(second);
    const kv = await new Kvm(nats.connection).open(bucket);
    const history = await kv.history({ key: first.runId });
    const revisions: number[] = [];
    for await (const entry of history) revisions.push(entry.revision);
    expect(revisions).toHaveLength(1);
  });

  it('lets a second replica on another connection load what the first saved', async () => {
    const bucket = bucketName();
    const first = await CheckpointStore.open(nats.connection, { bucket });
    const second = await CheckpointStore.open(await connectNats(nats.url, { later }), { bucket });
    const saved = checkpoint();
    await first.save(saved);
    expect(await second.load(saved.runId)).toEqual(saved);
    await second.save({ ...saved, status: 'failed', error: 'provider_error: upstream 503' });
    expect(await first.load(saved.runId)).toMatchObject({ status: 'failed', error: 'provider_error: upstream 503' });
  });

  it('throws CheckpointCorruptError naming the run when the entry is not JSON', async () => {
    const bucket = bucketName();
    const store = await CheckpointStore.open(nats.connection, { bucket });
    const runId = randomUUID();
    const kv = await new Kvm(nats.connection).open(bucket);
    await kv.put(runId, 'not json');
    const error = await store.load(runId).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(CheckpointCorruptError);
    expect((error as CheckpointCorruptError).runId).toBe(runId);
    expect((error as Error).message).toContain(runId);
  });

  it('throws CheckpointCorruptError when the JSON is not a checkpoint or belongs to another run', async () => {
    const bucket = bucketName();
    const store = await CheckpointStore.open(nats.connection, { bucket });
    const kv = await new Kvm(nats.connection).open(bucket);
    const foreign = randomUUID();
    await kv.put(foreign, JSON.stringify({ hello: 'world' }));
    await expect(store.load(foreign)).rejects.toThrow(CheckpointCorruptError);
    const misfiled = randomUUID();
    await kv.put(misfiled, JSON.stringify(checkpoint()));
    await expect(store.load(misfiled)).rejects.toThrow(/belongs to run/);
  });

  it('loads undefined after delete', async () => {
    const store = await CheckpointStore.open(nats.connection, { bucket: bucketName() });
    const saved = checkpoint();
    await store.save(saved);
    await store.delete(saved.runId);
    expect(await store.load(saved.runId)).toBeUndefined();
  });

  it('creates the bucket with the TTL as the stream max age, history 1 and file storage', async () => {
    const jsm = await jetstreamManager(nats.connection);
    const bucket = bucketName();
    await CheckpointStore.open(nats.connection, { bucket, ttlMs: 90_000 });
    const custom = await jsm.streams.info(`KV_${bucket}`);
    expect(custom.config.max_age).toBe(nanos(90_000));
    expect(custom.config.max_msgs_per_subject).toBe(1);
    expect(custom.config.storage).toBe('file');

    later(() => jsm.streams.delete(`KV_${DEFAULT_CHECKPOINT_BUCKET}`).catch(() => undefined));
    await CheckpointStore.open(nats.connection);
    const defaults = await jsm.streams.info(`KV_${DEFAULT_CHECKPOINT_BUCKET}`);
    expect(defaults.config.max_age).toBe(nanos(DEFAULT_CHECKPOINT_TTL_MS));
    expect(DEFAULT_CHECKPOINT_TTL_MS).toBe(7 * 24 * 60 * 60 * 1000);
  });

  it('rejects run ids that are not a single KV token', async () => {
    const store = await CheckpointStore.open(nats.connection, { bucket: bucketName() });
    await expect(store.load('a.b')).rejects.toThrow(/invalid run id/);
    await expect(store.save(checkpoint({ runId: 'x y' }))).rejects.toThrow(/invalid run id/);
  });
});
