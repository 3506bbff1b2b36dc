import { describe, expect, it } from 'vitest';
import { ClientError, Metadata, Status, type CallOptions, type ClientMiddlewareCall } from 'nice-grpc-common';
import {
  DEADLINE_METADATA_KEY,
  Metrics,
  TIMEOUT_METADATA_KEY,
  callOptions,
  clientCallPolicy,
  deadlineToMs,
  incomingDeadline,
  mergeDeadline,
} from '@elexirion/kit';

function contextWith(deadlineAt?: number | string) {
  const metadata = Metadata();
  if (deadlineAt !== undefined) metadata.set(DEADLINE_METADATA_KEY, String(deadlineAt));
  return { metadata, signal: new AbortController().signal };
}

/** Runs the client call policy that calls between services go through over a fake transport that records what it was given. */
async function runPropagation(options: CallOptions & { deadline?: Date | number }) {
  const seen: { options?: CallOptions; called: boolean } = { called: false };
  const call = {
    method: { path: '/elexirion.v1.Provider/Complete', requestStream: false, responseStream: false, options: {} },
    requestStream: false,
    request: { model: 'm' },
    responseStream: false,
    next: async function* (_request: unknown, nextOptions: CallOptions) {
      seen.called = true;
      seen.options = nextOptions;
      return 'response';
    },
  } as unknown as ClientMiddlewareCall<unknown, unknown, Record<string, never>>;
  const iterator = clientCallPolicy({ caller: 'test', callee: 'provider', transport: 'grpc', metrics: new Metrics({ defaultMetrics: false }) }).middleware(call, options as never);
  const result = await iterator.next();
  return { result, seen };
}

describe('mergeDeadline', () => {
  const now = 1_000_000;

  it('is Infinity when there is neither a wire deadline nor a timeout header', () => {
    expect(mergeDeadline(Infinity, undefined, now)).toBe(Infinity);
  });

  it('turns a relative timeout header into an absolute deadline on the local clock', () => {
    expect(mergeDeadline(Infinity, '250', now)).toBe(now + 250);
  });

  it('keeps the wire deadline when it is tighter than the header', () => {
    expect(mergeDeadline(now + 100, '5000', now)).toBe(now + 100);
  });

  it('takes the header when it is tighter than the wire deadline', () => {
    expect(mergeDeadline(now + 5000, '100', now)).toBe(now + 100);
  });

  it('ignores a header that is not a non-negative number', () => {
    expect(mergeDeadline(now + 5000, 'soon', now)).toBe(now + 5000);
    expect(mergeDeadline(now + 5000, '-20', now)).toBe(now + 5000);
  });

  it('accepts a zero budget as "due now"', () => {
    expect(mergeDeadline(Infinity, '0', now)).toBe(now);
  });
});

describe('incomingDeadline', () => {
  it('reads the absolute deadline the server interceptor put in the metadata', () => {
    expect(incomingDeadline(contextWith(1234567))).toEqual(new Date(1234567));
  });

  it('is undefined when the caller set none or the value is garbage', () => {
    expect(incomingDeadline(contextWith())).toBeUndefined();
    expect(incomingDeadline(contextWith('tomorrow'))).toBeUndefined();
  });
});

describe('callOptions', () => {
  it('passes the incoming call signal on, so cancelling the call cancels the outgoing one', () => {
    const context = contextWith();
    const options = callOptions(context);
    expect(options.signal).toBe(context.signal);
    expect(options).not.toHaveProperty('deadline');
  });

  it('uses the incoming deadline when no own timeout is given', () => {
    const at = Date.now() + 10_000;
    expect(callOptions(contextWith(at)).deadline).toEqual(new Date(at));
  });

  it('picks its own timeoutMs when that is tighter than the incoming deadline', () => {
    const before = Date.now();
    const options = callOptions(contextWith(before + 60_000), { timeoutMs: 500 });
    const after = Date.now();
    expect(options.deadline!.getTime()).toBeGreaterThanOrEqual(before + 500);
    expect(options.deadline!.getTime()).toBeLessThanOrEqual(after + 500);
  });

  it('keeps the incoming deadline when it is tighter than timeoutMs', () => {
    const at = Date.now() + 200;
    expect(callOptions(contextWith(at), { timeoutMs: 60_000 }).deadline).toEqual(new Date(at));
  });

  it('uses timeoutMs alone when the caller set no deadline', () => {
    const before = Date.now();
    const deadline = callOptions(contextWith(), { timeoutMs: 1_000 }).deadline!;
    const after = Date.now();
    expect(deadline.getTime()).toBeGreaterThanOrEqual(before + 1_000);
    expect(deadline.getTime()).toBeLessThanOrEqual(after + 1_000);
  });
});

describe('deadlineToMs', () => {
  it('reads a Date as absolute and a number as already relative', () => {
    expect(deadlineToMs(new Date(5_000), 1_000)).toBe(4_000);
    expect(deadlineToMs(750, 1_000)).toBe(750);
  });
});

describe('the client call policy', () => {
  it('fails at once with DEADLINE_EXCEEDED, without calling the transport, when the budget is spent', async () => {
    const outcome = await runPropagation({ deadline: new Date(Date.now() - 1) }).catch((error: unknown) => error);
    expect(outcome).toBeInstanceOf(ClientError);
    expect((outcome as ClientError).code).toBe(Status.DEADLINE_EXCEEDED);
    expect((outcome as ClientError).path).toBe('/elexirion.v1.Provider/Complete');
  });

  it('also fails at once for a relative deadline of zero', async () => {
    let called = false;
    const outcome = await runPropagation({ deadline: 0 }).then(
      ({ seen }) => {
        called = seen.called;
        return undefined;
      },
      (error: unknown) => error,
    );
    expect(called).toBe(false);
    expect((outcome as ClientError).code).toBe(Status.DEADLINE_EXCEEDED);
  });

  it('sends the remaining budget in milliseconds as elexirion-timeout-ms', async () => {
    const before = Date.now();
    const { result, seen } = await runPropagation({ deadline: new Date(before + 5_000) });
    const took = Date.now() - before;
    expect(result).toEqual({ done: true, value: 'response' });
    const sent = Number(seen.options!.metadata!.get(TIMEOUT_METADATA_KEY));
    // What is left of 5 s: less only by the time that passed.
    expect(sent).toBeGreaterThanOrEqual(5_000 - took);
    expect(sent).toBeLessThanOrEqual(5_000);
  });

  it('does not change the metadata object the caller passed in', async () => {
    const mine = Metadata({ 'x-request-id': 'r1' });
    const { seen } = await runPropagation({ deadline: 2_000, metadata: mine });
    expect(mine.has(TIMEOUT_METADATA_KEY)).toBe(false);
    expect(seen.options!.metadata!.get('x-request-id')).toBe('r1');
    expect(seen.options!.metadata!.get(TIMEOUT_METADATA_KEY)).toBe('2000');
  });

  it('adds nothing when there is no deadline', async () => {
    const { seen } = await runPropagation({});
    expect(seen.called).toBe(true);
    expect(seen.options!.metadata?.has(TIMEOUT_METADATA_KEY) ?? false).toBe(false);
  });
});
