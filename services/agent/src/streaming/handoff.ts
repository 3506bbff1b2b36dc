import { ServerError, Status } from '@elexirion/kit';

const stoppedReading = () => new ServerError(Status.CANCELLED, 'the stream\'s reader went away');

/**
 * Hands values from a producer (a run forwarding its events) to one consumer (a stream handler)
 * one at a time: `put` resolves only once the consumer took the value, so a slow client holds
 * the run back (gRPC flow control reaches the executor and the vendor) instead of a queue
 * growing without bound.
 */
export class Handoff<T> {
  #waitingValue: { value: T; taken: () => void; refused: (error: unknown) => void } | undefined;
  #waitingTaker: ((next: IteratorResult<T>) => void) | undefined;
  #closed = false;
  #abandoned = false;

  /** Resolves once the consumer took `value`; rejects with CANCELLED when it stopped reading. */
  put(value: T): Promise<void> {
    if (this.#abandoned) return Promise.reject(stoppedReading());
    if (this.#closed) return Promise.reject(new Error('Handoff: put after close'));
    return new Promise<void>((taken, refused) => {
      const taker = this.#waitingTaker;
      if (taker) {
        this.#waitingTaker = undefined;
        taker({ value, done: false });
        taken();
        return;
      }
      this.#waitingValue = { value, taken, refused };
    });
  }

  /** No more values: the consumer's iteration ends after the last one taken. */
  close(): void {
    this.#closed = true;
    const taker = this.#waitingTaker;
    this.#waitingTaker = undefined;
    taker?.({ value: undefined, done: true });
  }

  /** The consumer stopped reading: a waiting and any later `put` reject, so the producer stops. */
  abandon(): void {
    this.#abandoned = true;
    const waiting = this.#waitingValue;
    this.#waitingValue = undefined;
    waiting?.refused(stoppedReading());
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T, void, undefined> {
    try {
      while (true) {
        const waiting = this.#waitingValue;
        if (waiting) {
          this.#waitingValue = undefined;
          waiting.taken();
          yield waiting.value;
          continue;
        }
        if (this.#closed) return;
        const next = await new Promise<IteratorResult<T>>((resolve) => (this.#waitingTaker = resolve));
        if (next.done) return;
        yield next.value;
      }
    } finally {
      this.abandon();
    }
  }
}
