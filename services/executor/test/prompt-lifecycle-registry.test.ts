// The registry's issue-15 model against a real nats-server: rollouts over versions and the YAML
// prompt, sticky per session key; changes by compare-and-set from two replicas at once; invalid
// entries of the new shape ignored; and the history stream keeping every change.
import { describe, expect, it } from 'vitest';
import { Kvm } from '@nats-io/kv';
import { ElexirionError, ServerError, Status } from '@elexirion/kit';
import { connectNats, eventually, temporaryBucket } from '@elexirion/testing';
import { cleanupAfterEach, natsForFile, recordingLogger } from '@elexirion/testing/fixtures';
import { emptyEntry, promoteVersion, publishVersion, rollbackPrompt, setRollout, type ChangeActor } from '../src/state/prompt-changes.js';
import type { PromptEntry } from '../src/state/prompt-entry.js';
import { readHistory } from '../src/state/prompt-history.js';
import { PromptRegistry, type ServingVersion } from '../src/state/prompt-registry.js';

const nats = natsForFile();
const later = cleanupAfterEach();

async function registry(bucket: string) {
  const { logger, logs } = recordingLogger();
  const instance = new PromptRegistry({ logger, bucket });
  const connection = await connectNats(nats.url, { later });
  await instance.attach(connection);
  later(() => instance.close());
  return { registry: instance, connection, logs };
}

const actor = (by = 'alice', admin = false): ChangeActor => ({ by, admin, guard: by === 'monitor', now: new Date().toISOString() });
const template = (prompt: string) => ({ prompt });
const publish = (id: string, weight = 0) => (current: PromptEntry | undefined) =>
  publishVersion(current ?? emptyEntry('summarize', 'extract', actor().now), { versionId: id, template: template(`${id}: {{inputs.text}}`), source: 'test', description: '', scores: {}, rolloutWeight: weight, guard: undefined, reason: `publish ${id}` }, actor()).entry;

function tally(pick: () => ServingVersion | undefined, times: number): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i < times; i++) {
    const id = pick()?.id ?? 'yaml';
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
}

describe('the prompt registry (issue 15 model)', () => {
  it('serves the rollout: shares roughly as weighted, the yaml share as the YAML prompt, sticky per session key', async () => {
    const { registry: prompts } = await registry(temporaryBucket(nats.url, 'prompts', later));
    await prompts.change('summarize', 'extract', 0, publish('v1'));
    await prompts.change('summarize', 'extract', 0, publish('v2'));
    await prompts.change('summarize', 'extract', 0, (current) => setRollout(current!, { weights: { v1: 0.5, v2: 0.3, yaml: 0.2 }, candidate: '', guard: undefined, baselineProtected: undefined, reason: 'split' }, actor()));
    const counts = tally(() => prompts.select('summarize', 'extract'), 6000);
    expect((counts.get('v1') ?? 0) / 6000).toBeCloseTo(0.5, 1);
    expect((counts.get('v2') ?? 0) / 6000).toBeCloseTo(0.3, 1);
    expect((counts.get('yaml') ?? 0) / 6000).toBeCloseTo(0.2, 1);
    // The version served carries its template.
    expect(prompts.select('summarize', 'extract', 'any')?.prompt ?? 'yaml').toMatch(/^(v1|v2): \{\{inputs\.text\}\}$|^yaml$/);

    let session = 0;
    const sticky = tally(() => prompts.select('summarize', 'extract', `user-${session++}`), 3000);
    expect((sticky.get('v1') ?? 0) / 3000).toBeCloseTo(0.5, 1);
    expect((sticky.get('yaml') ?? 0) / 3000).toBeCloseTo(0.2, 1);
    for (let s = 0; s < 30; s++) {
      const chosen = prompts.select('summarize', 'extract', `user-${s}`)?.id;
      for (let i = 0; i < 10; i++) expect(prompts.select('summarize', 'extract', `user-${s}`)?.id).toBe(chosen);
    }

    // Promoted: every run on it; rolled back to yaml: every run on the YAML prompt.
    await prompts.change('summarize', 'extract', 0, (current) => promoteVersion(current!, 'v2', 'won', actor()));
    expect(tally(() => prompts.select('summarize', 'extract'), 200)).toEqual(new Map([['v2', 200]]));
    await prompts.change('summarize', 'extract', 0, (current) => rollbackPrompt(current!, 'yaml', 'back', actor()));
    expect(prompts.select('summarize', 'extract')).toBeUndefined();
    // Published without traffic: still the baseline.
    await prompts.change('summarize', 'extract', 0, publish('v3'));
    expect(prompts.select('summarize', 'extract', 'user-1')).toBeUndefined();
  });

  it('refuses a stale expected revision with the current one, and lands concurrent changes from two replicas', async () => {
    const bucket = temporaryBucket(nats.url, 'prompts', later);
    const { registry: first } = await registry(bucket);
    const { registry: second } = await registry(bucket);
    const created = await first.change('summarize', 'extract', 0, publish('base'));
    await first.change('summarize', 'extract', created.revision, publish('next'));
    const stale = await second.change('summarize', 'extract', created.revision, publish('late')).catch((error: unknown) => error);
    expect(stale).toBeInstanceOf(ServerError);
    expect((stale as ServerError).code).toBe(Status.ABORTED);
    expect((stale as ServerError).details).toMatch(new RegExp(`expected_revision: prompt entry summarize.extract is at revision \\d+, not ${created.revision}`));

    // 15 changes on each replica at once, none with an expected revision: every one lands.
    const ids = Array.from({ length: 30 }, (_, index) => `c${index}`);
    await Promise.all(ids.map((id, index) => (index % 2 === 0 ? first : second).change('summarize', 'extract', 0, publish(id))));
    const stored = await eventually('both replicas to see all 32 versions', async () => {
      const a = first.get('summarize', 'extract');
      const b = second.get('summarize', 'extract');
      return a?.entry.versions.length === 32 && b?.revision === a.revision ? a : undefined;
    });
    expect(new Set(stored.entry.versions.map((version) => version.id))).toEqual(new Set(['base', 'next', ...ids]));
  });

  it('ignores a stored entry whose rollout names a missing version, keeping the last good one', async () => {
    const bucket = temporaryBucket(nats.url, 'prompts', later);
    const { registry: prompts, connection, logs } = await registry(bucket);
    await prompts.change('summarize', 'extract', 0, publish('good'));
    await prompts.change('summarize', 'extract', 0, (current) => promoteVersion(current!, 'good', '', actor()));
    const bad: PromptEntry = { ...prompts.get('summarize', 'extract')!.entry, rollout: { baseline: 'ghost', weights: { ghost: 1 }, candidate: '', baselineProtected: false } };
    const kv = await new Kvm(connection).open(bucket);
    await kv.put('summarize.extract', JSON.stringify(bad));
    await eventually('the bad entry logged', async () => (logs.some((line) => line.message === 'ignoring invalid prompt entry') ? true : undefined));
    expect(prompts.select('summarize', 'extract')?.id).toBe('good');
    // A change reads the stored value: a corrupt one is not built upon.
    const refused = await prompts.change('summarize', 'extract', 0, publish('more')).catch((error: unknown) => error);
    expect((refused as ElexirionError).code).toBe(Status.FAILED_PRECONDITION);
  });

  it('keeps every change in the history stream, newest first, paged, with the revision each wrote', async () => {
    const bucket = temporaryBucket(nats.url, 'prompts', later);
    const { registry: prompts, connection } = await registry(bucket);
    const revisions: number[] = [];
    // More changes than the bucket keeps per key (5): the history keeps them all.
    for (let index = 0; index < 8; index++) revisions.push((await prompts.change('summarize', 'extract', 0, publish(`h${index}`))).revision);
    revisions.push((await prompts.change('summarize', 'other', 0, (current) => publishVersion(current ?? emptyEntry('summarize', 'other', actor().now), { versionId: 'o1', template: template('x'), source: '', description: '', scores: {}, rolloutWeight: 0, guard: undefined, reason: '' }, actor('bob')).entry)).revision);
    const options = { stream: prompts.historyStream, bucket, pipeline: 'summarize', step: 'extract', pageSize: 5, before: undefined };
    const first = await eventually('the history to have the 8 changes', async () => {
      const page = await readHistory(connection, options);
      return page.items[0]?.revision === revisions[7] ? page : undefined;
    });
    expect(first.items.map((item) => item.change.version)).toEqual(['h7', 'h6', 'h5', 'h4', 'h3']);
    expect(first.items.map((item) => item.revision)).toEqual([revisions[7], revisions[6], revisions[5], revisions[4], revisions[3]]);
    expect(first.items[0]!.change).toMatchObject({ action: 'publish', by: 'alice', reason: 'publish h7' });
    const second = await readHistory(connection, { ...options, before: first.nextBefore });
    expect(second.items.map((item) => item.change.version)).toEqual(['h2', 'h1', 'h0']);
    expect(second.nextBefore).toBeUndefined();
    // Every step of the pipeline.
    const all = await readHistory(connection, { ...options, step: '', pageSize: 100 });
    expect(all.items.map((item) => `${item.step}:${item.change.version}`).slice(0, 2)).toEqual(['other:o1', 'extract:h7']);
    expect(all.items).toHaveLength(9);
  });
});
