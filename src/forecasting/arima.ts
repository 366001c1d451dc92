/**
 * ARIMA for load series: a regression on Fourier terms (daily and weekly seasons) with ARIMA(p,d,q)
 * errors, d ∈ {0,1}. Written by hand: the npm package `arima` crashes on seasonal models with
 * period 288, and long seasons are carried better by a few harmonics than by seasonal differencing.
 *
 * Estimation, for a given specification: OLS for the regression coefficients (intercept, optional
 * drift, Fourier terms; on the first differences when d = 1), ARMA on the residuals by conditional
 * sum of squares (CSS) from Hannan–Rissanen starting values, then the exact Gaussian likelihood
 * through a Kalman filter, alternating with GLS for the regression coefficients until they reach
 * the joint maximum (what statsmodels' ARIMA with `exog` estimates). Stationarity and invertibility
 * are enforced by optimising over partial autocorrelations (Jones 1980, as statsmodels does).
 *
 * Selection, by AICc within the fitting budget: KPSS picks d; a grid with AR(3) errors picks the
 * numbers of harmonics; a Hyndman–Khandakar stepwise search over CSS fits picks (p, q, drift); the
 * harmonics are then revisited around that order, and the winner is refitted by exact likelihood.
 * On numerical failure the model falls back to ARIMA(0,1,0) with the same Fourier terms, then to
 * the mean.
 */
import { InvalidInputError } from '../errors.js';
import { leastSquares, solveGeneral, solveSpd } from './linalg.js';
import { nelderMead, type NelderMeadOptions } from './optimize.js';
import type { FitContext, FittedModel, ModelFactory } from './types.js';

/** One season carried by Fourier terms: `harmonics` sin/cos pairs of a period of `period` steps. */
export interface FourierSeason {
  period: number;
  harmonics: number;
}

/** A regression on Fourier terms with ARIMA(p,d,q) errors. */
export interface ArimaSpec {
  p: number;
  d: 0 | 1;
  q: number;
  /** A linear trend in the levels, i.e. a constant in the differences when d = 1. With d = 0 an intercept is always there. */
  drift: boolean;
  seasons: FourierSeason[];
}

/** Estimated parameters; `beta` follows `regressorNames(spec)`. */
export interface ArimaParams {
  spec: ArimaSpec;
  beta: number[];
  ar: number[];
  ma: number[];
  /** Innovation variance. */
  sigma2: number;
}

const MAX_P = 3;
const MAX_Q = 3;
/** Every CSS fit of a search sums residuals from this step on, so that their AICc compare. */
const CSS_FROM = MAX_P;
const DAILY_HARMONICS = { min: 1, max: 8 };
const WEEKLY_HARMONICS = { min: 0, max: 4 };
const DEFAULT_BUDGET_MS = 5000;
/** The search stops at this share of the budget, leaving the rest to the exact fit of the winner. */
const SEARCH_SHARE = 0.7;
/** Stepwise search stops after this many models even within budget (R's auto.arima allows 94). */
const MAX_MODELS = 60;
/** KPSS level-stationarity critical value at 5%. */
const KPSS_CRITICAL = 0.463;
/** Below this many points the model is the mean. */
const MIN_POINTS = 8;
/** Largest magnitude of an unconstrained parameter, so partial autocorrelations stay strictly inside (−1, 1). */
const MAX_UNCONSTRAINED = 1e4;

// ---------------------------------------------------------------------------------------------
// Regressors

interface Term {
  name: string;
  at(t: number): number;
}

/** Names of the regression coefficients of a specification, in the order of `ArimaParams.beta`. */
export function regressorNames(spec: ArimaSpec): string[] {
  return regressorTerms(spec).map((t) => t.name);
}

/** Intercept (d = 0), drift, then sin/cos of each harmonic, at step t counted from the series start. */
function regressorTerms(spec: ArimaSpec): Term[] {
  const terms: Term[] = [];
  if (spec.d === 0) terms.push({ name: 'const', at: () => 1 });
  if (spec.drift) terms.push({ name: 'drift', at: (t) => t });
  const seen = new Set<string>();
  for (const { period, harmonics } of spec.seasons) {
    for (let j = 1; j <= harmonics; j++) {
      // A frequency another season already has (weekly harmonic 7 = daily 1) would make the design singular.
      const g = gcd(j, period);
      const frequency = `${j / g}/${period / g}`;
      if (seen.has(frequency)) continue;
      seen.add(frequency);
      const omega = (2 * Math.PI * j) / period;
      // Reducing t modulo the period keeps the phase exact however long the series gets.
      if (2 * j !== period) terms.push({ name: `sin${j}_${period}`, at: (t) => Math.sin(omega * (t % period)) });
      terms.push({ name: `cos${j}_${period}`, at: (t) => Math.cos(omega * (t % period)) });
    }
  }
  return terms;
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

/** The regressors as the errors see them: levels when d = 0, first differences when d = 1. */
function workingColumns(terms: readonly Term[], n: number, d: 0 | 1): Float64Array[] {
  return terms.map((term) => {
    const col = new Float64Array(Math.max(0, n - d));
    for (let t = 0; t < col.length; t++) col[t] = d === 0 ? term.at(t) : term.at(t + 1) - term.at(t);
    return col;
  });
}

function workingSeries(y: Float64Array, d: 0 | 1): Float64Array {
  if (d === 0) return y;
  const w = new Float64Array(Math.max(0, y.length - 1));
  for (let t = 0; t < w.length; t++) w[t] = y[t + 1]! - y[t]!;
  return w;
}

function residuals(wy: Float64Array, columns: readonly Float64Array[], beta: ArrayLike<number>): Float64Array {
  const w = Float64Array.from(wy);
  columns.forEach((col, j) => {
    const b = beta[j]!;
    for (let t = 0; t < w.length; t++) w[t] = w[t]! - b * col[t]!;
  });
  return w;
}

/** Smallest innovation variance a fit may report, so that an exact fit (a pure sine) keeps a finite likelihood. */
function varianceFloor(wy: Float64Array): number {
  let s = 0;
  for (let t = 0; t < wy.length; t++) s += (wy[t]! * wy[t]!) / wy.length;
  return 1e-14 * s + 1e-300;
}

// ---------------------------------------------------------------------------------------------
// Stationarity through partial autocorrelations

/** Unconstrained reals → coefficients of a stationary AR polynomial, via partial autocorrelations (Durbin–Levinson). */
function toStationary(x: ArrayLike<number>): Float64Array {
  const p = x.length;
  const phi = new Float64Array(p);
  const prev = new Float64Array(p);
  for (let k = 0; k < p; k++) {
    const xk = Math.max(-MAX_UNCONSTRAINED, Math.min(MAX_UNCONSTRAINED, x[k]!));
    const r = xk / Math.sqrt(1 + xk * xk);
    prev.set(phi);
    for (let j = 0; j < k; j++) phi[j] = prev[j]! - r * prev[k - 1 - j]!;
    phi[k] = r;
  }
  return phi;
}

/** The inverse of `toStationary`; undefined when the coefficients are not stationary. */
function fromStationary(phi: ArrayLike<number>): Float64Array | undefined {
  let cur = Float64Array.from(phi);
  const x = new Float64Array(cur.length);
  for (let k = cur.length - 1; k >= 0; k--) {
    const r = cur[k]!;
    if (!(Math.abs(r) < 1)) return undefined;
    x[k] = r / Math.sqrt(1 - r * r);
    const next = new Float64Array(k);
    for (let j = 0; j < k; j++) next[j] = (cur[j]! + r * cur[k - 1 - j]!) / (1 - r * r);
    cur = next;
  }
  return x;
}

/** ARMA coefficients from the unconstrained vector [AR part (p), MA part (q)]; MA is −(stationary) so 1 + θ(z) is invertible. */
function unpack(x: Float64Array, p: number, q: number): { ar: Float64Array; ma: Float64Array } {
  return { ar: toStationary(x.subarray(0, p)), ma: toStationary(x.subarray(p, p + q)).map((v) => -v) };
}

/** The unconstrained vector of ARMA coefficients; a non-stationary or non-invertible part starts from zero. */
function pack(ar: ArrayLike<number>, ma: ArrayLike<number>): Float64Array {
  const x = new Float64Array(ar.length + ma.length);
  x.set(fromStationary(ar) ?? [], 0);
  x.set(fromStationary(Array.from(ma, (v) => -v)) ?? [], ar.length);
  return x;
}

// ---------------------------------------------------------------------------------------------
// Exact likelihood: the Kalman filter of a stationary ARMA

/**
 * Kalman filter of a stationary ARMA(p,q) in Harvey's state-space form (state dimension
 * r = max(p, q+1)) with unit innovation variance. Gains depend on the parameters only, so they are
 * computed once, until the Riccati recursion reaches its steady state, and serve the series and
 * every regressor alike.
 */
class ArmaFilter {
  private constructor(
    private readonly r: number,
    private readonly phi: Float64Array,
    /** Gains, r per step, for the steps before the steady state (the last one holds from then on). */
    private readonly gains: Float64Array,
    private readonly f: Float64Array,
    /** Σ log F_t over the n steps the filter was built for. */
    readonly sumLogF: number,
  ) {}

  static create(ar: ArrayLike<number>, ma: ArrayLike<number>, n: number): ArmaFilter | undefined {
    const r = Math.max(ar.length, ma.length + 1);
    const phi = new Float64Array(r);
    phi.set(ar);
    const rr = new Float64Array(r);
    rr[0] = 1;
    rr.set(ma, 1);
    let pm: Float64Array | undefined = stationaryCovariance(phi, rr, r);
    if (!pm) return undefined;
    let next: Float64Array = new Float64Array(r * r);
    const tp = new Float64Array(r * r);
    const gains = new Float64Array(n * r);
    const fs = new Float64Array(n);
    let steps = 0;
    let sumLogF = 0;
    while (steps < n) {
      const t = steps++;
      const f = pm[0]!;
      if (!(f > 0) || !Number.isFinite(f)) return undefined;
      fs[t] = f;
      sumLogF += Math.log(f);
      // K = T P Z' / F; next P = T P T' + R R' − K K' F.
      const k = t * r;
      for (let i = 0; i < r; i++) gains[k + i] = (phi[i]! * pm[0]! + (i + 1 < r ? pm[(i + 1) * r]! : 0)) / f;
      for (let i = 0; i < r; i++) {
        for (let j = 0; j < r; j++) tp[i * r + j] = phi[i]! * pm[j]! + (i + 1 < r ? pm[(i + 1) * r + j]! : 0);
      }
      let change = 0;
      for (let i = 0; i < r; i++) {
        for (let j = 0; j < r; j++) {
          const v = tp[i * r]! * phi[j]! + (j + 1 < r ? tp[i * r + j + 1]! : 0) + rr[i]! * rr[j]! - gains[k + i]! * gains[k + j]! * f;
          next[i * r + j] = v;
          change = Math.max(change, Math.abs(v - pm[i * r + j]!) / (1 + Math.abs(v)));
        }
      }
      [pm, next] = [next, pm];
      if (change < 1e-13) {
        sumLogF += (n - steps) * Math.log(f);
        break;
      }
    }
    return new ArmaFilter(r, phi, gains.subarray(0, steps * r), fs.subarray(0, steps), sumLogF);
  }

  /** Variance, in units of σ², of the one-step prediction error at step t. */
  variance(t: number): number {
    return this.f[Math.min(t, this.f.length - 1)]!;
  }

  /**
   * Filters w: writes the one-step prediction errors into `v` when given, and returns Σ v²/F and
   * the predicted state for the step after the last.
   */
  run(w: Float64Array, v?: Float64Array): { ssq: number; state: Float64Array } {
    const { r, phi, gains } = this;
    const a = new Float64Array(r);
    const steady = this.f.length - 1;
    let ssq = 0;
    for (let t = 0; t < w.length; t++) {
      const s = Math.min(t, steady);
      const e = w[t]! - a[0]!;
      if (v) v[t] = e;
      ssq += (e * e) / this.f[s]!;
      const a0 = a[0]!;
      for (let i = 0; i < r; i++) a[i] = phi[i]! * a0 + (i + 1 < r ? a[i + 1]! : 0) + gains[s * r + i]! * e;
    }
    return { ssq, state: a };
  }
}

/** Solves P = T P T' + R R' for the stationary state covariance (vectorised: (I − T⊗T) vec P = vec R R'). */
function stationaryCovariance(phi: Float64Array, rr: Float64Array, r: number): Float64Array | undefined {
  const tAt = (i: number, j: number) => (j === 0 ? phi[i]! : 0) + (j === i + 1 ? 1 : 0);
  const m = r * r;
  const a = new Float64Array(m * m);
  const b = new Float64Array(m);
  for (let i = 0; i < r; i++) {
    for (let j = 0; j < r; j++) {
      const row = i * r + j;
      b[row] = rr[i]! * rr[j]!;
      for (let k = 0; k < r; k++) {
        for (let l = 0; l < r; l++) a[row * m + k * r + l] = (row === k * r + l ? 1 : 0) - tAt(i, k) * tAt(j, l);
      }
    }
  }
  const p = solveGeneral(a, b, m);
  if (!p) return undefined;
  for (let i = 0; i < r; i++) if (!(p[i * r + i]! > 0)) return undefined;
  return p;
}

/** Gaussian log-likelihood of w from the filter's prediction errors, at σ² = given or its maximum. */
function exactLogLik(w: Float64Array, filter: ArmaFilter, floor: number, sigma2?: number): { logLik: number; sigma2: number } {
  const n = w.length;
  const { ssq } = filter.run(w);
  const s2 = sigma2 ?? Math.max(ssq / n, floor);
  return { logLik: -0.5 * (n * Math.log(2 * Math.PI * s2) + ssq / s2 + filter.sumLogF), sigma2: s2 };
}

// ---------------------------------------------------------------------------------------------
// Conditional sum of squares, starting values, optimiser

/** Σ of squared conditional residuals of ARMA on w from step `from` on (residuals before step p are zero). */
function cssSumSquares(w: Float64Array, ar: Float64Array, ma: Float64Array, from: number, e: Float64Array): number {
  const p = ar.length;
  const q = ma.length;
  let ss = 0;
  for (let t = 0; t < w.length; t++) {
    if (t < p) {
      e[t] = 0;
      continue;
    }
    let s = w[t]!;
    for (let i = 0; i < p; i++) s -= ar[i]! * w[t - 1 - i]!;
    for (let j = 0; j < q && j < t; j++) s -= ma[j]! * e[t - 1 - j]!;
    e[t] = s;
    if (t >= from) ss += s * s;
  }
  return ss;
}

function lagged(x: Float64Array, lag: number): Float64Array {
  const out = new Float64Array(x.length);
  out.set(x.subarray(0, x.length - lag), lag);
  return out;
}

/** Hannan–Rissanen starting values: a long AR by OLS gives residuals, then w is regressed on its lags and theirs. */
function hannanRissanen(w: Float64Array, p: number, q: number): Float64Array {
  const n = w.length;
  const wLags = Array.from({ length: p }, (_, i) => lagged(w, i + 1));
  let eLags: Float64Array[] = [];
  let from = p;
  if (q > 0) {
    const m = Math.min(Math.max(10, 2 * (p + q)), Math.floor(n / 5));
    const longLags = Array.from({ length: m }, (_, i) => lagged(w, i + 1));
    const long = m > 0 ? leastSquares(longLags, w, m) : undefined;
    if (!long) return new Float64Array(p + q);
    const e = residuals(w, longLags, long);
    e.fill(0, 0, m);
    eLags = Array.from({ length: q }, (_, j) => lagged(e, j + 1));
    from = Math.max(p, m + q);
  }
  if (n - from <= 2 * (p + q)) return new Float64Array(p + q);
  const coef = leastSquares([...wLags, ...eLags], w, from);
  return coef ? pack(coef.subarray(0, p), coef.subarray(p)) : new Float64Array(p + q);
}

/**
 * Selection only ranks models (and gives an exact fit its start), so its fits stop sooner;
 * estimation wants the optimum itself. Objectives are log(σ²/floor) (+ mean log F): they stay well
 * above zero, as the optimiser's tolerance on f is relative.
 */
const SEARCH_EFFORT = (dim: number): NelderMeadOptions => ({ step: 0.3, xTolerance: 1e-4, fTolerance: 1e-9, maxEvaluations: 100 * dim });
const ESTIMATE_EFFORT: NelderMeadOptions = { xTolerance: 1e-5, fTolerance: 1e-12 };

/** ARMA(p,q) on w by CSS, from Hannan–Rissanen starting values; returns the unconstrained parameters and the sum of squares. */
function fitCss(
  w: Float64Array,
  p: number,
  q: number,
  from: number,
  floor: number,
  effort: NelderMeadOptions,
): { x: Float64Array; ss: number } {
  const e = new Float64Array(w.length);
  const nEff = w.length - from;
  const ssAt = (x: Float64Array) => {
    const { ar, ma } = unpack(x, p, q);
    return cssSumSquares(w, ar, ma, from, e);
  };
  const objective = (x: Float64Array) => Math.log(Math.max(ssAt(x) / nEff, floor) / floor);
  const { x } = nelderMead(objective, hannanRissanen(w, p, q), effort);
  return { x, ss: ssAt(x) };
}

/** ARMA(p,q) on w by exact likelihood from x0; returns the unconstrained parameters and the log-likelihood. */
function fitExactArma(
  w: Float64Array,
  p: number,
  q: number,
  x0: Float64Array,
  floor: number,
  effort: NelderMeadOptions,
): { x: Float64Array; logLik: number } {
  const logLikAt = (x: Float64Array) => {
    const { ar, ma } = unpack(x, p, q);
    const filter = ArmaFilter.create(ar, ma, w.length);
    return filter ? exactLogLik(w, filter, floor).logLik : -Infinity;
  };
  // −logLik·2/N less constants: log(σ²/floor) + mean log F ≥ 0.
  const offset = Math.log(2 * Math.PI * floor) + 1;
  const { x } = nelderMead((x) => (-2 * logLikAt(x)) / w.length - offset, x0, effort);
  return { x, logLik: logLikAt(x) };
}

/** GLS regression coefficients for fixed ARMA errors: OLS on the filter's prediction errors, weighted by 1/F. */
function gls(wy: Float64Array, columns: readonly Float64Array[], filter: ArmaFilter): Float64Array | undefined {
  const innovations = (x: Float64Array) => {
    const v = new Float64Array(x.length);
    filter.run(x, v);
    return v;
  };
  const weights = new Float64Array(wy.length);
  for (let t = 0; t < weights.length; t++) weights[t] = 1 / filter.variance(t);
  return leastSquares(columns.map(innovations), innovations(wy), 0, weights);
}

function aicc(logLik: number, k: number, nEff: number): number {
  if (nEff - k - 1 <= 0 || !Number.isFinite(logLik)) return Infinity;
  return -2 * logLik + 2 * k + (2 * k * (k + 1)) / (nEff - k - 1);
}

// ---------------------------------------------------------------------------------------------
// The fitted model

interface FilterEnd {
  /** Length of the filtered series: the next forecast is for step n. */
  n: number;
  /** Last observation (the level differences are added to when d = 1). */
  last: number;
  /** Predicted ARMA state for step n. */
  state: number[];
}

/** A fitted regression with ARIMA errors; `logLik` and `aicc` are exact, on the series it was fitted or updated on. */
export class ArimaModel implements FittedModel {
  readonly model = 'arima';
  readonly description: string;
  private readonly terms: Term[];

  constructor(
    readonly params: ArimaParams,
    private readonly end: FilterEnd,
    readonly logLik: number,
    readonly aicc: number,
  ) {
    this.terms = regressorTerms(params.spec);
    this.description = describe(params.spec);
  }

  forecast(horizon: number): number[] {
    const { spec, beta, ar } = this.params;
    const { n, last } = this.end;
    const a = Float64Array.from(this.end.state);
    const r = a.length;
    const x = (t: number) => this.terms.reduce((s, term, j) => s + beta[j]! * term.at(t), 0);
    const out: number[] = [];
    let level = last;
    for (let h = 0; h < horizon; h++) {
      const t = n + h;
      const error = a[0]!;
      const a0 = a[0]!;
      for (let i = 0; i < r; i++) a[i] = (i < ar.length ? ar[i]! * a0 : 0) + (i + 1 < r ? a[i + 1]! : 0);
      const value = spec.d === 0 ? x(t) + error : level + x(t) - x(t - 1) + error;
      // Guards the promise of finite forecasts against overflow on absurd inputs.
      level = Number.isFinite(value) ? value : (out[h - 1] ?? last);
      out.push(level);
    }
    return out;
  }

  update(y: readonly number[]): ArimaModel {
    return assemble(clean(y), this.params);
  }

  /** Whether the fit came out finite wherever forecasts and selection look. */
  isFinite(): boolean {
    const { beta, ar, ma, sigma2 } = this.params;
    return [...beta, ...ar, ...ma, ...this.end.state, sigma2, this.end.last, this.logLik].every(Number.isFinite);
  }

  toJSON(): Record<string, unknown> {
    const { spec, beta, ar, ma, sigma2 } = this.params;
    return {
      model: this.model,
      version: 1,
      spec: { p: spec.p, d: spec.d, q: spec.q, drift: spec.drift, seasons: spec.seasons.map((s) => ({ ...s })) },
      beta: [...beta],
      ar: [...ar],
      ma: [...ma],
      sigma2,
      n: this.end.n,
      last: this.end.last,
      state: [...this.end.state],
      logLik: this.logLik,
      aicc: this.aicc,
    };
  }
}

function describe(spec: ArimaSpec): string {
  const seasons = spec.seasons.filter((s) => s.harmonics > 0).map((s) => `, Fourier K=${s.harmonics} period ${s.period}`);
  return `ARIMA(${spec.p},${spec.d},${spec.q})${spec.drift ? ' with drift' : ''}${seasons.join('')}`;
}

/** The model with these parameters filtered over y. */
function assemble(y: Float64Array, params: ArimaParams): ArimaModel {
  const { spec, beta, ar, ma, sigma2 } = params;
  const n = y.length;
  const columns = workingColumns(regressorTerms(spec), n, spec.d);
  const w = residuals(workingSeries(y, spec.d), columns, beta);
  const filter = ArmaFilter.create(ar, ma, w.length);
  const r = Math.max(ar.length, ma.length + 1);
  if (!filter) return new ArimaModel(params, { n, last: y[n - 1] ?? 0, state: new Array<number>(r).fill(0) }, -Infinity, Infinity);
  const { state } = filter.run(w);
  const { logLik } = exactLogLik(w, filter, 0, sigma2);
  const k = spec.p + spec.q + beta.length + 1;
  return new ArimaModel(params, { n, last: y[n - 1] ?? 0, state: Array.from(state) }, logLik, aicc(logLik, k, w.length));
}

// ---------------------------------------------------------------------------------------------
// Fitting one specification

/** The contract promises a clean series; a non-finite value is carried forward all the same. */
function clean(y: readonly number[]): Float64Array {
  const out = new Float64Array(y.length);
  let prev = y.find(Number.isFinite) ?? 0;
  y.forEach((v, t) => {
    prev = Number.isFinite(v) ? v : prev;
    out[t] = prev;
  });
  return out;
}

/** Integral orders, and only the seasons the series can estimate (two full periods) with distinct harmonics. */
function normalizeSpec(spec: ArimaSpec, n: number): ArimaSpec {
  const order = (v: number) => Math.max(0, Math.floor(v));
  return {
    p: order(spec.p),
    d: spec.d === 1 ? 1 : 0,
    q: order(spec.q),
    drift: spec.drift,
    seasons: spec.seasons
      .map((s) => ({ period: Math.round(s.period), harmonics: order(s.harmonics) }))
      .map((s) => ({ ...s, harmonics: Math.min(s.harmonics, Math.floor(s.period / 2)) }))
      .filter((s) => s.period > 1 && s.harmonics > 0 && n >= 2 * s.period),
  };
}

/**
 * Fits one specification by exact likelihood (OLS, CSS, then exact likelihood alternating with GLS).
 * Always returns finite forecasts: on failure it falls back to ARIMA(0,1,0) with the same Fourier
 * terms, then to the mean. Seasons shorter than two periods of data are dropped. Past `budgetMs`
 * the optimisers stop where they are.
 */
export function fitArima(y: readonly number[], spec: ArimaSpec, options: { budgetMs?: number } = {}): ArimaModel {
  const ys = clean(y);
  const deadline = performance.now() + (options.budgetMs ?? Infinity);
  return tryFit(ys, normalizeSpec(spec, ys.length), deadline) ?? fallback(ys, spec.seasons);
}

function fallback(ys: Float64Array, seasons: FourierSeason[]): ArimaModel {
  const naive = normalizeSpec({ p: 0, d: 1, q: 0, drift: false, seasons }, ys.length);
  return tryFit(ys, naive) ?? meanModel(ys);
}

function meanModel(ys: Float64Array): ArimaModel {
  const n = ys.length;
  const mean = ys.reduce((s, v) => s + v / n, 0);
  const sigma2 = Math.max(ys.reduce((s, v) => s + (v - mean) ** 2 / n, 0), varianceFloor(ys));
  const model = assemble(ys, { spec: { p: 0, d: 0, q: 0, drift: false, seasons: [] }, beta: [mean], ar: [], ma: [], sigma2 });
  if (model.isFinite()) return model;
  // Only magnitudes whose squares overflow get here: the last value is all that is left.
  return assemble(ys, { spec: { p: 0, d: 1, q: 0, drift: false, seasons: [] }, beta: [], ar: [], ma: [], sigma2: 1 });
}

const MAX_GLS_ROUNDS = 5;
/** Rounds of GLS stop when the log-likelihood gains less than this. */
const GLS_TOLERANCE = 1e-3;

/** One specification by exact likelihood, or undefined when the data are too few or the numbers fail. */
function tryFit(ys: Float64Array, spec: ArimaSpec, deadline = Infinity): ArimaModel | undefined {
  const { p, d, q } = spec;
  const terms = regressorTerms(spec);
  const wy = workingSeries(ys, d);
  if (wy.length - terms.length - p - q < 3) return undefined;
  const columns = workingColumns(terms, ys.length, d);
  const floor = varianceFloor(wy);
  let beta = columns.length > 0 ? leastSquares(columns, wy) : new Float64Array(0);
  if (!beta) return undefined;
  let w = residuals(wy, columns, beta);
  let x = fitCss(w, p, q, p, floor, { ...SEARCH_EFFORT(p + q), deadline }).x;
  let logLik = -Infinity;
  for (let round = 0; ; round++) {
    // Rounds after the first start next to the optimum: a smaller simplex, and fewer steps, do.
    const effort = round === 0 ? { step: 0.1 } : { step: 0.02, maxEvaluations: 50 * (p + q) };
    const fit = fitExactArma(w, p, q, x, floor, { ...ESTIMATE_EFFORT, ...effort, deadline });
    const gain = fit.logLik - logLik;
    x = fit.x;
    logLik = fit.logLik;
    const converged = !(gain > GLS_TOLERANCE);
    if (columns.length === 0 || round === MAX_GLS_ROUNDS || converged || performance.now() > deadline) break;
    const { ar, ma } = unpack(x, p, q);
    const filter = ArmaFilter.create(ar, ma, w.length);
    const next = filter && gls(wy, columns, filter);
    if (!next) break;
    beta = next;
    w = residuals(wy, columns, beta);
  }
  const { ar, ma } = unpack(x, p, q);
  const filter = ArmaFilter.create(ar, ma, w.length);
  if (!filter) return undefined;
  const { sigma2 } = exactLogLik(w, filter, floor);
  const model = assemble(ys, { spec, beta: Array.from(beta), ar: Array.from(ar), ma: Array.from(ma), sigma2 });
  return model.isFinite() ? model : undefined;
}

// ---------------------------------------------------------------------------------------------
// Selection

/** KPSS statistic for level stationarity, Bartlett long-run variance with ⌊4(n/100)^¼⌋ lags (urca's "short"). */
function kpss(x: Float64Array): number {
  const n = x.length;
  const mean = x.reduce((s, v) => s + v, 0) / n;
  const e = x.map((v) => v - mean);
  let cum = 0;
  let eta = 0;
  for (let t = 0; t < n; t++) {
    cum += e[t]!;
    eta += cum * cum;
  }
  const lags = Math.floor(4 * (n / 100) ** 0.25);
  let s2 = 0;
  for (let t = 0; t < n; t++) s2 += e[t]! * e[t]!;
  for (let s = 1; s <= lags; s++) {
    let c = 0;
    for (let t = s; t < n; t++) c += e[t]! * e[t - s]!;
    s2 += 2 * (1 - s / (lags + 1)) * c;
  }
  return eta / n / s2;
}

/** d by KPSS on what the largest Fourier regression leaves (d = 0 when it leaves nothing). */
function chooseD(ys: Float64Array, seasons: FourierSeason[]): 0 | 1 {
  const spec: ArimaSpec = { p: 0, d: 0, q: 0, drift: false, seasons };
  const columns = workingColumns(regressorTerms(spec), ys.length, 0);
  const beta = leastSquares(columns, ys);
  if (!beta) return 0;
  const u = residuals(ys, columns, beta);
  if (u.reduce((s, v) => s + (v * v) / u.length, 0) <= varianceFloor(ys)) return 0;
  return kpss(u) > KPSS_CRITICAL ? 1 : 0;
}

/** AICc of CSS fits for one d and one series, with the OLS residuals cached per regression. */
class CssSearch {
  private readonly wy: Float64Array;
  private readonly floor: number;
  private readonly fits = new Map<string, { w: Float64Array; nBeta: number } | undefined>();
  private readonly scores = new Map<string, number>();
  private readonly columns = new Map<string, Float64Array>();
  private readonly inners = new Map<string, number>();

  constructor(
    private readonly ys: Float64Array,
    private readonly d: 0 | 1,
    private readonly deadline: number,
  ) {
    this.wy = workingSeries(ys, d);
    this.floor = varianceFloor(this.wy);
  }

  get models(): number {
    return this.scores.size;
  }

  overBudget(): boolean {
    return performance.now() > this.deadline;
  }

  /** AICc of ARIMA(p,d,q) errors on the OLS residuals, by CSS. */
  score(spec: ArimaSpec): number {
    const key = JSON.stringify(spec);
    let score = this.scores.get(key);
    if (score === undefined) {
      const fit = this.regression(spec.seasons, spec.drift);
      score = Infinity;
      if (fit) {
        const { ss } = fitCss(fit.w, spec.p, spec.q, CSS_FROM, this.floor, { ...SEARCH_EFFORT(spec.p + spec.q), deadline: this.deadline });
        score = this.aiccCss(ss, spec.p + spec.q + fit.nBeta + 1);
      }
      this.scores.set(key, score);
    }
    return score;
  }

  /** AICc of the regression with AR(3) errors fitted by OLS: a cheap yardstick for the number of harmonics. */
  proxyScore(seasons: FourierSeason[], drift: boolean): number {
    const fit = this.regression(seasons, drift);
    if (!fit) return Infinity;
    const lags = [1, 2, 3].map((l) => lagged(fit.w, l));
    const coef = leastSquares(lags, fit.w, CSS_FROM);
    if (!coef) return Infinity;
    const e = residuals(fit.w, lags, coef);
    let ss = 0;
    for (let t = CSS_FROM; t < e.length; t++) ss += e[t]! * e[t]!;
    return this.aiccCss(ss, 3 + fit.nBeta + 1);
  }

  private aiccCss(ss: number, k: number): number {
    const nEff = this.wy.length - CSS_FROM;
    const sigma2 = Math.max(ss / nEff, this.floor);
    return aicc((-nEff / 2) * (Math.log(2 * Math.PI * sigma2) + 1), k, nEff);
  }

  /** OLS of the working series on the regressors, from inner products cached per regressor pair (the grid reuses them). */
  private regression(seasons: FourierSeason[], drift: boolean): { w: Float64Array; nBeta: number } | undefined {
    const key = JSON.stringify([seasons, drift]);
    if (!this.fits.has(key)) {
      const terms = regressorTerms({ p: 0, d: this.d, q: 0, drift, seasons });
      const columns = terms.map((term) => this.column(term));
      const k = terms.length;
      const g = new Float64Array(k * k);
      const b = new Float64Array(k);
      terms.forEach((ti, i) => {
        terms.forEach((tj, j) => (g[i * k + j] = this.inner(ti, tj)));
        b[i] = this.inner(ti);
      });
      const beta = k > 0 ? solveSpd(g, b, k) : new Float64Array(0);
      this.fits.set(key, beta && { w: residuals(this.wy, columns, beta), nBeta: k });
    }
    return this.fits.get(key);
  }

  private column(term: Term): Float64Array {
    let col = this.columns.get(term.name);
    if (!col) {
      col = workingColumns([term], this.ys.length, this.d)[0]!;
      this.columns.set(term.name, col);
    }
    return col;
  }

  /** Σ a_t b_t over the working series, with the series itself when b is absent. */
  private inner(a: Term, b?: Term): number {
    const key = b === undefined ? a.name : [a.name, b.name].sort().join('|');
    let v = this.inners.get(key);
    if (v === undefined) {
      const x = this.column(a);
      const y = b === undefined ? this.wy : this.column(b);
      v = 0;
      for (let t = 0; t < x.length; t++) v += x[t]! * y[t]!;
      this.inners.set(key, v);
    }
    return v;
  }
}

interface HarmonicRange {
  period: number;
  min: number;
  max: number;
}

/** Numbers of harmonics by AICc over the whole grid, with AR(3) errors. */
function chooseHarmonics(search: CssSearch, ranges: HarmonicRange[], drift: boolean): FourierSeason[] {
  let grid: FourierSeason[][] = [[]];
  for (const { period, min, max } of ranges) {
    grid = grid.flatMap((seasons) => Array.from({ length: max - min + 1 }, (_, i) => [...seasons, { period, harmonics: min + i }]));
  }
  let best = grid[0]!;
  let bestScore = Infinity;
  for (const seasons of grid) {
    if (search.overBudget() && bestScore < Infinity) break;
    const score = search.proxyScore(seasons, drift);
    if (score < bestScore) [best, bestScore] = [seasons, score];
  }
  return best;
}

/** Moves to the first neighbour that lowers the AICc, until none does (Hyndman–Khandakar). */
function descend(search: CssSearch, start: ArimaSpec, neighbours: (s: ArimaSpec) => ArimaSpec[]): ArimaSpec {
  let best = start;
  let bestScore = search.score(start);
  for (let moved = true; moved && search.models < MAX_MODELS; ) {
    moved = false;
    for (const candidate of neighbours(best)) {
      if (search.overBudget()) return best;
      const score = search.score(candidate);
      if (score < bestScore) {
        [best, bestScore, moved] = [candidate, score, true];
        break;
      }
    }
  }
  return best;
}

function orderNeighbours(s: ArimaSpec): ArimaSpec[] {
  const steps = [
    [-1, 0],
    [1, 0],
    [0, -1],
    [0, 1],
    [-1, -1],
    [1, 1],
    [-1, 1],
    [1, -1],
  ] as const;
  const moved = steps
    .map(([dp, dq]) => ({ ...s, p: s.p + dp, q: s.q + dq }))
    .filter((c) => c.p >= 0 && c.p <= MAX_P && c.q >= 0 && c.q <= MAX_Q);
  return [...moved, { ...s, drift: !s.drift }];
}

function harmonicNeighbours(ranges: HarmonicRange[]): (s: ArimaSpec) => ArimaSpec[] {
  return (s) =>
    s.seasons.flatMap((season, i) =>
      [-1, 1]
        .map((step) => season.harmonics + step)
        .filter((h) => h >= ranges[i]!.min && h <= ranges[i]!.max)
        .map((harmonics) => ({ ...s, seasons: s.seasons.map((x, j) => (j === i ? { ...x, harmonics } : x)) })),
    );
}

/** Picks d, the harmonics and (p, q, drift) within the budget, then fits the winner by exact likelihood. */
function autoFit(ys: Float64Array, ctx: FitContext): ArimaModel {
  const start = performance.now();
  const budget = ctx.budgetMs ?? DEFAULT_BUDGET_MS;
  const n = ys.length;
  if (n < MIN_POINTS) return meanModel(ys);
  const ranges: HarmonicRange[] = [];
  const addSeason = (period: number | undefined, limits: { min: number; max: number }) => {
    if (period === undefined || period <= 1 || n < 2 * period) return;
    const max = Math.min(limits.max, Math.floor(period / 2));
    if (max >= limits.min) ranges.push({ period, min: limits.min, max });
  };
  addSeason(ctx.dailyPeriod > 1 ? Math.round(ctx.dailyPeriod) : undefined, DAILY_HARMONICS);
  addSeason(ctx.weeklyPeriod !== undefined ? Math.round(ctx.weeklyPeriod) : undefined, WEEKLY_HARMONICS);

  const d = chooseD(ys, ranges.map((r) => ({ period: r.period, harmonics: r.max })));
  const search = new CssSearch(ys, d, start + SEARCH_SHARE * budget);
  const drift = d === 1;
  const seasons = chooseHarmonics(search, ranges, drift);
  const spec = (p: number, q: number, withDrift: boolean): ArimaSpec => ({ p, d, q, drift: withDrift, seasons });
  const starts = [spec(2, 2, drift), spec(0, 0, drift), spec(1, 0, drift), spec(0, 1, drift), spec(0, 0, !drift)];
  let best = starts[0]!;
  for (const s of starts) {
    if (search.overBudget()) break;
    if (search.score(s) < search.score(best)) best = s;
  }
  best = descend(search, best, orderNeighbours);
  best = descend(search, best, harmonicNeighbours(ranges));
  return tryFit(ys, best, start + budget) ?? fallback(ys, best.seasons);
}

/** ARIMA with Fourier seasonality, order and harmonics chosen by AICc. */
export const arimaFactory = {
  model: 'arima',
  fit: (y: readonly number[], ctx: FitContext): ArimaModel => autoFit(clean(y), ctx),
} satisfies ModelFactory;

// ---------------------------------------------------------------------------------------------
// Restore

/** The model `toJSON` described, ready to forecast or update. */
export function restoreArima(json: Record<string, unknown>): ArimaModel {
  const fail = (what: string): never => {
    throw new InvalidInputError(`restoreArima: ${what}`);
  };
  const numbers = (v: unknown, name: string): number[] =>
    Array.isArray(v) && v.every((x) => typeof x === 'number' && Number.isFinite(x))
      ? (v as number[])
      : fail(`${name} must be an array of finite numbers`);
  const integer = (v: unknown, name: string, min = 0): number =>
    Number.isInteger(v) && (v as number) >= min ? (v as number) : fail(`${name} must be an integer of at least ${min}`);
  if (json.model !== 'arima' || json.version !== 1) fail('not an arima model of version 1');
  const s = (json.spec ?? {}) as Record<string, unknown>;
  const seasons = Array.isArray(s.seasons) ? (s.seasons as Record<string, unknown>[]) : fail('spec.seasons must be an array');
  const spec: ArimaSpec = {
    p: integer(s.p, 'spec.p'),
    d: s.d === 0 || s.d === 1 ? s.d : fail('spec.d must be 0 or 1'),
    q: integer(s.q, 'spec.q'),
    drift: typeof s.drift === 'boolean' ? s.drift : fail('spec.drift must be a boolean'),
    seasons: seasons.map((x, i) => ({
      period: integer(x.period, `spec.seasons[${i}].period`, 2),
      harmonics: integer(x.harmonics, `spec.seasons[${i}].harmonics`),
    })),
  };
  const params: ArimaParams = {
    spec,
    beta: numbers(json.beta, 'beta'),
    ar: numbers(json.ar, 'ar'),
    ma: numbers(json.ma, 'ma'),
    sigma2: numbers([json.sigma2], 'sigma2')[0]!,
  };
  if (params.beta.length !== regressorTerms(spec).length) fail('beta does not match the regressors of spec');
  if (params.ar.length !== spec.p || params.ma.length !== spec.q) fail('ar/ma do not match the order of spec');
  const state = numbers(json.state, 'state');
  if (state.length !== Math.max(spec.p, spec.q + 1)) fail('state does not match the order of spec');
  const end: FilterEnd = { n: integer(json.n, 'n'), last: numbers([json.last], 'last')[0]!, state };
  // logLik/aicc are informational; a degenerate fit may have none (JSON null).
  const info = (v: unknown, none: number) => (typeof v === 'number' ? v : none);
  return new ArimaModel(params, end, info(json.logLik, -Infinity), info(json.aicc, Infinity));
}
