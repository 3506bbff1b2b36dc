export type BreakerState = 'closed' | 'open' | 'half_open';

export interface BreakerOptions {
  /** Outcomes older than this stop counting. */
  windowMs: number;
  /** Fewer outcomes than this in the window never open the breaker. */
  minRequests: number;
  /** Failure fraction (0..1] at or above which the breaker opens. */
  failureRate: number;
  /** How long it stays open before letting one probe through. */
  cooldownMs: number;
  now?: () => number;
  onStateChange?: (state: BreakerState) => void;
}

const BUCKETS = 10;

/**
 * A per-provider circuit breaker: failure rate over a sliding window (ten buckets), open for a
 * cooldown, then half-open with exactly one probe whose outcome closes or reopens it. Outcomes
 * are recorded explicitly, so a stream that fails after its first token still counts.
 */
export class CircuitBreaker {
  private state: BreakerState = 'closed';
  private openedAt = 0;
  private probeInFlight = false;
  private readonly buckets = Array.from({ length: BUCKETS }, () => ({ start: 0, successes: 0, failures: 0 }));
  private readonly now: () => number;

  constructor(private readonly options: BreakerOptions) {
    this.now = options.now ?? Date.now;
  }

  get current(): BreakerState {
    if (this.state === 'open' && this.now() - this.openedAt >= this.options.cooldownMs) return 'half_open';
    return this.state;
  }

  /** Whether a request may go now; in half-open, only the single probe may. */
  tryAcquire(): boolean {
    const state = this.current;
    if (state === 'closed') return true;
    if (state === 'open') return false;
    if (this.probeInFlight) return false;
    if (this.state !== 'half_open') this.transition('half_open');
    this.probeInFlight = true;
    return true;
  }

  /** Milliseconds until an open breaker lets a probe through (0 unless open). */
  retryInMs(): number {
    return this.current === 'open' ? this.options.cooldownMs - (this.now() - this.openedAt) : 0;
  }

  recordSuccess(): void {
    if (this.state === 'half_open') {
      this.probeInFlight = false;
      this.resetWindow();
      this.transition('closed');
      return;
    }
    this.bucket().successes += 1;
  }

  recordFailure(): void {
    if (this.state === 'half_open') {
      this.probeInFlight = false;
      this.open();
      return;
    }
    this.bucket().failures += 1;
    if (this.state === 'closed') {
      const { successes, failures } = this.totals();
      const total = successes + failures;
      if (total >= this.options.minRequests && failures / total >= this.options.failureRate) this.open();
    }
  }

  /** A request that ended without telling anything about the provider (cancelled by its caller). */
  recordNeutral(): void {
    if (this.state === 'half_open') this.probeInFlight = false;
  }

  failureRate(): number {
    const { successes, failures } = this.totals();
    const total = successes + failures;
    return total === 0 ? 0 : failures / total;
  }

  private open(): void {
    this.openedAt = this.now();
    this.transition('open');
  }

  private transition(state: BreakerState): void {
    if (this.state === state) return;
    this.state = state;
    this.options.onStateChange?.(state);
  }

  private bucket() {
    const width = this.options.windowMs / BUCKETS;
    const start = Math.floor(this.now() / width) * width;
    const bucket = this.buckets[Math.floor(start / width) % BUCKETS]!;
    if (bucket.start !== start) {
      bucket.start = start;
      bucket.successes = 0;
      bucket.failures = 0;
    }
    return bucket;
  }

  private totals(): { successes: number; failures: number } {
    const oldest = this.now() - this.options.windowMs;
    let successes = 0;
    let failures = 0;
    for (const bucket of this.buckets) {
      if (bucket.start > oldest) {
        successes += bucket.successes;
        failures += bucket.failures;
      }
    }
    return { successes, failures };
  }

  private resetWindow(): void {
    for (const bucket of this.buckets) {
      bucket.start = 0;
      bucket.successes = 0;
      bucket.failures = 0;
    }
  }
}
