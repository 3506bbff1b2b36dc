/**
 * The jobs' work queue: a JetStream stream with work-queue retention (a message lives until a
 * replica acknowledges it) and one durable pull consumer that every agent replica shares. A job
 * is delivered to one replica at a time; one that is neither acknowledged nor kept alive with
 * `working()` within the ack wait goes to another (a killed replica's jobs are taken over).
 */
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  jetstreamManager,
  type Consumer,
  type ConsumerConfig,
  type JetStreamClient,
  type JetStreamManager,
} from '@nats-io/jetstream';
import { nanos, type NatsConnection } from '@nats-io/transport-node';

export const JOBS_STREAM = 'ELEXIRION_JOBS';
export const JOBS_QUEUE_SUBJECT = 'elexirion.jobs.queue';
export const JOBS_CONSUMER = 'agent-jobs';
/** Core NATS subject every replica listens on: the payload is a job id to stop if it runs here. */
export const JOBS_CANCEL_SUBJECT = 'elexirion.jobs.cancel';

export interface JobQueueOptions {
  /** How long a delivered job may go without ack or `working()` before another replica gets it. */
  ackWaitMs: number;
  /**
   * Deliveries JetStream makes: one more than the jobs' limit, so the delivery past the limit
   * reaches a replica, which ends the job as failed saying so (else it would sit in the stream).
   */
  maxDeliver: number;
  /** Jobs the stream holds at most (queued or held by a replica); past it a publish is refused. */
  maxQueued: number;
}

/** The queue holds its maximum of jobs: SubmitJob answers RESOURCE_EXHAUSTED. */
export class QueueFullError extends Error {
  override readonly name = 'QueueFullError';
}

export class JobQueue {
  private constructor(
    private readonly js: JetStreamClient,
    readonly consumer: Consumer,
    private readonly maxQueued: number,
  ) {}

  /** Binds to the stream and its consumer, creating them when missing and updating the consumer's ack wait and max deliver. */
  static async open(connection: NatsConnection, options: JobQueueOptions): Promise<JobQueue> {
    const manager = await jetstreamManager(connection);
    await ensureStream(manager, options.maxQueued);
    const config: Partial<ConsumerConfig> = {
      ack_policy: AckPolicy.Explicit,
      ack_wait: nanos(options.ackWaitMs),
      max_deliver: options.maxDeliver,
    };
    try {
      await manager.consumers.update(JOBS_STREAM, JOBS_CONSUMER, config);
    } catch (error) {
      if (!(error instanceof JetStreamApiError && error.code === JetStreamApiCodes.ConsumerNotFound)) throw error;
      // Two replicas may create it at once; the same config either way, so the loser's error is
      // worth a retry of the whole attach, which then updates it.
      await manager.consumers.add(JOBS_STREAM, { ...config, durable_name: JOBS_CONSUMER, deliver_policy: DeliverPolicy.All, filter_subject: JOBS_QUEUE_SUBJECT });
    }
    const js = manager.jetstream();
    return new JobQueue(js, await js.consumers.get(JOBS_STREAM, JOBS_CONSUMER), options.maxQueued);
  }

  /**
   * Stores the job in the queue; resolves once JetStream has it on disk. The message id is the
   * job id, so a publish retried within the stream's duplicate window is stored once.
   */
  async enqueue(jobId: string): Promise<void> {
    try {
      await this.js.publish(JOBS_QUEUE_SUBJECT, jobId, { msgID: jobId });
    } catch (error) {
      // The stream discards new messages past max_msgs: JetStream refuses the publish.
      if (error instanceof JetStreamApiError && error.code === STREAM_STORE_FAILED) {
        throw new QueueFullError(`the job queue holds its maximum of ${this.maxQueued} jobs (AGENT_MAX_QUEUED_JOBS)`, { cause: error });
      }
      throw error;
    }
  }
}

/** JetStream's error code for a message the stream would not store (here: past max_msgs with discard new). */
const STREAM_STORE_FAILED = 10077;

async function ensureStream(manager: JetStreamManager, maxQueued: number): Promise<void> {
  try {
    const { config } = await manager.streams.info(JOBS_STREAM);
    // The bound follows the replicas' setting (the last replica to attach wins, as for the ack wait).
    if (config.max_msgs !== maxQueued || config.discard !== DiscardPolicy.New) await manager.streams.update(JOBS_STREAM, { ...config, max_msgs: maxQueued, discard: DiscardPolicy.New });
    return;
  } catch (error) {
    if (!(error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound)) throw error;
  }
  await manager.streams.add({
    name: JOBS_STREAM,
    subjects: [JOBS_QUEUE_SUBJECT],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    max_msgs: maxQueued,
    discard: DiscardPolicy.New,
    description: 'Elexirion agent jobs waiting for, or held by, a replica (one message per job id)',
    duplicate_window: nanos(120_000),
  });
}
