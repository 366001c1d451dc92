/**
 * Prediction intervals by split conformal prediction, per horizon step: the half-width of the
 * interval at level 1 − α for step h is the ⌈(k + 1)(1 − α)⌉-th smallest of the k absolute
 * residuals that step h had at earlier origins (the finite-sample correction that makes coverage at
 * least 1 − α for exchangeable residuals). The interval is the point forecast ± that half-width.
 *
 * Fallback: with fewer residuals than the correction needs (k < ⌈(1 − α)/α⌉, so 4 for 80% and 19
 * for 95%) the half-width is that of a random walk, z·σ·√h, with σ the root mean square of the
 * training window's one-step changes and z the normal quantile. It is wide enough for most series
 * and shrinks to 0 on a constant one.
 *
 * Residuals drift (a regime change, a busier week), which exchangeability does not allow for;
 * adaptive conformal inference (`adaptRate`) moves the level used per step after each residual, so
 * that misses keep to the nominal rate in the long run.
 */

export const LEVELS = [0.8, 0.95] as const;

export interface Interval {
  level: number;
  lower: number[];
  upper: number[];
}

/** The ⌈(k + 1)·level⌉-th smallest of k absolute residuals, or undefined when k is too small for it. */
export function conformalQuantile(absResiduals: readonly number[], level: number): number | undefined {
  return sortedQuantile([...absResiduals].sort((a, b) => a - b), level);
}

function sortedQuantile(sorted: readonly number[], level: number): number | undefined {
  const k = sorted.length;
  // The tolerance keeps (k + 1)·level from rounding up past a whole number (20 × 0.95).
  const rank = Math.ceil((k + 1) * level - 1e-9);
  return k > 0 && rank <= k ? sorted[rank - 1] : undefined;
}

/** Standard normal quantile (Acklam's rational approximation, relative error below 1.2e-9). */
export function normalQuantile(p: number): number {
  const a = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716, 2.506628277459239];
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
  const c = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const tail = (q: number) => (((((c[0]! * q + c[1]!) * q + c[2]!) * q + c[3]!) * q + c[4]!) * q + c[5]!) / ((((d[0]! * q + d[1]!) * q + d[2]!) * q + d[3]!) * q + 1);
  if (p < 0.02425) return tail(Math.sqrt(-2 * Math.log(p)));
  if (p > 1 - 0.02425) return -tail(Math.sqrt(-2 * Math.log(1 - p)));
  const q = p - 0.5;
  const r = q * q;
  return ((((((a[0]! * r + a[1]!) * r + a[2]!) * r + a[3]!) * r + a[4]!) * r + a[5]!) * q) / (((((b[0]! * r + b[1]!) * r + b[2]!) * r + b[3]!) * r + b[4]!) * r + 1);
}

/** σ of the fallback: the root mean square of the one-step changes of the training window (0 for fewer than 2 values). */
export function randomWalkSigma(train: readonly number[]): number {
  const changes = train.slice(1).map((v, t) => Math.abs(v - train[t]!));
  // Scaled by the largest change, so that squares of huge values do not overflow.
  const largest = Math.max(0, ...changes);
  if (!(largest > 0 && Number.isFinite(largest))) return 0;
  return largest * Math.sqrt(changes.reduce((s, c) => s + (c / largest) ** 2, 0) / changes.length);
}

export interface CalibrationOptions {
  /** Keep only the most recent residuals of each step (all by default). */
  window?: number;
  /**
   * Step γ of adaptive conformal inference (Gibbs and Candès 2021), 0 to turn it off: after each
   * residual the level used for its step moves up by γ·level on a miss and down by γ·(1 − level)
   * on a hit, so that misses run at the nominal rate even when the residuals drift.
   */
  adaptRate?: number;
}

/** Index of the first element of sorted that is not below x. */
function lowerBound(sorted: readonly number[], x: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Absolute residuals per horizon step, from back-test origins, turned into intervals. */
export class ConformalCalibrator {
  /** Per step: absolute residuals in arrival order, and the same sorted. */
  private readonly arrived: number[][];
  private readonly sorted: number[][];
  /** Per level: the level each step uses, moved by adaptive conformal inference. */
  private readonly used: Map<number, number[]>;
  private readonly window: number;
  private readonly adaptRate: number;

  constructor(
    readonly horizon: number,
    options: CalibrationOptions = {},
    readonly levels: readonly number[] = LEVELS,
  ) {
    this.arrived = Array.from({ length: horizon }, () => []);
    this.sorted = Array.from({ length: horizon }, () => []);
    this.used = new Map(levels.map((level) => [level, new Array<number>(horizon).fill(level)]));
    this.window = options.window ?? Infinity;
    this.adaptRate = options.adaptRate ?? 0;
  }

  /** The residual actual − forecast of horizon step h (1-based). */
  add(h: number, residual: number): void {
    const r = Math.abs(residual);
    const arrived = this.arrived[h - 1]!;
    const sorted = this.sorted[h - 1]!;
    if (this.adaptRate > 0) {
      for (const [level, used] of this.used) {
        const q = this.halfWidth(sorted, level, used[h - 1]!);
        if (q !== undefined) used[h - 1] = used[h - 1]! + this.adaptRate * ((r > q ? 1 : 0) - (1 - level));
      }
    }
    arrived.push(r);
    sorted.splice(lowerBound(sorted, r), 0, r);
    if (arrived.length > this.window) sorted.splice(lowerBound(sorted, arrived.shift()!), 1);
  }

  count(h: number): number {
    return this.arrived[h - 1]!.length;
  }

  /**
   * Half-width at a nominal level from sorted residuals, undefined while they are too few for it
   * (the fallback's case). Adapted, the level used may exceed what k residuals resolve (the
   * largest is taken) or fall to 0 or below (width 0).
   */
  private halfWidth(sorted: readonly number[], level: number, used: number): number | undefined {
    const nominal = sortedQuantile(sorted, level);
    if (nominal === undefined || this.adaptRate === 0) return nominal;
    const rank = Math.ceil((sorted.length + 1) * used - 1e-9);
    return rank <= 0 ? 0 : sorted[Math.min(rank, sorted.length) - 1];
  }

  /** Intervals around `forecast` (its length at most the horizon) at every level. */
  intervals(forecast: readonly number[], fallbackSigma: number): Interval[] {
    return [...this.used].map(([level, used]) => {
      const z = normalQuantile(0.5 + level / 2);
      const widths = forecast.map((_, i) => this.halfWidth(this.sorted[i]!, level, used[i]!) ?? z * fallbackSigma * Math.sqrt(i + 1));
      return { level, lower: forecast.map((f, i) => f - widths[i]!), upper: forecast.map((f, i) => f + widths[i]!) };
    });
  }
}
