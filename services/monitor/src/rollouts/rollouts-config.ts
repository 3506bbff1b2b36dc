import { z } from 'zod';

/** The rollouts area's settings (spread into the monitor's config). */
export const rolloutsConfigShape = {
  /** How often every replica reads the guarded rollouts from the executor and evaluates each. */
  MONITOR_ROLLOUT_INTERVAL_MS: z.coerce.number().int().min(100).max(3_600_000).default(5_000),
  /**
   * Runs each arm needs before a candidate that fails significantly more often than its baseline
   * is rolled back (capped at the guard's min_runs): the floor under the early rollback.
   */
  MONITOR_ROLLOUT_EARLY_MIN_RUNS: z.coerce.number().int().min(2).max(10_000).default(5),
};
