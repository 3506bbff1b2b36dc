import {
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  jetstream,
  jetstreamManager,
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
} from '@nats-io/jetstream';
import { nanos, type NatsConnection } from '@nats-io/transport-node';
import { ElexirionError, RUN_ID_DESCRIPTION, RUN_ID_PATTERN, Status, proto, type KvKeyRule } from '@elexirion/kit';

/** The stream that keeps every job's events. */
export const DEFAULT_JOB_EVENTS_STREAM = 'ELEXIRION_JOB_EVENTS';
/** A job's events go to `<prefix>.<jobId>`. */
export const DEFAULT_JOB_EVENTS_SUBJECT_PREFIX = 'elexirion.jobs.events';
/** How long the stream keeps an event: a watcher can resume a job finished up to a week ago. */
export const DEFAULT_JOB_EVENTS_MAX_AGE_MS = 7 * 24 * 3_600_000;
/**
 * How long nats-server keeps a watch's consumer once nobody pulls from it: only a process that
 * died mid-watch leaves one behind (watch() deletes its own), and this bounds how long.
 */
const WATCH_CONSUMER_INACTIVE_MS = 60_000;
/** Events a watch asks for at a time; a finished job's replay comes in pulls of this size. */
const WATCH_PULL_SIZE = 256;

/** What a job id may be: the kit's run id rule (a job's id is its run's id). */
export const JOB_ID: KvKeyRule = { pattern: RUN_ID_PATTERN, description: RUN_ID_DESCRIPTION, name: 'job id' };

/** The oneof part of a JobEvent, as ts-proto generates it: exactly one of these. */
export type JobEventBody =
  | { statusChanged: proto.JobStatusChanged }
  | { stepStarted: proto.StepStarted }
  | { textDelta: proto.TextDelta }
  | { stepFinished: proto.StepResult }
  | { stepFailed: proto.StepFailed };

const BODY_FIELDS = ['statusChanged', 'stepStarted', 'textDelta', 'stepFinished', 'stepFailed'] as const;

/** The statuses a job ends with; the event reporting one is a job's last. */
export const TERMINAL_JOB_STATUSES: ReadonlySet<proto.JobStatus> = new Set([
  proto.JobStatus.JOB_STATUS_SUCCEEDED,
  proto.JobStatus.JOB_STATUS_FAILED,
  proto.JobStatus.JOB_STATUS_CANCELLED,
]);

/** Whether `event` reports that its job ended. */
export function isTerminalJobEvent(event: Pick<proto.JobEvent, 'statusChanged'>): boolean {
  return event.statusChanged !== undefined && TERMINAL_JOB_STATUSES.has(event.statusChanged.status);
}

/** Why `jobId` is not a job id, or undefined when it is one. */
export function jobIdProblem(jobId: string): string | undefined {
  if (typeof jobId === 'string' && JOB_ID.pattern.test(jobId)) return undefined;
  return `expected ${JOB_ID.description}, got ${JSON.stringify(String(jobId).slice(0, 80))}`;
}

/** The job event log cannot do what it was asked; the status says why. */
export class JobEventsError extends ElexirionError {
  override readonly name = 'JobEventsError';
}

export interface JobEventLogOptions {
  /** The stream's name (default ELEXIRION_JOB_EVENTS). */
  stream?: string;
  /** Subjects are `<prefix>.<jobId>` (default elexirion.jobs.events); the stream takes `<prefix>.>`. */
  subjectPrefix?: string;
  /** For a stream created now: how long it keeps an event (default 7 days). An existing stream keeps its own. */
  maxAgeMs?: number;
}

/**
 * Every job's events, in a JetStream stream (file storage, limited by age), one subject per job,
 * each event a protobuf JobEvent whose sequence is its stream sequence: it increases along a
 * job's events, and a watcher that reconnects with the last one it saw gets exactly what came
 * after it.
 *
 * `append` resolves once JetStream stored the event. Appends need not wait for each other: one
 * connection keeps their order, so a burst of text deltas costs one round trip rather than one
 * per delta (a caller streaming many tiny deltas may still join them to keep the stream small).
 */
export class JobEventLog {
  private constructor(
    private readonly manager: JetStreamManager,
    private readonly client: JetStreamClient,
    readonly stream: string,
    readonly subjectPrefix: string,
  ) {}

  /**
   * Binds to the stream, creating it when missing. An existing stream is used as it is (its max
   * age is not changed), but one that does not take this log's subjects is refused.
   */
  static async open(nats: NatsConnection, options: JobEventLogOptions = {}): Promise<JobEventLog> {
    const stream = options.stream ?? DEFAULT_JOB_EVENTS_STREAM;
    const subjectPrefix = options.subjectPrefix ?? DEFAULT_JOB_EVENTS_SUBJECT_PREFIX;
    const maxAgeMs = options.maxAgeMs ?? DEFAULT_JOB_EVENTS_MAX_AGE_MS;
    if (!/^[^\s.*>]+$/.test(stream)) throw new JobEventsError(Status.INVALID_ARGUMENT, `job events: stream must be a stream name, not ${JSON.stringify(stream)}`);
    if (!/^[^\s.*>]+(\.[^\s.*>]+)*$/.test(subjectPrefix)) throw new JobEventsError(Status.INVALID_ARGUMENT, `job events: subjectPrefix ${JSON.stringify(subjectPrefix)} is not a subject without wildcards`);
    if (!(maxAgeMs > 0)) throw new JobEventsError(Status.INVALID_ARGUMENT, 'job events: maxAgeMs must be positive');
    const manager = await jetstreamManager(nats);
    await ensureStream(manager, stream, `${subjectPrefix}.>`, maxAgeMs);
    return new JobEventLog(manager, jetstream(nats), stream, subjectPrefix);
  }

  /** Stores one event of `jobId`; resolves with its sequence once JetStream acknowledged it. */
  async append(jobId: string, body: JobEventBody): Promise<number> {
    const subject = this.subjectOf(jobId);
    const present = BODY_FIELDS.filter((field) => (body as Partial<Record<(typeof BODY_FIELDS)[number], unknown>>)[field] !== undefined);
    if (present.length !== 1) {
      throw new JobEventsError(Status.INVALID_ARGUMENT, `job ${jobId}: an event has exactly one of ${BODY_FIELDS.join(', ')}, not ${present.length === 0 ? 'none' : present.join(' and ')}`);
    }
    // The sequence is the stream's, known only once stored: watch() fills it in.
    const data = proto.JobEvent.encode({ jobId, sequence: 0, time: new Date(), ...body }).finish();
    const ack = await this.client.publish(subject, data, { expect: { streamName: this.stream } });
    return ack.seq;
  }

  /**
   * The events of `jobId` after `afterSequence` (0: from its first), in order, each once: first
   * those stored, then live ones as they are appended. Ends after the event that reports the
   * job's end, at once when the caller saw that one already; waits when nothing came after
   * `afterSequence` yet. Aborting `signal` ends it with an AbortError, and the server-side
   * consumer is deleted however it ends.
   *
   * Fails with INVALID_ARGUMENT for a malformed job id or sequence, OUT_OF_RANGE for a sequence
   * past every event stored (no client saw that one), DATA_LOSS for a stored event that does not
   * decode as this job's, UNAVAILABLE when NATS goes away for good.
   */
  async *watch(jobId: string, afterSequence: number, signal: AbortSignal): AsyncIterable<proto.JobEvent> {
    const subject = this.subjectOf(jobId);
    if (!Number.isSafeInteger(afterSequence) || afterSequence < 0) {
      throw new JobEventsError(Status.INVALID_ARGUMENT, `after_sequence: expected a whole number from 0, got ${afterSequence}`);
    }
    if (signal.aborted) throw abortError();
    if (afterSequence > 0) {
      const { state } = await this.manager.streams.info(this.stream);
      if (afterSequence > state.last_seq) {
        throw new JobEventsError(Status.OUT_OF_RANGE, `after_sequence ${afterSequence} is past the last job event stored (${state.last_seq})`);
      }
      // A caller who saw the job's last event already gets nothing, rather than a wait that never ends.
      const last = await this.manager.streams.getMessage(this.stream, { last_by_subj: subject });
      if (last && last.seq <= afterSequence && isTerminalJobEvent(decodeEvent(last.data, last.seq, jobId))) return;
    }
    // An ordered consumer: ephemeral, in memory, unacknowledged, and recreated by the client from
    // the last sequence it delivered when it misses heartbeats or a message, so nothing is
    // skipped or repeated across a NATS reconnect.
    const consumer = await this.client.consumers.get(this.stream, {
      filter_subjects: subject,
      opt_start_seq: afterSequence + 1,
      inactive_threshold: WATCH_CONSUMER_INACTIVE_MS,
    });
    let messages: ConsumerMessages | undefined;
    const stop = () => void messages?.close();
    signal.addEventListener('abort', stop, { once: true });
    try {
      // Without abort_on_missing_resource: an ordered consumer lives in the server's memory, so
      // after a NATS restart it is missing, and the client must make it again from its cursor.
      messages = await consumer.consume({ max_messages: WATCH_PULL_SIZE });
      if (signal.aborted) void messages.close();
      for await (const message of messages) {
        const event = decodeEvent(message.data, message.seq, jobId);
        yield event;
        if (isTerminalJobEvent(event)) return;
      }
      if (signal.aborted) throw abortError();
      throw new JobEventsError(Status.UNAVAILABLE, `watching job ${jobId}: its NATS connection closed`);
    } catch (error) {
      if (signal.aborted) throw abortError();
      if (error instanceof ElexirionError) throw error;
      throw new JobEventsError(Status.UNAVAILABLE, `watching job ${jobId} stopped: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
    } finally {
      signal.removeEventListener('abort', stop);
      await messages?.close();
      // Not left for the inactivity threshold: a page that reconnects often would pile them up.
      await consumer.delete().catch(() => undefined);
    }
  }

  private subjectOf(jobId: string): string {
    const problem = jobIdProblem(jobId);
    if (problem) throw new JobEventsError(Status.INVALID_ARGUMENT, `job_id: ${problem}`);
    return `${this.subjectPrefix}.${jobId}`;
  }
}

async function ensureStream(manager: JetStreamManager, stream: string, subject: string, maxAgeMs: number): Promise<void> {
  let subjects = await streamSubjects(manager, stream);
  if (!subjects) {
    try {
      await manager.streams.add({
        name: stream,
        subjects: [subject],
        retention: RetentionPolicy.Limits,
        storage: StorageType.File,
        discard: DiscardPolicy.Old,
        max_age: nanos(maxAgeMs),
        description: 'Elexirion job events (one subject per job id), for WatchJob',
      });
      return;
    } catch (error) {
      // Another replica may have created it meanwhile: use that one (checked below).
      subjects = await streamSubjects(manager, stream);
      if (!subjects) throw error;
    }
  }
  if (!subjects.includes(subject)) {
    throw new JobEventsError(Status.FAILED_PRECONDITION, `stream ${stream} exists with subjects ${JSON.stringify(subjects)}, not "${subject}": use another stream name, or delete the stream`);
  }
}

async function streamSubjects(manager: JetStreamManager, stream: string): Promise<string[] | undefined> {
  try {
    return (await manager.streams.info(stream)).config.subjects ?? [];
  } catch (error) {
    if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound) return undefined;
    throw error;
  }
}

/** A stored event, with its stream sequence as its sequence; DATA_LOSS when it is not one of `jobId`'s. */
function decodeEvent(data: Uint8Array, sequence: number, jobId: string): proto.JobEvent {
  let event: proto.JobEvent;
  try {
    event = proto.JobEvent.decode(data);
  } catch (error) {
    throw new JobEventsError(Status.DATA_LOSS, `job ${jobId}: event ${sequence} does not decode: ${error instanceof Error ? error.message : String(error)}`);
  }
  if (event.jobId !== jobId) throw new JobEventsError(Status.DATA_LOSS, `job ${jobId}: event ${sequence} belongs to job ${JSON.stringify(event.jobId.slice(0, 80))}`);
  event.sequence = sequence;
  return event;
}

/** What an aborted watch throws: an AbortError, which the kit answers as CANCELLED. */
function abortError(): Error {
  return new DOMException('the watch was aborted', 'AbortError');
}
