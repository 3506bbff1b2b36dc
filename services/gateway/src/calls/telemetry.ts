import { BinaryReader } from '@bufbuild/protobuf/wire';
import { DeliverPolicy, jetstream, type Consumer, type ConsumerMessages } from '@nats-io/jetstream';
import {
  EVENT_SUBJECT_PREFIX,
  RUN_ID_PATTERN,
  ServerError,
  TELEMETRY_EVENT_KINDS,
  Status,
  proto,
  serviceNames,
  type ServiceContext,
} from '@elexirion/kit';
import { checkPipelineName, invalid } from '../validation.js';
import type { GatewayConfig } from '../gateway-config.js';
import type { GatewayDeps } from './gateway-deps.js';


/**
 * Events a stream holds for its client before it stops reading NATS. The reader fetches a batch
 * only while there is room, so a slow client makes its consumer lag, not the gateway's memory
 * grow; one fetched batch over the bound is the most it holds.
 */
export const TELEMETRY_BUFFER_EVENTS = 1_024;
/** Stream messages asked for at once (each a batch of one publisher's events). */
const FETCH_MESSAGES = 64;
/** How long one fetch waits for live events before asking again (and noticing a client gone). */
const FETCH_EXPIRES_MS = 5_000;

type Filter = (event: proto.TelemetryEvent) => boolean;

/** The request checked: the one NATS subject to read, and what to keep of it. */
function parseRequest(request: proto.StreamTelemetryRequest): { subject: string; keep: Filter; since: Date | undefined } {
  const services = new Set(request.services);
  for (const service of services) {
    if (!(serviceNames as readonly string[]).includes(service)) throw invalid(`services: "${service.slice(0, 40)}" is not a service (${serviceNames.join(', ')})`);
  }
  const kinds = new Set(request.kinds);
  for (const kind of kinds) {
    if (!(TELEMETRY_EVENT_KINDS as readonly string[]).includes(kind)) throw invalid(`kinds: "${kind.slice(0, 40)}" is not an event kind (${TELEMETRY_EVENT_KINDS.join(', ')})`);
  }
  checkPipelineName('pipeline', request.pipeline, false);
  if (request.jobId !== '' && !RUN_ID_PATTERN.test(request.jobId)) throw invalid('job_id: expected 1 to 128 letters, digits, _ and -');
  const since = request.since;
  if (since && since.getTime() > Date.now() + 60_000) throw invalid('since: is in the future');

  // One filter subject (nats-server 2.9 keeps one per consumer): exact when one service and one
  // kind are asked, a wildcard otherwise, the rest checked here.
  const [service] = services;
  const [kind] = kinds;
  const subject = `${EVENT_SUBJECT_PREFIX}.${services.size === 1 ? service : '*'}.${kinds.size === 1 ? kind : '*'}`;
  const { pipeline, jobId } = request;
  const keep: Filter = (event) =>
    (services.size === 0 || services.has(event.service)) &&
    (kinds.size === 0 || kinds.has(event.kind)) &&
    (pipeline === '' || pipelineOf(event) === pipeline) &&
    (jobId === '' || idsOf(event).includes(jobId));
  return { subject, keep, since };
}

/** The pipeline an event is about, when its payload says. */
function pipelineOf(event: proto.TelemetryEvent): string {
  return (
    event.gatewayRequest?.pipeline ??
    event.agentJob?.pipeline ??
    event.executorRun?.pipeline ??
    event.executorStep?.pipeline ??
    event.monitorFeedback?.pipeline ??
    event.executorPrompt?.change?.pipeline ??
    event.monitorRollout?.pipeline ??
    ''
  );
}

/** The job and run ids an event is about (a job's run has the job's id as its run id or job id). */
function idsOf(event: proto.TelemetryEvent): string[] {
  const { gatewayRequest, agentJob, executorRun, executorStep, monitorFeedback } = event;
  return [gatewayRequest?.jobId, gatewayRequest?.runId, agentJob?.jobId, executorRun?.jobId, executorRun?.runId, executorStep?.runId, monitorFeedback?.runId].filter((id): id is string => !!id);
}

function decodeEvents(data: Uint8Array): proto.TelemetryEvent[] | undefined {
  try {
    return proto.TelemetryEventBatch.decode(new BinaryReader(data)).events;
  } catch {
    return undefined; // not the publisher's: skipped (the stream is shared with any writer)
  }
}

/**
 * StreamTelemetry: the services' telemetry events as they are published, filtered. Each call reads
 * through its own ordered (ephemeral, unacknowledged, in-memory) JetStream consumer on the events
 * stream, from `since` or from now, deleted when the call ends: a client that goes away leaves
 * nothing behind. Events wait in a bounded buffer (TELEMETRY_BUFFER_EVENTS); more is not fetched
 * until the client takes them (backpressure, no event dropped). A client that takes nothing for
 * GATEWAY_TELEMETRY_STALL_MS while the buffer is full is ended with RESOURCE_EXHAUSTED; a consumer
 * lost with NATS ends the stream with UNAVAILABLE. Either way the client opens it again with
 * `since` set to the time of the last event it has.
 */
export function telemetryCalls(deps: GatewayDeps): Pick<proto.GatewayServiceImplementation, 'streamTelemetry'> {
  const { context } = deps;
  // StreamTelemetry needs the process's NATS connection; this makes the host connect it.
  context.nats.use('StreamTelemetry', async () => {});
  return {
    async *streamTelemetry(request, callContext) {
      const { subject, keep, since } = parseRequest(request);
      const connection = context.nats.connection;
      if (!connection || !context.nats.connected) throw new ServerError(Status.UNAVAILABLE, 'telemetry events are not available: the gateway is not connected to NATS; retry shortly');
      const consumer = await openConsumer(context, connection, subject, since);
      const stop = new AbortController();
      const onAbort = () => stop.abort();
      callContext.signal.addEventListener('abort', onAbort, { once: true });
      const buffer = new EventBuffer(context.config.GATEWAY_TELEMETRY_STALL_MS);
      // A live stream never ends by itself: draining ends it, as a failure the client retries
      // elsewhere (a clean end would look like "no more events").
      const onDrain = () => {
        buffer.end(new ServerError(Status.UNAVAILABLE, 'the gateway is shutting down: stream again, with since set to the last event\'s time, to continue on another replica'));
        stop.abort();
      };
      if (context.draining.aborted) onDrain();
      context.draining.addEventListener('abort', onDrain, { once: true });
      const reading = readInto(consumer, keep, buffer, stop.signal).finally(() =>
        // The consumer goes as soon as reading stops (a stalled client's too), not after its inactivity threshold.
        consumer.delete().catch((error: unknown) => context.logger.debug({ err: error }, 'StreamTelemetry: deleting its consumer failed; it expires by itself')),
      );
      try {
        for (;;) {
          // Ends with the reader's failure once the events before it are sent.
          const event = await buffer.next(stop.signal);
          if (event === undefined) break;
          yield { event };
        }
      } finally {
        callContext.signal.removeEventListener('abort', onAbort);
        context.draining.removeEventListener('abort', onDrain);
        stop.abort();
        await reading.catch(() => {});
      }
    },
  };
}

async function openConsumer(context: ServiceContext<GatewayConfig>, connection: NonNullable<ServiceContext<GatewayConfig>['nats']['connection']>, subject: string, since: Date | undefined): Promise<Consumer> {
  const stream = context.host.TELEMETRY_STREAM;
  try {
    return await jetstream(connection).consumers.get(stream, {
      filter_subjects: subject,
      ...(since ? { opt_start_time: since.toISOString() } : { deliver_policy: DeliverPolicy.New }),
      // Deleted by the call when it ends; this reaps the consumer of a gateway that died. Above
      // the stall limit, so a stalled client is ended by the gateway first (not reaped mid-stream).
      inactive_threshold: context.config.GATEWAY_TELEMETRY_STALL_MS + 60_000,
    });
  } catch (error) {
    context.logger.warn({ err: error, stream }, 'StreamTelemetry: cannot open a consumer on the events stream');
    throw new ServerError(Status.UNAVAILABLE, `telemetry events are not available: the events stream ${stream} cannot be read now; retry shortly`);
  }
}

/** Fetches while the buffer has room, until `signal` aborts; ends the buffer (with the failure, for the client) when it stops. */
async function readInto(consumer: Consumer, keep: Filter, buffer: EventBuffer, signal: AbortSignal): Promise<void> {
  let messages: ConsumerMessages | undefined;
  const onAbort = () => void messages?.close();
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    while (!signal.aborted) {
      await buffer.room(signal);
      if (signal.aborted) break;
      messages = await consumer.fetch({ max_messages: FETCH_MESSAGES, expires: FETCH_EXPIRES_MS });
      for await (const message of messages) {
        const events = decodeEvents(message.data);
        if (events) buffer.push(events.filter(keep));
      }
    }
    buffer.end();
  } catch (error) {
    if (signal.aborted) return buffer.end();
    buffer.end(error instanceof SlowClientError ? error : new ServerError(Status.UNAVAILABLE, `telemetry events stopped: ${error instanceof Error ? error.message : String(error)}`));
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

/** The client took nothing for the stall limit while its buffer was full. */
class SlowClientError extends ServerError {
  constructor(stallMs: number) {
    super(Status.RESOURCE_EXHAUSTED, `the client took no telemetry event for ${stallMs} ms with ${TELEMETRY_BUFFER_EVENTS} or more waiting for it (GATEWAY_TELEMETRY_STALL_MS): stream again with since set to the last event's time`);
  }
}

/** Events between the NATS reader and the client's stream, bounded by TELEMETRY_BUFFER_EVENTS. */
class EventBuffer {
  constructor(private readonly stallMs: number) {}

  private readonly events: proto.TelemetryEvent[] = [];
  private ended = false;
  private failure: Error | undefined;
  private wake: (() => void) | undefined;

  push(events: proto.TelemetryEvent[]): void {
    if (events.length === 0 || this.ended) return;
    this.events.push(...events);
    this.notify();
  }

  /** No more events after those held; the first end decides (a failure is sent after them). */
  end(failure?: Error): void {
    if (this.ended) return;
    this.ended = true;
    this.failure = failure;
    this.notify();
  }

  /** The next event; undefined once ended and empty (or aborted); throws the reader's failure. */
  async next(signal: AbortSignal): Promise<proto.TelemetryEvent | undefined> {
    for (;;) {
      const event = this.events.shift();
      if (event) {
        this.notify();
        return event;
      }
      if (this.failure) throw this.failure;
      if (this.ended || signal.aborted) return undefined;
      await this.waitFor(signal);
    }
  }

  /** Resolves when the buffer is below its bound (or on abort); throws SlowClientError when the client takes nothing for the stall limit. */
  async room(signal: AbortSignal): Promise<void> {
    while (this.events.length >= TELEMETRY_BUFFER_EVENTS && !signal.aborted) {
      const stall = AbortSignal.timeout(this.stallMs);
      await this.waitFor(AbortSignal.any([signal, stall]));
      if (stall.aborted && !signal.aborted && this.events.length >= TELEMETRY_BUFFER_EVENTS) throw new SlowClientError(this.stallMs);
    }
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  /** One waiter at a time is enough: the reader waits for room only while the client side has events to take. */
  private waitFor(signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        signal.removeEventListener('abort', done);
        resolve();
      };
      const previous = this.wake;
      this.wake = () => {
        previous?.();
        done();
      };
      signal.addEventListener('abort', done, { once: true });
    });
  }
}
