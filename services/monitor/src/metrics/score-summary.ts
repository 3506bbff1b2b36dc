import jstat from 'jstat';
import type { proto } from '@elexirion/kit';
import type { ScoreSums } from './aggregates.js';

/**
 * Count, mean and the mean's 95% confidence interval (Student's t with n - 1 degrees of freedom,
 * from the sample standard deviation); with one score, or none spread, the interval is the mean.
 */
export function scoreSummary({ count, sum, sumSquares }: ScoreSums): proto.ScoreSummary {
  if (count <= 0) return { count: 0, mean: 0, ci95Low: 0, ci95High: 0 };
  const mean = sum / count;
  if (count === 1) return { count, mean, ci95Low: mean, ci95High: mean };
  // Sums of squares lose a little to rounding: never a negative variance.
  const variance = Math.max(0, (sumSquares - count * mean * mean) / (count - 1));
  const halfWidth = jstat.jStat.studentt.inv(0.975, count - 1) * Math.sqrt(variance / count);
  return { count, mean, ci95Low: mean - halfWidth, ci95High: mean + halfWidth };
}
