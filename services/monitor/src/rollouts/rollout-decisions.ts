import { KvRevisionConflictError, KvStore, type KvBucketSpec, type KvView } from '@elexirion/kit';
import type { NatsConnection } from '@nats-io/transport-node';
import { z } from 'zod';

// The guard's last decision per pipeline step, shared by the monitor replicas (JetStream KV, one
// small entry per step ever decided, no expiry). It says which registry revision the decision
// concerns, so that a refused decision is not tried again until the rollout changes, that of two
// replicas refused at once only one tells it, and that a firing alert is resolved once the step's
// entry changes after the decision.

export const ROLLOUT_DECISIONS_BUCKET = 'monitor_rollout_decisions';

export const ROLLOUT_DECISIONS = ['promoted', 'rolled_back', 'refused'] as const;
export type RolloutDecision = (typeof ROLLOUT_DECISIONS)[number];

const decisionSchema = z.object({
  pipeline: z.string(),
  step: z.string(),
  candidate: z.string(),
  baseline: z.string(),
  decision: z.enum(ROLLOUT_DECISIONS),
  reason: z.string(),
  /** The registry entry's revision after the decision (promoted, rolled back) or when it was refused. */
  revision: z.number().int().min(0),
  decidedAtMs: z.number(),
  /** Whether its prompt_rollout alert is firing (a rollback or a refusal not yet followed by a change). */
  alertFiring: z.boolean(),
});

export type RolloutDecisionRecord = z.output<typeof decisionSchema>;

/** `<pipeline>.<step>`: a pipeline name and a step name (letters, digits, _ and -) are key tokens. */
export function decisionKey(pipeline: string, step: string): string {
  return `${pipeline}.${step}`;
}

export const ROLLOUT_DECISIONS_SPEC: KvBucketSpec<RolloutDecisionRecord> = {
  bucket: ROLLOUT_DECISIONS_BUCKET,
  schema: decisionSchema,
  key: { pattern: /^[a-z0-9][a-z0-9_-]{0,63}\.[A-Za-z_][\w-]{0,127}$/, description: '<pipeline>.<step>', name: 'rollout decision key' },
  check: (key, value) => (decisionKey(value.pipeline, value.step) === key ? undefined : `pipeline.step ${value.pipeline}.${value.step} is not its key`),
  description: "The prompt rollout guard's last decision per pipeline step (the monitor)",
};

/** The decisions: read from a watched copy, written with compare-and-set through the store. */
export class RolloutDecisions {
  private constructor(
    private readonly store: KvStore<RolloutDecisionRecord>,
    private readonly view: KvView<RolloutDecisionRecord>,
  ) {}

  static async open(connection: NatsConnection, view: KvView<RolloutDecisionRecord>): Promise<RolloutDecisions> {
    const store = await KvStore.open(connection, ROLLOUT_DECISIONS_SPEC);
    await view.attach(connection);
    return new RolloutDecisions(store, view);
  }

  get(key: string): RolloutDecisionRecord | undefined {
    return this.view.get(key);
  }

  entries(): [string, RolloutDecisionRecord][] {
    return this.view.entries();
  }

  /** Writes `next` whatever the step held (a decision only one replica could make: the executor applied it for it alone). */
  async record(next: RolloutDecisionRecord): Promise<void> {
    await this.view.put(decisionKey(next.pipeline, next.step), next);
  }

  /**
   * Writes `next` over the value this replica holds (or as new when it holds none): false when
   * another replica wrote first (its write stands; the watch brings it here).
   */
  async change(next: RolloutDecisionRecord): Promise<boolean> {
    const key = decisionKey(next.pipeline, next.step);
    const revision = this.view.revision(key);
    try {
      const written = revision === undefined ? await this.store.create(key, next) : await this.store.update(key, next, revision);
      this.view.applyWrite(key, next, written);
      return true;
    } catch (error) {
      if (error instanceof KvRevisionConflictError) return false;
      throw error;
    }
  }
}
