import pLimit from 'p-limit';

/**
 * The reason a parallel step or loop aborts the children still running: one of theirs failed.
 * A child stopped for it failed as CANCELLED, not as out of time.
 */
export class StoppedBySibling {
  /** `failed`: the name of the child (or iteration) whose failure stopped the others. */
  constructor(readonly failed: string) {}
}

/**
 * `work` over every item, at most `concurrency` at once, results in item order. The first failure
 * stops the rest: `onFailure` is told at once, with the failed item's index (to abort those
 * running), nothing new starts, and the failure is thrown once every item that started has
 * settled, so none outlives the call.
 */
export async function mapUntilFailure<T, R>(items: readonly T[], concurrency: number, onFailure: (index: number) => void, work: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const limit = pLimit({ concurrency: Math.max(1, concurrency), rejectOnClear: true });
  let failure: { error: unknown } | undefined;
  const settled = await Promise.allSettled(
    items.map((item, index) =>
      limit(async () => {
        // Taken off the queue in the same turn as another item failed: it must not start.
        if (failure) throw failure.error;
        try {
          return await work(item, index);
        } catch (error) {
          if (!failure) {
            failure = { error };
            limit.clearQueue();
            onFailure(index);
          }
          throw error;
        }
      }),
    ),
  );
  if (failure) throw failure.error;
  return settled.map((result) => (result as PromiseFulfilledResult<R>).value);
}
