import { describe, expect, it } from 'vitest';
import { ServerError, Status } from '@elexirion/kit';
import type { RunEvent } from '../src/streaming/execute-streaming.js';
import { streamRun } from '../src/streaming/stream-run.js';

const delta = (text: string): RunEvent => ({ textDelta: { step: 'answer', text } });

describe('streamRun: a run as a stream its reader paces', () => {
  it('yields the events in order, then returns what the run answered', async () => {
    const stream = streamRun(async (forward) => {
      await forward(delta('a'));
      await forward(delta('b'));
      return 'the result';
    });
    const texts: string[] = [];
    let next = await stream.next();
    for (; !next.done; next = await stream.next()) texts.push(next.value.textDelta!.text);
    expect(texts).toEqual(['a', 'b']);
    expect(next.value).toBe('the result');
  });

  it('holds the run at its next event until the reader takes the last one', async () => {
    let forwarded = 0;
    const stream = streamRun(async (forward) => {
      for (const text of ['a', 'b', 'c']) {
        await forward(delta(text));
        forwarded++;
      }
      return 'done';
    });
    expect((await stream.next()).value).toEqual(delta('a'));
    // Let everything that can run, run: the run may not get past the event the reader has not taken.
    for (let turn = 0; turn < 20; turn++) await Promise.resolve();
    expect(forwarded).toBeLessThanOrEqual(1);
    expect((await stream.next()).value).toEqual(delta('b'));
    expect((await stream.next()).value).toEqual(delta('c'));
    expect(await stream.next()).toEqual({ done: true, value: 'done' });
    expect(forwarded).toBe(3);
  });

  it('throws the run\'s failure after the events sent before it', async () => {
    const failure = new ServerError(Status.UNAVAILABLE, 'the stream broke');
    const stream = streamRun(async (forward) => {
      await forward(delta('partial'));
      throw failure;
    });
    expect((await stream.next()).value).toEqual(delta('partial'));
    await expect(stream.next()).rejects.toBe(failure);
  });

  it('refuses the run\'s next event with CANCELLED once the reader stopped', async () => {
    let refusal: unknown;
    let ran!: () => void;
    const ended = new Promise<void>((resolve) => (ran = resolve));
    const stream = streamRun(async (forward) => {
      try {
        await forward(delta('one'));
        await forward(delta('two'));
        await forward(delta('three'));
      } catch (error) {
        refusal = error;
      } finally {
        ran();
      }
    });
    expect((await stream.next()).value).toEqual(delta('one'));
    await stream.return(undefined);
    await ended;
    expect(refusal).toBeInstanceOf(ServerError);
    expect((refusal as ServerError).code).toBe(Status.CANCELLED);
  });
});
