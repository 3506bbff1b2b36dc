import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { mapUntilFailure } from '../src/engine/map-until-failure.js';

describe('mapUntilFailure', () => {
  it('runs at most `concurrency` items at once and answers in item order', async () => {
    let running = 0;
    let most = 0;
    const results = await mapUntilFailure([30, 10, 20, 5, 15], 2, () => {}, async (ms, index) => {
      running += 1;
      most = Math.max(most, running);
      await sleep(ms);
      running -= 1;
      return index;
    });
    expect(results).toEqual([0, 1, 2, 3, 4]);
    expect(most).toBe(2);
  });

  it('after the first failure starts nothing new, tells the running ones, and rejects once they settled', async () => {
    const stop = new AbortController();
    const started: number[] = [];
    const settled: number[] = [];
    let told = 0;
    const failure = new Error('item 0 failed');
    const outcome = await mapUntilFailure(
      [0, 1, 2, 3, 4],
      2,
      () => {
        told += 1;
        stop.abort();
      },
      async (item) => {
        started.push(item);
        try {
          if (item === 0) {
            await sleep(10);
            throw failure;
          }
          if (item === 1) {
            await new Promise((resolve) => stop.signal.addEventListener('abort', resolve));
            await sleep(10);
            throw new Error('item 1 stopped');
          }
          return item;
        } finally {
          settled.push(item);
        }
      },
    ).catch((caught: unknown) => caught);
    expect(outcome).toBe(failure);
    expect(told).toBe(1);
    expect(started).toEqual([0, 1]);
    expect(settled.sort()).toEqual([0, 1]);
  });
});
