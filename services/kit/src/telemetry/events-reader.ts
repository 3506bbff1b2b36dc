import {
  AckPolicy,
  DeliverPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  jetstreamManager,
  type Consumer,
  type ConsumerConfig,
  type ConsumerInfo,
  type ConsumerMessages,
  type JetStreamManager,
  type JsMsg,
} from '@nats-io/jetstream';
import { millis, nanos, type NatsConnection } from '@nats-io/transport-node';
import { BinaryReader } from '@bufbuild/protobuf/wire';
import { AbortError } from 'abort-controller-x';
import { TelemetryEventBatch, type TelemetryEvent } from '../generated/elexirion/v1/telemetry.js';
import { ElexirionError, Status } from '../rpc/errors.js';
import { redactSecrets } from '../secrets.js';

/**
 * Messages a reader holds ahead of its handler. Their ack wait runs while they wait their turn,
 * so this stays small: 16 batches behind a slow handler still leave most of the ack wait.
 */
const PREFETCH = 16;
const DEFAULT_ACK_WAIT_MS = 30_000;
const DEFAULT_REDELIVERY_DELAY_MS = 1_000;

export interface EventsReaderOptions {
  /** The stream that keeps the events: the EventPublisher's `streamName` (ELEXIRION_EVENTS). */
  stream: string;
  /**
   * The durable consumer's name. Readers that open the same name (replicas of one service) share
   * its messages, each message going to one of them; a reader opened again with it resumes where
   * the last one left off.
   */
  durable: string;
  /**
   * The one subject the consumer reads, wildcards allowed: `elexirion.events.executor.>`,
   * `elexirion.events.*.run`, or `elexirion.events.>` for everything. One, not a list: nats-server
   * 2.9 keeps a single filter per consumer (`filter_subjects` needs 2.10). For two unrelated
   * subjects, use one wider wildcard and skip in the handler, or open two readers with two
   * durable names.
   */
  filterSubject: string;
  /**
   * Where a consumer created now starts: every event the stream holds (`all`, the default) or
   * those published from now on (`new`). A consumer that exists resumes where it is.
   */
  deliver?: 'all' | 'new';
  /**
   * For a consumer created now: how long a delivered message may go unacknowledged before the
   * stream gives it to another reader (default 30 s). A reader whose handler takes longer keeps
   * its message by telling the server it is still working on it.
   */
  ackWaitMs?: number;
  /** How long a message whose handler failed waits before it is delivered again (default 1 s). */
  redeliveryDelayMs?: number;
  /** Aborting it stops the reader, as `close()` does. */
  signal?: AbortSignal;
}

/** One event of a batch with the W3C traceparent it was published under (undefined outside a trace). */
export interface TracedEvent {
  event: TelemetryEvent;
  traceparent: string | undefined;
}

/** One message of the stream: one publisher's events of one subject and flush interval, oldest first. */
export interface DeliveredBatch {
  /** `elexirion.events.<service>.<kind>` */
  subject: string;
  streamSequence: number;
  /** When the stream stored the message. */
  time: Date;
  /**
   * Deliveries as nats-server counts them: more than 1 after a handler failed on it while a reader
   * was waiting. Not a proof of a first delivery: 2.9 counts a batch handed back while no reader
   * was waiting (a reader closed mid-handler, none open yet) as undelivered.
   */
  deliveryCount: number;
  events: TracedEvent[];
}

/** A message that is not a TelemetryEventBatch as the publisher writes it; it is never delivered again. */
export interface UndecodableMessage {
  subject: string;
  streamSequence: number;
  time: Date;
  reason: string;
}

/**
 * Handles one batch. Resolving acknowledges it; throwing (or rejecting) has it delivered again
 * after `redeliveryDelayMs`, to this reader or another sharing the durable name, so a handler
 * logs its own failure. `signal` aborts when the reader closes: a handler that stops then
 * should throw, and the batch goes to the next reader at once.
 */
export type DeliveredBatchHandler = (batch: DeliveredBatch, signal: AbortSignal) => Promise<void> | void;

export interface EventsConsumeOptions {
  /** Told of each message that does not decode (then terminated, so the stream stops offering it). */
  onUndecodable(message: UndecodableMessage): void;
}

/** The reader cannot bind, or stopped for a reason other than close(): the message says which. */
export class EventsReaderError extends ElexirionError {
  override readonly name = 'EventsReaderError';
}

/**
 * Reads the telemetry events stream through a durable JetStream pull consumer, batch by batch,
 * in stream order for each reader:
 *
 * ```ts
 * const reader = await EventsReader.open(connection, {
 *   stream: 'ELEXIRION_EVENTS', durable: 'monitor', filterSubject: 'elexirion.events.>', signal,
 * });
 * await reader.consume(
 *   async (batch) => { for (const { event, traceparent } of batch.events) aggregate(event, traceparent); },
 *   { onUndecodable: (message) => logger.warn(message, 'telemetry message that does not decode') },
 * );
 * ```
 *
 * `open` creates the consumer when it is missing and binds to it when it exists, never changing
 * its config: one that exists with another filter (or is not an explicitly acknowledged pull
 * consumer) is refused with an EventsReaderError that says so. A batch is acknowledged once its
 * handler resolves, and redelivered after a delay when the handler throws. `consume` resolves
 * once the reader is closed (`close()` or the signal), and rejects with an EventsReaderError
 * when it stops on its own: the consumer or stream deleted, or the connection closed for good.
 * A reconnect is not a stop: the reader asks for messages again on the new connection.
 *
 * On a process's SharedNatsConnection, open it in a `use` attach (which retries until the
 * stream exists) and catch what `consume` rejects with.
 */
export class EventsReader {
  private readonly stopping = new AbortController();
  private messages: ConsumerMessages | undefined;
  private consuming: Promise<void> | undefined;
  private readonly onAbort = () => void this.close();

  private constructor(
    private readonly connection: NatsConnection,
    private readonly consumer: Consumer,
    private readonly options: EventsReaderOptions,
    /** The consumer's ack wait: the one it was created with, which may not be this reader's option. */
    private readonly ackWaitMs: number,
  ) {
    options.signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  /**
   * Binds to the durable consumer `options.durable` on `options.stream`, creating it when it is
   * missing. Rejects with an EventsReaderError when the stream does not exist (yet) or the
   * consumer exists with another filter.
   */
  static async open(connection: NatsConnection, options: EventsReaderOptions): Promise<EventsReader> {
    validate(options);
    if (options.signal?.aborted) throw new AbortError();
    const manager = await jetstreamManager(connection);
    const info = await bindOrCreate(manager, options);
    const consumer = manager.jetstream().consumers.getConsumerFromInfo(info);
    return new EventsReader(connection, consumer, options, millis(info.config.ack_wait ?? nanos(DEFAULT_ACK_WAIT_MS)));
  }

  /** Hands each delivered batch to `handler`, one at a time, until the reader is closed. Once per reader. */
  consume(handler: DeliveredBatchHandler, options: EventsConsumeOptions): Promise<void> {
    if (this.consuming) {
      return Promise.reject(new EventsReaderError(Status.FAILED_PRECONDITION, 'this EventsReader is consuming already; open another reader with the same durable name to share the work'));
    }
    this.consuming = this.run(handler, options);
    return this.consuming;
  }

  /**
   * Stops: the handler in progress is told through its signal and its outcome is acknowledged (or
   * not) as usual, and the batches fetched but not handled go back to the stream at once. Resolves
   * once that is sent. Not from inside a handler (it waits for the handler): abort the signal there.
   */
  async close(): Promise<void> {
    if (!this.stopping.signal.aborted) {
      this.stopping.abort();
      this.options.signal?.removeEventListener('abort', this.onAbort);
    }
    await this.messages?.close();
    await this.consuming?.catch(() => {});
    // The acks and naks are written, not necessarily sent: the caller may close the connection next.
    if (!this.connection.isClosed()) await this.connection.flush().catch(() => {});
  }

  private async run(handler: DeliveredBatchHandler, options: EventsConsumeOptions): Promise<void> {
    if (this.stopping.signal.aborted) return;
    // A consumer or stream deleted under a running reader ends it with an error rather than
    // leaving it waiting in silence; a reconnect is handled inside (a new pull, no error).
    const messages = await this.consumer.consume({ max_messages: PREFETCH, abort_on_missing_resource: true });
    this.messages = messages;
    // close() came while consume() started. Not awaited: it resolves once the loop below drains.
    if (this.stopping.signal.aborted) void messages.close();
    try {
      for await (const message of messages) {
        // Fetched but not handled: back to the stream now, for a replica or the next reader.
        if (this.stopping.signal.aborted) message.nak();
        else await this.handle(message, handler, options);
      }
    } catch (error) {
      if (this.stopping.signal.aborted) return;
      const reason = redactSecrets(error instanceof Error ? error.message : String(error));
      throw new EventsReaderError(Status.UNAVAILABLE, `events reader "${this.options.durable}" on stream ${this.options.stream} stopped: ${reason}`, { cause: error });
    }
    if (!this.stopping.signal.aborted) {
      throw new EventsReaderError(Status.UNAVAILABLE, `events reader "${this.options.durable}" on stream ${this.options.stream} stopped: its NATS connection closed`);
    }
  }

  private async handle(message: JsMsg, handler: DeliveredBatchHandler, { onUndecodable }: EventsConsumeOptions): Promise<void> {
    const decoded = decodeBatch(message);
    if ('reason' in decoded) {
      try {
        onUndecodable(decoded);
      } catch {
        // the report is the caller's; the reader goes on either way
      }
      // Without a reason: nats-server 2.9 knows only a bare "+TERM", and would take
      // "+TERM <reason>" for no answer at all and deliver the message again.
      message.term();
      return;
    }
    // Keeps the message this reader's while a slow handler works, rather than the stream giving
    // it to another reader after the ack wait.
    const stillWorking = setInterval(() => message.working(), Math.max(500, this.ackWaitMs / 2));
    try {
      await handler(decoded, this.stopping.signal);
      message.ack();
    } catch {
      // Stopped by close(): another reader can take it now, nothing to wait for.
      message.nak(this.stopping.signal.aborted ? undefined : (this.options.redeliveryDelayMs ?? DEFAULT_REDELIVERY_DELAY_MS));
    } finally {
      clearInterval(stillWorking);
    }
  }
}

function validate(options: EventsReaderOptions): void {
  const { stream, durable, filterSubject, ackWaitMs, redeliveryDelayMs } = options;
  if (typeof stream !== 'string' || !/^[^\s.*>]+$/.test(stream)) throw new EventsReaderError(Status.INVALID_ARGUMENT, `events reader: stream must be a stream name, not ${JSON.stringify(stream)}`);
  if (typeof durable !== 'string' || !/^[^\s.*>]+$/.test(durable)) throw new EventsReaderError(Status.INVALID_ARGUMENT, `events reader: durable must be a name without spaces, dots or wildcards, not ${JSON.stringify(durable)}`);
  if (typeof filterSubject !== 'string') {
    throw new EventsReaderError(Status.INVALID_ARGUMENT, 'events reader: filterSubject must be one subject (nats-server 2.9 keeps one filter per consumer); open one reader per subject, or use a wildcard');
  }
  if (!/^[^\s.]+(\.[^\s.]+)*$/.test(filterSubject)) throw new EventsReaderError(Status.INVALID_ARGUMENT, `events reader: filterSubject ${JSON.stringify(filterSubject)} is not a subject`);
  if (ackWaitMs !== undefined && !(ackWaitMs > 0)) throw new EventsReaderError(Status.INVALID_ARGUMENT, 'events reader: ackWaitMs must be positive');
  if (redeliveryDelayMs !== undefined && !(redeliveryDelayMs >= 0)) throw new EventsReaderError(Status.INVALID_ARGUMENT, 'events reader: redeliveryDelayMs must not be negative');
}

async function bindOrCreate(manager: JetStreamManager, options: EventsReaderOptions): Promise<ConsumerInfo> {
  const { stream, durable, filterSubject } = options;
  let info = await existingConsumer(manager, stream, durable);
  if (!info) {
    try {
      info = await manager.consumers.add(stream, {
        durable_name: durable,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: options.deliver === 'new' ? DeliverPolicy.New : DeliverPolicy.All,
        filter_subject: filterSubject,
        ack_wait: nanos(options.ackWaitMs ?? DEFAULT_ACK_WAIT_MS),
      });
    } catch (error) {
      // Another replica may have created it meanwhile: bind to that one (checked below).
      info = await existingConsumer(manager, stream, durable);
      if (!info) {
        if (!(error instanceof JetStreamApiError)) throw error; // the connection's trouble: worth a retry
        throw new EventsReaderError(Status.FAILED_PRECONDITION, `could not create events consumer "${durable}" on stream ${stream} with filter subject "${filterSubject}": ${error.message}`, { cause: error });
      }
    }
  }
  const mismatch = incompatibility(info.config, filterSubject);
  if (mismatch) {
    throw new EventsReaderError(
      Status.FAILED_PRECONDITION,
      `events consumer "${durable}" on stream ${stream} ${mismatch}: open it as it is, use another durable name, or delete the consumer to change it`,
    );
  }
  return info;
}

async function existingConsumer(manager: JetStreamManager, stream: string, durable: string): Promise<ConsumerInfo | undefined> {
  try {
    return await manager.consumers.info(stream, durable);
  } catch (error) {
    if (!(error instanceof JetStreamApiError)) throw error;
    if (error.code === JetStreamApiCodes.ConsumerNotFound) return undefined;
    if (error.code === JetStreamApiCodes.StreamNotFound) {
      throw new EventsReaderError(Status.FAILED_PRECONDITION, `stream ${stream} does not exist (yet): the EventPublisher creates it when it first connects`, { cause: error });
    }
    throw error;
  }
}

/** Why a consumer that exists is not one this reader can bind to as asked, if it is not. */
function incompatibility(config: ConsumerConfig, filterSubject: string): string | undefined {
  if (config.deliver_subject) return 'is a push consumer (it has a deliver subject), and the reader pulls';
  if (config.ack_policy !== AckPolicy.Explicit) return `acknowledges "${config.ack_policy}", not "explicit"`;
  const filters = config.filter_subjects?.length ? config.filter_subjects : config.filter_subject ? [config.filter_subject] : [];
  if (filters.length === 1 && filters[0] === filterSubject) return undefined;
  const has = filters.length === 0 ? 'no filter subject (every subject of the stream)' : `filter subject ${filters.map((filter) => `"${filter}"`).join(', ')}`;
  return `exists with ${has}, not "${filterSubject}"`;
}

function decodeBatch(message: JsMsg): DeliveredBatch | UndecodableMessage {
  const { streamSequence, deliveryCount } = message.info;
  const base = { subject: message.subject, streamSequence, time: message.time };
  let events: TelemetryEvent[];
  try {
    const reader = new BinaryReader(message.data);
    events = TelemetryEventBatch.decode(reader).events;
    // decode() stops without complaint at a zero tag; bytes left after it are not a batch.
    if (reader.pos !== reader.len) throw new Error(`${reader.len - reader.pos} bytes left over`);
  } catch (error) {
    return { ...base, reason: `not a TelemetryEventBatch: ${error instanceof Error ? error.message : String(error)}` };
  }
  // One traceparent per event, in order; a message without any (not from the publisher) is untraced.
  const traceparents = message.headers?.values('traceparent') ?? [];
  if (traceparents.length > 0 && traceparents.length !== events.length) {
    return { ...base, reason: `${traceparents.length} traceparent header values for ${events.length} events` };
  }
  return { ...base, deliveryCount, events: events.map((event, index) => ({ event, traceparent: traceparents[index] || undefined })) };
}
