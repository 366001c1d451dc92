/**
 * Forecast accuracy. MASE divides absolute errors by the in-sample MAE of the one-day seasonal
 * naive forecast on the training window (Hyndman and Koehler 2006), so 1 means "as good as
 * yesterday's values" and scales compare across series. When that MAE is 0 (a constant or exactly
 * daily-periodic training window; below 1e-9 of the mean absolute value counts as 0, being
 * rounding) the plain naive MAE is used instead, and when that is 0 too (a constant series) the
 * scale is 1: the errors are then reported in the series' own units, and a correct forecast still
 * scores 0. MASE is therefore always finite.
 */

/** Mean |y(t) − y(t − lag)| over the series, 0 when it is too short for the lag. */
function laggedMae(y: readonly number[], lag: number): number {
  let sum = 0;
  for (let t = lag; t < y.length; t++) sum += Math.abs(y[t]! - y[t - lag]!);
  return y.length > lag ? sum / (y.length - lag) : 0;
}

/** The scale of MASE for a training window (see the module comment): always positive. */
export function maseScale(train: readonly number[], dailyPeriod: number): number {
  const m = Math.round(dailyPeriod);
  const rounding = 1e-9 * train.reduce((s, v) => s + Math.abs(v) / train.length, 0);
  const seasonal = m > 1 ? laggedMae(train, m) : 0;
  if (seasonal > rounding) return seasonal;
  const plain = laggedMae(train, 1);
  return plain > rounding ? plain : 1;
}

/** Mean absolute error of forecast against actual, divided by `scale`. */
export function mase(actual: readonly number[], forecast: readonly number[], scale: number): number {
  let sum = 0;
  actual.forEach((a, i) => (sum += Math.abs(a - forecast[i]!)));
  return actual.length > 0 ? sum / actual.length / scale : 0;
}

/** One sMAPE term in percent (0–200): 200·|a − f| / (|a| + |f|), and 0 when both are 0. */
export function smapeTerm(a: number, f: number): number {
  const denominator = Math.abs(a) + Math.abs(f);
  return denominator > 0 ? (200 * Math.abs(a - f)) / denominator : 0;
}

/** Symmetric MAPE in percent, 0–200. */
export function smape(actual: readonly number[], forecast: readonly number[]): number {
  let sum = 0;
  actual.forEach((a, i) => (sum += smapeTerm(a, forecast[i]!)));
  return actual.length > 0 ? sum / actual.length : 0;
}

/** Fraction of actual values inside [lower, upper], bounds included. */
export function coverage(actual: readonly number[], lower: readonly number[], upper: readonly number[]): number {
  let inside = 0;
  actual.forEach((a, i) => (inside += a >= lower[i]! && a <= upper[i]! ? 1 : 0));
  return actual.length > 0 ? inside / actual.length : 0;
}

/** Accumulates absolute scaled errors, sMAPE terms and interval hits over many forecasts. */
export class Accuracy {
  private count = 0;
  private scaledError = 0;
  private smapeSum = 0;
  private readonly hits = new Map<number, number>();

  /** One forecast value: the actual, the point forecast, the MASE scale and the intervals at each level. */
  add(actual: number, forecast: number, scale: number, intervals: ReadonlyArray<{ level: number; lower: number; upper: number }>): void {
    this.count++;
    this.scaledError += Math.abs(actual - forecast) / scale;
    this.smapeSum += smapeTerm(actual, forecast);
    for (const { level, lower, upper } of intervals) {
      this.hits.set(level, (this.hits.get(level) ?? 0) + (actual >= lower && actual <= upper ? 1 : 0));
    }
  }

  get size(): number {
    return this.count;
  }

  get mase(): number {
    return this.count > 0 ? this.scaledError / this.count : 0;
  }

  get smape(): number {
    return this.count > 0 ? this.smapeSum / this.count : 0;
  }

  coverage(level: number): number {
    return this.count > 0 ? (this.hits.get(level) ?? 0) / this.count : 0;
  }
}
