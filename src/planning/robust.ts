/** Small robust statistics for calibrations that must not be dragged by a few odd samples. */

/** The q-quantile (0 ≤ q ≤ 1) of the values by linear interpolation between order statistics. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const pos = (sorted.length - 1) * Math.min(1, Math.max(0, q));
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

export function median(values: readonly number[]): number {
  return quantile(values, 0.5);
}

/**
 * Theil–Sen line y = intercept + slope·x: the slope is the median of the slopes of every pair with
 * distinct x, the intercept the median of y − slope·x. It ignores up to ~29% outliers.
 * Undefined when no two samples have distinct x.
 */
export function theilSen(xs: readonly number[], ys: readonly number[]): { slope: number; intercept: number } | undefined {
  const slopes: number[] = [];
  for (let i = 0; i < xs.length; i++) {
    for (let j = i + 1; j < xs.length; j++) {
      const dx = xs[j]! - xs[i]!;
      if (dx !== 0) slopes.push((ys[j]! - ys[i]!) / dx);
    }
  }
  if (slopes.length === 0) return undefined;
  const slope = median(slopes);
  return { slope, intercept: median(xs.map((x, i) => ys[i]! - slope * x)) };
}
