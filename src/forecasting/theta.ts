/**
 * The Theta method as a state-space model (Fiorucci, Pellegrini, Louzada, Petropoulos and Koehler,
 * "Models for optimising the theta method and their relationship to state space models", IJF 2016),
 * written by hand: no maintained JavaScript package implements it.
 *
 * The series is deseasonalised first (classical decomposition over the daily season, multiplicative
 * when every value is positive, additive otherwise), when its autocorrelation at one day is
 * significant (the 90% test of Assimakopoulos and Nikolopoulos). On what is left:
 *
 *   μ(t+1) = ℓ(t) + (1 − 1/θ)·[(1 − α)^t·A(t) + ((1 − (1 − α)^(t+1))/α)·B(t)]   one step ahead
 *   ℓ(t)   = α·y(t) + (1 − α)·ℓ(t − 1)                                        simple smoothing
 *   ŷ(n+h) = ℓ(n) + (1 − 1/θ)·[(1 − α)^n·A(n) + ((h − 1) + (1 − (1 − α)^(n+1))/α)·B(n)]
 *
 * where A and B are the intercept and slope of the least-squares line through the series: over all
 * of it (the static models, STM and OTM) or through y(1..t) updated at each step (the dynamic ones,
 * DSTM and DOTM, which go on updating it with their own forecasts beyond the data, as statsforecast's
 * do). The standard models fix θ = 2 (SES plus half the drift, the original method); the optimised
 * ones estimate it (1 ≤ θ ≤ 10). ℓ(0), α (0.1 ≤ α ≤ 0.99) and θ minimise the squared errors of the
 * forecasts 1 to 12 steps ahead (ESTIMATION_STEPS) made over the series' last week (about 0.1 s for
 * 30 days at 5 minutes, against 0.9 s over all of it, with the same back-test scores); the fit keeps the variant with the smallest, as
 * statsforecast's AutoTheta keeps the one with the smallest one-step errors. With the same
 * parameters the forecasts are statsforecast's to 1e-5 (test/unit/forecasting/theta.test.ts, fixture
 * from scripts/reference/theta.py). SES with drift on a deseasonalised series is what a noisy
 * series often forecasts best with: AutoTheta beat every other member on two of the bench's traces.
 */
import { z } from 'zod';
import { InvalidInputError } from '../errors.js';
import { fromInterval, nelderMead, toInterval } from './optimize.js';
import type { FitContext, FittedModel, ModelFactory } from './types.js';

export type ThetaVariant = 'STM' | 'OTM' | 'DSTM' | 'DOTM';
export const THETA_VARIANTS: readonly ThetaVariant[] = ['STM', 'OTM', 'DSTM', 'DOTM'];
const MAX_THETA = 10;
/** α from 0.1, as in forecTheta and statsforecast: below it one day's fit can smooth away a level shift the next hours need (RDS cc0c53: MASE 1.14 with α from 0.01, 0.89 from 0.1). */
const MIN_ALPHA = 0.1;
/**
 * The parameters minimise the squared errors of forecasts 1 to 12 steps ahead (the back-test's
 * horizon), not of the next step alone: on a noisy series with level shifts (RDS cc0c53) the
 * one-step optimum smooths with α ≈ 0.02 and forecasts an hour ahead far worse (MASE 1.20 against
 * 0.90 for α = 0.3).
 */
export const ESTIMATION_STEPS = 12;

export interface ThetaParams {
  alpha: number;
  theta: number;
  level0: number;
}

/** How the series was deseasonalised: a season's indices by phase (position t has index[t % period]), or none. */
export interface Deseasonalisation {
  kind: 'none' | 'multiplicative' | 'additive';
  period: number;
  indices: number[];
}

/** Whether y's autocorrelation at lag m is significant at 90% (Bartlett's variance over the lags below m). */
export function seasonalityTest(y: readonly number[], m: number): boolean {
  const n = y.length;
  if (m < 2 || n < 3 * m) return false;
  const mean = y.reduce((a, b) => a + b, 0) / n;
  let c0 = 0;
  for (const v of y) c0 += (v - mean) ** 2;
  if (c0 === 0) return false;
  const acf = (k: number) => {
    let s = 0;
    for (let t = k; t < n; t++) s += (y[t]! - mean) * (y[t - k]! - mean);
    return s / c0;
  };
  let sum = 0;
  for (let k = 1; k < m; k++) sum += acf(k) ** 2;
  const limit = 1.645 * Math.sqrt((1 + 2 * sum) / n);
  return Math.abs(acf(m)) > limit;
}

/** Classical decomposition's seasonal indices for period m: the mean by phase of y over (or less) its centred moving average, normalised. */
export function classicalIndices(y: readonly number[], m: number, kind: 'multiplicative' | 'additive'): number[] {
  const n = y.length;
  const half = Math.floor(m / 2);
  const prefix = new Float64Array(n + 1);
  for (let t = 0; t < n; t++) prefix[t + 1] = prefix[t]! + y[t]!;
  const sums = new Float64Array(m);
  const counts = new Float64Array(m);
  for (let t = half; t < n - half; t++) {
    const sum = prefix[t + half + 1]! - prefix[t - half]!;
    const trend = m % 2 === 0 ? (sum - (y[t - half]! + y[t + half]!) / 2) / m : sum / m;
    const ratio = kind === 'multiplicative' ? y[t]! / trend : y[t]! - trend;
    if (!Number.isFinite(ratio)) continue;
    sums[t % m]! += ratio;
    counts[t % m]! += 1;
  }
  const neutral = kind === 'multiplicative' ? 1 : 0;
  const raw = Array.from(sums, (s, i) => (counts[i]! > 0 ? s / counts[i]! : neutral));
  const mean = raw.reduce((a, b) => a + b, 0) / m;
  return kind === 'multiplicative' ? raw.map((v) => (mean > 0 ? v / mean : 1)) : raw.map((v) => v - mean);
}

/**
 * The season's indices of this kind, or undefined where they cannot be used: a multiplicative
 * season needs every value positive, and an index near 0 would blow the forecast up when it is put back.
 */
function usableIndices(y: readonly number[], m: number, kind: 'multiplicative' | 'additive'): number[] | undefined {
  if (kind === 'additive') return classicalIndices(y, m, kind);
  if (!y.every((v) => v > 0)) return undefined;
  const indices = classicalIndices(y, m, kind);
  return indices.some((v) => !(v > 1e-3)) ? undefined : indices;
}

/** The daily season taken off where it is significant: multiplicatively where it can be, else additively. */
export function deseasonalisation(y: readonly number[], period: number): Deseasonalisation {
  const m = Math.round(period);
  if (!seasonalityTest(y, m)) return { kind: 'none', period: 1, indices: [] };
  const multiplicative = usableIndices(y, m, 'multiplicative');
  return multiplicative ? { kind: 'multiplicative', period: m, indices: multiplicative } : { kind: 'additive', period: m, indices: classicalIndices(y, m, 'additive') };
}

function adjust(y: readonly number[], d: Deseasonalisation): Float64Array {
  const out = Float64Array.from(y);
  if (d.kind === 'none') return out;
  for (let t = 0; t < out.length; t++) out[t] = d.kind === 'multiplicative' ? out[t]! / d.indices[t % d.period]! : out[t]! - d.indices[t % d.period]!;
  return out;
}

/** The filter's state after the last observation: what the forecast needs. */
interface ThetaState {
  level: number;
  a: number;
  b: number;
  n: number;
  /** Mean squared error of the forecasts the filter made (1 to `steps` ahead). */
  mse: number;
}

const isDynamic = (v: ThetaVariant) => v === 'DSTM' || v === 'DOTM';

/** Runs the model over x with these parameters: the one-step squared errors and the final state. */
export function thetaFilter(x: ArrayLike<number>, variant: ThetaVariant, p: ThetaParams, steps = 1, scoreFrom = 0): ThetaState {
  const n = x.length;
  const { alpha, theta } = p;
  const weight = 1 - 1 / theta;
  let a: number;
  let b: number;
  if (!isDynamic(variant)) {
    // The least-squares line through all of x, time 1..n.
    let sy = 0;
    let sty = 0;
    for (let t = 0; t < n; t++) {
      sy += x[t]!;
      sty += (t + 1) * x[t]!;
    }
    const mean = sy / n;
    b = n > 1 ? (6 * ((2 * sty) / n - (n + 1) * mean)) / (n * n - 1) : 0;
    a = mean - ((n + 1) / 2) * b;
  } else {
    a = x[0]!;
    b = 0;
  }
  let level = p.level0;
  let mean = 0;
  let decay = 1; // (1 − α)^t
  let sse = 0;
  let errors = 0;
  for (let t = 0; t < n; t++) {
    // The forecasts of x[t..t+steps−1] from the state after t observations (decay = (1 − α)^t).
    if (t >= scoreFrom && (t > 0 || !isDynamic(variant))) {
      const base = level + weight * (decay * a + ((1 - decay * (1 - alpha)) / alpha) * b);
      for (let h = 0; h < steps && t + h < n; h++) {
        const e = x[t + h]! - (base + weight * h * b);
        sse += e * e;
        errors++;
      }
    }
    level = alpha * x[t]! + (1 - alpha) * level;
    decay *= 1 - alpha;
    if (isDynamic(variant)) {
      const k = t + 1; // observations seen, x[t] included
      const previousMean = mean;
      mean = previousMean + (x[t]! - previousMean) / k;
      // The least-squares slope through y(1..k), from the one through y(1..k−1).
      b = k <= 1 ? 0 : ((k - 2) * b + (6 * (x[t]! - previousMean)) / k) / (k + 1);
      a = mean - ((k + 1) / 2) * b;
    }
  }
  return { level, a, b, n, mse: errors > 0 ? sse / errors : 0 };
}

function thetaForecast(s: ThetaState, variant: ThetaVariant, p: ThetaParams, horizon: number): number[] {
  const weight = 1 - 1 / p.theta;
  if (!isDynamic(variant)) {
    const decay = (1 - p.alpha) ** s.n;
    const tail = (1 - decay * (1 - p.alpha)) / p.alpha;
    return Array.from({ length: horizon }, (_, i) => s.level + weight * (decay * s.a + (i + tail) * s.b));
  }
  // The dynamic models go on updating their line with their own forecasts, as statsforecast's do.
  let { level, a, b } = s;
  let mean = a + ((s.n + 1) / 2) * b;
  const out: number[] = [];
  for (let i = 0; i < horizon; i++) {
    const k = s.n + i; // observations (and forecasts) seen
    const mu = level + weight * ((1 - p.alpha) ** k * a + ((1 - (1 - p.alpha) ** (k + 1)) / p.alpha) * b);
    out.push(mu);
    level = p.alpha * mu + (1 - p.alpha) * level;
    const previousMean = mean;
    mean = previousMean + (mu - previousMean) / (k + 1);
    b = ((k - 1) * b + (6 * (mu - previousMean)) / (k + 1)) / (k + 2);
    a = mean - ((k + 2) / 2) * b;
  }
  return out;
}

export class ThetaModel implements FittedModel {
  readonly model = 'theta';
  readonly description: string;

  constructor(
    readonly variant: ThetaVariant,
    readonly params: ThetaParams,
    readonly season: Deseasonalisation,
    /** The filter's state after the series it was run over. */
    private readonly state: ThetaState,
  ) {
    const seasonText = season.kind === 'none' ? 'no season' : `${season.kind} season ${season.period}`;
    this.description = `Theta ${variant} (θ ${params.theta.toFixed(2)}, α ${params.alpha.toFixed(3)}), ${seasonText}`;
  }

  /** The model with these parameters run over y. */
  static over(y: readonly number[], variant: ThetaVariant, params: ThetaParams, season: Deseasonalisation): ThetaModel {
    return new ThetaModel(variant, params, season, thetaFilter(adjust(y, season), variant, params));
  }

  forecast(horizon: number): number[] {
    const f = thetaForecast(this.state, this.variant, this.params, horizon);
    const { kind, period, indices } = this.season;
    return f.map((v, i) => {
      const at = (this.state.n + i) % Math.max(period, 1);
      const value = kind === 'multiplicative' ? v * indices[at]! : kind === 'additive' ? v + indices[at]! : v;
      return Number.isFinite(value) ? value : this.state.level;
    });
  }

  /** The same parameters on a longer series; the seasonal indices are recomputed on it (O(n)), as MSTL's are. */
  update(y: readonly number[]): ThetaModel {
    const { kind, period, indices } = this.season;
    // The same kind of season; its old indices where the new ones cannot be used.
    const season = kind === 'none' || y.length < 2 * period ? this.season : { kind, period, indices: usableIndices(y, period, kind) ?? indices };
    return ThetaModel.over(y, this.variant, this.params, season);
  }

  toJSON(): Record<string, unknown> {
    return { model: this.model, version: 1, variant: this.variant, params: { ...this.params }, season: { ...this.season, indices: [...this.season.indices] }, state: { ...this.state } };
  }
}

/** Estimates ℓ(0), α and (for OTM and DOTM) θ of one variant on the deseasonalised series x. */
export function fitThetaVariant(x: ArrayLike<number>, variant: ThetaVariant, deadline = Infinity, scoreFrom = 0): ThetaParams {
  const optimiseTheta = variant === 'OTM' || variant === 'DOTM';
  const scale = Math.max(1e-9, ...Array.from({ length: Math.min(x.length, 50) }, (_, i) => Math.abs(x[i]!)));
  const start = [fromInterval(0.5, MIN_ALPHA, 0.99), x[0]! / 2 / scale, ...(optimiseTheta ? [fromInterval(2, 1, MAX_THETA)] : [])];
  const params = (u: Float64Array): ThetaParams => ({ alpha: toInterval(u[0]!, MIN_ALPHA, 0.99), level0: u[1]! * scale, theta: optimiseTheta ? toInterval(u[2]!, 1, MAX_THETA) : 2 });
  const best = nelderMead((u) => thetaFilter(x, variant, params(u), ESTIMATION_STEPS, scoreFrom).mse, start, { step: [1, 0.5, 1], maxEvaluations: 150 * start.length, fTolerance: 1e-8, deadline });
  return params(best.x);
}

/** Fits every variant (within the budget) on the series less its daily season, and keeps the one whose forecasts 1 to 12 steps ahead over the last week erred least. */
export function fitTheta(y: readonly number[], ctx: Pick<FitContext, 'dailyPeriod' | 'budgetMs'>, variants: readonly ThetaVariant[] = THETA_VARIANTS): ThetaModel {
  if (y.length < 4) throw new InvalidInputError(`theta: needs at least 4 points, got ${y.length}`);
  const started = performance.now();
  const budget = ctx.budgetMs ?? 5000;
  const season = deseasonalisation(y, ctx.dailyPeriod);
  const x = adjust(y, season);
  // The errors of the last week (seven days, or all of a shorter series) are the ones scored: cheaper over 30 days, and the recent behaviour is what the next hours follow.
  const scoreFrom = Math.max(0, y.length - 7 * Math.max(Math.round(ctx.dailyPeriod), 24));
  let best: { model: ThetaModel; mse: number } | undefined;
  for (const [i, variant] of variants.entries()) {
    // Each variant gets its share of what is left; the first always finishes its search.
    const left = budget - (performance.now() - started);
    if (best && left <= 0) break;
    const deadline = best ? performance.now() + left / (variants.length - i) : Infinity;
    const params = fitThetaVariant(x, variant, deadline, scoreFrom);
    const { mse } = thetaFilter(x, variant, params, ESTIMATION_STEPS, scoreFrom);
    if (!best || mse < best.mse) best = { model: new ThetaModel(variant, params, season, thetaFilter(x, variant, params)), mse };
  }
  return best!.model;
}

export const thetaFactory: ModelFactory = {
  model: 'theta',
  fit: (y, ctx) => fitTheta(y, ctx),
};

const jsonSchema = z.object({
  model: z.literal('theta'),
  version: z.literal(1),
  variant: z.enum(['STM', 'OTM', 'DSTM', 'DOTM']),
  params: z.object({ alpha: z.number().gt(0).lt(1), theta: z.number().min(1), level0: z.number() }),
  season: z.object({ kind: z.enum(['none', 'multiplicative', 'additive']), period: z.number().int().min(1), indices: z.array(z.number()) }),
  state: z.object({ level: z.number(), a: z.number(), b: z.number(), n: z.number().int().min(1), mse: z.number().min(0) }),
});

/** The model `toJSON` described, ready to forecast or update. */
export function restoreTheta(json: Record<string, unknown>): ThetaModel {
  const parsed = jsonSchema.safeParse(json);
  if (!parsed.success) throw new InvalidInputError(`restoreTheta: ${z.prettifyError(parsed.error)}`, { cause: parsed.error });
  const { variant, params, season, state } = parsed.data;
  if (season.kind !== 'none' && season.indices.length !== season.period) throw new InvalidInputError('restoreTheta: the seasonal indices do not match the period');
  return new ThetaModel(variant, params, season, state);
}
