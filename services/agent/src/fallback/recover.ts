import { ClientError, ServerError, Status, proto, statusOf, failureMessage, type ServiceClient } from '@elexirion/kit';
import type { CallOptions } from 'nice-grpc-common';
import { NoFallbackError, STRATEGY_BY_CLASS, generateFallback } from './generate.js';

/** The run that failed, as it was asked for. */
export interface FailedRun {
  /** A pipeline name; or `inlineYaml`. */
  pipeline: string;
  inlineYaml?: string;
  inputs: Record<string, string>;
  jobId: string;
  sessionKey: string;
}

/** The fallback failed as well: its status, and a message naming both failures. */
export class FallbackFailedError extends ServerError {
  constructor(
    code: Status,
    details: string,
    /** What was tried, kept with the job for inspection. */
    readonly fallback: proto.EmergentFallback,
  ) {
    super(code, details);
  }
}

/** Whether a failed run gets an emergent fallback: a run failure (not the caller's) of a class that has one. */
export function fallbackApplies(failure: proto.RunFailure | undefined): failure is proto.RunFailure {
  return failure !== undefined && STRATEGY_BY_CLASS[failure.failureClass] !== undefined;
}

/** "step: STATUS: message", what failed first. */
export function describeFailure(failure: proto.RunFailure): string {
  return `${failure.step || failure.pipeline}: ${failure.code}: ${failure.message}`;
}

/**
 * Recovers from a failed run: a pipeline generated for its failure class (from the executor's
 * GetPipeline), run once through the executor under the same call options (deadline, signal).
 * `error` is the run's failure and `failure` its RunFailure trailer; without one (the caller's
 * error: INVALID_ARGUMENT, NOT_FOUND, CANCELLED) or for a class without a fallback, `error` is
 * thrown unchanged. When the fallback cannot be made or fails too, a FallbackFailedError with the
 * fallback's status names both failures.
 */
export async function recover(
  executor: Pick<ServiceClient<'executor'>, 'getPipeline' | 'execute'>,
  error: unknown,
  failure: proto.RunFailure | undefined,
  original: FailedRun,
  options: CallOptions,
): Promise<{ fallback: proto.EmergentFallback; result: proto.ExecuteResponse }> {
  if (!fallbackApplies(failure)) throw error;
  const fallback: proto.EmergentFallback = { failureClass: failure.failureClass, pipeline: '', originalError: describeFailure(failure), yaml: '', succeeded: false };
  const bothFailed = (stage: string, cause: unknown) =>
    new FallbackFailedError(statusOf(cause), `${fallback.originalError}; then the fallback ${stage} failed too: ${Status[statusOf(cause)]}: ${causeMessage(cause)}`, fallback);
  let generated;
  try {
    const definition = await executor.getPipeline(original.inlineYaml ? { pipeline: '', inlineYaml: original.inlineYaml } : { pipeline: original.pipeline, inlineYaml: '' }, options);
    generated = generateFallback(definition, failure);
  } catch (caught) {
    // No fallback could be made: the original failure stands, with its status, and says why there is none.
    if (caught instanceof NoFallbackError) throw new FallbackFailedError(statusOf(error), `${fallback.originalError}; no fallback: ${caught.message}`, fallback);
    throw bothFailed('(its definition could not be had)', caught);
  }
  fallback.pipeline = generated.name;
  fallback.yaml = generated.yaml;
  try {
    const result = await executor.execute(
      { pipeline: '', inlineYaml: generated.yaml, inputs: original.inputs, jobId: original.jobId, sessionKey: original.sessionKey, promptOverrides: {}, resumeRunId: '', runId: '' },
      options,
    );
    fallback.succeeded = true;
    return { fallback, result };
  } catch (caught) {
    throw bothFailed(generated.name, caught);
  }
}

function causeMessage(error: unknown): string {
  if (error instanceof ClientError || error instanceof ServerError) return error.details;
  return failureMessage(error);
}
