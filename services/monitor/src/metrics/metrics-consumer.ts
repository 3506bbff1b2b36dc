import { EventsReader, EVENT_SUBJECT_PREFIX, type DeliveredBatch, type Logger, type proto } from '@elexirion/kit';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { Counter, Gauge, type Registry } from 'prom-client';
import { MinuteStore, MINUTE_MS } from './minute-store.js';

/** The consumer's backlog as its info last said it. */
export interface ConsumerLag {
  /** Events batches in the stream not delivered to any replica yet. */
  pending: number;
  /** Delivered and not acknowledged yet (being applied, or to be delivered again). */
  ackPending: number;
  /** pending + ackPending: what the monitor has not processed yet. */
  total: number;
  /** When the consumer's info was read. */
  readAt: Date;
}

export interface MetricsConsumerOptions {
  stream: string;
  durable: string;
  lagPollMs: number;
  ackWaitMs: number;
  deliver: 'all' | 'new';
  logger: Logger;
  registry: Registry;
  minutes: () => MinuteStore | undefined;
}

const REOPEN_DELAY_MS = 2_000;

async function readConsumer(connection: NatsConnection, stream: string, durable: string): Promise<{ lag: ConsumerLag; ackFloor: number }> {
  const info = await (await jetstreamManager(connection)).consumers.info(stream, durable);
  return {
    lag: { pending: info.num_pending, ackPending: info.num_ack_pending, total: info.num_pending + info.num_ack_pending, readAt: new Date() },
    ackFloor: info.ack_floor.stream_seq,
  };
}

/** Kinds the performance database counts; batches of other kinds are acknowledged untouched. */
function counted(event: proto.TelemetryEvent): boolean {
  return Boolean(event.gatewayRequest || event.executorRun || event.executorStep || event.providerCompletion || event.monitorFeedback || event.agentJob?.fallbackUsed);
}

function metric<T>(registry: Registry, name: string, create: () => T): T {
  // One registry per process: a second monitor in one process (tests) shares the series.
  return (registry.getSingleMetric(name) as T | undefined) ?? create();
}

/**
 * The durable pull consumer on the events stream that every monitor replica shares (each batch
 * goes to one replica; a replica opened again resumes where the group left off), applying each
 * batch to its minutes' records before it is acknowledged (see MinuteStore for why that counts
 * each event once).
 */
export class MetricsConsumer {
  private reader: EventsReader | undefined;
  private lag: ConsumerLag | undefined;
  /** The consumer's ack floor (stream sequence): everything at or below it is acknowledged. */
  private ackFloor = 0;
  private readonly eventsApplied: Counter;
  private readonly batchesSkipped: Counter;

  constructor(private readonly options: MetricsConsumerOptions) {
    const { registry } = options;
    metric(registry, 'elexirion_monitor_consumer_pending', () => new Gauge({
      name: 'elexirion_monitor_consumer_pending',
      help: 'Telemetry event batches the monitor has not processed yet (pending plus unacknowledged in its durable consumer).',
      registers: [registry],
      collect: async function (this: Gauge) {
        if (current?.lag) this.set(current.lag.total);
      },
    }));
    // The gauge reads the latest consumer created in this process.
    current = this;
    this.eventsApplied = metric(registry, 'elexirion_monitor_events_applied_total', () => new Counter({
      name: 'elexirion_monitor_events_applied_total',
      help: 'Telemetry events added to the performance database (each once, also across redeliveries).',
      registers: [registry],
    }));
    this.batchesSkipped = metric(registry, 'elexirion_monitor_batches_already_applied_total', () => new Counter({
      name: 'elexirion_monitor_batches_already_applied_total',
      help: 'Event batches delivered again whose events a minute record held already (acknowledged, not counted twice).',
      registers: [registry],
    }));
  }

  consumerLag(): ConsumerLag | undefined {
    return this.lag;
  }

  /** Opens the reader on `connection` and consumes until `signal` aborts; resolves once consuming started. */
  async attach(connection: NatsConnection, signal: AbortSignal): Promise<void> {
    const { stream, durable, lagPollMs, ackWaitMs, deliver, logger } = this.options;
    const reader = await EventsReader.open(connection, { stream, durable, filterSubject: `${EVENT_SUBJECT_PREFIX}.>`, ackWaitMs, deliver, signal });
    this.reader = reader;
    const poll = async () => {
      try {
        const { lag, ackFloor } = await readConsumer(connection, stream, durable);
        // Never lower: a stale read must not make a record keep fewer sequences than it must.
        this.ackFloor = Math.max(this.ackFloor, ackFloor);
        this.lag = lag;
      } catch (error) {
        logger.warn({ err: error }, 'monitor metrics: could not read the events consumer info');
      }
    };
    await poll();
    const timer = setInterval(() => void poll(), lagPollMs);
    timer.unref();
    signal.addEventListener('abort', () => clearInterval(timer), { once: true });
    reader
      .consume((batch) => this.handle(batch), { onUndecodable: (message) => logger.warn({ subject: message.subject, sequence: message.streamSequence, reason: message.reason }, 'monitor metrics: telemetry message that does not decode (skipped)') })
      .catch((error: unknown) => {
        clearInterval(timer);
        logger.error({ err: error }, `monitor metrics: the events reader stopped; opening it again in ${REOPEN_DELAY_MS} ms`);
        this.reopenLater(connection, signal);
      });
  }

  /** The reader stopped on its own (its consumer or the stream deleted): open it again until it works or the host stops. */
  private reopenLater(connection: NatsConnection, signal: AbortSignal): void {
    const timer = setTimeout(() => {
      if (signal.aborted || connection.isClosed()) return; // a new connection attaches anew
      this.attach(connection, signal).catch((error: unknown) => {
        this.options.logger.warn({ err: error }, 'monitor metrics: could not open the events reader again');
        this.reopenLater(connection, signal);
      });
    }, REOPEN_DELAY_MS);
    timer.unref();
  }

  async close(): Promise<void> {
    await this.reader?.close();
  }

  private async handle(batch: DeliveredBatch): Promise<void> {
    const minutes = this.options.minutes();
    if (!minutes) throw new Error('the metrics bucket is not open yet');
    const byMinute = new Map<number, proto.TelemetryEvent[]>();
    for (const { event } of batch.events) {
      if (!counted(event)) continue;
      const time = event.time instanceof Date ? event.time.getTime() : batch.time.getTime();
      const minute = Math.floor(time / MINUTE_MS);
      let events = byMinute.get(minute);
      if (!events) byMinute.set(minute, (events = []));
      events.push(event);
    }
    for (const [minute, events] of byMinute) {
      const added = await minutes.applyBatch(minute, batch.streamSequence, this.ackFloor, (aggregates) => {
        for (const event of events) aggregates.apply(event);
      });
      if (added) this.eventsApplied.inc(events.length);
      else this.batchesSkipped.inc();
    }
  }
}

let current: MetricsConsumer | undefined;
