// How the executor keeps the provider's model list (ListModels) so runs do not wait on it: one
// call shared by concurrent callers, kept while fresh, refreshed in the background when old,
// asked for again to re-check a pipeline naming something it lacks, and no list (runs go on
// unchecked) while the provider cannot answer. The provider here is a function; the integration
// tests (test/integration/validation.test.ts) use the real one.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ClientError, Status, proto, type Logger } from '@elexirion/kit';
import { ProviderModels } from '@elexirion/executor';
import { gate } from '@elexirion/testing';

function listing(...aliases: string[]): proto.ListModelsResponse {
  return proto.ListModelsResponse.create({ aliases: aliases.map((name) => ({ name, targets: ['mock/mock'], presets: ['chat'] })), providers: [{ name: 'mock' }] });
}

function setUp(answer: () => Promise<proto.ListModelsResponse>) {
  const calls: number[] = [];
  const logs: { level: string; message: string }[] = [];
  const provider = {
    listModels: () => {
      calls.push(Date.now());
      return answer();
    },
  };
  const logger = {
    warn: (_fields: unknown, message: string) => logs.push({ level: 'warn', message }),
    info: (message: string) => logs.push({ level: 'info', message }),
  } as unknown as Logger;
  return { models: new ProviderModels(provider as never, logger), calls, logs };
}

const signal = new AbortController().signal;

afterEach(() => {
  vi.useRealTimers();
});

describe('ProviderModels', () => {
  it('asks once for concurrent callers and keeps the answer', async () => {
    const release = gate();
    const { models, calls } = setUp(async () => {
      await release.promise;
      return listing('claude', 'gemini');
    });
    const waiting = Promise.all([models.get(signal), models.get(signal), models.get(signal)]);
    release.open();
    const [first, second, third] = await waiting;
    expect([...first!.aliases.keys()]).toEqual(['claude', 'gemini']);
    expect(second).toBe(first);
    expect(third).toBe(first);
    expect(await models.get(signal)).toBe(first);
    expect(calls).toHaveLength(1);
  });

  it('answers from an old list at once and refreshes it in the background', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    let version = 0;
    const { models, calls } = setUp(async () => listing(`alias_${(version += 1)}`));
    const first = await models.get(signal);
    vi.setSystemTime(Date.now() + 31_000);
    expect(await models.get(signal)).toBe(first);
    await vi.waitFor(() => expect(calls).toHaveLength(2));
    const refreshed = await vi.waitFor(async () => {
      const current = await models.get(signal);
      expect(current).not.toBe(first);
      return current;
    });
    expect([...refreshed!.aliases.keys()]).toEqual(['alias_2']);
  });

  it('asks again for a re-check unless its list is only just fetched', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    let version = 0;
    const { models, calls } = setUp(async () => listing(`alias_${(version += 1)}`));
    const first = await models.get(signal);
    expect(await models.fresh(signal)).toBe(first);
    expect(calls).toHaveLength(1);
    vi.setSystemTime(Date.now() + 1_500);
    const again = await models.fresh(signal);
    expect(calls).toHaveLength(2);
    expect([...again!.aliases.keys()]).toEqual(['alias_2']);
  });

  it('has no list while the provider cannot answer, says so once, and says when it answers again', async () => {
    let up = false;
    const { models, logs } = setUp(async () => {
      if (!up) throw new ClientError('/elexirion.v1.Provider/ListModels', Status.UNAVAILABLE, 'the provider service is unavailable');
      return listing('claude');
    });
    expect(await models.get(signal)).toBeUndefined();
    expect(await models.get(signal)).toBeUndefined();
    expect(logs.filter((log) => log.level === 'warn')).toHaveLength(1);
    up = true;
    expect([...(await models.get(signal))!.aliases.keys()]).toEqual(['claude']);
    expect(logs.map((log) => log.level)).toEqual(['warn', 'info']);
  });

  it('stops waiting when its caller goes away', async () => {
    const { models } = setUp(() => new Promise(() => {}));
    const controller = new AbortController();
    const waiting = models.get(controller.signal);
    controller.abort();
    await expect(waiting).rejects.toThrow();
  });
});
