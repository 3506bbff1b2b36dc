import { describe, expect, it } from 'vitest';
import { CircuitBreaker, LimitExceededError, ProviderLimiter, parseRetryAfter } from '@elexirion/provider';

function clock(start = 1_000_000) {
  let now = start;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

describe('circuit breaker', () => {
  const options = { windowMs: 10_000, minRequests: 4, failureRate: 0.5, cooldownMs: 5_000 };

  it('stays closed below the minimum number of requests, whatever they were', () => {
    const time = clock();
    const breaker = new CircuitBreaker({ ...options, now: time.now });
    for (let i = 0; i < 3; i += 1) breaker.recordFailure();
    expect(breaker.current).toBe('closed');
  });

  it('opens when the failure rate over the window reaches the threshold, then refuses requests', () => {
    const time = clock();
    const states: string[] = [];
    const breaker = new CircuitBreaker({ ...options, now: time.now, onStateChange: (state) => states.push(state) });
    breaker.recordSuccess();
    breaker.recordSuccess();
    breaker.recordFailure();
    expect(breaker.current).toBe('closed');
    breaker.recordFailure();
    expect(breaker.current).toBe('open');
    expect(breaker.tryAcquire()).toBe(false);
    expect(breaker.retryInMs()).toBe(5_000);
    expect(states).toEqual(['open']);
  });

  it('forgets outcomes older than the window', () => {
    const time = clock();
    const breaker = new CircuitBreaker({ ...options, now: time.now });
    for (let i = 0; i < 3; i += 1) breaker.recordFailure();
    time.advance(11_000);
    breaker.recordFailure();
    expect(breaker.current).toBe('closed');
    expect(breaker.failureRate()).toBe(1);
  });

  it('lets exactly one probe through after the cooldown; its success closes the breaker', () => {
    const time = clock();
    const breaker = new CircuitBreaker({ ...options, now: time.now });
    for (let i = 0; i < 4; i += 1) breaker.recordFailure();
    time.advance(5_000);
    expect(breaker.current).toBe('half_open');
    expect(breaker.tryAcquire()).toBe(true);
    expect(breaker.tryAcquire()).toBe(false);
    breaker.recordSuccess();
    expect(breaker.current).toBe('closed');
    expect(breaker.failureRate()).toBe(0);
    expect(breaker.tryAcquire()).toBe(true);
  });

  it('reopens for another cooldown when the probe fails', () => {
    const time = clock();
    const breaker = new CircuitBreaker({ ...options, now: time.now });
    for (let i = 0; i < 4; i += 1) breaker.recordFailure();
    time.advance(5_000);
    expect(breaker.tryAcquire()).toBe(true);
    breaker.recordFailure();
    expect(breaker.current).toBe('open');
    time.advance(4_999);
    expect(breaker.tryAcquire()).toBe(false);
    time.advance(1);
    expect(breaker.tryAcquire()).toBe(true);
  });

  it('frees the probe slot when the probe is cancelled by its caller', () => {
    const time = clock();
    const breaker = new CircuitBreaker({ ...options, now: time.now });
    for (let i = 0; i < 4; i += 1) breaker.recordFailure();
    time.advance(5_000);
    expect(breaker.tryAcquire()).toBe(true);
    breaker.recordNeutral();
    expect(breaker.current).toBe('half_open');
    expect(breaker.tryAcquire()).toBe(true);
  });
});

describe('provider limiter', () => {
  const far = () => Date.now() + 60_000;

  it('admits up to the concurrency limit, queues up to the queue limit, refuses beyond', async () => {
    const limiter = new ProviderLimiter({ maxConcurrency: 2, maxQueue: 1, requestsPerSecond: 1_000, burst: 1_000 });
    const signal = new AbortController().signal;
    const first = await limiter.acquire(signal, far());
    await limiter.acquire(signal, far());
    const queued = limiter.acquire(signal, far());
    expect(limiter.inFlight).toBe(2);
    expect(limiter.queued).toBe(1);
    await expect(limiter.acquire(signal, far())).rejects.toBeInstanceOf(LimitExceededError);
    first();
    const release = await queued;
    expect(limiter.queued).toBe(0);
    expect(limiter.inFlight).toBe(2);
    release();
    expect(limiter.inFlight).toBe(1);
  });

  it('takes a waiter out of the queue when its caller cancels', async () => {
    const limiter = new ProviderLimiter({ maxConcurrency: 1, maxQueue: 5, requestsPerSecond: 1_000, burst: 1_000 });
    const held = await limiter.acquire(new AbortController().signal, far());
    const controller = new AbortController();
    const waiting = limiter.acquire(controller.signal, far());
    controller.abort();
    await expect(waiting).rejects.toMatchObject({ name: 'AbortError' });
    expect(limiter.queued).toBe(0);
    held();
    expect(limiter.inFlight).toBe(0);
  });

  it('refuses a queued request whose deadline passes before a slot frees', async () => {
    const limiter = new ProviderLimiter({ maxConcurrency: 1, maxQueue: 5, requestsPerSecond: 1_000, burst: 1_000 });
    await limiter.acquire(new AbortController().signal, far());
    await expect(limiter.acquire(new AbortController().signal, Date.now() + 50)).rejects.toBeInstanceOf(LimitExceededError);
    expect(limiter.queued).toBe(0);
  });

  it('spaces requests by the token bucket once the burst is spent, and refuses a wait past the deadline', async () => {
    const limiter = new ProviderLimiter({ maxConcurrency: 100, maxQueue: 100, requestsPerSecond: 20, burst: 2 });
    const signal = new AbortController().signal;
    const started = Date.now();
    for (let i = 0; i < 3; i += 1) (await limiter.acquire(signal, far()))();
    expect(Date.now() - started).toBeGreaterThanOrEqual(40);
    await expect(limiter.acquire(signal, Date.now() + 1)).rejects.toThrow(/rate limit of 20\/s/);
  });
});

describe('retry-after', () => {
  it('reads retry-after as seconds, as an HTTP date, and retry-after-ms', () => {
    const headers = (values: Record<string, string>) => new Headers(values);
    expect(parseRetryAfter(headers({ 'retry-after': '2' }))).toBe(2_000);
    expect(parseRetryAfter(headers({ 'retry-after-ms': '150', 'retry-after': '9' }))).toBe(150);
    const now = Date.parse('2026-11-23T10:00:00Z');
    expect(parseRetryAfter(headers({ 'retry-after': 'Mon, 23 Nov 2026 10:00:03 GMT' }), now)).toBe(3_000);
    expect(parseRetryAfter(headers({ 'retry-after': 'soon' }))).toBeUndefined();
    expect(parseRetryAfter(headers({}))).toBeUndefined();
  });
});
