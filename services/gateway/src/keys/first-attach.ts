/**
 * The moment a store first attached to NATS. The gateway serves as soon as it starts, while its
 * key store and usage counters attach in the background: a call that needs them in that first
 * moment waits for the attach (up to `STARTUP_WAIT_MS`) instead of failing UNAVAILABLE. Once
 * attached, a store that loses NATS answers UNAVAILABLE at once, as before: no call waits on an
 * outage.
 */
export const STARTUP_WAIT_MS = 5_000;

export class FirstAttach {
  #attached = false;
  #waiters = new Set<() => void>();

  get attached(): boolean {
    return this.#attached;
  }

  /** Called once the store attached; later calls change nothing. */
  done(): void {
    if (this.#attached) return;
    this.#attached = true;
    for (const wake of this.#waiters) wake();
    this.#waiters.clear();
  }

  /** Resolves once the store has attached for the first time, or after `ms` (whichever is first). */
  async wait(ms = STARTUP_WAIT_MS): Promise<void> {
    if (this.#attached) return;
    await new Promise<void>((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.#waiters.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.#waiters.add(wake);
    });
  }
}
