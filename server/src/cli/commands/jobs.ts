import * as proto from '@elexirion/kit/proto';
import { ClientError, Status } from 'nice-grpc';
import { parseInteger, parsePairs, parseTime, UsageError, type CommandSpec } from '../args.js';
import type { Context } from '../context.js';
import { ExitCode } from '../exit-codes.js';
import { formatCost, formatMs, formatRoute, formatTime, formatUsage, parseJobStatus, statusName, textArgument } from '../format.js';

const FINISHED: ReadonlySet<proto.JobStatus> = new Set([proto.JobStatus.JOB_STATUS_SUCCEEDED, proto.JobStatus.JOB_STATUS_FAILED, proto.JobStatus.JOB_STATUS_CANCELLED]);


export const jobsSubmitSpec: CommandSpec = {
  path: ['jobs', 'submit'],
  brief: 'submit a durable job; prints its id',
  usage: '[MESSAGE... | -] [--pipeline NAME] [--input NAME=VALUE]... [--idempotency-key KEY] [--watch]',
  summary:
    'Submits a durable job (SubmitJob) and prints its id on stdout once it is stored: a message the agent routes, or --pipeline with --input values (the message, when given, is its `message` input). MESSAGE "-" reads stdin.',
  options: {
    pipeline: { type: 'string', short: 'p', value: 'NAME', description: 'the pipeline to run; without it the message is routed' },
    input: { type: 'string', short: 'i', multiple: true, value: 'NAME=VALUE', description: "a pipeline input; VALUE @FILE reads a file" },
    'idempotency-key': { type: 'string', value: 'KEY', description: 'the same key returns the first job instead of a new one' },
    session: { type: 'string', value: 'ID', description: 'session id for sticky prompt versions' },
    webhook: { type: 'string', value: 'URL', description: 'POST the finished job here (signing secret from env ELEXIRION_WEBHOOK_SECRET)' },
    watch: { type: 'boolean', short: 'w', description: 'then follow the job as `jobs watch` does (and exit as it does)' },
  },
  positionals: { min: 0, max: Infinity, names: 'MESSAGE' },
  details: 'Output: the job id on stdout (JOB=$(elexirion jobs submit ...)); --json: the SubmitJobResponse (with --watch, then one WatchJobResponse per line).',
};

async function readInputs(items: string[] | undefined): Promise<Record<string, string>> {
  const { readFile } = await import('node:fs/promises');
  const inputs = parsePairs(items, '--input');
  for (const [name, value] of Object.entries(inputs)) {
    if (!value.startsWith('@')) continue;
    try {
      inputs[name] = await readFile(value.slice(1), 'utf8');
    } catch (error) {
      throw new UsageError(`--input ${name}: cannot read ${value.slice(1)}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
    }
  }
  return inputs;
}

export async function jobsSubmit(ctx: Context): Promise<number> {
  const message = ctx.positionals.length ? textArgument(ctx.positionals, 'MESSAGE') : '';
  const pipeline = String(ctx.values.pipeline ?? '');
  const inputs = await readInputs(ctx.values.input as string[] | undefined);
  if (!message && !pipeline) throw new UsageError('give a MESSAGE to route, or --pipeline NAME');
  const webhookUrl = ctx.values.webhook as string | undefined;
  const request: proto.SubmitJobRequest = {
    pipeline,
    message,
    inputs,
    idempotencyKey: String(ctx.values['idempotency-key'] ?? ''),
    sessionId: String(ctx.values.session ?? ''),
    webhook: webhookUrl ? { url: webhookUrl, secret: process.env.ELEXIRION_WEBHOOK_SECRET ?? '' } : undefined,
    owner: '',
  };
  const answer = await ctx.gateway.submitJob(request, ctx.unary());
  const job = answer.job!;
  if (ctx.output.json) (ctx.values.watch ? ctx.output.jsonLine.bind(ctx.output) : ctx.output.document.bind(ctx.output))(proto.SubmitJobResponse.toJSON(answer));
  else {
    ctx.output.line(job.jobId);
    ctx.output.note(`job ${job.jobId} ${statusName(job.status)}${job.pipeline ? ` (pipeline ${job.pipeline})` : ''}${answer.deduplicated ? ': an earlier job with this idempotency key' : ''}`);
  }
  return ctx.values.watch ? follow(ctx, job.jobId, 0) : ExitCode.OK;
}

export const jobsGetSpec: CommandSpec = {
  path: ['jobs', 'get'],
  brief: "a job's record: status, steps, usage, output",
  usage: 'JOB_ID',
  summary: "Prints a job's record (GetJob): status, route, steps, usage, then its output.",
  options: {},
  positionals: { min: 1, max: 1, names: 'JOB_ID' },
  details: 'Exit code 0 whatever the job\'s status (the record was read); `jobs watch` exits by the outcome.',
};

function printJob(ctx: Context, job: proto.Job): void {
  const { output } = ctx;
  const fields: [string, string][] = [
    ['job', job.jobId],
    ['status', statusName(job.status) + (job.currentStep && !FINISHED.has(job.status) ? ` (step ${job.currentStep})` : '')],
    ['pipeline', job.pipeline || '-'],
    ['origin', job.origin || '-'],
    ['route', job.route ? formatRoute(job.route) : '-'],
    ['created', formatTime(job.createdAt)],
    ['started', formatTime(job.startedAt)],
    ['finished', formatTime(job.finishedAt)],
    ['usage', formatUsage(job.usage)],
    ['last sequence', String(job.lastSequence)],
  ];
  if (job.owner) fields.push(['owner', job.owner]);
  if (job.deliveries > 1) fields.push(['deliveries', `${job.deliveries} (resumed ${job.resumedSteps} steps)`]);
  if (job.fallbackUsed) fields.push(['fallback', job.fallback ? `${job.fallback.pipeline} after ${job.fallback.originalError}` : 'used']);
  if (job.error) fields.push(['error', `${job.errorCode}: ${job.error}`]);
  if (job.cancelledBy) fields.push(['cancelled', `by ${job.cancelledBy}${job.cancelledAtStep ? ` at step ${job.cancelledAtStep}` : ''}`]);
  if (job.webhookUrl) fields.push(['webhook', `${job.webhookUrl}: ${job.webhookStatus}`]);
  const width = Math.max(...fields.map(([name]) => name.length)) + 2;
  for (const [name, value] of fields) output.line(`${`${name}:`.padEnd(width)}${value}`);
  if (job.steps.length) {
    output.line();
    output.table([
      ['STEP', 'STATUS', 'MODEL', 'TOKENS', 'COST', 'TIME'],
      ...job.steps.map((step) => [
        step.name,
        step.status,
        step.provider ? `${step.provider}/${step.model}` : '-',
        step.usage ? `${step.usage.inputTokens}/${step.usage.outputTokens}` : '-',
        step.usage ? formatCost(step.usage.costUsd) : '-',
        formatMs(step.durationMs),
      ]),
    ]);
  }
  if (job.output) {
    output.line();
    output.write(job.output);
    output.endLine();
  }
}

export async function jobsGet(ctx: Context): Promise<number> {
  const answer = await ctx.gateway.getJob({ jobId: ctx.positionals[0]! }, ctx.unary());
  if (ctx.output.json) ctx.output.document(proto.GetJobResponse.toJSON(answer));
  else printJob(ctx, answer.job!);
  return ExitCode.OK;
}

export const jobsWatchSpec: CommandSpec = {
  path: ['jobs', 'watch'],
  brief: "follow a job's events until it ends (resumable with --after)",
  usage: 'JOB_ID [--after SEQ]',
  summary:
    "Follows a job's events (WatchJob) until the job ends: text as the model writes it on stdout, status and steps on stderr. Resumable: --after SEQ prints only what came after that event; a dropped connection is resumed by itself from the last event seen (up to 5 times). A stream that ends without the job's end is checked with GetJob.",
  options: {
    after: { type: 'string', value: 'SEQ', description: 'resume after this event sequence (0: from the first event)' },
  },
  positionals: { min: 1, max: 1, names: 'JOB_ID' },
  details:
    'Exit code: 0 when the job succeeded, 1 when it failed or was cancelled. --json: one WatchJobResponse per line (each event has its sequence). Interrupted, it says the --after to resume with.',
};

/** Reconnections after a dropped stream, before giving up (each resumes from the last sequence). */
const RESUME_ATTEMPTS = 5;

async function follow(ctx: Context, jobId: string, after: number): Promise<number> {
  const { output, progress } = ctx;
  let sequence = after;
  let failures = 0;
  let streamingStep: string | undefined;

  /** The job's end: the answer when no text streamed, the outcome on stderr; 0 succeeded, 1 failed or cancelled. */
  const finish = (status: proto.JobStatus, detail: string, job: proto.Job | undefined): number => {
    progress.stop();
    if (!output.json) {
      if (streamingStep === undefined && job?.output) output.write(job.output);
      output.endLine();
      const why = job?.error ? `: ${job.errorCode}: ${job.error}` : detail ? `: ${detail}` : '';
      output.note(`job ${jobId} ${statusName(status)}${why} · ${formatUsage(job?.usage)} · last sequence ${sequence}`);
    }
    return status === proto.JobStatus.JOB_STATUS_SUCCEEDED ? ExitCode.OK : ExitCode.FAILED;
  };

  progress.set(`job ${jobId}`);
  try {
    for (;;) {
      try {
        for await (const { event } of ctx.gateway.watchJob({ jobId, afterSequence: sequence }, ctx.stream())) {
          if (!event) continue;
          failures = 0;
          sequence = event.sequence;
          if (output.json) output.jsonLine(proto.WatchJobResponse.toJSON({ event }));
          if (event.textDelta && !output.json) {
            if (streamingStep !== undefined && event.textDelta.step !== streamingStep) {
              output.endLine();
              output.write('\n');
            }
            streamingStep = event.textDelta.step;
            output.write(event.textDelta.text);
          } else if (event.stepStarted) {
            progress.set(`job ${jobId}: step ${event.stepStarted.step}`);
          } else if (event.stepFinished) {
            output.note(`step ${event.stepFinished.name} ${event.stepFinished.status} in ${formatMs(event.stepFinished.durationMs)}`);
          } else if (event.stepFailed) {
            output.note(`step ${event.stepFailed.step} failed: ${event.stepFailed.code}: ${event.stepFailed.message}`);
          } else if (event.statusChanged) {
            const { status, detail, job } = event.statusChanged;
            if (FINISHED.has(status)) return finish(status, detail, job);
            progress.set(`job ${jobId}: ${statusName(status)}`);
            output.note(`job ${jobId} ${statusName(status)}${detail ? `: ${detail}` : ''}`);
          }
        }
        // The stream ended without the job's end: resuming after the job's last event would
        // wait for nothing (a job already over), so ask; else a draining gateway: resume.
        const { job } = await ctx.gateway.getJob({ jobId }, ctx.unary());
        if (job && FINISHED.has(job.status)) return finish(job.status, '', job);
        throw new ClientError('/elexirion.v1.Gateway/WatchJob', Status.UNAVAILABLE, 'the stream ended before the job did');
      } catch (error) {
        const resumable = error instanceof ClientError && error.code === Status.UNAVAILABLE && !ctx.signal.aborted;
        if (!resumable || ++failures > RESUME_ATTEMPTS) throw error;
        output.note(`job ${jobId}: ${error.details}; resuming after sequence ${sequence}`);
        await new Promise((resolve) => setTimeout(resolve, 200 * 2 ** (failures - 1)));
      }
    }
  } catch (error) {
    if (ctx.signal.aborted) output.error(`interrupted: resume with \`elexirion jobs watch ${jobId} --after ${sequence}\``);
    throw error;
  } finally {
    progress.stop();
  }
}

export async function jobsWatch(ctx: Context): Promise<number> {
  const after = ctx.values.after === undefined ? 0 : parseInteger(String(ctx.values.after), '--after');
  return follow(ctx, ctx.positionals[0]!, after);
}

export const jobsCancelSpec: CommandSpec = {
  path: ['jobs', 'cancel'],
  brief: 'cancel a job wherever it runs',
  usage: 'JOB_ID [--reason TEXT]',
  summary: 'Cancels a job wherever it runs (CancelJob), down to the vendor request, and prints its status after.',
  options: { reason: { type: 'string', value: 'TEXT', description: 'why, recorded on the job' } },
  positionals: { min: 1, max: 1, names: 'JOB_ID' },
  details: 'Exit code 0 when the job is cancelled or had already finished (it says which); --json: the CancelJobResponse.',
};

export async function jobsCancel(ctx: Context): Promise<number> {
  const answer = await ctx.gateway.cancelJob({ jobId: ctx.positionals[0]!, requestedBy: '', reason: String(ctx.values.reason ?? '') }, ctx.unary());
  const job = answer.job!;
  if (ctx.output.json) ctx.output.document(proto.CancelJobResponse.toJSON(answer));
  else if (job.status === proto.JobStatus.JOB_STATUS_CANCELLED) ctx.output.line(`job ${job.jobId} cancelled${job.cancelledAtStep ? ` at step ${job.cancelledAtStep}` : ''}`);
  else ctx.output.line(`job ${job.jobId} had already ${statusName(job.status)}: nothing to cancel`);
  return ExitCode.OK;
}

export const jobsListSpec: CommandSpec = {
  path: ['jobs', 'list'],
  brief: 'list jobs, filtered, newest first',
  usage: '[--status STATUS]... [--pipeline NAME] [--since TIME] [--limit N] [--page-token TOKEN | --all]',
  summary: 'Lists jobs newest first (ListJobs), one page at a time; a key lists its own jobs, an admin key all.',
  options: {
    status: { type: 'string', short: 's', multiple: true, commaList: true, value: 'STATUS', description: 'queued, running, succeeded, failed or cancelled' },
    pipeline: { type: 'string', short: 'p', value: 'NAME', description: "only this pipeline's jobs" },
    since: { type: 'string', value: 'TIME', description: 'created at or after: ISO 8601, or a duration ago (10m, 7d)' },
    until: { type: 'string', value: 'TIME', description: 'created before: ISO 8601, or a duration ago' },
    limit: { type: 'string', short: 'n', value: 'N', description: 'jobs per page (default 50, at most 500)' },
    'page-token': { type: 'string', value: 'TOKEN', description: 'the next page, as the previous page said' },
    all: { type: 'boolean', description: 'follow every page' },
  },
  positionals: { min: 0, max: 0, names: '' },
  details: 'The next page\'s token goes to stderr. --json: one ListJobsResponse (with --all, one per page, one per line).',
};

export async function jobsList(ctx: Context): Promise<number> {
  const request: proto.ListJobsRequest = {
    statuses: ((ctx.values.status as string[] | undefined) ?? []).map(parseJobStatus),
    pipeline: String(ctx.values.pipeline ?? ''),
    createdAfter: ctx.values.since ? parseTime(String(ctx.values.since), '--since') : undefined,
    createdBefore: ctx.values.until ? parseTime(String(ctx.values.until), '--until') : undefined,
    pageSize: ctx.values.limit ? parseInteger(String(ctx.values.limit), '--limit', 1, 500) : 0,
    pageToken: String(ctx.values['page-token'] ?? ''),
    owner: '',
  };
  const rows: string[][] = [['JOB', 'STATUS', 'PIPELINE', 'ORIGIN', 'CREATED', 'COST']];
  for (;;) {
    const page = await ctx.gateway.listJobs(request, ctx.unary());
    if (ctx.output.json) (ctx.values.all ? ctx.output.jsonLine.bind(ctx.output) : ctx.output.document.bind(ctx.output))(proto.ListJobsResponse.toJSON(page));
    for (const job of page.jobs) rows.push([job.jobId, statusName(job.status), job.pipeline || '-', job.origin || '-', formatTime(job.createdAt), job.usage ? formatCost(job.usage.costUsd) : '-']);
    if (!ctx.values.all || !page.nextPageToken) {
      if (!ctx.output.json) {
        if (rows.length > 1) ctx.output.table(rows);
        else ctx.output.note('no jobs');
        if (page.nextPageToken) ctx.output.note(`more: --page-token ${page.nextPageToken}`);
      }
      return ExitCode.OK;
    }
    request.pageToken = page.nextPageToken;
  }
}
