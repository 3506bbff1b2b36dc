import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Kvm } from '@nats-io/kv';
import { z } from 'zod';
import { ElexirionError, KvRejectedValueError, KvStore, KvView, type KvBucketSpec, type KvViewChange } from '@elexirion/kit';
import { connectNats, eventually, sleep, startNats, temporaryBucket, waitFor } from '@elexirion/testing';
import { cleanupAfterEach, natsForFile, recordingLogger } from '@elexirion/testing/fixtures';

interface Flag {
  name: string;
  enabled: boolean;
}

const nats = natsForFile();
const later = cleanupAfterEach();

/** Feature flags keyed by name, in a bucket of their own: the entry's name must equal its key. */
function flags(url = nats.url): KvBucketSpec<Flag> {
  return {
    bucket: temporaryBucket(url, 'flags', later),
    schema: z.object({ name: z.string().min(1), enabled: z.boolean() }),
    key: { pattern: /^[a-z-]{1,32}$/, description: '1-32 characters of a-z -' },
    check: (key, flag) => (flag.name === key ? undefined : `entry is for ${flag.name}`),
    history: 5,
  };
}

/** A view on a connection of its own, recording its log lines and the changes it reports. */
async function view(spec: KvBucketSpec<Flag>, options: { url?: string; reconnectForever?: boolean } = {}) {
  const { logger, logs } = recordingLogger();
  const changes: KvViewChange<Flag>[] = [];
  const created = new KvView<Flag>({ ...spec, logger, label: 'flag', onChange: (change) => changes.push(change) });
  const connection = await connectNats(options.url ?? nats.url, { reconnectForever: options.reconnectForever, later });
  await created.attach(connection);
  later(() => created.close());
  return { view: created, logs, changes, connection };
}

/** A plain writer on a connection of its own. */
async function writer(spec: KvBucketSpec<Flag>, url = nats.url) {
  const connection = await connectNats(url, { later });
  return { store: await KvStore.open(connection, spec), raw: await new Kvm(connection).open(spec.bucket) };
}

const flag = (name: string, enabled = true): Flag => ({ name, enabled });

describe('KvView', () => {
  it('attaches to an empty bucket and holds nothing', async () => {
    const { view: empty } = await view(flags());
    expect(empty.attached).toBe(true);
    expect(empty.entries()).toEqual([]);
    expect(empty.get('dark-mode')).toBeUndefined();
  });

  it('holds the values the bucket has when it attaches, without the deleted ones, before attach resolves', async () => {
    const spec = flags();
    const { store } = await writer(spec);
    const revision = await store.put('dark-mode', flag('dark-mode'));
    await store.put('beta', flag('beta', false));
    await store.put('gone', flag('gone'));
    await store.delete('gone');
    const { view: loaded } = await view(spec);
    expect(loaded.get('dark-mode')).toEqual(flag('dark-mode'));
    expect(loaded.revision('dark-mode')).toBe(revision);
    expect(loaded.get('gone')).toBeUndefined();
    expect(Object.fromEntries(loaded.entries())).toEqual({ 'dark-mode': flag('dark-mode'), beta: flag('beta', false) });
  });

  it('applies puts and deletes made elsewhere as they happen and tells its listener', async () => {
    const spec = flags();
    const { view: live, changes } = await view(spec);
    const { store } = await writer(spec);
    await store.put('beta', flag('beta'));
    await waitFor('the view to see beta', () => live.get('beta'));
    await store.put('beta', flag('beta', false));
    await waitFor('the view to see beta switched off', () => live.get('beta')?.enabled === false);
    await store.delete('beta');
    await waitFor('the view to drop beta', () => live.get('beta') === undefined);
    expect(changes.map(({ key, value, previous }) => ({ key, value, previous }))).toEqual([
      { key: 'beta', value: flag('beta'), previous: undefined },
      { key: 'beta', value: flag('beta', false), previous: flag('beta') },
      { key: 'beta', value: undefined, previous: flag('beta', false) },
    ]);
  });

  it('hands out frozen values, so one reader cannot change what another reads', async () => {
    const spec = flags();
    const { view: live } = await view(spec);
    await live.put('beta', flag('beta'));
    expect(() => {
      (live.get('beta') as Flag).enabled = false;
    }).toThrow(TypeError);
    expect(live.get('beta')?.enabled).toBe(true);
  });

  it('ignores an invalid entry, logs it once with its problems, and keeps the last good value for its key', async () => {
    const spec = flags();
    const { view: live, logs } = await view(spec);
    const { store, raw } = await writer(spec);
    await store.put('beta', flag('beta'));
    await waitFor('the view to see beta', () => live.get('beta'));

    await raw.put('beta', 'not json');
    await raw.put('beta', JSON.stringify({ name: 'beta', enabled: 'yes' }));
    await raw.put('beta', JSON.stringify(flag('alpha')));
    await raw.put('BAD-KEY', JSON.stringify(flag('BAD-KEY')));
    // Entries arrive in order: once the marker is in, the bad ones have been handled.
    await store.put('marker', flag('marker'));
    await waitFor('the view to see the marker', () => live.get('marker'));

    expect(live.get('beta')).toEqual(flag('beta'));
    expect(live.get('BAD-KEY')).toBeUndefined();
    const ignored = logs.filter((line) => line.level === 'warn' && line.message === 'ignoring invalid flag entry');
    expect(ignored.map((line) => line.fields.key)).toEqual(['beta', 'beta', 'beta', 'BAD-KEY']);
    for (const line of ignored) expect(line.fields.problems).toEqual(expect.arrayContaining([expect.any(String)]));
    expect(ignored[2]!.fields.problems).toEqual(['entry is for alpha']);

    // A view that starts now ignores the bad current value too: it has nothing to keep.
    const { view: late } = await view(spec);
    expect(late.get('beta')).toBeUndefined();
    expect(late.get('marker')).toEqual(flag('marker'));
  });

  it('never lets an older revision of a key replace a newer one', async () => {
    const spec = flags();
    const { view: live, changes } = await view(spec);
    const { store } = await writer(spec);
    const older = await store.put('beta', flag('beta', false));
    const newer = await store.put('beta', flag('beta', true));
    await waitFor('the view to reach the newer revision', () => live.revision('beta') === newer);

    live.applyWrite('beta', flag('beta', false), older);
    expect(live.get('beta')).toEqual(flag('beta', true));
    expect(live.revision('beta')).toBe(newer);

    // Its own write shows at once; the watcher's echo of the same revision is not a second change.
    const own = await live.put('beta', flag('beta', false));
    expect(live.get('beta')).toEqual(flag('beta', false));
    await store.put('marker', flag('marker'));
    await waitFor('the view to see the marker', () => live.get('marker'));
    expect(changes.filter((change) => change.revision === own)).toHaveLength(1);
  });

  it('refuses to write an invalid value through the view', async () => {
    const spec = flags();
    const { view: live } = await view(spec);
    await expect(live.put('beta', flag('alpha'))).rejects.toBeInstanceOf(KvRejectedValueError);
    expect(live.get('beta')).toBeUndefined();
    expect(await (await writer(spec)).store.isEmpty()).toBe(true);
  });

  it('keeps serving the last known values while NATS is down and follows a put made after it restarts', async () => {
    const storeDir = mkdtempSync(join(tmpdir(), 'elexirion-kv-view-'));
    later(async () => rmSync(storeDir, { recursive: true, force: true }));
    let server = await startNats(undefined, storeDir);
    later(() => server.stop());
    const spec = flags(server.url);

    const { view: live, logs } = await view(spec, { url: server.url, reconnectForever: true });
    await live.put('beta', flag('beta'));
    const { raw } = await writer(spec, server.url);
    await raw.put('broken', 'not json');
    await waitFor('the view to ignore the broken entry', () => logs.some((line) => line.fields.key === 'broken'));

    await server.stop();
    await waitFor('the view to notice NATS is gone', () => logs.some((line) => line.message.includes('lost NATS')));
    for (let check = 0; check < 5; check++) {
      expect(live.get('beta')).toEqual(flag('beta'));
      await sleep(100);
    }
    expect(live.attached).toBe(true);

    server = await startNats(server.port, storeDir);
    await waitFor('the view to load the bucket again', () => logs.some((line) => line.message === 'flag view reloaded'), 15_000);
    const { store } = await writer(spec, server.url);
    await store.put('beta', flag('beta', false));
    await eventually('the view to see the put made after the restart', async () => (live.get('beta')?.enabled === false ? true : undefined), 15_000);
    // Loading the bucket again met the broken entry again: it was logged only the first time.
    expect(logs.filter((line) => line.fields.key === 'broken')).toHaveLength(1);
  });

  it('stops following the bucket once closed, and refuses writes', async () => {
    const spec = flags();
    const { view: closed, changes } = await view(spec);
    const { view: open } = await view(spec);
    await closed.put('beta', flag('beta'));
    await waitFor('the other view to see beta', () => open.get('beta'));
    const seen = changes.length;

    await closed.close();
    expect(closed.attached).toBe(false);
    const { store } = await writer(spec);
    await store.put('beta', flag('beta', false));
    await store.put('gamma', flag('gamma'));
    await waitFor('the open view to see both writes', () => open.get('gamma') && open.get('beta')?.enabled === false);

    expect(closed.get('beta')).toEqual(flag('beta'));
    expect(closed.get('gamma')).toBeUndefined();
    expect(changes).toHaveLength(seen);
    await expect(closed.put('beta', flag('beta'))).rejects.toBeInstanceOf(ElexirionError);
  });
});
