/**
 * Runs queued jobs on this replica: at most `maxConcurrent` at once, each taken from the shared
 * work queue only when a slot is free. A job is taken with a compare-and-set on its record (the
 * record names the replica and delivery that own it), kept alive with `working()` while it runs,
 * and acknowledged once its record says how it ended. A replica that dies leaves the message
 * unacknowledged: after the ack wait JetStream delivers it to another replica, which resumes the
 * executor's run from its last checkpoint (the job id is the run id).
 */
import { KvRevisionConflictError, Status, TrailerCapture, statusNameOf, statusOf, failureMessage, type Logger, type ServiceClient, proto } from '@elexirion/kit';
import { FallbackFailedError, describeFailure, recover } from '../fallback/index.js';
import type { JsMsg } from '@nats-io/jetstream';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { JobEventBody, JobEventLog } from './job-events.js';
import { JOBS_CANCEL_SUBJECT, type JobQueue } from './job-queue.js';
import { isFinished, type JobRecord, type JobStore } from './job-store.js';
import type { WebhookSender } from './webhook.js';

const { JobStatus } = proto;

export interface JobRunnerOptions {
  /** This replica's name, recorded on the jobs it takes. */
  replica: string;
  maxConcurrent: number;
  ackWaitMs: number;
  /** Deliveries after which a job that never finished ends as failed. */
  maxDeliveries: number;
  executor: ServiceClient<'executor'>;
  store: JobStore;
  queue: JobQueue;
  events: JobEventLog | undefined;
  webhooks: WebhookSender;
  logger: Logger;
}

/** Text deltas are appended as events at most this often per job (one event per step per window). */
const DELTA_FLUSH_MS = 50;
/** A pull waits this long for a job before asking again (and noticing a stop). */
const PULL_EXPIRES_MS = 5_000;
/** A job naked for a failure worth retrying elsewhere comes back after this. */
const RETRY_DELAY_MS = 1_000;

/** Why a job's run was stopped from outside. */
type StopReason = 'cancelled' | 'lost' | 'shutdown';

/** The job's record no longer names this delivery as its owner (cancelled, or taken over). */
class JobLostError extends Error {
  constructor(readonly reason: 'cancelled' | 'lost') {
    super(reason === 'cancelled' ? 'the job was cancelled' : 'another replica took the job over');
  }
}

interface RunningJob {
  controller: AbortController;
  stop(reason: StopReason): void;
}

export class JobRunner {
  readonly #options: JobRunnerOptions;
  readonly #running = new Map<string, RunningJob>();
  readonly #stopping = new AbortController();
  #cancelSubscription: Subscription | undefined;
  /** The jobs being handled (taken, run, settled); a pull waiting for a job is not among them. */
  readonly #handling = new Set<Promise<void>>();

  constructor(options: JobRunnerOptions) {
    this.#options = options;
  }

  get running(): number {
    return this.#running.size;
  }

  /** Starts the pull loops (one per slot) and listens for cancels. */
  start(connection: NatsConnection): void {
    this.#cancelSubscription = connection.subscribe(JOBS_CANCEL_SUBJECT, {
      callback: (error, message) => {
        if (error) return;
        this.#running.get(message.string())?.stop('cancelled');
      },
    });
    for (let slot = 0; slot < this.#options.maxConcurrent; slot += 1) void this.#work();
  }

  /**
   * Stops taking jobs, and stops the ones running without ending them: they go back to the queue
   * at once (nak) and another replica resumes them from their checkpoints. Pulls still waiting
   * are not waited for: a job one brings after this goes back to the queue at once.
   */
  async close(): Promise<void> {
    this.#stopping.abort();
    this.#cancelSubscription?.unsubscribe();
    for (const job of this.#running.values()) job.stop('shutdown');
    await Promise.all(this.#handling);
  }

  async #work(): Promise<void> {
    const { queue, logger } = this.#options;
    let failures = 0;
    while (!this.#stopping.signal.aborted) {
      let message: JsMsg | null;
      try {
        message = await queue.consumer.next({ expires: PULL_EXPIRES_MS });
        failures = 0;
      } catch (error) {
        if (this.#stopping.signal.aborted) break;
        failures += 1;
        if (failures === 1) logger.warn({ err: error }, 'jobs: pulling from the queue failed; retrying');
        await new Promise((resolve) => setTimeout(resolve, Math.min(5_000, 100 * 2 ** failures)));
        continue;
      }
      if (!message) continue;
      if (this.#stopping.signal.aborted) {
        message.nak();
        break;
      }
      const handling = this.#handle(message).catch((error: unknown) => {
        logger.error({ err: error }, 'jobs: handling a delivered job failed; it will be delivered again');
        message.nak(RETRY_DELAY_MS);
      });
      this.#handling.add(handling);
      await handling;
      this.#handling.delete(handling);
    }
  }

  async #handle(message: JsMsg): Promise<void> {
    const { maxDeliveries, ackWaitMs, logger } = this.#options;
    const jobId = message.string();
    const delivery = message.info.deliveryCount;
    // Progress for JetStream while the job is taken and run: without it, a run longer than the
    // ack wait would be handed to a second replica.
    const heartbeat = setInterval(() => message.working(), Math.max(50, Math.floor(ackWaitMs / 3)));
    try {
      const taken = await this.#take(jobId, delivery);
      if (taken.kind === 'missing') {
        logger.warn({ job_id: jobId }, 'jobs: a queued job has no record (expired or deleted); dropping it');
        message.term('no record');
        return;
      }
      if (taken.kind === 'finished') {
        // The replica that finished it died before acknowledging; or a queued job was cancelled.
        if (taken.record.job.webhookStatus === 'pending') await this.#deliverWebhook(taken.record);
        message.ack();
        return;
      }
      let record = taken.record;
      if (delivery > maxDeliveries) {
        record = await this.#finish(record, delivery, {
          status: JobStatus.JOB_STATUS_FAILED,
          errorCode: 'ABORTED',
          error: `gave up after ${maxDeliveries} deliveries: the replicas that took the job (last ${taken.previousReplica || 'unknown'}) stopped before it ended`,
        });
        message.ack();
        return;
      }
      const outcome = await this.#run(record, delivery, taken.previousReplica);
      if (outcome === 'retry') {
        message.nak(RETRY_DELAY_MS);
        return;
      }
      if (outcome === 'shutdown') {
        message.nak();
        return;
      }
      message.ack();
    } finally {
      clearInterval(heartbeat);
    }
  }

  /** Takes the job for this delivery (compare-and-set), or says why not. */
  async #take(jobId: string, delivery: number): Promise<{ kind: 'missing' } | { kind: 'finished'; record: JobRecord } | { kind: 'run'; record: JobRecord; previousReplica: string }> {
    const { store, replica } = this.#options;
    for (;;) {
      const current = await store.get(jobId);
      if (!current) return { kind: 'missing' };
      if (isFinished(current.job.status)) return { kind: 'finished', record: current };
      const job: proto.Job = { ...current.job, status: JobStatus.JOB_STATUS_RUNNING, deliveries: delivery, replica, startedAt: current.job.startedAt ?? new Date() };
      try {
        return { kind: 'run', record: await store.update(current, job), previousReplica: current.job.replica };
      } catch (error) {
        if (!(error instanceof KvRevisionConflictError)) throw error;
      }
    }
  }

  /**
   * Runs the taken job through the executor and records how it ended. 'retry': a failure worth
   * another delivery (the executor unavailable); 'shutdown': this replica is stopping.
   */
  async #run(taken: JobRecord, delivery: number, previousReplica: string): Promise<'done' | 'retry' | 'shutdown'> {
    const { executor, logger, replica } = this.#options;
    const jobId = taken.job.jobId;
    let record = taken;
    // Set from outside (a cancel, a stop) while the run is awaited.
    const stopped: { reason: StopReason | undefined } = { reason: undefined };
    const controller = new AbortController();
    this.#running.set(jobId, {
      controller,
      stop: (reason) => {
        stopped.reason ??= reason;
        controller.abort();
      },
    });
    const resume = delivery > 1 && previousReplica !== '';
    const events = new EventWriter(this.#options.events, jobId, logger);
    try {
      await events.append({
        statusChanged: {
          status: JobStatus.JOB_STATUS_RUNNING,
          detail: resume ? `taken over by ${replica} (delivery ${delivery}) after ${previousReplica} stopped` : `taken by ${replica}`,
          job: undefined,
        },
      });
      /** Writes the record if this delivery still owns it; JobLostError when it does not. */
      const write = async (change: (job: proto.Job) => proto.Job) => {
        for (;;) {
          try {
            record = await this.#options.store.update(record, { ...change(record.job), lastSequence: events.last || record.job.lastSequence });
            return;
          } catch (error) {
            if (!(error instanceof KvRevisionConflictError)) throw error;
            const fresh = await this.#options.store.get(jobId);
            if (!fresh) throw new JobLostError('lost');
            if (fresh.job.status === JobStatus.JOB_STATUS_CANCELLED) throw new JobLostError('cancelled');
            if (fresh.job.replica !== replica || fresh.job.deliveries !== delivery || isFinished(fresh.job.status)) throw new JobLostError('lost');
            record = fresh;
          }
        }
      };
      let result: proto.ExecuteResponse | undefined;
      // The executor's structured failure (RunFailure) of a failed run, for its emergent fallback.
      const trailer = new TrailerCapture();
      try {
        result = await this.#execute(record.job, resume, controller.signal, events, write, trailer);
      } catch (error) {
        if (error instanceof JobLostError) stopped.reason ??= error.reason;
        if (stopped.reason === 'shutdown') return 'shutdown';
        if (stopped.reason === 'cancelled' || stopped.reason === 'lost') {
          await events.flush();
          // CancelJob wrote the record (CANCELLED, by whom, at which step); only the event is ours.
          const fresh = await this.#options.store.get(jobId);
          if (fresh && fresh.job.status === JobStatus.JOB_STATUS_CANCELLED) {
            await events.append({ statusChanged: { status: JobStatus.JOB_STATUS_CANCELLED, detail: `cancelled by ${fresh.job.cancelledBy}`, job: fresh.job } });
            if (fresh.job.webhookStatus === 'pending') await this.#deliverWebhook(fresh);
          }
          return 'done';
        }
        const failure = trailer.runFailure();
        // UNAVAILABLE without a run failure is the executor (or the way to it) down, not the run.
        if (!failure && statusOf(error) === Status.UNAVAILABLE) {
          logger.warn({ job_id: jobId, err: error }, 'jobs: the executor is unavailable; the job goes back to the queue');
          return 'retry';
        }
        await events.flush();
        const outcome = failure ? await this.#recover(record.job, error, failure, controller.signal, events) : runFailureOutcome(error);
        await this.#finish(record, delivery, outcome, events);
        return 'done';
      }
      await events.flush();
      await this.#finish(
        record,
        delivery,
        {
          status: JobStatus.JOB_STATUS_SUCCEEDED,
          output: result.output,
          outputs: result.outputs,
          steps: result.steps,
          usage: result.usage,
          resumedSteps: result.resumedSteps,
          pipeline: result.pipeline,
          currentStep: '',
          fallbackUsed: result.steps.some((step) => step.fallbackUsed),
        },
        events,
      );
      return 'done';
    } catch (error) {
      if (stopped.reason === 'shutdown') return 'shutdown';
      if (error instanceof JobLostError) return 'done';
      throw error;
    } finally {
      this.#running.delete(jobId);
      events.close();
    }
  }

  /**
   * The emergent fallback of a failed run (fallback/): a pipeline generated for its failure class,
   * run once. The job then ends as that run did, saying what failed first and what was tried.
   */
  async #recover(job: proto.Job, error: unknown, failure: proto.RunFailure, signal: AbortSignal, events: EventWriter): Promise<Partial<proto.Job>> {
    await events.append({ statusChanged: { status: JobStatus.JOB_STATUS_RUNNING, detail: `the run failed (${describeFailure(failure)}): trying its emergent fallback`, job: undefined } });
    try {
      const { fallback, result } = await recover(this.#options.executor, error, failure, { pipeline: job.pipeline, inputs: job.inputs, jobId: job.jobId, sessionKey: job.sessionId }, { signal });
      return {
        status: JobStatus.JOB_STATUS_SUCCEEDED,
        output: result.output,
        outputs: result.outputs,
        steps: result.steps,
        usage: result.usage,
        currentStep: '',
        fallbackUsed: true,
        fallback,
      };
    } catch (caught) {
      return { ...runFailureOutcome(caught), currentStep: '', fallbackUsed: caught instanceof FallbackFailedError, ...(caught instanceof FallbackFailedError ? { fallback: caught.fallback } : {}) };
    }
  }

  /**
   * One executor call, streamed so each step's progress lands in the record and the events. A
   * take-over resumes the run from its checkpoint; a run with none yet (the replica died during
   * its first step) starts again under the same id.
   */
  async #execute(
    job: proto.Job,
    resume: boolean,
    signal: AbortSignal,
    events: EventWriter,
    write: (change: (job: proto.Job) => proto.Job) => Promise<void>,
    trailer: TrailerCapture,
  ): Promise<proto.ExecuteResponse> {
    const fresh: proto.ExecuteRequest = {
      pipeline: job.pipeline,
      inputs: job.inputs,
      jobId: job.jobId,
      runId: job.jobId,
      sessionKey: job.sessionId,
      inlineYaml: '',
      promptOverrides: {},
      promptCandidates: {},
      resumeRunId: '',
    };
    const resumed: proto.ExecuteRequest = { ...fresh, pipeline: '', inputs: {}, runId: '', resumeRunId: job.jobId };
    let request = resume ? resumed : fresh;
    for (let attempt = 0; ; attempt += 1) {
      let started = false;
      try {
        let final: proto.ExecuteResponse | undefined;
        for await (const event of this.#options.executor.executeStream({ request }, { signal, onTrailer: trailer.onTrailer })) {
          started = true;
          if (event.stepStarted) {
            const step = event.stepStarted.step;
            await events.append({ stepStarted: event.stepStarted });
            await write((current) => ({ ...current, currentStep: step }));
          } else if (event.textDelta) {
            events.delta(event.textDelta);
          } else if (event.stepFinished) {
            const step = event.stepFinished;
            await events.flush();
            await events.append({ stepFinished: step });
            await write((current) => ({ ...current, steps: [...current.steps.filter((done) => done.name !== step.name), step] }));
          } else if (event.stepFailed) {
            await events.flush();
            await events.append({ stepFailed: event.stepFailed });
          } else if (event.runFinished) {
            final = event.runFinished;
          }
        }
        if (!final) throw new Error('the executor ended the run stream without its result');
        return final;
      } catch (error) {
        if (started || attempt > 0 || signal.aborted) throw error;
        // Checked before the run starts, so nothing ran: switch between starting and resuming.
        const code = statusOf(error);
        if (request === resumed && code === Status.NOT_FOUND) request = fresh;
        else if (request === fresh && code === Status.ALREADY_EXISTS) request = resumed;
        else throw error;
      }
    }
  }

  /** Writes the job's end (unless it is no longer this delivery's), its last event, and delivers its webhook. */
  async #finish(record: JobRecord, delivery: number, outcome: Partial<proto.Job>, events?: EventWriter): Promise<JobRecord> {
    const { store, replica } = this.#options;
    const log = events ?? new EventWriter(this.#options.events, record.job.jobId, this.#options.logger);
    let finished: proto.Job = {
      ...record.job,
      ...outcome,
      finishedAt: new Date(),
      webhookStatus: record.job.webhookUrl ? 'pending' : record.job.webhookStatus,
    };
    // The job as its record keeps it: an event, too, must fit NATS's max_payload.
    const sequence = await log.append({ statusChanged: { status: finished.status, detail: outcome.error ?? '', job: store.fit(finished) } });
    if (sequence) finished = { ...finished, lastSequence: sequence };
    let written: JobRecord | undefined;
    for (let current = record; ; ) {
      try {
        written = await store.update(current, finished);
        break;
      } catch (error) {
        if (!(error instanceof KvRevisionConflictError)) throw error;
        const fresh = await store.get(record.job.jobId);
        // Cancelled or taken over meanwhile: that write stands.
        if (!fresh || isFinished(fresh.job.status) || fresh.job.replica !== replica || fresh.job.deliveries !== delivery) return fresh ?? record;
        current = fresh;
      }
    }
    if (written.job.webhookStatus === 'pending') written = await this.#deliverWebhook(written);
    return written;
  }

  /** POSTs the finished job to its webhook and records how that went. */
  async #deliverWebhook(record: JobRecord): Promise<JobRecord> {
    const { webhookUrl } = record.job;
    const status = await this.#options.webhooks.deliver(record.job, { url: webhookUrl, secret: record.webhookSecret });
    const written = await this.#options.store.mutate(record.job.jobId, (job) => (job.webhookStatus === 'pending' ? { ...job, webhookStatus: status } : undefined));
    return written ?? record;
  }
}

/** A failed run as the job's outcome: CANCELLED for a cancel, else FAILED with the status and message. */
export function runFailureOutcome(error: unknown): Partial<proto.Job> {
  return {
    status: statusOf(error) === Status.CANCELLED ? JobStatus.JOB_STATUS_CANCELLED : JobStatus.JOB_STATUS_FAILED,
    errorCode: statusNameOf(error),
    error: failureMessage(error),
  };
}

/**
 * A job's events as one replica writes them: in order, text deltas gathered per step for
 * DELTA_FLUSH_MS. Events are best effort: a failed append is logged and the run goes on (the
 * record is what the job's outcome rests on).
 */
class EventWriter {
  last = 0;
  #deltas: proto.TextDelta[] = [];
  #timer: NodeJS.Timeout | undefined;
  #chain: Promise<unknown> = Promise.resolve();
  #warned = false;

  constructor(
    private readonly log: JobEventLog | undefined,
    private readonly jobId: string,
    private readonly logger: Logger,
  ) {}

  /** Appends after every earlier append; resolves with its sequence (0 when it failed or there is no log). */
  append(event: JobEventBody): Promise<number> {
    const log = this.log;
    if (!log) return Promise.resolve(0);
    const appended = this.#chain.then(() =>
      log.append(this.jobId, event).then(
        (sequence) => {
          this.last = Math.max(this.last, sequence);
          return sequence;
        },
        (error: unknown) => {
          if (!this.#warned) this.logger.warn({ job_id: this.jobId, err: error }, 'jobs: appending a job event failed; the job goes on');
          this.#warned = true;
          return 0;
        },
      ),
    );
    this.#chain = appended;
    return appended;
  }

  delta(delta: proto.TextDelta): void {
    if (!this.log) return;
    const last = this.#deltas.at(-1);
    if (last && last.step === delta.step) last.text += delta.text;
    else this.#deltas.push({ ...delta });
    this.#timer ??= setTimeout(() => void this.flush(), DELTA_FLUSH_MS);
  }

  /** Appends the gathered deltas; resolves once every append so far is stored. */
  async flush(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const textDelta of this.#deltas.splice(0)) void this.append({ textDelta });
    await this.#chain;
  }

  close(): void {
    clearTimeout(this.#timer);
  }
}
