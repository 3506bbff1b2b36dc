import { isSpanContextValid, trace } from '@opentelemetry/api';
import { headers, nanos, type NatsConnection } from '@nats-io/transport-node';
import type { ServiceNats } from '../host/shared-nats-connection.js';
import { DiscardPolicy, JetStreamApiError, JetStreamError, RetentionPolicy, StorageType, jetstream, jetstreamManager, type JetStreamClient } from '@nats-io/jetstream';
import { BinaryReader, BinaryWriter } from '@bufbuild/protobuf/wire';
import { EventIdGenerator } from './event-ids.js';
import { TelemetryEvent } from '../generated/elexirion/v1/telemetry.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import { ClientError, ServerError, statusNameOf } from '../rpc/errors.js';
import { containsSecret, redactSecrets, redactSecretsDeep } from '../secrets.js';

export const EVENT_SUBJECT_PREFIX = 'elexirion.events';
/** Events queued that make a flush start without waiting for the interval. */
const BATCH_MAX = 512;
/** NATS's default max_payload, for when the server's INFO is not known yet. */
const DEFAULT_MAX_PAYLOAD = 1024 * 1024;
/** Room for the message's header block beyond the traceparent lines. */
const MESSAGE_OVERHEAD = 256;
/** "traceparent: 00-<32>-<16>-01\r\n" */
const TRACEPARENT_HEADER_BYTES = 72;
/** How long a batch waits for JetStream to acknowledge it before it counts as dropped. */
const ACK_TIMEOUT_MS = 5_000;
/** How long close() waits for the acknowledgements of what it sent last. */
const CLOSE_ACK_WAIT_MS = 2_000;

/**
 * Encodes events for publish: one writer for the process, so that each event does not allocate
 * and grow a buffer of its own (that was most of an event's cost).
 */
const entryWriter = new BinaryWriter();
const SLAB_BYTES = 64 * 1024;

/**
 * Encoded entries live in shared slabs until their batch is sent. `BinaryWriter.finish()` would
 * copy each event into an ArrayBuffer of its own; allocating those was the largest single cost of
 * an event in the chain's profile. This copies the writer's bytes into the current slab instead.
 * It reads the writer's `buffer` and `pos` (not public API; @bufbuild/protobuf 2.x): when they are
 * not there it falls back to `finish()`, so another version of the library is slower, not wrong.
 */
class EntrySlabs {
  private slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
  private used = 0;

  take(writer: BinaryWriter): Uint8Array {
    const internals = writer as unknown as { buffer?: unknown; pos?: unknown; stackPos?: unknown };
    const { buffer, pos } = internals;
    if (!(buffer instanceof Uint8Array) || typeof pos !== 'number' || !Array.isArray(internals.stackPos) || internals.stackPos.length > 0) {
      return writer.finish();
    }
    if (pos > this.slab.length - this.used) {
      this.slab = Buffer.allocUnsafeSlow(Math.max(SLAB_BYTES, pos));
      this.used = 0;
    }
    const entry = this.slab.subarray(this.used, this.used + pos);
    entry.set(buffer.subarray(0, pos));
    this.used += pos;
    internals.pos = 0; // what finish() does, without the copy
    return entry;
  }
}

const entrySlabs = new EntrySlabs();
const eventIds = new EventIdGenerator();


export function eventSubject(service: string, kind: string): string {
  return `${EVENT_SUBJECT_PREFIX}.${service}.${kind}`;
}

/** Fields a service fills in; id, time, service, kind and trace ids are added for it. */
export type EventFields = DeepPartial<Omit<TelemetryEvent, 'eventId' | 'service' | 'kind' | 'time' | 'traceId' | 'spanId'>>;

type DeepPartial<T> = T extends Date | string | number | boolean | undefined
  ? T
  : T extends Array<infer U>
    ? DeepPartial<U>[]
    : T extends object
      ? { [K in keyof T]?: DeepPartial<T[K]> }
      : Partial<T>;

export interface EventPublisherOptions {
  enabled: boolean;
  /** Events held while NATS is slow or down; past this, new events are dropped and counted. */
  queueMax: number;
  /** How long events wait to be sent together; a full batch (`BATCH_MAX`) goes at once. */
  flushIntervalMs: number;
  streamName: string;
  streamMaxAgeHours: number;
  logger: Logger;
  metrics: Metrics;
}

/** A batch sent and not acknowledged yet. */
interface UnacknowledgedBatch {
  service: string;
  kind: string;
  events: number;
}

interface PendingEvent {
  subject: string;
  kind: string;
  service: string;
  /** The event as one `events` entry of a TelemetryEventBatch (tag, length, message); replaced when redacted. */
  entry: Uint8Array;
  /** W3C traceparent of the span active when it was published; empty outside any trace. */
  traceparent: string;
}

/**
 * Publishes protobuf telemetry events to NATS without ever failing or slowing a request:
 * `publish` encodes the event (a few microseconds; what waits is then one small buffer, not an
 * object graph the garbage collector would copy) and queues it (bounded). Sending happens off the
 * request path, while connected, every `flushIntervalMs`: one TelemetryEventBatch message per
 * subject with the events of that interval (per-event messages cost more CPU, in this process
 * and in NATS, than the rest of the telemetry). Each batch is a JetStream publish: its events are
 * counted as published when the stream acknowledges it, as dropped when it says no
 * (`rejected`) or the acknowledgement does not come (`unconfirmed`: the connection went, or
 * nothing answered in time), so published plus dropped is every event offered, and a published
 * event is in the stream. A core publish handed to a connection that was dying was lost without
 * a trace. NATS being down, slow or absent costs dropped events, counted in
 * `elexirion_telemetry_events_dropped_total`, never an error.
 */
export class EventPublisher {
  private connection: NatsConnection | undefined;
  private jetstream: JetStreamClient | undefined;
  private connected = false;
  /** Sent, waiting for their acknowledgement; counted as `unconfirmed` if the connection goes first. */
  private readonly unacknowledged = new Set<UnacknowledgedBatch>();
  /** Told when the last unacknowledged batch settles (close() waits for it). */
  private allAcknowledged: (() => void) | undefined;
  private closing = false;
  private flushScheduled = false;
  private queue: PendingEvent[] = [];
  private stopFollowing: (() => void) | undefined;

  constructor(private readonly options: EventPublisherOptions) {}

  /**
   * Publishes over the process's NATS connection: once it is connected and the stream exists,
   * and while it stays connected. Returns at once; events wait in the queue meanwhile.
   */
  start(nats: Pick<ServiceNats, 'use' | 'onStatus' | 'connected'>): void {
    if (!this.options.enabled || this.stopFollowing || this.closing) return;
    this.stopFollowing = nats.onStatus((state) => {
      const connection = this.connection;
      if (state === 'disconnected') {
        this.connected = false;
        // Their acknowledgements can no longer come: whether NATS stored them is unknown.
        this.settleAllUnconfirmed();
        this.options.logger.warn('telemetry lost NATS; holding events up to the queue limit');
        return;
      }
      if (!connection) return;
      // A server that came back may have lost its store: the stream must exist again before
      // the events held meanwhile go out.
      void this.ensureStream(connection).then(() => {
        this.connected = nats.connected;
        this.scheduleFlush();
      });
    });
    nats.use('telemetry events', async (connection) => {
      // The stream must exist before the first event goes out, or NATS would take the events
      // held while it was down and store none of them.
      await this.ensureStream(connection);
      this.connection = connection;
      this.jetstream = jetstream(connection, { timeout: ACK_TIMEOUT_MS });
      this.connected = nats.connected;
      this.scheduleFlush();
    });
  }

  get isConnected(): boolean {
    return this.connected;
  }

  /** Resolves once connected and the stream exists (tests and readiness use it). */
  async waitUntilConnected(timeoutMs: number): Promise<boolean> {
    const until = Date.now() + timeoutMs;
    while (!this.connected && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 25));
    return this.connected;
  }

  /**
   * `outcome`: the status and duration of an observed call, set on the event unless `fields`
   * say otherwise (no copy of `fields` to merge them: this runs on every call).
   */
  publish(service: string, kind: string, fields: EventFields, outcome?: { status: string; durationMs: number }): void {
    if (!this.options.enabled || this.closing) return;
    if (this.queue.length >= this.options.queueMax) {
      this.options.metrics.eventsDropped.inc({ reason: 'queue_full' });
      return;
    }
    const span = trace.getActiveSpan();
    const spanContext = span?.spanContext();
    const traced = spanContext !== undefined && isSpanContextValid(spanContext);
    let entry: Uint8Array;
    try {
      // fromPartial copies the fields; the ones the publisher owns are set on that copy.
      const event = TelemetryEvent.fromPartial(fields);
      if (outcome) {
        event.status ||= outcome.status;
        if (fields.durationMs === undefined) event.durationMs = outcome.durationMs;
      }
      const now = Date.now();
      event.eventId = eventIds.next(now);
      event.service = service;
      event.kind = kind;
      event.time = new Date(now);
      if (traced) {
        event.traceId = spanContext.traceId;
        event.spanId = spanContext.spanId;
      }
      // Field 1 of TelemetryEventBatch, length-delimited: batches are these entries end to end.
      // Checked for secrets when its batch is sent (see redactBatch).
      entry = entrySlabs.take(TelemetryEvent.encode(event, entryWriter.uint32(10).fork()).join());
    } catch (error) {
      entryWriter.finish(); // resets the shared writer
      this.options.metrics.eventsDropped.inc({ reason: 'encode_error' });
      this.options.logger.debug({ err: error, service, kind }, 'telemetry event could not be encoded');
      return;
    }
    // NATS refuses a message over its max_payload (headers included): such an event is dropped.
    if (entry.length + TRACEPARENT_HEADER_BYTES > this.maxPayload()) {
      this.options.metrics.eventsDropped.inc({ reason: 'too_large' });
      this.options.logger.warn({ service, kind, bytes: entry.length, maxPayload: this.maxPayload() }, 'telemetry event larger than NATS max_payload dropped');
      return;
    }
    const traceparent = traced ? `00-${spanContext.traceId}-${spanContext.spanId}-0${spanContext.traceFlags & 1}` : '';
    this.queue.push({ subject: eventSubject(service, kind), kind, service, entry, traceparent });
    // While connected the queue empties at the next flush; the gauge matters while it cannot.
    if (!this.connected) this.options.metrics.eventsQueued.set(this.queue.length);
    this.scheduleFlush();
  }

  private flushTimer: NodeJS.Timeout | undefined;

  private scheduleFlush(): void {
    if (!this.connected) return;
    if (this.queue.length >= BATCH_MAX) {
      if (this.flushScheduled) return;
      this.flushScheduled = true;
      clearTimeout(this.flushTimer);
      this.flushTimer = undefined;
      setImmediate(() => this.flush());
      return;
    }
    // unref: a queued event never keeps a process alive; close() sends what is left.
    this.flushTimer ??= setTimeout(() => this.flush(), this.options.flushIntervalMs).unref();
  }

  private flush(): void {
    this.flushScheduled = false;
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    const client = this.jetstream;
    if (!client || !this.connected || this.queue.length === 0) return;
    const queued = this.queue;
    this.queue = [];
    this.options.metrics.eventsQueued.set(0);
    const bySubject = new Map<string, PendingEvent[]>();
    for (const pending of queued) {
      const events = bySubject.get(pending.subject);
      if (events) events.push(pending);
      else bySubject.set(pending.subject, [pending]);
    }
    for (const events of bySubject.values()) redactBatch(events);
    // A batch goes out in as many messages as the server's max_payload needs.
    const maxPayload = this.maxPayload();
    for (const [subject, events] of bySubject) {
      let start = 0;
      let size = 0;
      events.forEach((pending, index) => {
        const cost = pending.entry.length + TRACEPARENT_HEADER_BYTES;
        if (size + cost > maxPayload && index > start) {
          this.publishBatch(client, subject, events.slice(start, index));
          start = index;
          size = 0;
        }
        size += cost;
      });
      this.publishBatch(client, subject, start === 0 ? events : events.slice(start));
    }
  }

  /** Room for events in one message: the server's max_payload less the header block. */
  private maxPayload(): number {
    return (this.connection?.info?.max_payload ?? DEFAULT_MAX_PAYLOAD) - MESSAGE_OVERHEAD;
  }

  private publishBatch(client: JetStreamClient, subject: string, events: PendingEvent[]): void {
    const { service, kind } = events[0]!;
    try {
      const messageHeaders = headers();
      for (const pending of events) messageHeaders.append('traceparent', pending.traceparent);
      const payload = Buffer.concat(events.map((pending) => pending.entry));
      // No Nats-Msg-Id: a batch is never sent twice, so JetStream would keep a dedupe entry per
      // message (minutes of them) for nothing.
      const acknowledged = client.publish(subject, payload, { headers: messageHeaders });
      const batch: UnacknowledgedBatch = { service, kind, events: events.length };
      this.unacknowledged.add(batch);
      acknowledged.then(
        () => this.settle(batch, undefined),
        (error: unknown) => {
          // An answer that says no (a limit; no stream for the subject, which the client throws as
          // JetStreamNotEnabled, a class its package does not export) is final; anything else (a
          // timeout, the connection gone) leaves it unknown whether the stream has it.
          const refused = error instanceof JetStreamApiError || error instanceof JetStreamError || (error instanceof Error && error.name === 'JetStreamNotEnabled');
          this.settle(batch, refused ? 'rejected' : 'unconfirmed', error);
        },
      );
    } catch (error) {
      this.options.metrics.eventsDropped.inc({ reason: 'publish_error' }, events.length);
      this.options.logger.debug({ err: error, subject }, 'telemetry events dropped');
    }
  }

  /** Counts every batch still waiting as `unconfirmed`: its acknowledgement can no longer come. */
  private settleAllUnconfirmed(): void {
    for (const batch of [...this.unacknowledged]) this.settle(batch, 'unconfirmed');
  }

  /** Counts a batch once: published when acknowledged, else dropped for `reason`. */
  private settle(batch: UnacknowledgedBatch, reason: 'rejected' | 'unconfirmed' | undefined, error?: unknown): void {
    if (!this.unacknowledged.delete(batch)) return; // counted already: the connection went first
    if (reason === undefined) {
      this.options.metrics.eventsPublished.inc({ service: batch.service, kind: batch.kind }, batch.events);
    } else {
      this.options.metrics.eventsDropped.inc({ reason }, batch.events);
      this.options.logger.debug({ err: error, service: batch.service, kind: batch.kind, events: batch.events, reason }, 'telemetry events dropped');
    }
    if (this.unacknowledged.size === 0) this.allAcknowledged?.();
  }

  /** Creates the stream that keeps every event, if it does not exist yet. */
  private async ensureStream(connection: NatsConnection): Promise<void> {
    const { streamName, streamMaxAgeHours, logger } = this.options;
    try {
      const manager = await jetstreamManager(connection);
      try {
        await manager.streams.info(streamName);
        return;
      } catch {
        // not found: create it below
      }
      await manager.streams.add({
        name: streamName,
        subjects: [`${EVENT_SUBJECT_PREFIX}.>`],
        retention: RetentionPolicy.Limits,
        storage: StorageType.File,
        discard: DiscardPolicy.Old,
        max_age: nanos(streamMaxAgeHours * 3_600_000),
        duplicate_window: nanos(120_000),
      });
      logger.info({ stream: streamName }, 'created telemetry stream');
    } catch (error) {
      // Another replica may have created it meanwhile; events still flow to NATS either way.
      logger.warn({ error: redactSecrets(String(error)), stream: streamName }, 'could not ensure telemetry stream');
    }
  }

  /**
   * Sends what is queued (when connected), waits a little for the acknowledgements, and stops.
   * Events still held are counted as dropped (`not_connected`), and batches still not
   * acknowledged as `unconfirmed`.
   */
  async close(): Promise<void> {
    this.closing = true;
    this.stopFollowing?.();
    if (this.connection && this.connected) this.flush();
    if (this.queue.length > 0) this.options.metrics.eventsDropped.inc({ reason: 'not_connected' }, this.queue.length);
    this.queue = [];
    this.options.metrics.eventsQueued.set(0);
    if (this.unacknowledged.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => (this.allAcknowledged = resolve)),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, CLOSE_ACK_WAIT_MS))),
      ]);
      clearTimeout(timer);
      this.settleAllUnconfirmed();
    }
  }
}

/**
 * Re-encodes, with every registered secret replaced, the events of a batch that hold one. A
 * protobuf string is its UTF-8 bytes, so a secret in any field shows up in the encoded batch:
 * one scan of the batch per flush instead of one per event on the request path, and only an
 * event that holds a secret is decoded again.
 */
function redactBatch(events: PendingEvent[]): void {
  if (!containsSecret(Buffer.concat(events.map((pending) => pending.entry)))) return;
  for (const pending of events) {
    if (!containsSecret(pending.entry)) continue;
    const reader = new BinaryReader(pending.entry);
    reader.uint32(); // the entry's tag (field 1, length-delimited)
    const event = TelemetryEvent.decode(reader.bytes());
    pending.entry = TelemetryEvent.encode(redactSecretsDeep(event), new BinaryWriter().uint32(10).fork()).join().finish();
  }
}

/** A service's view of the publisher: events carry its name. */
export interface ServiceEvents {
  publish(kind: string, fields: EventFields): void;
  /**
   * Starts observing one call: its `kind` event is published, once, when the call ends with
   * `succeeded` or `failed`; status (OK or the failure's gRPC status name) and duration are
   * filled in. An object, not a wrapper around the call: it costs no closure per call.
   */
  begin(kind: string): Observation;
}

/** One observed call: publishes its event when it ends (later calls are ignored). */
export interface Observation {
  /** `durationMs` in `fields` wins over the measured one. */
  succeeded(fields: EventFields): void;
  /** `fields` is given what the failure says: a status error's details, an unexpected error's message (events are the operators' own; secrets are scrubbed when published). */
  failed(error: unknown, fields: (message: string) => EventFields): void;
}

class ObservedCall implements Observation {
  private readonly started = performance.now();
  private ended = false;

  constructor(
    private readonly publisher: EventPublisher,
    private readonly service: string,
    private readonly kind: string,
  ) {}

  succeeded(fields: EventFields): void {
    this.end('OK', fields);
  }

  failed(error: unknown, fields: (message: string) => EventFields): void {
    this.end(statusNameOf(error), fields(eventMessage(error)));
  }

  private end(status: string, fields: EventFields): void {
    if (this.ended) return;
    this.ended = true;
    this.publisher.publish(this.service, this.kind, fields, { status, durationMs: Math.round(performance.now() - this.started) });
  }
}

/** What an event says of a failure: its details, or the message of an unexpected error (events are the operators' own). */
function eventMessage(error: unknown): string {
  if (error instanceof ServerError || error instanceof ClientError) return error.details;
  return error instanceof Error ? error.message : String(error);
}

export function serviceEvents(publisher: EventPublisher, service: string): ServiceEvents {
  return {
    publish: (kind, fields) => publisher.publish(service, kind, fields),
    begin: (kind) => new ObservedCall(publisher, service, kind),
  };
}
