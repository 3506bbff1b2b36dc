import type { proto } from '@elexirion/kit';

/** Usage of no call at all; a new object each time, as results are mutable wire messages. */
export function zeroUsage(): proto.Usage {
  return { inputTokens: 0, outputTokens: 0, costUsd: 0 };
}

export function addUsage(a: proto.Usage, b: proto.Usage): proto.Usage {
  return { inputTokens: a.inputTokens + b.inputTokens, outputTokens: a.outputTokens + b.outputTokens, costUsd: a.costUsd + b.costUsd };
}

/** What a run's steps used in all. */
export function totalUsage(results: readonly proto.StepResult[]): proto.Usage {
  return results.reduce((sum, result) => (result.usage ? addUsage(sum, result.usage) : sum), zeroUsage());
}
