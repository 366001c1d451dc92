/**
 * Small dense linear algebra on Float64Array (row-major), written by hand: the forecasting models
 * only solve systems of a few dozen unknowns, so a dependency would bring more than it gives.
 */

/**
 * Solves the symmetric positive definite system G x = b (G is k×k) by Cholesky, after scaling G to
 * a unit diagonal so that columns of very different sizes do not spoil the factorisation. A nearly
 * singular G gets a tiny ridge; undefined when even that fails.
 */
export function solveSpd(g: Float64Array, b: Float64Array, k: number): Float64Array | undefined {
  const scale = new Float64Array(k);
  for (let i = 0; i < k; i++) {
    const dii = g[i * k + i]!;
    scale[i] = dii > 0 && Number.isFinite(dii) ? 1 / Math.sqrt(dii) : 1;
  }
  for (const ridge of [0, 1e-10, 1e-7]) {
    const l = new Float64Array(k * k);
    let ok = true;
    for (let i = 0; i < k && ok; i++) {
      for (let j = 0; j <= i; j++) {
        let s = g[i * k + j]! * scale[i]! * scale[j]! + (i === j ? ridge : 0);
        for (let m = 0; m < j; m++) s -= l[i * k + m]! * l[j * k + m]!;
        if (i === j) {
          if (!(s > 1e-13)) {
            ok = false;
            break;
          }
          l[i * k + i] = Math.sqrt(s);
        } else {
          l[i * k + j] = s / l[j * k + j]!;
        }
      }
    }
    if (!ok) continue;
    // Forward then back substitution on the scaled system, then undo the scaling.
    const z = new Float64Array(k);
    for (let i = 0; i < k; i++) {
      let s = b[i]! * scale[i]!;
      for (let m = 0; m < i; m++) s -= l[i * k + m]! * z[m]!;
      z[i] = s / l[i * k + i]!;
    }
    const x = new Float64Array(k);
    for (let i = k - 1; i >= 0; i--) {
      let s = z[i]!;
      for (let m = i + 1; m < k; m++) s -= l[m * k + i]! * x[m]!;
      x[i] = s / l[i * k + i]!;
    }
    for (let i = 0; i < k; i++) x[i] = x[i]! * scale[i]!;
    if (x.every(Number.isFinite)) return x;
  }
  return undefined;
}

/** Solves the square system A x = b (A is k×k) by Gaussian elimination with partial pivoting; undefined when singular. */
export function solveGeneral(a: Float64Array, b: Float64Array, k: number): Float64Array | undefined {
  const m = Float64Array.from(a);
  const x = Float64Array.from(b);
  for (let col = 0; col < k; col++) {
    let pivot = col;
    for (let row = col + 1; row < k; row++) {
      if (Math.abs(m[row * k + col]!) > Math.abs(m[pivot * k + col]!)) pivot = row;
    }
    const p = m[pivot * k + col]!;
    if (!(Math.abs(p) > 1e-300)) return undefined;
    if (pivot !== col) {
      for (let j = 0; j < k; j++) {
        const t = m[col * k + j]!;
        m[col * k + j] = m[pivot * k + j]!;
        m[pivot * k + j] = t;
      }
      const t = x[col]!;
      x[col] = x[pivot]!;
      x[pivot] = t;
    }
    for (let row = col + 1; row < k; row++) {
      const f = m[row * k + col]! / p;
      if (f === 0) continue;
      for (let j = col; j < k; j++) m[row * k + j] = m[row * k + j]! - f * m[col * k + j]!;
      x[row] = x[row]! - f * x[col]!;
    }
  }
  for (let row = k - 1; row >= 0; row--) {
    let s = x[row]!;
    for (let j = row + 1; j < k; j++) s -= m[row * k + j]! * x[j]!;
    x[row] = s / m[row * k + row]!;
  }
  return x.every(Number.isFinite) ? x : undefined;
}

/**
 * Ordinary least squares: the coefficients minimising Σ_t w_t (y_t − Σ_j β_j x_j[t])² over
 * t ∈ [from, y.length), through the normal equations (the designs here are well conditioned:
 * Fourier terms, an intercept, lags). Optional weights w; undefined when the design is rank deficient.
 */
export function leastSquares(
  columns: readonly Float64Array[],
  y: Float64Array,
  from = 0,
  weights?: Float64Array,
): Float64Array | undefined {
  const k = columns.length;
  const g = new Float64Array(k * k);
  const b = new Float64Array(k);
  for (let i = 0; i < k; i++) {
    const ci = columns[i]!;
    for (let j = 0; j <= i; j++) {
      const cj = columns[j]!;
      let s = 0;
      if (weights) for (let t = from; t < y.length; t++) s += weights[t]! * ci[t]! * cj[t]!;
      else for (let t = from; t < y.length; t++) s += ci[t]! * cj[t]!;
      g[i * k + j] = s;
      g[j * k + i] = s;
    }
    let s = 0;
    if (weights) for (let t = from; t < y.length; t++) s += weights[t]! * ci[t]! * y[t]!;
    else for (let t = from; t < y.length; t++) s += ci[t]! * y[t]!;
    b[i] = s;
  }
  return solveSpd(g, b, k);
}
