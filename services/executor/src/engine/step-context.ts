import type { Logger, proto } from '@elexirion/kit';
import type { LoadedPipeline } from '../pipeline/loader.js';
import type { Step } from '../pipeline/schema.js';
import type { Scope, StepValue } from '../pipeline/templates.js';
import type { LlmCaller } from './llm-call.js';
import type { RunRequest } from './run-engine.js';
import type { StepOutcome } from './step-outcome.js';

/** What one run shares across its steps; a nested pipeline runs in one of its own. */
export interface RunContext {
  readonly request: RunRequest;
  readonly pipeline: LoadedPipeline;
  /** Every step's result in the order the steps ended, children's included. */
  readonly results: proto.StepResult[];
  /** Bounds the steps run in this context: their timeouts and deadlines start from these. */
  readonly signal: AbortSignal;
  readonly deadline: number | undefined;
  /**
   * A resumed run's steps that completed before, by name ("fan", "fan[2]/say"): such a step is
   * taken as it was, not run again (the children a failed parallel step or loop had finished).
   * A nested pipeline's run has none: a failed nested step runs again whole.
   */
  readonly resumed?: ReadonlyMap<string, StepValue>;
}

/** The scope a run's steps write their outcomes into. */
export interface MutableScope extends Scope {
  readonly steps: Map<string, StepValue>;
}

/** What a step handler gets: its run and scope, its limits, the LLM call, and a way to run child steps. */
export interface StepContext {
  readonly run: RunContext;
  readonly scope: MutableScope;
  /** Aborted when the step must stop: its timeout or the run's, or the caller gone. */
  readonly signal: AbortSignal;
  /** Epoch ms by which the step must end (the provider's deadline); undefined without a limit. */
  readonly deadline: number | undefined;
  /** The step's name in results and events: its prefix and its own name ("fix[2]/apply"). */
  readonly name: string;
  /** The prefix of its name, which children that are not nested under it (parallel's) share. */
  readonly prefix: string;
  readonly llm: LlmCaller;
  readonly logger: Logger;
  /**
   * Runs a child step as the run runs any step (`when:`, timeout, result and events), bounded by
   * `run`'s signal and deadline; its outcome lands in `scope`. Throws the step's failure, already
   * a status error naming its pipeline and step.
   */
  runChild(step: Step, run: RunContext, scope: MutableScope, prefix: string): Promise<void>;
}

/** The steps of type `T`; an intersection, not Extract, as one member of Step has three types. */
export type StepOfType<T extends Step['type']> = Step & { type: T };

/** Runs one step type; a handler that throws fails the step (and the run). */
export type StepHandler<T extends Step['type'] = Step['type']> = (step: StepOfType<T>, context: StepContext) => StepOutcome | Promise<StepOutcome>;
