// StreamTelemetry against the real services: the events they publish, filtered by kind and by job
// id while chats run, replayed from `since`, refused filters naming the field, and a client that
// goes away taking its JetStream consumer with it.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ClientError, Status } from 'nice-grpc';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { eventually, sleep, startNats, waitFor, startStack, stopAll, type NatsServer, type Stack } from '@elexirion/testing';
import { proto } from '@elexirion/kit';

const STREAM = 'ELEXIRION_EVENTS';
const STALL_MS = 8_000;

let nats: NatsServer;
let stack: Stack;
let connection: NatsConnection;
let manager: JetStreamManager;

beforeAll(async () => {
  nats = await startNats();
  // A stalled client is ended after 8 s (the default is 2 minutes).
  stack = await startStack('all-in-one', nats.url, { GATEWAY_TELEMETRY_STALL_MS: String(STALL_MS) });
  connection = await connect({ servers: nats.url });
  manager = await jetstreamManager(connection);
  // The stream exists once a service has published: one chat makes sure.
  await stack.gateway.chat({ message: 'warm up' });
  await eventually('the events stream', async () => (await manager.streams.info(STREAM).catch(() => undefined)) && true);
});

afterAll(async () => {
  await connection?.close();
  await stack?.stop();
  await nats?.stop();
  await stopAll();
});

/** The stream's consumers that are not durable: the ones StreamTelemetry calls open. */
async function streamConsumers(): Promise<number> {
  let count = 0;
  for await (const info of manager.consumers.list(STREAM)) if (!info.config.durable_name) count++;
  return count;
}

const open: { cancel(): void }[] = [];

afterEach(async () => {
  for (const stream of open.splice(0)) stream.cancel();
  // Each test starts with no stream consumer left over.
  await eventually('no stream consumers left', async () => ((await streamConsumers()) === 0 ? true : undefined));
});

/** Opens a stream and collects its events until `enough` says so (or the call is cancelled). */
function follow(request: Partial<proto.StreamTelemetryRequest>, enough: (events: proto.TelemetryEvent[]) => boolean) {
  const controller = new AbortController();
  const events: proto.TelemetryEvent[] = [];
  const done = (async () => {
    try {
      for await (const { event } of stack.gateway.streamTelemetry({ services: [], kinds: [], pipeline: '', jobId: '', ...request }, { signal: controller.signal })) {
        events.push(event!);
        if (enough(events)) break;
      }
    } catch (error) {
      if (!controller.signal.aborted) throw error;
    }
    return events;
  })();
  const stream = { events, done, cancel: () => controller.abort() };
  open.push(stream);
  return stream;
}

describe('StreamTelemetry', () => {
  it('streams only the kind asked for while chats run, and its consumer goes when it ends', async () => {
    // Events published from now on; a run of an earlier chat may still arrive (the publisher flushes on a timer).
    const stream = follow({ kinds: ['run'] }, () => false);
    // Live events only: the chats go once the stream's consumer exists.
    await eventually('the stream\'s consumer', async () => ((await streamConsumers()) === 1 ? true : undefined));
    const chats = await Promise.all([1, 2, 3].map((n) => stack.gateway.chat({ message: `telemetry kind test ${n}` })));
    await waitFor('the three chats\' runs', () => chats.every((chat) => stream.events.some((event) => event.executorRun?.jobId === chat.jobId)));
    stream.cancel();
    const events = await stream.done;
    for (const event of events) {
      expect(event.kind).toBe('run');
      expect(event.service).toBe('executor');
    }
    await eventually('the consumer deleted', async () => ((await streamConsumers()) === 0 ? true : undefined));
  });

  it('streams only one job\'s events, replayed from since, while other chats run', async () => {
    const since = new Date();
    const [target, ...others] = await Promise.all([1, 2, 3].map((n) => stack.gateway.chat({ message: `telemetry job test ${n}` })));
    const jobId = target!.jobId;
    const stream = follow({ jobId, since }, (events) => ['request', 'job', 'run'].every((kind) => events.some((event) => event.kind === kind)));
    const events = await stream.done;
    for (const event of events) {
      const ids = [event.gatewayRequest?.jobId, event.agentJob?.jobId, event.executorRun?.jobId, event.executorRun?.runId, event.executorStep?.runId];
      expect(ids).toContain(jobId);
      for (const other of others) expect(ids).not.toContain(other.jobId);
    }
    expect(events.find((event) => event.kind === 'request')!.gatewayRequest).toMatchObject({ method: 'Chat', jobId, degraded: false });
  });

  it('filters by service and pipeline', async () => {
    const since = new Date();
    await stack.gateway.chat({ message: 'please analyze this function' });
    await stack.gateway.chat({ message: 'just a general question' });
    const stream = follow({ services: ['agent'], pipeline: 'analysis', since }, (events) => events.length >= 1);
    const [event] = await stream.done;
    expect(event).toMatchObject({ service: 'agent', kind: 'job' });
    expect(event!.agentJob!.pipeline).toBe('analysis');
  });

  it('streams the executor\'s prompt registry changes by kind', async () => {
    const since = new Date();
    const published = await stack.gateway.publishPromptVersion(
      proto.PublishPromptVersionRequest.fromPartial({ pipeline: 'general', step: 'answer', template: { prompt: 'Answer briefly: {{inputs.message}}', system: '', demos: [] }, reason: 'telemetry test' }),
    );
    const stream = follow({ services: ['executor'], kinds: ['prompt'], since }, (events) => events.length >= 1);
    const [event] = await stream.done;
    expect(event).toMatchObject({ service: 'executor', kind: 'prompt' });
    expect(event!.executorPrompt!.change).toMatchObject({ pipeline: 'general', step: 'answer', action: 'publish', version: published.version!.id, reason: 'telemetry test' });
    // The pipeline filter reads a prompt change's pipeline too (it once matched only requests, jobs, runs and steps).
    const [filtered] = await follow({ kinds: ['prompt'], pipeline: 'general', since }, (events) => events.length >= 1).done;
    expect(filtered!.executorPrompt!.change!.version).toBe(published.version!.id);
    const other = follow({ kinds: ['prompt'], pipeline: 'analysis', since }, () => false);
    await new Promise((resolve) => setTimeout(resolve, 500));
    other.cancel();
    expect(await other.done).toEqual([]);
  });

  it('deletes its consumer when the client cancels', async () => {
    const streams = [follow({}, () => false), follow({ kinds: ['step'] }, () => false)];
    await eventually('both consumers', async () => ((await streamConsumers()) === 2 ? true : undefined));
    for (const stream of streams) stream.cancel();
    await Promise.all(streams.map((stream) => stream.done));
    await eventually('the consumers deleted', async () => ((await streamConsumers()) === 0 ? true : undefined));
  });

  it('refuses filters that cannot match, naming the field', async () => {
    const cases: [Partial<proto.StreamTelemetryRequest>, RegExp][] = [
      [{ services: ['nosuch'] }, /^services: "nosuch" is not a service/],
      [{ kinds: ['everything'] }, /^kinds: "everything" is not an event kind/],
      [{ jobId: 'has spaces' }, /^job_id: /],
      [{ pipeline: 'Not/A/Name' }, /^pipeline: /],
      [{ since: new Date(Date.now() + 3_600_000) }, /^since: is in the future$/],
    ];
    for (const [request, message] of cases) {
      const error = await follow(request, () => true).done.then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expect(error).toBeInstanceOf(ClientError);
      expect((error as ClientError).code).toBe(Status.INVALID_ARGUMENT);
      expect((error as ClientError).details).toMatch(message);
    }
  });

  it('holds a bounded number of events for a client that stops reading (the rest wait in JetStream), and drops none', async () => {
    const since = new Date();
    const pipeline = 'bulk-telemetry';
    const batches = 100;
    const perBatch = 100;
    await publishBulk(pipeline, batches, perBatch);

    const controller = new AbortController();
    open.push({ cancel: () => controller.abort() });
    const iterator = stack.gateway.streamTelemetry({ services: [], kinds: [], pipeline, jobId: '', since }, { signal: controller.signal })[Symbol.asyncIterator]();
    expect((await iterator.next()).value.event.eventId).toBe('bulk-0-0');

    // The client reads no more: the gateway stops fetching once its buffer is full, so the
    // consumer stops advancing with events still pending in the stream.
    const stalled = await eventually('the consumer to stop advancing', async () => {
      const [first, second] = [await consumerInfo(), await sleep(300).then(consumerInfo)];
      return second.delivered.stream_seq === first.delivered.stream_seq && second.num_pending > 0 ? second : undefined;
    });
    expect(stalled.num_pending).toBeGreaterThan(0);

    // Reading again, every event arrives, in order: none was dropped.
    let received = 1;
    let last = 'bulk-0-0';
    while (received < batches * perBatch) {
      const next = await iterator.next();
      expect(next.done).toBe(false);
      last = next.value.event.eventId;
      received++;
    }
    expect(last).toBe(`bulk-${batches - 1}-${perBatch - 1}`);
    controller.abort();
  });

  it('ends a client that takes nothing for the stall limit with RESOURCE_EXHAUSTED, after what was buffered, its consumer deleted at once', async () => {
    const since = new Date();
    const pipeline = 'stalled-telemetry';
    await publishBulk(pipeline, 100, 100);
    const controller = new AbortController();
    open.push({ cancel: () => controller.abort() });
    const iterator = stack.gateway.streamTelemetry({ services: [], kinds: [], pipeline, jobId: '', since }, { signal: controller.signal })[Symbol.asyncIterator]();
    await iterator.next();
    await eventually('the consumer opened', async () => ((await streamConsumers()) === 1 ? true : undefined));
    // Nothing taken: after the stall limit the gateway stops reading and deletes the consumer.
    await eventually('the stalled stream\'s consumer deleted', async () => ((await streamConsumers()) === 0 ? true : undefined), STALL_MS + 10_000);
    let received = 1;
    const error = await (async () => {
      for (;;) {
        const next = await iterator.next();
        if (next.done) return undefined;
        received++;
      }
    })().catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ClientError);
    expect((error as ClientError).code).toBe(Status.RESOURCE_EXHAUSTED);
    expect((error as ClientError).details).toMatch(/^the client took no telemetry event for 8000 ms/);
    // What was buffered arrived first; not all 10000.
    expect(received).toBeGreaterThan(1);
    expect(received).toBeLessThan(100 * 100);
  });

  it('ends its streams with UNAVAILABLE when the gateway drains, so the drain does not wait for them', async () => {
    // A grace period no test would wait out: the process exits only because the stream ended.
    const draining = await startStack('all-in-one', nats.url, { DRAIN_GRACE_MS: '600000' });
    try {
      const controller = new AbortController();
      const events = draining.gateway.streamTelemetry({ services: [], kinds: [], pipeline: '', jobId: '' }, { signal: controller.signal });
      const ended = (async () => {
        for await (const _ of events) {
          // live events, if any, until the drain
        }
      })().catch((caught: unknown) => caught);
      await eventually('the stream\'s consumer', async () => ((await streamConsumers()) === 1 ? true : undefined));
      draining.processes.all!.child.kill('SIGTERM');
      const error = await ended;
      expect(error).toBeInstanceOf(ClientError);
      expect((error as ClientError).code).toBe(Status.UNAVAILABLE);
      expect((error as ClientError).details).toMatch(/^the gateway is shutting down: stream again/);
      expect(await draining.processes.all!.exited).toBe(0);
    } finally {
      await draining.stop();
    }
  });
});

/** The one StreamTelemetry consumer open now. */
async function consumerInfo() {
  const found = [];
  for await (const info of manager.consumers.list(STREAM)) if (!info.config.durable_name) found.push(info);
  expect(found).toHaveLength(1);
  return found[0]!;
}

/** Publishes `batches` TelemetryEventBatch messages of `perBatch` step events of `pipeline`, as the executor would. */
async function publishBulk(pipeline: string, batches: number, perBatch: number): Promise<void> {
  const js = jetstream(connection);
  for (let batch = 0; batch < batches; batch++) {
    const events = Array.from({ length: perBatch }, (_, index) =>
      proto.TelemetryEvent.fromPartial({
        eventId: `bulk-${batch}-${index}`,
        service: 'executor',
        kind: 'step',
        time: new Date(),
        status: 'OK',
        executorStep: { runId: 'bulk-run', pipeline, step: { name: `step-${index}`, output: 'o'.repeat(200) } },
      }),
    );
    await js.publish('elexirion.events.executor.step', proto.TelemetryEventBatch.encode({ events }).finish());
  }
}
