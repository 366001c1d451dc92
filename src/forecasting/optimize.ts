/**
 * Derivative-free minimisation for the forecasting models, written by hand. The npm candidates do
 * not fit: `fmin` (0.0.4) is untyped, unmaintained and brings a plotting package at run time;
 * `optimization-js` lists browserify, jsdoc and travis as run-time dependencies;
 * `ml-levenberg-marquardt` fits y = f(x; p) point by point, which cannot express the sum of squares
 * of a recursive filter. Bounds are handled by transforming parameters (`toInterval`).
 */

/** Options of `nelderMead`. */
export interface NelderMeadOptions {
  /** Edge lengths of the starting simplex, one per coordinate or one for all (default 0.1). */
  step?: number | ArrayLike<number>;
  /** Evaluations of the objective, over all restarts (default 200 per coordinate). */
  maxEvaluations?: number;
  /** Converged when the simplex's values agree within this, relative to the best (default 1e-10). */
  fTolerance?: number;
  /** ... and, if given, its vertices within this of the best in every coordinate. Without it a
   * parameter drifting towards an infinite optimum (a bound behind a transformation) still stops. */
  xTolerance?: number;
  /** `performance.now()` time at which to stop with the best point found so far. */
  deadline?: number;
  /** Fresh simplices started from the best point after convergence (default 1): a collapsed simplex can stop early. */
  restarts?: number;
}

export interface Minimum {
  x: Float64Array;
  value: number;
  evaluations: number;
  /** False when the evaluations or the time ran out first. */
  converged: boolean;
}

/**
 * Nelder–Mead simplex minimisation with the dimension-adaptive coefficients of Gao and Han (2012),
 * which behave better than the classic ones beyond two or three coordinates. Non-finite values of
 * `f` count as +∞, so an objective can refuse a region by returning Infinity or NaN.
 */
export function nelderMead(f: (x: Float64Array) => number, x0: ArrayLike<number>, options: NelderMeadOptions = {}): Minimum {
  const n = x0.length;
  const steps = Float64Array.from({ length: n }, (_, i) => {
    const s = options.step ?? 0.1;
    return typeof s === 'number' ? s : (s[i] ?? 0.1);
  });
  const maxEvaluations = options.maxEvaluations ?? 200 * Math.max(1, n);
  const fTolerance = options.fTolerance ?? 1e-10;
  const xTolerance = options.xTolerance ?? Infinity;
  const deadline = options.deadline ?? Infinity;
  const [reflect, expand, contract, shrink] = [1, 1 + 2 / n, 0.75 - 1 / (2 * n), 1 - 1 / n];

  let evaluations = 0;
  const value = (x: Float64Array): number => {
    evaluations++;
    const v = f(x);
    return Number.isFinite(v) ? v : Infinity;
  };
  let best = { x: Float64Array.from(x0), value: value(Float64Array.from(x0)) };
  if (n === 0) return { ...best, evaluations, converged: true };
  const outOfBudget = () => evaluations >= maxEvaluations || performance.now() >= deadline;

  let converged = false;
  for (let round = 0; round <= (options.restarts ?? 1) && !outOfBudget(); round++) {
    const points = [best.x];
    const values = [best.value];
    for (let i = 0; i < n; i++) {
      const p = Float64Array.from(best.x);
      p[i] = p[i]! + steps[i]!;
      points.push(p);
      values.push(value(p));
    }
    const order = Array.from({ length: n + 1 }, (_, i) => i);
    const centroid = new Float64Array(n);
    /** centroid + t (worst − centroid) */
    const along = (worst: Float64Array, t: number) => centroid.map((c, j) => c + t * (worst[j]! - c));
    converged = false;
    while (!outOfBudget()) {
      order.sort((a, b) => values[a]! - values[b]!);
      const [lo, hi, nextHi] = [order[0]!, order[n]!, order[n - 1]!];
      if (hasConverged(points, values, lo, fTolerance, xTolerance)) {
        converged = true;
        break;
      }
      centroid.fill(0);
      for (const i of order.slice(0, n)) for (let j = 0; j < n; j++) centroid[j] = centroid[j]! + points[i]![j]! / n;
      const worst = points[hi]!;
      const xr = along(worst, -reflect);
      const fr = value(xr);
      if (fr < values[lo]!) {
        const xe = along(worst, -reflect * expand);
        const fe = value(xe);
        [points[hi], values[hi]] = fe < fr ? [xe, fe] : [xr, fr];
      } else if (fr < values[nextHi]!) {
        [points[hi], values[hi]] = [xr, fr];
      } else {
        const outside = fr < values[hi]!;
        const xc = along(worst, outside ? -reflect * contract : contract);
        const fc = value(xc);
        if (fc < (outside ? fr : values[hi]!)) {
          [points[hi], values[hi]] = [xc, fc];
        } else {
          const anchor = points[lo]!;
          for (const i of order.slice(1)) {
            points[i] = points[i]!.map((v, j) => anchor[j]! + shrink * (v - anchor[j]!));
            values[i] = value(points[i]!);
          }
        }
      }
    }
    const i = values.indexOf(Math.min(...values));
    if (values[i]! <= best.value) best = { x: points[i]!, value: values[i]! };
  }
  return { ...best, evaluations, converged };
}

function hasConverged(points: Float64Array[], values: number[], lo: number, fTolerance: number, xTolerance: number): boolean {
  const fLo = values[lo]!;
  if (!Number.isFinite(fLo)) return false;
  const fSpread = Math.max(...values) - fLo;
  if (!(fSpread <= fTolerance * Math.max(Math.abs(fLo), Number.MIN_VALUE))) return false;
  const best = points[lo]!;
  return points.every((p) => p.every((v, j) => Math.abs(v - best[j]!) <= xTolerance));
}

/** Maps any real u into the open interval (lo, hi) with a logistic curve; `fromInterval` is its inverse. */
export function toInterval(u: number, lo: number, hi: number): number {
  return lo + (hi - lo) / (1 + Math.exp(-u));
}

/** The u for which `toInterval(u, lo, hi)` is x; x is first clamped just inside the interval. */
export function fromInterval(x: number, lo: number, hi: number): number {
  const p = Math.min(Math.max((x - lo) / (hi - lo), 1e-9), 1 - 1e-9);
  return Math.log(p / (1 - p));
}
