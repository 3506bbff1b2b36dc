// Percentiles from every request's own timing (nearest rank on the sorted samples).

export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export function summarize(samples: ArrayLike<number>): LatencySummary {
  const sorted = Float64Array.from(samples).sort();
  let sum = 0;
  for (const value of sorted) sum += value;
  return {
    count: sorted.length,
    p50: round(percentile(sorted, 50)),
    p90: round(percentile(sorted, 90)),
    p99: round(percentile(sorted, 99)),
    max: round(sorted.length ? sorted[sorted.length - 1]! : Number.NaN),
    mean: round(sorted.length ? sum / sorted.length : Number.NaN),
  };
}

/** Three decimals (microseconds for milliseconds); NaN stays NaN (written as null in JSON). */
export function round(value: number, digits = 3): number {
  if (!Number.isFinite(value)) return Number.NaN;
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}
