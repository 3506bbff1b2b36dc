import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import {
  ClientError,
  EventPublisher,
  Status,
  Metrics,
  REDACTED,
  SharedNatsConnection,
  createLogger,
  eventSubject,
  initTracing,
  proto,
  registerSecret,
  serviceEvents,
  tracer,
  type EventPublisherOptions,
  type Tracing,
} from '@elexirion/kit';
import { collectEvents, eventually, startNats, waitFor, type NatsServer, freePort, stopAll } from '@elexirion/testing';

let tracing: Tracing;
beforeAll(() => {
  tracing = initTracing({ serviceName: 'kit-events-test' });
});

const publishers: { close(): Promise<void> }[] = [];
const servers: NatsServer[] = [];

/** A publisher as a host runs one: started on a connection of its own to `url`, which it owns. */
function publisher(url: string, overrides: Partial<EventPublisherOptions> = {}) {
  const metrics = new Metrics({ defaultMetrics: false });
  const logger = createLogger({ level: 'silent', name: 'kit-events-test' });
  const nats = new SharedNatsConnection({ url, name: 'kit-events-test', logger });
  const created = new EventPublisher({
    enabled: true,
    queueMax: 1_000,
    flushIntervalMs: 5,
    streamName: 'ELEXIRION_EVENTS',
    streamMaxAgeHours: 1,
    logger,
    metrics,
    ...overrides,
  });
  created.start(nats.forService('kit-events-test'));
  // As the host stops: the publisher sends what it holds, then the connection drains.
  const close = async () => {
    await created.close();
    await nats.stop(1_000);
  };
  publishers.push({ close });
  return { publisher: created, metrics, close };
}

/** A real nats-server and a publisher connected to it (the stream created), both stopped after the test. */
async function connectedPublisher(overrides: Partial<EventPublisherOptions> = {}) {
  const nats = await startNats();
  servers.push(nats);
  const created = publisher(nats.url, overrides);
  expect(await created.publisher.waitUntilConnected(10_000)).toBe(true);
  return { nats, ...created };
}

async function dropped(metrics: Metrics, reason: string): Promise<number> {
  const values = (await metrics.eventsDropped.get()).values;
  return values.find((value) => value.labels.reason === reason)?.value ?? 0;
}

afterEach(async () => {
  await Promise.all(publishers.splice(0).map((created) => created.close()));
  await Promise.all(servers.splice(0).map((server) => server.stop()));
});

afterAll(async () => {
  await stopAll();
  await tracing.shutdown();
});

describe('EventPublisher with NATS down', () => {
  it('never throws from publish and returns fast', async () => {
    const { publisher: events, metrics } = publisher(`nats://127.0.0.1:${await freePort()}`, { queueMax: 100_000 });
    for (let index = 0; index < 2_000; index += 1) {
      // Returns nothing to wait for: queuing only, no network on the request path.
      expect(events.publish('provider', 'completion', { status: 'OK', durationMs: index })).toBeUndefined();
    }
    expect((await metrics.eventsQueued.get()).values[0]?.value).toBe(2_000);
    expect(events.isConnected).toBe(false);
  });

  it('drops events past queueMax and counts them in elexirion_telemetry_events_dropped_total', async () => {
    const { publisher: events, metrics } = publisher(`nats://127.0.0.1:${await freePort()}`, { queueMax: 5 });
    for (let index = 0; index < 12; index += 1) events.publish('agent', 'job', { status: 'OK' });
    expect(await dropped(metrics, 'queue_full')).toBe(7);
    expect((await metrics.eventsQueued.get()).values[0]?.value).toBe(5);
    const text = await metrics.registry.getSingleMetricAsString('elexirion_telemetry_events_dropped_total');
    expect(text).toContain('elexirion_telemetry_events_dropped_total{reason="queue_full"} 7');
  });

  it('closes promptly, counting what was still queued as dropped', async () => {
    const { publisher: events, metrics } = publisher(`nats://127.0.0.1:${await freePort()}`, { queueMax: 5 });
    for (let index = 0; index < 3; index += 1) events.publish('agent', 'job', { status: 'OK' });
    await events.close(); // NATS never comes: a close that waited for it would never end
    expect(await dropped(metrics, 'not_connected')).toBe(3);
    events.publish('agent', 'job', { status: 'OK' }); // after close: ignored, not an error
    expect(await dropped(metrics, 'queue_full')).toBe(0);
  });

  it('does nothing at all when disabled', async () => {
    const { publisher: events, metrics } = publisher(`nats://127.0.0.1:${await freePort()}`, { enabled: false, queueMax: 1 });
    for (let index = 0; index < 5; index += 1) events.publish('agent', 'job', { status: 'OK' });
    expect(await dropped(metrics, 'queue_full')).toBe(0);
    expect(await events.waitUntilConnected(100)).toBe(false);
  });
});

describe('EventPublisher with a real NATS', () => {
  it('publishes protobuf TelemetryEvents on elexirion.events.<service>.<kind> with id, time, service and kind', async () => {
    const { nats, publisher: events, metrics } = await connectedPublisher();
    const listener = await collectEvents(nats.url);
    try {
      const before = Date.now();
      serviceEvents(events, 'provider').publish('completion', {
        status: 'OK',
        durationMs: 42,
        providerCompletion: { provider: 'mock', model: 'm', attempts: 1 },
      });
      const received = await waitFor('the event', () => listener.events[0]);
      expect(received.subject).toBe('elexirion.events.provider.completion');
      expect(received.subject).toBe(eventSubject('provider', 'completion'));
      const event = received.event;
      expect(event).toBeTruthy();
      expect(event.service).toBe('provider');
      expect(event.kind).toBe('completion');
      expect(event.eventId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      expect(event.time).toBeInstanceOf(Date);
      expect(event.time!.getTime()).toBeGreaterThanOrEqual(before - 1_000);
      expect(event.time!.getTime()).toBeLessThanOrEqual(Date.now() + 1_000);
      expect(event.status).toBe('OK');
      expect(event.durationMs).toBe(42);
      expect(event.providerCompletion).toMatchObject({ provider: 'mock', model: 'm', attempts: 1 });
      expect(event.traceId).toBe(''); // no span was active
      expect(received.traceparent).toBeUndefined();
      // Counted when JetStream acknowledges the batch, which may come after a subscriber has it.
      const published = await eventually('the batch to be acknowledged', async () =>
        (await metrics.eventsPublished.get()).values.find((value) => value.labels.kind === 'completion'),
      );
      expect(published).toMatchObject({ value: 1, labels: { service: 'provider' } });
    } finally {
      await listener.close();
    }
  });

  it('publishes one event per observed call, with its status, duration and fields, whatever the outcome', async () => {
    const { nats, publisher: events } = await connectedPublisher();
    const listener = await collectEvents(nats.url);
    try {
      const gateway = serviceEvents(events, 'gateway');
      const ok = gateway.begin('request');
      await new Promise((resolve) => setTimeout(resolve, 30));
      ok.succeeded({ gatewayRequest: { method: 'Chat', jobId: 'j1' } });
      ok.succeeded({ gatewayRequest: { method: 'Chat', jobId: 'again' } }); // ends once
      const missing = gateway.begin('request');
      missing.failed(new ClientError('/elexirion.v1.Agent/HandleChat', Status.NOT_FOUND, 'pipeline "x" does not exist'), (errorMessage) => ({ gatewayRequest: { method: 'Chat', errorMessage } }));
      const crashed = gateway.begin('request');
      crashed.failed(new Error('db down'), (errorMessage) => ({ gatewayRequest: { method: 'Chat', errorMessage } }));
      const received = await waitFor('three events', () => (listener.events.length >= 3 ? listener.events : undefined));
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(listener.events).toHaveLength(3);
      const [first, second, third] = received.map((item) => item.event);
      expect(first).toMatchObject({ service: 'gateway', kind: 'request', status: 'OK', gatewayRequest: { method: 'Chat', jobId: 'j1' } });
      expect(first!.durationMs).toBeGreaterThanOrEqual(25);
      expect(second).toMatchObject({ status: 'NOT_FOUND', gatewayRequest: { errorMessage: 'pipeline "x" does not exist' } });
      expect(third).toMatchObject({ status: 'INTERNAL', gatewayRequest: { errorMessage: 'db down' } });
    } finally {
      await listener.close();
    }
  });

  it('carries the active span as a W3C traceparent header and as trace and span ids in the event', async () => {
    const { nats, publisher: events } = await connectedPublisher();
    const listener = await collectEvents(nats.url);
    try {
      const ids = tracer.startActiveSpan('request', (span) => {
        events.publish('gateway', 'request', { status: 'OK' });
        span.end();
        return span.spanContext();
      });
      const received = await waitFor('the event', () => listener.events[0]);
      expect(received.event.traceId).toBe(ids.traceId);
      expect(received.event.spanId).toBe(ids.spanId);
      // The flags say whether the span is sampled (recorded); without an exporter it is not.
      expect(received.traceparent).toMatch(new RegExp(`^00-${ids.traceId}-${ids.spanId}-0[01]$`));
    } finally {
      await listener.close();
    }
  });

  it('sends the events of one interval as one batch per subject, with one traceparent per event in order', async () => {
    const { nats, publisher: events, metrics } = await connectedPublisher({ flushIntervalMs: 200 });
    const connection = await connect({ servers: nats.url });
    const messages: { subject: string; batch: proto.TelemetryEventBatch; traceparents: string[] }[] = [];
    const subscription = connection.subscribe('elexirion.events.>', {
      callback: (_error, message) => {
        messages.push({ subject: message.subject, batch: proto.TelemetryEventBatch.decode(message.data), traceparents: message.headers?.values('traceparent') ?? [] });
      },
    });
    await connection.flush();
    try {
      const spans = ['first', 'second'].map((name) =>
        tracer.startActiveSpan(name, (span) => {
          events.publish('agent', 'job', { status: 'OK', agentJob: { jobId: name } });
          span.end();
          return span.spanContext();
        }),
      );
      events.publish('agent', 'job', { status: 'OK', agentJob: { jobId: 'untraced' } });
      events.publish('executor', 'run', { status: 'OK' });
      await waitFor('both subjects', () => messages.length >= 2 && messages);
      await new Promise((resolve) => setTimeout(resolve, 300)); // nothing else arrives
      expect(messages).toHaveLength(2);
      const jobs = messages.find((message) => message.subject === 'elexirion.events.agent.job')!;
      expect(jobs.batch.events.map((event) => event.agentJob?.jobId)).toEqual(['first', 'second', 'untraced']);
      expect(jobs.traceparents).toHaveLength(3);
      spans.forEach((ids, index) => {
        expect(jobs.traceparents[index]).toMatch(new RegExp(`^00-${ids.traceId}-${ids.spanId}-0[01]$`));
        expect(jobs.batch.events[index]!.traceId).toBe(ids.traceId);
      });
      expect(jobs.traceparents[2]).toBe('');
      const runs = messages.find((message) => message.subject === 'elexirion.events.executor.run')!;
      expect(runs.batch.events).toHaveLength(1);
      // Counted when JetStream acknowledges the batch, which may come after a subscriber has it.
      const published = await eventually('the batch to be acknowledged', async () =>
        (await metrics.eventsPublished.get()).values.find((value) => value.labels.kind === 'job'),
      );
      expect(published?.value).toBe(3);
    } finally {
      subscription.unsubscribe();
      await connection.close();
    }
  });

  it('keeps every event of a large interval intact and in order (entries span several encoding slabs)', async () => {
    const { nats, publisher: events } = await connectedPublisher({ flushIntervalMs: 500, queueMax: 10_000 });
    const listener = await collectEvents(nats.url);
    try {
      const count = 1_500; // about 300 KB encoded: several 64 KB slabs
      for (let index = 0; index < count; index++) {
        events.publish('executor', 'run', { status: 'OK', executorRun: { runId: `run-${index}`, output: `output ${index} `.repeat(12) } });
      }
      await waitFor('every event', () => listener.events.length >= count, 15_000);
      expect(listener.events.map((received) => received.event.executorRun?.runId)).toEqual(Array.from({ length: count }, (_, index) => `run-${index}`));
      listener.events.forEach((received, index) => expect(received.event.executorRun?.output).toBe(`output ${index} `.repeat(12)));
      expect(new Set(listener.events.map((received) => received.event.eventId)).size).toBe(count);
    } finally {
      await listener.close();
    }
  });

  it('splits a batch that would pass NATS max_payload, and drops (and counts) an event too large on its own', async () => {
    const { nats, publisher: events, metrics } = await connectedPublisher({ flushIntervalMs: 200 });
    const listener = await collectEvents(nats.url);
    try {
      const big = (label: string, kib: number) => ({ status: 'OK', executorRun: { runId: label, output: 'x'.repeat(kib * 1024) } });
      events.publish('executor', 'run', big('first', 400));
      events.publish('executor', 'run', big('huge', 1100)); // over the default 1 MiB max_payload
      events.publish('executor', 'run', big('second', 400));
      events.publish('executor', 'run', big('third', 400));
      await waitFor('three events', () => listener.events.length >= 3);
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(listener.events.map((received) => received.event.executorRun?.runId)).toEqual(['first', 'second', 'third']);
      expect(listener.events.every((received) => received.event.executorRun!.output.length === 400 * 1024)).toBe(true);
      expect(await dropped(metrics, 'too_large')).toBe(1);
    } finally {
      await listener.close();
    }
  });

  it('creates the JetStream stream ELEXIRION_EVENTS on elexirion.events.> and the events land in it', async () => {
    const { nats, publisher: events } = await connectedPublisher();
    const connection = await connect({ servers: nats.url });
    try {
      const manager = await jetstreamManager(connection);
      const info = await manager.streams.info('ELEXIRION_EVENTS');
      expect(info.config.subjects).toEqual(['elexirion.events.>']);
      events.publish('executor', 'run', { status: 'OK' });
      events.publish('executor', 'run', { status: 'ERROR' });
      const stored = await eventually('the batch in the stream', async () => {
        const current = await manager.streams.info('ELEXIRION_EVENTS');
        return current.state.messages >= 1 ? current : undefined;
      });
      // Both were published within one flush interval: one message holds both.
      expect(stored.state.messages).toBe(1);
      const message = await manager.streams.getMessage('ELEXIRION_EVENTS', { seq: stored.state.first_seq });
      expect(message?.subject).toBe('elexirion.events.executor.run');
      expect(proto.TelemetryEventBatch.decode(message!.data).events.map((event) => event.status)).toEqual(['OK', 'ERROR']);
    } finally {
      await connection.close();
    }
  });

  it('keeps an existing stream rather than failing or replacing it', async () => {
    const { nats, publisher: first, close: closeFirst } = await connectedPublisher();
    first.publish('agent', 'job', { status: 'OK' });
    await closeFirst();
    const second = publisher(nats.url).publisher;
    expect(await second.waitUntilConnected(10_000)).toBe(true);
    const connection = await connect({ servers: nats.url });
    try {
      const manager = await jetstreamManager(connection);
      const info = await eventually('the first event to be kept', async () => {
        const current = await manager.streams.info('ELEXIRION_EVENTS');
        return current.state.messages >= 1 ? current : undefined;
      });
      expect(info.state.messages).toBe(1);
    } finally {
      await connection.close();
    }
  });

  it('delivers later events once NATS comes up after the publisher started', async () => {
    const port = await freePort();
    const { publisher: events } = publisher(`nats://127.0.0.1:${port}`);
    events.publish('agent', 'job', { status: 'EARLY' });
    await new Promise((resolve) => setTimeout(resolve, 300)); // at least one failed attempt
    expect(events.isConnected).toBe(false);

    const nats = await startNats(port);
    servers.push(nats);
    expect(await events.waitUntilConnected(15_000)).toBe(true);
    const listener = await collectEvents(nats.url);
    try {
      events.publish('agent', 'job', { status: 'LATER' });
      const later = await waitFor('the later event', () => listener.events.find((item) => item.event.status === 'LATER'));
      expect(later.subject).toBe('elexirion.events.agent.job');
    } finally {
      await listener.close();
    }
  });

  it('keeps the events it held while NATS was down in the stream once NATS comes up', async () => {
    const port = await freePort();
    const { publisher: events } = publisher(`nats://127.0.0.1:${port}`);
    events.publish('agent', 'job', { status: 'EARLY' });
    const nats = await startNats(port);
    servers.push(nats);
    expect(await events.waitUntilConnected(15_000)).toBe(true);
    const connection = await connect({ servers: nats.url });
    try {
      const manager = await jetstreamManager(connection);
      const info = await eventually(
        'the held event in the stream',
        async () => {
          const current = await manager.streams.info('ELEXIRION_EVENTS');
          return current.state.messages >= 1 ? current : undefined;
        },
      );
      expect(info.state.messages).toBe(1);
    } finally {
      await connection.close();
    }
  });

  it('creates the stream again when NATS comes back without its store, and keeps what it held meanwhile', async () => {
    const first = await startNats();
    const { port } = first; // the second server starts there, where the publisher reconnects
    const { publisher: events } = publisher(first.url);
    expect(await events.waitUntilConnected(10_000)).toBe(true);
    await first.stop(); // its temporary store goes with it
    await waitFor('the publisher to notice', () => !events.isConnected, 10_000);
    events.publish('agent', 'job', { status: 'HELD' });
    const second = await startNats(port);
    servers.push(second);
    const connection = await connect({ servers: second.url });
    try {
      const manager = await jetstreamManager(connection);
      const info = await eventually('the held event in a new stream', async () => {
        const current = await manager.streams.info('ELEXIRION_EVENTS');
        return current.state.messages >= 1 ? current : undefined;
      }, 15_000);
      expect(info.state.messages).toBe(1);
    } finally {
      await connection.close();
    }
  });

  it('never puts a registered secret into an event', async () => {
    const secret = 'sk-events-test-5d1e0c8b7a';
    registerSecret(secret);
    const { nats, publisher: events } = await connectedPublisher();
    const listener = await collectEvents(nats.url);
    try {
      // In one batch with events that hold none: only the one that does is rewritten, in its place.
      events.publish('provider', 'completion', { status: 'OK', providerCompletion: { provider: 'openai', model: 'before' } });
      events.publish('provider', 'completion', {
        status: 'ERROR',
        providerCompletion: { provider: 'anthropic', errorMessage: `401: invalid x-api-key ${secret}` },
      });
      events.publish('provider', 'completion', { status: 'OK', providerCompletion: { provider: 'openai', model: 'after' } });
      await waitFor('the three events', () => listener.events.length >= 3);
      const [before, received, after] = listener.events;
      expect(received!.event.providerCompletion!.errorMessage).toBe(`401: invalid x-api-key ${REDACTED}`);
      expect(received!.event.providerCompletion!.provider).toBe('anthropic');
      expect(JSON.stringify(proto.TelemetryEvent.toJSON(received!.event))).not.toContain(secret);
      expect(before!.event.providerCompletion!.model).toBe('before');
      expect(after!.event.providerCompletion!.model).toBe('after');
    } finally {
      await listener.close();
    }
  });
});

describe('EventPublisher accounting', () => {
  /** Every event in the stream's batches, by status. */
  async function storedEvents(url: string, stream: string): Promise<proto.TelemetryEvent[]> {
    const connection = await connect({ servers: url });
    try {
      const manager = await jetstreamManager(connection);
      const { state } = await manager.streams.info(stream);
      const events: proto.TelemetryEvent[] = [];
      for (let seq = state.first_seq; seq <= state.last_seq && state.messages > 0; seq += 1) {
        const message = await manager.streams.getMessage(stream, { seq });
        if (message) events.push(...proto.TelemetryEventBatch.decode(message.data).events);
      }
      return events;
    } finally {
      await connection.close();
    }
  }

  async function total(counter: Metrics['eventsPublished'] | Metrics['eventsDropped']): Promise<number> {
    return (await counter.get()).values.reduce((sum, value) => sum + value.value, 0);
  }

  it('counts every event offered as published or dropped when NATS stops under load, and every published one is in the stream', async () => {
    const port = await freePort();
    const store = mkdtempSync(join(tmpdir(), 'elexirion-nats-'));
    try {
      let nats = await startNats(port, store);
      const { publisher: events, metrics } = publisher(nats.url, { queueMax: 300, flushIntervalMs: 2 });
      expect(await events.waitUntilConnected(10_000)).toBe(true);
      const offered = 1_500;
      let stopped: Promise<void> | undefined;
      for (let index = 0; index < offered; index += 1) {
        events.publish('agent', 'job', { status: `E${index}` });
        // NATS stops a third of the way in, while events keep coming.
        if (index === 500) stopped = nats.stop();
        await new Promise((resolve) => setImmediate(resolve));
      }
      await stopped;
      nats = await startNats(port, store);
      servers.push(nats);
      expect(await events.waitUntilConnected(15_000)).toBe(true);
      await events.close();

      const published = await total(metrics.eventsPublished);
      const droppedInAll = await total(metrics.eventsDropped);
      expect(published + droppedInAll).toBe(offered);
      const stored = new Set((await storedEvents(nats.url, 'ELEXIRION_EVENTS')).map((event) => event.status));
      // What was counted as published is in the stream; what is not there was counted as dropped.
      expect(stored.size).toBeGreaterThanOrEqual(published);
      expect(stored.size).toBeLessThanOrEqual(offered);
      expect(published).toBeGreaterThan(0);
    } finally {
      rmSync(store, { recursive: true, force: true });
    }
  });

  it('counts a batch JetStream does not acknowledge as dropped (unconfirmed), not as published', async () => {
    const { nats, publisher: events, metrics } = await connectedPublisher();
    // Stopped, not gone: the connection stays up, and nothing answers on it.
    nats.process.child.kill('SIGSTOP');
    try {
      for (let index = 0; index < 3; index += 1) events.publish('agent', 'job', { status: 'OK' });
      await events.close(); // sends them, and waits for acknowledgements that do not come
      expect(await dropped(metrics, 'unconfirmed')).toBe(3);
      expect(await total(metrics.eventsPublished)).toBe(0);
    } finally {
      nats.process.child.kill('SIGCONT');
    }
  });

  it('counts the events of a batch NATS refuses (its stream is gone) as dropped (rejected)', async () => {
    const { nats, publisher: events, metrics } = await connectedPublisher();
    const connection = await connect({ servers: nats.url });
    try {
      await (await jetstreamManager(connection)).streams.delete('ELEXIRION_EVENTS');
    } finally {
      await connection.close();
    }
    events.publish('agent', 'job', { status: 'OK' });
    events.publish('agent', 'job', { status: 'OK' });
    await eventually('the refusal', async () => ((await dropped(metrics, 'rejected')) === 2 ? true : undefined));
    expect(await total(metrics.eventsPublished)).toBe(0);
  });
});
