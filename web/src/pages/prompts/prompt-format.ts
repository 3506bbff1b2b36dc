// How the prompts page writes shares, rates, differences and p-values.

/** 0.1 -> "10%", 0.125 -> "12.5%". */
export function formatShare(share: number | undefined): string {
  const value = (share ?? 0) * 100;
  return `${Number.isInteger(value) ? value : value.toFixed(1)}%`;
}

/** A difference with its sign: "+3.2%", "-0.10". */
export function formatSigned(value: number | undefined, format: (value: number) => string): string {
  const number = value ?? 0;
  if (number === 0) return format(0);
  return number > 0 ? `+${format(number)}` : `-${format(-number)}`;
}

export function formatPValue(p: number | undefined): string {
  const value = p ?? 0;
  if (value < 0.001) return 'p < 0.001';
  return `p = ${value.toFixed(3)}`;
}

export function formatScore(value: number | undefined): string {
  return (value ?? 0).toFixed(2);
}

/** A guard's metric as words. */
export function metricLabel(metric: string | undefined, scoreName: string | undefined): string {
  switch (metric) {
    case 'success_rate':
      return 'success rate (higher is better)';
    case 'score':
      return `feedback score "${scoreName || 'thumbs'}" (higher is better)`;
    case 'latency_p95_ms':
      return 'latency p95 (lower is better)';
    case 'cost_usd_mean':
      return 'mean cost (lower is better)';
    default:
      return metric || '-';
  }
}

/** A history action as words. */
export function actionLabel(action: string | undefined): string {
  switch (action) {
    case 'publish':
      return 'published';
    case 'set_rollout':
      return 'rollout set';
    case 'promote':
      return 'promoted';
    case 'rollback':
      return 'rolled back';
    case 'guard_promote':
      return 'promoted by the guard';
    case 'guard_rollback':
      return 'rolled back by the guard';
    default:
      return action || '-';
  }
}
