/**
 * Exponential smoothing (Holt–Winters) as innovations state-space models with additive errors,
 * ETS(A,T,S) with trend T ∈ {N, A, Ad} and season S ∈ {N, A, M}, in error-correction form
 * (Hyndman, Koehler, Ord and Snyder 2008):
 *
 *   L = l + φb,  ŷ = L + s  (or L·s),  e = y − ŷ,
 *   l' = L + αe,  b' = φb + βe,  s' = s + γe      (multiplicative: αe/s, βe/s, γe/L),
 *
 * with α, β/α and γ/(1 − α) in [1e-4, 1 − 1e-4] (so β ≤ α and γ ≤ 1 − α) and φ ∈ [0.8, 0.98]; φ is 1
 * without damping. These are the parameters and bounds of statsmodels' ETSModel; statsmodels'
 * holtwinters.ExponentialSmoothing runs the same recursion with smoothing_trend = β/α.
 *
 * With additive errors the Gaussian likelihood is maximal where the sum of squared one-step errors
 * (SSE) is minimal, so estimation minimises the SSE: Nelder–Mead over the smoothing parameters
 * (mapped onto their bounds) and the initial level and trend, alternating with least squares for all
 * the initial states. The seasonal states start from a classical decomposition of the first two
 * seasons. Additive ones are then estimated exactly up to MAX_ADDITIVE_ESTIMATED_PERIOD (300, so 288
 * at 5 minutes included; the cost grows as m³); multiplicative ones by Gauss–Newton up to
 * MAX_MULTIPLICATIVE_ESTIMATED_PERIOD (200), its Jacobian costing a pass over the series per seasonal
 * state. Longer seasons (1440 at 1 minute; 288 when multiplicative) keep the decomposition's states
 * fixed during optimisation.
 *
 * The variant is chosen by AICc. Multiplicative seasons are tried only on strictly positive series,
 * seasons only when the series holds two of them.
 */
import { z } from 'zod';
import { InvalidInputError } from '../errors.js';
import { solveSpd } from './linalg.js';
import { fromInterval, nelderMead, toInterval } from './optimize.js';
import type { FitContext, FittedModel, ModelFactory } from './types.js';

export type EtsTrend = 'none' | 'additive' | 'damped';
export type EtsSeason = 'none' | 'additive' | 'multiplicative';

export interface EtsVariant {
  trend: EtsTrend;
  season: EtsSeason;
}

/** Smoothing parameters, error-correction form; β and γ are 0 where the variant has no trend or season, φ is 1 unless damped. */
export interface EtsParams {
  alpha: number;
  beta: number;
  gamma: number;
  phi: number;
}

/** The states before some step t: `season[k]` goes with step t + k (empty without a season; trend 0 without a trend). */
export interface EtsStates {
  level: number;
  trend: number;
  season: number[];
}

/** Everything that determines the filter: with the series, the fitted values and forecasts follow. */
export interface EtsSpec {
  variant: EtsVariant;
  /** Season length in steps; 1 without a season. */
  period: number;
  params: EtsParams;
  /** States before the first observation. */
  initial: EtsStates;
}

/** Longest additive season whose initial states are estimated (exact least squares, O(n·m + m³)). */
export const MAX_ADDITIVE_ESTIMATED_PERIOD = 300;
/** Longest multiplicative season whose initial states are estimated (Gauss–Newton, O(n·m²) a step). */
export const MAX_MULTIPLICATIVE_ESTIMATED_PERIOD = 200;
const SMOOTHING_MIN = 1e-4;
const SMOOTHING_MAX = 1 - 1e-4;
const PHI_MIN = 0.8;
const PHI_MAX = 0.98;
const DEFAULT_BUDGET_MS = 5000;
const SIMPLE: EtsVariant = { trend: 'none', season: 'none' };

// ---------------------------------------------------------------------------------------------
// The filter

/** Initial states with the seasonal ones in a typed array, as the filter takes them. */
interface StartStates {
  level: number;
  trend: number;
  season: Float64Array;
}

/** Runs the filter over one series as often as estimation needs, without allocating. */
class Filter {
  readonly n: number;
  readonly seasonal: boolean;
  readonly hasTrend: boolean;
  /** Seasonal states during a run, indexed by step modulo the period. */
  private readonly ring: Float64Array;
  /** Level and trend after the last complete run. */
  level = 0;
  trend = 0;

  constructor(
    readonly y: Float64Array,
    readonly variant: EtsVariant,
    readonly period: number,
  ) {
    this.n = y.length;
    this.seasonal = variant.season !== 'none';
    this.hasTrend = variant.trend !== 'none';
    this.ring = new Float64Array(this.seasonal ? period : 1);
  }

  /**
   * SSE of the one-step errors, which go to `errors` (and the predictions to `fitted`) when given.
   * Infinity when a multiplicative model leaves positive levels and seasons, or the sum overflows.
   */
  run(p: EtsParams, start: StartStates, errors?: Float64Array, fitted?: Float64Array): number {
    const { y, n, ring } = this;
    const multiplicative = this.variant.season === 'multiplicative';
    const m = ring.length;
    if (this.seasonal) ring.set(start.season);
    const alpha = p.alpha;
    const beta = this.hasTrend ? p.beta : 0;
    const gamma = this.seasonal ? p.gamma : 0;
    const phi = this.variant.trend === 'damped' ? p.phi : 1;
    let level = start.level;
    let trend = this.hasTrend ? start.trend : 0;
    let sse = 0;
    let j = 0;
    for (let t = 0; t < n; t++) {
      const damped = level + phi * trend;
      const s = ring[j]!;
      let e: number;
      if (multiplicative) {
        if (!(damped > 0 && s > 0)) return Infinity;
        const yhat = damped * s;
        e = y[t]! - yhat;
        if (fitted) fitted[t] = yhat;
        level = damped + (alpha * e) / s;
        trend = phi * trend + (beta * e) / s;
        ring[j] = s + (gamma * e) / damped;
      } else {
        const yhat = damped + s;
        e = y[t]! - yhat;
        if (fitted) fitted[t] = yhat;
        level = damped + alpha * e;
        trend = phi * trend + beta * e;
        ring[j] = s + gamma * e;
      }
      if (errors) errors[t] = e;
      sse += e * e;
      if (++j === m) j = 0;
    }
    this.level = level;
    this.trend = trend;
    return Number.isFinite(sse) ? sse : Infinity;
  }

  /** Seasonal states after the last complete run, the one for the next step first. */
  finalSeason(): number[] {
    if (!this.seasonal) return [];
    const m = this.ring.length;
    return Array.from({ length: m }, (_, k) => this.ring[(this.n + k) % m]!);
  }
}

// ---------------------------------------------------------------------------------------------
// Starting states

/**
 * Classical decomposition of the first two seasons of y: a centred moving average over one season
 * (2×m for even m) as the trend, each step's deviation from it (difference or ratio) as its seasonal
 * effect, averaged by position in the season and normalised to sum 0 (mean 1 when multiplicative).
 * `season[j]` goes with y[j]; `trend` holds the moving average at steps `from`, `from + 1`, …
 */
export function decomposeFirstSeasons(
  y: ArrayLike<number>,
  period: number,
  multiplicative: boolean,
): { season: Float64Array; trend: Float64Array; from: number } {
  const m = period;
  const half = Math.floor(m / 2);
  const prefix = new Float64Array(2 * m + 1);
  for (let t = 0; t < 2 * m; t++) prefix[t + 1] = prefix[t]! + y[t]!;
  const sums = new Float64Array(m);
  const counts = new Float64Array(m);
  const trend = new Float64Array(2 * m - 2 * half);
  for (let t = half; t < 2 * m - half; t++) {
    const ma =
      m % 2 === 0
        ? (0.5 * y[t - half]! + (prefix[t + half]! - prefix[t - half + 1]!) + 0.5 * y[t + half]!) / m
        : (prefix[t + half + 1]! - prefix[t - half]!) / m;
    trend[t - half] = ma;
    sums[t % m] = sums[t % m]! + (multiplicative ? y[t]! / ma : y[t]! - ma);
    counts[t % m] = counts[t % m]! + 1;
  }
  const season = sums.map((s, j) => s / counts[j]!);
  const mean = season.reduce((a, b) => a + b, 0) / m;
  return { season: season.map((s) => (multiplicative ? s / mean : s - mean)), trend, from: half };
}

/** Least-squares line through values at steps from, from + 1, …: intercept at step 0 and slope. */
function line(values: ArrayLike<number>, from: number): { intercept: number; slope: number } {
  const k = values.length;
  const tMean = from + (k - 1) / 2;
  let vMean = 0;
  for (let i = 0; i < k; i++) vMean += values[i]! / k;
  let num = 0;
  let den = 0;
  for (let i = 0; i < k; i++) {
    num += (from + i - tMean) * (values[i]! - vMean);
    den += (from + i - tMean) ** 2;
  }
  const slope = den > 0 ? num / den : 0;
  return { intercept: vMean - slope * tMean, slope };
}

/** How many first observations the starting level and trend come from, without a season. */
const START_WINDOW = 10;

/**
 * Starting states: seasons from the decomposition of the first two seasons, level and trend from a
 * line through its moving average (through the first observations without a season).
 */
function startingStates(y: Float64Array, variant: EtsVariant, period: number): StartStates & { window: number } {
  const window = Math.min(y.length, START_WINDOW);
  const d = variant.season === 'none' ? undefined : decomposeFirstSeasons(y, period, variant.season === 'multiplicative');
  const fit = d ? line(d.trend, d.from) : line(y.subarray(0, window), 0);
  const states = { season: d?.season ?? new Float64Array(0), window: d?.trend.length ?? window };
  // The level state precedes step 0: with a trend it is the line one step before.
  return variant.trend === 'none'
    ? { level: fit.intercept, trend: 0, ...states }
    : { level: fit.intercept - fit.slope, trend: fit.slope, ...states };
}

// ---------------------------------------------------------------------------------------------
// Estimation

/**
 * Unconstrained coordinates for Nelder–Mead: α, β/α, γ/(1 − α) and φ mapped onto their bounds, then
 * the initial level and trend as offsets from a base, in units that make steps of about 0.1 sensible.
 */
class Coordinates {
  readonly size: number;

  constructor(
    private readonly variant: EtsVariant,
    private readonly base: { level: number; trend: number },
    private readonly levelUnit: number,
    private readonly trendUnit: number,
  ) {
    const hasTrend = variant.trend !== 'none';
    this.size = 2 + (hasTrend ? 2 : 0) + (variant.season !== 'none' ? 1 : 0) + (variant.trend === 'damped' ? 1 : 0);
  }

  decode(u: Float64Array): { params: EtsParams; level: number; trend: number } {
    const hasTrend = this.variant.trend !== 'none';
    let i = 0;
    const alpha = toInterval(u[i++]!, SMOOTHING_MIN, SMOOTHING_MAX);
    const beta = hasTrend ? alpha * toInterval(u[i++]!, SMOOTHING_MIN, SMOOTHING_MAX) : 0;
    const gamma = this.variant.season !== 'none' ? (1 - alpha) * toInterval(u[i++]!, SMOOTHING_MIN, SMOOTHING_MAX) : 0;
    const phi = this.variant.trend === 'damped' ? toInterval(u[i++]!, PHI_MIN, PHI_MAX) : 1;
    const level = this.base.level + this.levelUnit * u[i++]!;
    const trend = hasTrend ? this.base.trend + this.trendUnit * u[i++]! : 0;
    return { params: { alpha, beta, gamma, phi }, level, trend };
  }

  /** Coordinates of these parameters, at the base level and trend. */
  encode(p: EtsParams): Float64Array {
    const u: number[] = [fromInterval(p.alpha, SMOOTHING_MIN, SMOOTHING_MAX)];
    if (this.variant.trend !== 'none') u.push(fromInterval(p.beta / p.alpha, SMOOTHING_MIN, SMOOTHING_MAX));
    if (this.variant.season !== 'none') u.push(fromInterval(p.gamma / (1 - p.alpha), SMOOTHING_MIN, SMOOTHING_MAX));
    if (this.variant.trend === 'damped') u.push(fromInterval(p.phi, PHI_MIN, PHI_MAX));
    u.push(0);
    if (this.variant.trend !== 'none') u.push(0);
    return Float64Array.from(u);
  }

  /** Starting simplex: a unit on the logistic scale for the parameters, 0.2 units for the states. */
  steps(): number[] {
    const states = this.variant.trend === 'none' ? 1 : 2;
    return [...new Array<number>(this.size - states).fill(1), ...new Array<number>(states).fill(0.2)];
  }
}

/** Smoothing parameters to start from: the best α of a small grid, with β, γ and φ at typical values. */
function startingParams(filter: Filter, start: StartStates): EtsParams {
  let best = { sse: Infinity, params: { alpha: 0.5, beta: 0.05, gamma: 0.05, phi: 0.95 } };
  for (const alpha of [0.05, 0.2, 0.5, 0.8]) {
    const params = { alpha, beta: 0.1 * alpha, gamma: 0.1 * (1 - alpha), phi: 0.95 };
    const sse = filter.run(params, start);
    if (sse < best.sse) best = { sse, params };
  }
  return best.params;
}

/**
 * Nelder–Mead over the smoothing parameters and the initial level and trend; the seasonal states
 * stay. `near` starts from a smaller simplex and does not restart, for a start close to the optimum.
 */
function optimiseSmoothing(
  filter: Filter,
  params: EtsParams,
  start: StartStates,
  units: { level: number; trend: number },
  deadline: number,
  near = false,
): { params: EtsParams; start: StartStates; sse: number } {
  const coords = new Coordinates(filter.variant, start, units.level, units.trend);
  const states = { ...start };
  const objective = (u: Float64Array) => {
    const d = coords.decode(u);
    states.level = d.level;
    states.trend = d.trend;
    return filter.run(d.params, states);
  };
  const result = nelderMead(objective, coords.encode(params), {
    step: coords.steps().map((step) => (near ? step / 4 : step)),
    maxEvaluations: 250 * coords.size,
    fTolerance: 1e-8,
    restarts: near ? 0 : 1,
    deadline,
  });
  const d = coords.decode(result.x);
  return { params: d.params, start: { level: d.level, trend: d.trend, season: start.season }, sse: result.value };
}

/**
 * Least-squares initial states (level, trend, seasons) of a multiplicative season for fixed
 * smoothing parameters, by Gauss–Newton with a forward-difference Jacobian. A seasonal state moves
 * against the last one, keeping their sum: scaling the level and trend up and every seasonal state
 * down alike changes nothing, so the sum is left fixed.
 */
function multiplicativeInitialStates(
  filter: Filter,
  params: EtsParams,
  current: { start: StartStates; sse: number },
  units: { level: number; trend: number },
  deadline: number,
): { start: StartStates; sse: number } {
  const { n, period: m } = filter;
  const k = (filter.hasTrend ? 2 : 1) + m - 1;
  const steps = [units.level, ...(filter.hasTrend ? [units.trend] : []), ...new Array<number>(m - 1).fill(1)].map((u) => 1e-5 * u);
  /** The states moved by `delta` along the coordinates. */
  const moved = (from: StartStates, delta: ArrayLike<number>, scale: number): StartStates => {
    const season = Float64Array.from(from.season);
    for (let j = 0; j < m - 1; j++) {
      const d = scale * delta[k - m + 1 + j]!;
      season[j] = season[j]! + d;
      season[m - 1] = season[m - 1]! - d;
    }
    return { level: from.level + scale * delta[0]!, trend: from.trend + (filter.hasTrend ? scale * delta[1]! : 0), season };
  };
  const errors = new Float64Array(n);
  if (!Number.isFinite(filter.run(params, current.start, errors))) return current;
  const jacobian = new Float64Array(n * k);
  const unit = new Float64Array(k);
  for (let c = 0; c < k; c++) {
    if (performance.now() >= deadline) return current;
    unit.fill(0);
    unit[c] = steps[c]!;
    const column = jacobian.subarray(c * n, (c + 1) * n);
    if (!Number.isFinite(filter.run(params, moved(current.start, unit, 1), column))) return current;
    for (let t = 0; t < n; t++) column[t] = (column[t]! - errors[t]!) / steps[c]!;
  }
  const gram = new Float64Array(k * k);
  const rhs = new Float64Array(k);
  for (let a = 0; a < k; a++) {
    const ja = jacobian.subarray(a * n, (a + 1) * n);
    for (let b = 0; b <= a; b++) {
      const jb = jacobian.subarray(b * n, (b + 1) * n);
      let dot = 0;
      for (let t = 0; t < n; t++) dot += ja[t]! * jb[t]!;
      gram[a * k + b] = gram[b * k + a] = dot;
    }
    let g = 0;
    for (let t = 0; t < n; t++) g -= ja[t]! * errors[t]!;
    rhs[a] = g;
  }
  const delta = solveSpd(gram, rhs, k);
  // One step, halved until the SSE falls: the alternation with the smoothing parameters does the rest.
  for (let scale = 1; delta && scale >= 1 / 8; scale /= 2) {
    const start = moved(current.start, delta, scale);
    const sse = filter.run(params, start);
    if (sse < current.sse) return { start, sse };
  }
  return current;
}

/** c[j] = Σ_u a[u] · b[u + j], for lags j < lags. */
function crossCorrelation(a: Float64Array, b: Float64Array, lags: number): Float64Array {
  const n = a.length;
  const out = new Float64Array(lags);
  for (let j = 0; j < lags; j++) {
    let acc = 0;
    for (let u = 0; u + j < n; u++) acc += a[u]! * b[u + j]!;
    out[j] = acc;
  }
  return out;
}

/**
 * Least-squares initial states (level, trend, seasons) of an additive season for fixed smoothing
 * parameters, exactly. The one-step errors are affine in the initial states, e = e₀ + Σ xᵢ rᵢ, where
 * rᵢ is the filter's response to a unit initial state on a zero series; and since the filter does not
 * change with time, the response to the seasonal state of step j is that of step 0 delayed by j
 * steps. So the normal equations come from three responses and their correlations, O(n·m), and a
 * Cholesky solve, O(m³), instead of m + 2 passes and an O(n·m²) product. The seasonal states keep
 * sum 0 (the last is minus the others' sum): raising them all and lowering the level alike changes
 * nothing.
 */
function additiveInitialStates(filter: Filter, zero: Filter, params: EtsParams, current: { start: StartStates; sse: number }): { start: StartStates; sse: number } {
  const { n, period: m, hasTrend } = filter;
  const errorsOf = (over: Filter, level: number, trend: number, season0: number) => {
    const errors = new Float64Array(n);
    const season = new Float64Array(m);
    season[0] = season0;
    over.run(params, { level, trend, season }, errors);
    return errors;
  };
  const e0 = errorsOf(filter, 0, 0, 0);
  const rs = errorsOf(zero, 0, 0, 1);
  const whole = [errorsOf(zero, 1, 0, 0), ...(hasTrend ? [errorsOf(zero, 0, 1, 0)] : [])];
  const dot = (a: Float64Array, b: Float64Array) => crossCorrelation(a, b, 1)[0]!;
  // S(i, j) = Σ_u rs[u] rs[u + |i − j|] for u < n − max(i, j): the full lag sum less its tail.
  const lagSum = crossCorrelation(rs, rs, m);
  const seasonal = new Float64Array(m * m);
  for (let d = 0; d < m; d++) {
    let tail = 0;
    for (let hi = d; hi < m; hi++) {
      seasonal[(hi - d) * m + hi] = seasonal[hi * m + hi - d] = lagSum[d]! - tail;
      tail += rs[n - hi - 1]! * rs[n - hi - 1 + d]!;
    }
  }
  // Each response against the seasonal response delayed by j, for every j.
  const wholeBySeason = whole.map((r) => crossCorrelation(rs, r, m));
  const errorBySeason = crossCorrelation(rs, e0, m);
  // Unknowns: the level, the trend, then seasonal states 0 … m − 2 (each paired with −1 on state m − 1).
  const w = whole.length;
  const k = w + m - 1;
  const gram = new Float64Array(k * k);
  const rhs = new Float64Array(k);
  const last = m - 1;
  for (let a = 0; a < w; a++) {
    rhs[a] = -dot(whole[a]!, e0);
    for (let b = 0; b < w; b++) gram[a * k + b] = dot(whole[a]!, whole[b]!);
    for (let j = 0; j < last; j++) gram[a * k + w + j] = gram[(w + j) * k + a] = wholeBySeason[a]![j]! - wholeBySeason[a]![last]!;
  }
  for (let i = 0; i < last; i++) {
    rhs[w + i] = -(errorBySeason[i]! - errorBySeason[last]!);
    for (let j = 0; j < last; j++) {
      gram[(w + i) * k + w + j] = seasonal[i * m + j]! - seasonal[i * m + last]! - seasonal[last * m + j]! + seasonal[last * m + last]!;
    }
  }
  const x = solveSpd(gram, rhs, k);
  if (!x) return current;
  const season = new Float64Array(m);
  for (let j = 0; j < last; j++) {
    season[j] = x[w + j]!;
    season[last] = season[last]! - x[w + j]!;
  }
  const start = { level: x[0]!, trend: hasTrend ? x[1]! : 0, season };
  const sse = filter.run(params, start);
  return sse < current.sse ? { start, sse } : current;
}

/** How the variant's initial seasonal states are estimated, or undefined where they stay at the decomposition's. */
function seasonRefinement(
  filter: Filter,
  units: { level: number; trend: number },
  deadline: number,
): ((params: EtsParams, current: { start: StartStates; sse: number }) => { start: StartStates; sse: number }) | undefined {
  const { variant, period, y } = filter;
  if (variant.season === 'additive' && period <= MAX_ADDITIVE_ESTIMATED_PERIOD) {
    const zero = new Filter(new Float64Array(y.length), variant, period);
    return (params, current) => additiveInitialStates(filter, zero, params, current);
  }
  if (variant.season === 'multiplicative' && period <= MAX_MULTIPLICATIVE_ESTIMATED_PERIOD) {
    return (params, current) => multiplicativeInitialStates(filter, params, current, units, deadline);
  }
  return undefined;
}

/** The variant's least-SSE spec, or undefined when the optimisation found nothing finite. */
function estimate(y: Float64Array, variant: EtsVariant, period: number, deadline: number): EtsSpec | undefined {
  const filter = new Filter(y, variant, period);
  const { window, ...first } = startingStates(y, variant, period);
  const scale = spread(y);
  const units = { level: scale, trend: scale / Math.max(window, 1) };
  const initialParams = startingParams(filter, first);
  // The seasonal states and the smoothing parameters are estimated in turn, while that pays; the
  // states first, so that the smoothing parameters do not start by making up for the decomposition's.
  const refine = seasonRefinement(filter, units, deadline);
  const firstStates = refine ? refine(initialParams, { start: first, sse: filter.run(initialParams, first) }).start : first;
  let { params, start, sse } = optimiseSmoothing(filter, initialParams, firstStates, units, deadline);
  for (let round = 0; refine && round < 3 && Number.isFinite(sse) && performance.now() < deadline; round++) {
    const before = sse;
    const refined = refine(params, { start, sse });
    if (!(refined.sse < sse)) break;
    ({ start, sse } = refined);
    // States that hardly moved would not move the smoothing parameters either.
    if (before - sse < 1e-6 * before) break;
    ({ params, start, sse } = optimiseSmoothing(filter, params, start, units, deadline, true));
    if (before - sse < 1e-3 * before) break;
  }
  if (!Number.isFinite(sse)) return undefined;
  return { variant, period: filter.seasonal ? period : 1, params, initial: { level: start.level, trend: start.trend, season: Array.from(start.season) } };
}

/** Standard deviation of y, or a positive stand-in for a constant series. */
function spread(y: Float64Array): number {
  const n = y.length;
  const mean = y.reduce((a, b) => a + b, 0) / n;
  const sd = Math.sqrt(y.reduce((a, b) => a + (b - mean) ** 2, 0) / n);
  return sd > 0 ? sd : Math.max(Math.abs(mean), 1);
}

// ---------------------------------------------------------------------------------------------
// The fitted model

/** Number of estimated parameters, the variance included; the initial seasonal states count (less one for their fixed sum) even when fixed. */
function parameterCount(spec: EtsSpec): number {
  const { trend, season } = spec.variant;
  const smoothing = 1 + (trend === 'none' ? 0 : 1) + (trend === 'damped' ? 1 : 0) + (season === 'none' ? 0 : 1);
  const states = 1 + (trend === 'none' ? 0 : 1) + (season === 'none' ? 0 : spec.period - 1);
  return smoothing + states + 1;
}

/** AICc of the Gaussian likelihood; the variance has a floor so that exact fits tie (and the simplest wins). */
function aicc(sse: number, y: Float64Array, k: number): number {
  const n = y.length;
  if (!Number.isFinite(sse) || n - k - 1 <= 0) return Infinity;
  const mean = y.reduce((a, b) => a + b, 0) / n;
  const floor = Math.max((1e-10 * Math.max(spread(y), Math.abs(mean))) ** 2, Number.MIN_VALUE);
  const variance = Math.max(sse / n, floor);
  const logLik = (-n / 2) * (Math.log(2 * Math.PI * variance) + 1);
  return -2 * logLik + 2 * k + (2 * k * (k + 1)) / (n - k - 1);
}

/** Hyndman's code for the variant, e.g. "A,Ad,M" (the first letter is the error: always additive here). */
function code(variant: EtsVariant): string {
  const trend = { none: 'N', additive: 'A', damped: 'Ad' }[variant.trend];
  const season = { none: 'N', additive: 'A', multiplicative: 'M' }[variant.season];
  return `A,${trend},${season}`;
}

function describe(spec: EtsSpec): string {
  return `ETS(${code(spec.variant)})${spec.variant.season === 'none' ? '' : ` period ${spec.period}`}`;
}

/** An ETS model filtered over a series: forecasts come from its final states. */
export class EtsModel implements FittedModel {
  readonly model = 'ets';
  readonly description: string;

  constructor(
    readonly spec: EtsSpec,
    /** States after the series; undefined when the filter broke down (a multiplicative level reached 0), and forecasts are then naive. */
    readonly final: EtsStates | undefined,
    /** Length of the series and its last value. */
    readonly n: number,
    readonly last: number,
    readonly sse: number,
    readonly aicc: number,
  ) {
    this.description = describe(spec);
  }

  forecast(horizon: number): number[] {
    const out: number[] = [];
    const final = this.final;
    const { variant, params, period } = this.spec;
    const phi = variant.trend === 'damped' ? params.phi : 1;
    let damping = 0;
    let phiPower = 1;
    for (let h = 1; h <= horizon; h++) {
      phiPower *= phi;
      damping += phiPower;
      let value = this.last;
      if (final) {
        const base = final.level + damping * final.trend;
        const s = variant.season === 'none' ? undefined : final.season[(h - 1) % period]!;
        value = s === undefined ? base : variant.season === 'multiplicative' ? base * s : base + s;
      }
      // Guards the promise of finite forecasts against overflow on absurd inputs.
      out.push(Number.isFinite(value) ? value : this.last);
    }
    return out;
  }

  update(y: readonly number[]): EtsModel {
    return etsFromSpec(y, this.spec);
  }

  toJSON(): Record<string, unknown> {
    const { variant, period, params, initial } = this.spec;
    return {
      model: this.model,
      version: 1,
      variant: { ...variant },
      period,
      params: { ...params },
      initial: { ...initial, season: [...initial.season] },
      final: this.final ? { ...this.final, season: [...this.final.season] } : null,
      n: this.n,
      last: this.last,
      sse: Number.isFinite(this.sse) ? this.sse : null,
      aicc: Number.isFinite(this.aicc) ? this.aicc : null,
    };
  }
}

function checkSpec(spec: EtsSpec): void {
  const seasons = spec.variant.season === 'none' ? 0 : spec.period;
  if (spec.initial.season.length !== seasons || (seasons > 0 && !Number.isInteger(spec.period))) {
    throw new InvalidInputError(`ets: ${describe(spec)} needs ${seasons} initial seasonal states, got ${spec.initial.season.length}`);
  }
}

function startOf(spec: EtsSpec): StartStates {
  return { level: spec.initial.level, trend: spec.initial.trend, season: Float64Array.from(spec.initial.season) };
}

/** The model with these parameters and initial states filtered over y, estimating nothing. */
export function etsFromSpec(y: readonly number[], spec: EtsSpec): EtsModel {
  checkSpec(spec);
  const ys = Float64Array.from(y);
  const filter = new Filter(ys, spec.variant, spec.period);
  const sse = filter.run(spec.params, startOf(spec));
  const final = Number.isFinite(sse) ? { level: filter.level, trend: filter.trend, season: filter.finalSeason() } : undefined;
  const last = ys.length > 0 ? ys[ys.length - 1]! : spec.initial.level;
  return new EtsModel(spec, final, ys.length, last, sse, aicc(sse, ys, parameterCount(spec)));
}

/** One-step-ahead predictions of spec over y; undefined when the filter breaks down (multiplicative level reaching 0). */
export function etsFittedValues(y: readonly number[], spec: EtsSpec): number[] | undefined {
  checkSpec(spec);
  const ys = Float64Array.from(y);
  const fitted = new Float64Array(ys.length);
  const sse = new Filter(ys, spec.variant, spec.period).run(spec.params, startOf(spec), undefined, fitted);
  return Number.isFinite(sse) ? Array.from(fitted) : undefined;
}

// ---------------------------------------------------------------------------------------------
// Fitting and selection

/** The variant as the series allows: no season without two of them, an additive one unless the series is strictly positive. */
function applicable(variant: EtsVariant, y: Float64Array, period: number): EtsVariant {
  if (variant.season === 'none') return variant;
  if (!(Number.isInteger(period) && period >= 2 && y.length >= 2 * period)) return { ...variant, season: 'none' };
  if (variant.season === 'multiplicative' && !y.every((v) => v > 0)) return { ...variant, season: 'additive' };
  return variant;
}

function seriesOf(y: readonly number[]): Float64Array {
  if (y.length === 0) throw new InvalidInputError('ets: cannot fit an empty series');
  return Float64Array.from(y);
}

/** Estimates one variant; falls back to the simple variant when its optimisation finds nothing finite. */
function fitVariant(y: Float64Array, variant: EtsVariant, period: number, deadline: number): EtsModel {
  const spec = estimate(y, variant, period, deadline);
  const model = spec && etsFromSpec(Array.from(y), spec);
  if (model?.final && model.forecast(1).every(Number.isFinite)) return model;
  if (variant.trend !== 'none' || variant.season !== 'none') return fitVariant(y, SIMPLE, period, Infinity);
  // Only reachable on overflow: exponential smoothing with α near 1 is the naive forecast.
  return etsFromSpec(Array.from(y), { variant: SIMPLE, period: 1, params: { alpha: SMOOTHING_MAX, beta: 0, gamma: 0, phi: 1 }, initial: { level: y[0]!, trend: 0, season: [] } });
}

/**
 * Fits one variant by least squares (maximum Gaussian likelihood) within ctx.budgetMs, with the
 * season length ctx.dailyPeriod. A season the series cannot carry is dropped (fewer than two
 * seasons) or made additive (values not all positive); see `description` for what was fitted.
 */
export function fitEtsVariant(y: readonly number[], variant: EtsVariant, ctx: FitContext): EtsModel {
  const ys = seriesOf(y);
  const deadline = performance.now() + (ctx.budgetMs ?? DEFAULT_BUDGET_MS);
  return fitVariant(ys, applicable(variant, ys, ctx.dailyPeriod), ctx.dailyPeriod, deadline);
}

/** Every variant the series allows, simplest first: ties in AICc go to the simpler. */
function candidates(y: Float64Array, period: number): EtsVariant[] {
  const byCode = new Map<string, EtsVariant>();
  for (const season of ['none', 'additive', 'multiplicative'] as const) {
    for (const trend of ['none', 'additive', 'damped'] as const) {
      const variant = applicable({ trend, season }, y, period);
      if (!byCode.has(code(variant))) byCode.set(code(variant), variant);
    }
  }
  return [...byCode.values()];
}

/** ETS with the variant chosen by AICc, within ctx.budgetMs (default 5 s) shared among the variants. */
export const etsFactory: ModelFactory = {
  model: 'ets',
  fit(y: readonly number[], ctx: FitContext): EtsModel {
    const ys = seriesOf(y);
    const deadline = performance.now() + (ctx.budgetMs ?? DEFAULT_BUDGET_MS);
    const variants = candidates(ys, ctx.dailyPeriod);
    let best: EtsModel | undefined;
    variants.forEach((variant, i) => {
      const now = performance.now();
      if (best && now >= deadline) return;
      const model = fitVariant(ys, variant, ctx.dailyPeriod, now + (deadline - now) / (variants.length - i));
      if (!best || model.aicc < best.aicc) best = model;
    });
    return best!;
  },
};

// ---------------------------------------------------------------------------------------------
// Restore

const statesSchema = z.object({ level: z.number(), trend: z.number(), season: z.array(z.number()) });
const jsonSchema = z.object({
  model: z.literal('ets'),
  version: z.literal(1),
  variant: z.object({ trend: z.enum(['none', 'additive', 'damped']), season: z.enum(['none', 'additive', 'multiplicative']) }),
  period: z.number().int().min(1),
  params: z.object({ alpha: z.number(), beta: z.number(), gamma: z.number(), phi: z.number() }),
  initial: statesSchema,
  final: statesSchema.nullable(),
  n: z.number().int().min(0),
  last: z.number(),
  // Infinite values serialise as null.
  sse: z.number().nullable(),
  aicc: z.number().nullable(),
});

/** The model `toJSON` described, ready to forecast or update. */
export function restoreEts(json: Record<string, unknown>): EtsModel {
  const parsed = jsonSchema.safeParse(json);
  if (!parsed.success) throw new InvalidInputError(`restoreEts: ${z.prettifyError(parsed.error)}`, { cause: parsed.error });
  const { variant, period, params, initial, final, n, last, sse, aicc } = parsed.data;
  const spec: EtsSpec = { variant, period, params, initial };
  checkSpec(spec);
  if (final && final.season.length !== initial.season.length) throw new InvalidInputError('restoreEts: final and initial seasonal states differ in number');
  return new EtsModel(spec, final ?? undefined, n, last, sse ?? Infinity, aicc ?? Infinity);
}
