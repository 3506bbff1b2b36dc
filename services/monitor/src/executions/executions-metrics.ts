import { Counter, type Registry } from 'prom-client';

/** The executions area's Prometheus series (on the process's registry). */
export function executionsMetrics(registry: Registry) {
  return {
    /** Run events handled: `stored` (a new execution), `updated` (a later outcome of a stored run), `repeat` (a redelivery, or older) or `rejected` (too large to store). */
    runs: new Counter({
      name: 'elexirion_monitor_executions_runs_total',
      help: 'Executor run events the monitor handled, by outcome: stored (a new execution), updated (a later outcome of a stored run, e.g. resumed), repeat (a redelivery or an older event) or rejected (too large to store).',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    /** Feedback recorded, by whether it replaced feedback of the same name. */
    feedback: new Counter({
      name: 'elexirion_monitor_feedback_recorded_total',
      help: 'Feedback recorded on runs, by whether it replaced feedback of the same name.',
      labelNames: ['replaced'] as const,
      registers: [registry],
    }),
  };
}

export type ExecutionsMetrics = ReturnType<typeof executionsMetrics>;
