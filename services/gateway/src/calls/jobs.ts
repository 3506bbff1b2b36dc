import type { CallContext } from 'nice-grpc-common';
import { ServerError, Status, callOptions, type proto } from '@elexirion/kit';
import { callerOf, type Caller } from '../caller.js';
import { checkMessage, checkPipelineName, checkSessionId } from '../validation.js';
import { observed, requestFields, type GatewayDeps } from './gateway-deps.js';

/** Who a job belongs to: the caller's key id, '' when keys are off (a client's `owner` is never trusted). */
export function ownerOf(caller: Caller | undefined): string {
  return caller?.keyId ?? '';
}

/** Whether the caller may see the job: admin keys and calls without keys see every job, others their own. */
export function canSee(caller: Caller | undefined, job: Pick<proto.Job, 'owner'>): boolean {
  return caller === undefined || caller.admin || job.owner === caller.keyId;
}

/**
 * Another key's job is answered as the agent answers a job that does not exist, word for word:
 * PERMISSION_DENIED would tell the caller the id is in use.
 */
function notFound(jobId: string): ServerError {
  return new ServerError(Status.NOT_FOUND, `job "${jobId}" not found (never submitted, or older than the retention period)`);
}

/** SubmitJob, GetJob, WatchJob, CancelJob, ListJobs: the agent's jobs, scoped to the caller's key. */
export function jobCalls(deps: GatewayDeps): Pick<proto.GatewayServiceImplementation, 'submitJob' | 'getJob' | 'watchJob' | 'cancelJob' | 'listJobs'> {
  const { agent } = deps;

  /** The job if the caller may see it; NOT_FOUND otherwise, as for an unknown id. */
  async function visibleJob(jobId: string, callContext: CallContext): Promise<proto.Job> {
    const { job } = await agent.getJob({ jobId }, callOptions(callContext));
    if (!job || !canSee(callerOf(callContext), job)) throw notFound(jobId);
    return job;
  }

  return {
    async submitJob(request, callContext) {
      // The agent refuses what it cannot run; these limits are the gateway's, as for Chat.
      if (request.message) checkMessage(request.message);
      checkPipelineName('pipeline', request.pipeline, false);
      checkSessionId(request.sessionId);
      const owner = ownerOf(callerOf(callContext));
      return observed(
        deps,
        'SubmitJob',
        request.pipeline,
        () => agent.submitJob({ ...request, owner }, callOptions(callContext)),
        (answer) => ({ jobId: answer.job?.jobId ?? '' }),
      );
    },

    async getJob(request, callContext) {
      const job = await observed(deps, 'GetJob', '', () => visibleJob(request.jobId, callContext), () => ({ jobId: request.jobId }));
      return { job };
    },

    async *watchJob(request, callContext) {
      // One event for the whole stream, when it ends (the client cancelling it included).
      const call = deps.context.events.begin('request');
      let pipeline = '';
      try {
        // The record says whose job it is; its events do not (until the last one).
        pipeline = (await visibleJob(request.jobId, callContext)).pipeline;
        for await (const answer of agent.watchJob({ jobId: request.jobId, afterSequence: request.afterSequence }, callOptions(callContext))) yield answer;
      } catch (error) {
        call.failed(error, (errorMessage) => ({ gatewayRequest: { method: 'WatchJob', pipeline, ...requestFields({ jobId: request.jobId }), errorMessage } }));
        throw error;
      } finally {
        // The end of the job's events, or a consumer that stopped reading (return()); a failure
        // was published above (an observation publishes once).
        call.succeeded({ gatewayRequest: { method: 'WatchJob', pipeline, ...requestFields({ jobId: request.jobId }) } });
      }
    },

    async cancelJob(request, callContext) {
      // Recorded on the job as who cancelled it: the key's name, never the client's word.
      const requestedBy = callerOf(callContext)?.name ?? 'api';
      return observed(
        deps,
        'CancelJob',
        '',
        async () => {
          await visibleJob(request.jobId, callContext);
          return agent.cancelJob({ jobId: request.jobId, reason: request.reason, requestedBy }, callOptions(callContext));
        },
        () => ({ jobId: request.jobId }),
      );
    },

    async listJobs(request, callContext) {
      const caller = callerOf(callContext);
      // A key that is not admin lists its own jobs whatever owner it asks for; admin (and calls
      // without keys) may filter by any owner, or none.
      const owner = caller === undefined || caller.admin ? request.owner : caller.keyId;
      return observed(deps, 'ListJobs', request.pipeline, () => agent.listJobs({ ...request, owner }, callOptions(callContext)));
    },
  };
}
