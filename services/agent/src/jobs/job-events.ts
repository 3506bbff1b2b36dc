/**
 * A job's events in JetStream, one subject per job (`elexirion.jobs.events.<job id>`), each
 * numbered by its stream sequence. MINIMAL version for the jobs branch: the events/webhook work
 * of issue 12 writes this file (with `watch`, for WatchJob); this one has the same `open` and
 * `append` so the job runner compiles and records its events meanwhile.
 */
import { jetstreamManager, JetStreamApiCodes, JetStreamApiError, RetentionPolicy, StorageType, type JetStreamClient } from '@nats-io/jetstream';
import { nanos, type NatsConnection } from '@nats-io/transport-node';
import { proto } from '@elexirion/kit';

export type JobEventBody = Pick<proto.JobEvent, 'statusChanged' | 'stepStarted' | 'textDelta' | 'stepFinished' | 'stepFailed'>;

export const JOB_EVENTS_STREAM = 'ELEXIRION_JOB_EVENTS';
export const JOB_EVENTS_SUBJECT_PREFIX = 'elexirion.jobs.events';

export class JobEventLog {
  private constructor(private readonly js: JetStreamClient) {}

  static async open(nats: NatsConnection, options: { retentionMs?: number } = {}): Promise<JobEventLog> {
    const manager = await jetstreamManager(nats);
    try {
      await manager.streams.info(JOB_EVENTS_STREAM);
    } catch (error) {
      if (!(error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound)) throw error;
      await manager.streams.add({
        name: JOB_EVENTS_STREAM,
        subjects: [`${JOB_EVENTS_SUBJECT_PREFIX}.>`],
        retention: RetentionPolicy.Limits,
        storage: StorageType.File,
        max_age: nanos(options.retentionMs ?? 7 * 24 * 3_600_000),
      });
    }
    return new JobEventLog(manager.jetstream());
  }

  /** Stores the event; resolves with its sequence once JetStream has it. */
  async append(jobId: string, event: JobEventBody): Promise<number> {
    const data = proto.JobEvent.encode({ jobId, sequence: 0, time: new Date(), ...event }).finish();
    const ack = await this.js.publish(`${JOB_EVENTS_SUBJECT_PREFIX}.${jobId}`, data);
    return ack.seq;
  }
}
