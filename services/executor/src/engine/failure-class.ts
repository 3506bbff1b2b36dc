import { ClientError, ElexirionError, ServerError, Status, proto } from '@elexirion/kit';

// A failed run's class, for the agent's emergent fallback: taken from statuses and typed errors,
// never from messages.

const { FailureClass } = proto;

/** A structured step's answer did not parse or did not match its schema. */
export class InvalidOutputError extends ElexirionError {
  override readonly name = 'InvalidOutputError';
  constructor(message: string) {
    super(Status.FAILED_PRECONDITION, message);
  }
}

/** An agentic step used up its turns (a budget, as a quota is: RESOURCE_EXHAUSTED). */
export class MaxTurnsExceededError extends ElexirionError {
  override readonly name = 'MaxTurnsExceededError';
  constructor(message: string) {
    super(Status.RESOURCE_EXHAUSTED, message);
  }
}

/** An agentic step asked for a tool it may not use. */
export class ToolRestrictionViolatedError extends ElexirionError {
  override readonly name = 'ToolRestrictionViolatedError';
  constructor(message: string) {
    super(Status.PERMISSION_DENIED, message);
  }
}

/**
 * A provider call that failed because every target of its chain was overloaded or rate limited,
 * as the provider's trailer said. Still the provider's ClientError (retries read its code).
 */
export class ProviderOverloadedError extends ClientError {
  override readonly name = 'ProviderOverloadedError';
  constructor(error: ClientError) {
    super(error.path, error.code, error.details);
    Object.defineProperty(this, 'cause', { value: error, enumerable: false, configurable: true, writable: true });
  }
}

/**
 * A step's failure as the engine throws it: the status error naming pipeline and step, with the
 * step's name and failure class. A parent step passes its child's on unchanged.
 */
export class StepFailure extends ServerError {
  constructor(
    code: Status,
    details: string,
    readonly step: string,
    readonly failureClass: proto.FailureClass,
  ) {
    super(code, details);
  }

  static of(error: ServerError, step: string, failureClass: proto.FailureClass): StepFailure {
    if (error instanceof StepFailure) return error;
    const failure = new StepFailure(error.code, error.details, step, failureClass);
    Object.defineProperty(failure, 'cause', { value: (error as { cause?: unknown }).cause ?? error, enumerable: false, configurable: true, writable: true });
    return failure;
  }
}

/**
 * The class of a step's failure. `caught` is what the step's handler threw; `timedOut` says the
 * step (or the run around it) ran out of time. A cancelled run and the pipeline's own faults (a
 * template that cannot be rendered, a transform that fails) are UNSPECIFIED: no fallback helps.
 */
export function classifyStepFailure(caught: unknown, code: Status, timedOut: boolean): proto.FailureClass {
  if (caught instanceof StepFailure) return caught.failureClass;
  if (code === Status.CANCELLED) return FailureClass.FAILURE_CLASS_UNSPECIFIED;
  if (timedOut || code === Status.DEADLINE_EXCEEDED) return FailureClass.FAILURE_CLASS_TIMEOUT;
  if (caught instanceof InvalidOutputError) return FailureClass.FAILURE_CLASS_INVALID_OUTPUT;
  if (caught instanceof MaxTurnsExceededError) return FailureClass.FAILURE_CLASS_MAX_TURNS_EXCEEDED;
  if (caught instanceof ToolRestrictionViolatedError) return FailureClass.FAILURE_CLASS_TOOL_RESTRICTION_VIOLATED;
  if (caught instanceof ProviderOverloadedError) return FailureClass.FAILURE_CLASS_OVERLOADED;
  // The only service a step calls is the provider: its failures are the provider's.
  if (caught instanceof ClientError) {
    return caught.code === Status.RESOURCE_EXHAUSTED ? FailureClass.FAILURE_CLASS_OVERLOADED : FailureClass.FAILURE_CLASS_PROVIDER_ERROR;
  }
  return FailureClass.FAILURE_CLASS_UNSPECIFIED;
}

/**
 * The structured failure of a run that had started: a step's failure, or the run's own timeout.
 * Undefined for what is the caller's (a cancelled run, inputs or prompt overrides the pipeline
 * refuses): no fallback is made for those.
 */
export function describeRunFailure(error: ServerError, runId: string, pipeline: string): proto.RunFailure | undefined {
  if (error.code === Status.CANCELLED) return undefined;
  if (error instanceof StepFailure) return { runId, pipeline, step: error.step, failureClass: error.failureClass, code: Status[error.code] ?? 'UNKNOWN', message: error.details };
  if (error.code === Status.DEADLINE_EXCEEDED) return { runId, pipeline, step: '', failureClass: FailureClass.FAILURE_CLASS_TIMEOUT, code: Status[error.code] ?? 'UNKNOWN', message: error.details };
  return undefined;
}
