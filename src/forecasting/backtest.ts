/**
 * Rolling-origin back-test of every model, the seasonal naive baseline and the ensemble on one clean
 * series (series.ts):
 *
 * - Evaluation: origins every hour over the last 7 days, or over the last 20% of the series when
 *   it covers less than two weeks (so that at least as much history precedes them as they span).
 * - Warm-up: one more day of origins before the evaluation (half the evaluation window when that
 *   is shorter), scored but not reported. Its residuals give the first evaluated origins their
 *   intervals and ensemble weights; the warm-up's own first origins use the random-walk fallback
 *   of intervals.ts and equal weights.
 * - Training: each model is fitted once a day on the previous 30 days (or all there is) and then
 *   extended hour by hour with `FittedModel.update`, without re-estimating.
 * - No look-ahead: an origin's intervals and weights come only from forecasts of earlier origins
 *   whose targets it has already seen.
 * - Intervals: conformal per horizon step (intervals.ts), with adaptive steps (DEFAULT_CALIBRATION);
 *   the ensemble's from the ensemble's own residuals. Weights: ensemble.ts, from the members'
 *   errors over all scored origins so far.
 * - Budget: `budgetSeconds` per model for the whole series, shared equally among its daily fits;
 *   `trainSeconds` is the time the fits took, summed.
 * - Hyperparameters: a model with a `tune` (the LSTM) is tuned once, before the first fit, on
 *   that fit's training window only (so the search never sees an evaluated target), within
 *   `searchSeconds`; every fit of the run then uses what it found. `initialParams` (e.g. the last
 *   run's best) are tried first.
 * - Scoring: only observed points count (values filled by series.ts do not). MASE uses the scale of
 *   metrics.ts on the origin's training window.
 * - A model that throws, or forecasts a non-finite value, is replaced by the seasonal naive forecast
 *   for that day; the report lists each replacement.
 * - After the last origin every model is extended to the end of the series: `next` holds the
 *   forecasts from there, with intervals calibrated on every residual of the run.
 */
import { dayMs, hourMs } from '../clock.js';
import { InvalidInputError, errorMessage } from '../errors.js';
import { arimaFactory } from './arima.js';
import { BacktestErrors, DEFAULT_SCHEME, RECENT_HALF_LIFE, WEIGHT_SCHEMES, combine, ensembleWeights, type WeightScheme } from './ensemble.js';
import { etsFactory } from './ets.js';
import { ConformalCalibrator, randomWalkSigma, type CalibrationOptions, type Interval } from './intervals.js';
import { lstmFactory } from './lstm.js';
import { Accuracy, maseScale } from './metrics.js';
import { mstlFactory } from './mstl.js';
import { thetaFactory } from './theta.js';
import { seasonalNaiveFactory } from './naive.js';
import { seasonLengths, type CleanSeries } from './series.js';
import type { FitContext, FittedModel, Hyperparameters, InitialParams, ModelFactory, Tuning } from './types.js';

/** Models besides the seasonal naive baseline, which is always there; MSTL only where the history holds two weeks. */
export const DEFAULT_MODELS: readonly ModelFactory[] = [etsFactory, arimaFactory, lstmFactory, mstlFactory, thetaFactory];

export const BASELINE = 'seasonal_naive';
/**
 * Adaptive conformal steps of 0.02 and every residual kept: on the traces (ETS and ARIMA) this
 * brought the mean coverage of the ensemble's 80% intervals from 0.74 to 0.79 (95%: 0.94 to 0.95),
 * where γ = 0.005 reached 0.77, and a window of the last 3 days of residuals 0.78 but 0.71 on the
 * trace with a regime change.
 */
export const DEFAULT_CALIBRATION: CalibrationOptions = { adaptRate: 0.02 };
export const ENSEMBLE = 'ensemble';
/** An hour and a day of the load clock, in seconds (src/clock.ts). */
const HOUR = (): number => hourMs() / 1000;
const DAY = (): number => dayMs() / 1000;

export interface BacktestOptions {
  /** Steps ahead that are scored; default one hour of steps (at least 1). */
  horizon?: number;
  /**
   * Steps ahead that are forecast and calibrated (default and at least `horizon`): the forecasts past
   * the scored horizon get intervals from their own residuals, but do not count in the scores or weights.
   */
  reach?: number;
  /** Models besides the seasonal naive baseline; default DEFAULT_MODELS. */
  models?: readonly ModelFactory[];
  /** Fitting budget of each model over the whole back-test, in seconds, shared among its daily fits (default 30). */
  budgetSeconds?: number;
  /** How the ensemble weighs its members (default DEFAULT_SCHEME); the other schemes are scored alongside. */
  scheme?: WeightScheme;
  /** Conformal calibration of the intervals (default DEFAULT_CALIBRATION). */
  calibration?: CalibrationOptions;
  evaluationDays?: number;
  trainingDays?: number;
  seed?: number;
  /** Seconds of hyperparameter search per model that has a `tune` (default 0: its defaults). */
  searchSeconds?: number;
  /** Points each model's search tries first, by model. */
  initialParams?: InitialParams;
  /** Progress lines (one per daily fit). */
  log?: (line: string) => void;
}

/** Point forecasts for the next `horizon` steps with their 80% and 95% intervals. */
export interface Forecast {
  point: number[];
  intervals: Interval[];
}

export interface ModelScore {
  mase: number;
  smape: number;
  coverage80: number;
  coverage95: number;
}

export interface ModelReport extends ModelScore {
  /** Seconds spent fitting, summed over the daily fits. */
  trainSeconds: number;
  fits: number;
  /** What was fitted at the last daily fit. */
  description: string;
  /** Days on which the model failed and the seasonal naive forecast stood in, with why. */
  fallbacks: string[];
  /** The hyperparameter search, for models that have one and when it ran. */
  tuning?: Tuning;
}

export interface BacktestReport {
  series: string;
  points: number;
  stepSeconds: number;
  horizon: number;
  /** Evaluated origins (the warm-up not included) and the values scored per model. */
  origins: number;
  scored: number;
  /** ISO times of the first and last evaluated origin. */
  from: string;
  to: string;
  /** The baseline first, then the models in the order given (those that apply to the series: `ModelFactory.applies`). */
  models: Record<string, ModelReport>;
  /** `meanWeights`: the weights over the scored origins, averaged; `finalWeights`: those from every error, which `next` combines with. */
  ensemble: ModelScore & { scheme: WeightScheme; meanWeights: Record<string, number>; finalWeights: Record<string, number> };
  /** The ensemble under every weighting scheme, for comparison. */
  schemes: Record<WeightScheme, ModelScore>;
  /** Forecasts from the end of the series, with calibrated intervals: every member and the ensemble. */
  next: Record<string, Forecast>;
  notes: string[];
}

/** The positions of the back-test on a series of n points (see the module comment). */
export function backtestPlan(
  series: Pick<CleanSeries, 'values' | 'stepSeconds' | 'dailyPeriod'>,
  options: { horizon?: number; evaluationDays?: number; trainingDays?: number } = {},
): { horizon: number; origins: number[]; evaluationStart: number; stride: number; day: number; trainingSteps: number } {
  const n = series.values.length;
  const step = series.stepSeconds;
  const horizon = Math.max(1, Math.round(options.horizon ?? HOUR() / step));
  const stride = Math.max(1, Math.round(HOUR() / step));
  const day = Math.max(1, Math.round(DAY() / step));
  const evaluationDays = options.evaluationDays ?? 7;
  const week = evaluationDays * day;
  const evaluationSteps = n >= 2 * week ? week : Math.floor(0.2 * n);
  const evaluationStart = n - evaluationSteps;
  const minimumTraining = Math.max(3, 2 * horizon);
  const warmup = Math.max(0, Math.min(day, Math.floor(evaluationSteps / 2), evaluationStart - minimumTraining));
  const origins: number[] = [];
  for (let o = evaluationStart - warmup; o + horizon <= n; o += stride) origins.push(o);
  if (evaluationStart < minimumTraining || !origins.some((o) => o >= evaluationStart)) {
    throw new InvalidInputError(`a back-test with horizon ${horizon} needs more data: the series has ${n} points of ${step} s`);
  }
  return { horizon, origins, evaluationStart, stride, day, trainingSteps: (options.trainingDays ?? 30) * day };
}

/** One origin of the back-test: the training window `[trainStart, origin)` its forecasts see, and whether the models are fitted there or extended. */
export interface ScheduledOrigin {
  origin: number;
  trainStart: number;
  isFitDay: boolean;
  /** Evaluated (not warm-up, not the end of the series). */
  scoring: boolean;
}

/**
 * Every origin of the back-test in order, the end of the series last (its forecasts are `next`):
 * models are fitted once a day on the previous `trainingDays` and extended in between. The
 * statsforecast reference (scripts/statsforecast_reference.py) follows the same schedule.
 */
export function backtestSchedule(
  series: Pick<CleanSeries, 'values' | 'stepSeconds' | 'dailyPeriod'>,
  options: { horizon?: number; evaluationDays?: number; trainingDays?: number } = {},
): ScheduledOrigin[] {
  const { origins, evaluationStart, day, trainingSteps } = backtestPlan(series, options);
  const end = series.values.length;
  const schedule: ScheduledOrigin[] = [];
  let lastFit = -Infinity;
  let trainStart = 0;
  for (const origin of [...origins, end]) {
    const isFitDay = origin < end && origin - lastFit >= day;
    if (isFitDay) {
      lastFit = origin;
      trainStart = Math.max(0, origin - trainingSteps);
    }
    schedule.push({ origin, trainStart, isFitDay, scoring: origin >= evaluationStart && origin < end });
  }
  return schedule;
}

/** A member's state: its fitted model (or the seasonal naive standing in) and its fitting record. */
interface Member {
  name: string;
  factory: ModelFactory;
  fitted?: FittedModel;
  trainSeconds: number;
  fits: number;
  description: string;
  fallbacks: string[];
  tuning?: Tuning;
}

/** Where the forecasts of one member, or of the ensemble under one scheme, are calibrated and scored. */
interface Track {
  calibrator: ConformalCalibrator;
  accuracy: Accuracy;
}

/** An origin's forecasts, by track, waiting for their targets. */
interface Pending {
  origin: number;
  scale: number;
  forecasts: Map<string, number[]>;
  /** Steps whose residuals have gone to the calibrators. */
  calibrated: number;
}

/** Finite forecasts, or undefined when the model throws or returns anything else. */
function safeForecast(model: FittedModel, horizon: number): number[] | undefined {
  try {
    const f = model.forecast(horizon);
    return f.length === horizon && f.every(Number.isFinite) ? f : undefined;
  } catch {
    return undefined;
  }
}

function round(x: number, digits = 4): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

function scoreOf(accuracy: Accuracy): ModelScore {
  return { mase: round(accuracy.mase), smape: round(accuracy.smape), coverage80: round(accuracy.coverage(0.8)), coverage95: round(accuracy.coverage(0.95)) };
}

const schemeTrack = (scheme: WeightScheme) => `${ENSEMBLE}/${scheme}`;

/** Runs the back-test (see the module comment). Never throws for a model's failure; throws InvalidInputError for a series too short to test. */
export async function backtest(series: CleanSeries, options: BacktestOptions = {}): Promise<BacktestReport> {
  const { values, observed, stepSeconds, dailyPeriod } = series;
  const { horizon, origins, evaluationStart, day } = backtestPlan(series, options);
  const reach = Math.max(horizon, Math.round(options.reach ?? horizon));
  const scheme = options.scheme ?? DEFAULT_SCHEME;
  const fitCount = Math.ceil((origins[origins.length - 1]! - origins[0]! + 1) / day);
  const budgetMs = ((options.budgetSeconds ?? 30) * 1000) / fitCount;
  const schedule = backtestSchedule(series, options);
  const firstContext = seasonLengths(stepSeconds, schedule[0]!.origin - schedule[0]!.trainStart);
  const factories = (options.models ?? DEFAULT_MODELS).filter((f) => f.applies?.(firstContext) ?? true);
  const members: Member[] = [seasonalNaiveFactory, ...factories].map((factory) => ({
    name: factory.model,
    factory,
    trainSeconds: 0,
    fits: 0,
    description: '',
    fallbacks: [],
  }));
  const memberNames = members.map((m) => m.name);
  const tracks = new Map<string, Track>(
    [...memberNames, ...WEIGHT_SCHEMES.map(schemeTrack)].map((key) => [key, { calibrator: new ConformalCalibrator(reach, options.calibration ?? DEFAULT_CALIBRATION), accuracy: new Accuracy() }]),
  );
  const errors = new BacktestErrors();
  const recentErrors = new BacktestErrors({ halfLife: RECENT_HALF_LIFE });
  const weightSums = new Map(memberNames.map((m) => [m, 0]));
  const pending: Pending[] = [];
  const notes = [...series.notes];
  const timeOf = (index: number) => new Date(series.start + index * stepSeconds * 1000).toISOString();

  /** Hands the residuals of earlier origins whose targets `origin` has seen to the calibrators, and complete forecasts to the weights. */
  function absorb(origin: number): void {
    for (const p of pending) {
      const known = Math.min(reach, origin - p.origin);
      for (let h = p.calibrated + 1; h <= known; h++) {
        const t = p.origin + h - 1;
        if (observed[t]) for (const [key, f] of p.forecasts) tracks.get(key)!.calibrator.add(h, values[t]! - f[h - 1]!);
      }
      const scoredNow = p.calibrated < horizon && known >= horizon;
      p.calibrated = known;
      if (scoredNow) {
        const mask = (_: number, i: number) => observed[p.origin + i]!;
        const actual = values.slice(p.origin, p.origin + horizon).filter(mask);
        for (const name of memberNames) {
          const forecast = p.forecasts.get(name)!.slice(0, horizon).filter(mask);
          errors.add(name, actual, forecast, p.scale);
          recentErrors.add(name, actual, forecast, p.scale);
        }
      }
    }
    while (pending.length > 0 && pending[0]!.calibrated === reach) pending.shift();
  }

  /** Scores one origin's forecast of the observed targets, with intervals from earlier residuals. */
  function score(track: Track, forecast: number[], origin: number, scale: number, sigma: number): void {
    const intervals = track.calibrator.intervals(forecast, sigma);
    forecast.forEach((f, i) => {
      if (!observed[origin + i]) return;
      const bounds = intervals.map((iv) => ({ level: iv.level, lower: iv.lower[i]!, upper: iv.upper[i]! }));
      track.accuracy.add(values[origin + i]!, f, scale, bounds);
    });
  }

  // The last origin is the end of the series: its forecasts are the report's `next`, scored by nothing.
  const end = values.length;
  const next: Record<string, Forecast> = {};
  let evaluated = 0;
  let finalWeights: Record<string, number> = {};
  for (const { origin, trainStart, isFitDay, scoring } of schedule) {
    absorb(origin);
    const train = values.slice(trainStart, origin);
    const when = timeOf(origin);
    const ctx: FitContext = { ...seasonLengths(stepSeconds, train.length), budgetMs, seed: options.seed ?? 1 };
    if (origin === origins[0] && (options.searchSeconds ?? 0) > 0) {
      for (const member of members) await tune(member, train, { ...ctx, budgetMs: options.searchSeconds! * 1000 }, options.initialParams?.[member.name], notes);
    }
    for (const member of members) await advance(member, train, member.tuning ? { ...ctx, params: member.tuning.params } : ctx, isFitDay, when);
    if (isFitDay) options.log?.(`${series.name}: fitted at ${when} on ${train.length} points: ${members.map((m) => m.description).join('; ')}`);

    const forecasts = new Map<string, number[]>();
    for (const member of members) {
      let f = safeForecast(member.fitted!, reach);
      if (!f) {
        // The baseline comes first; the last value stands in for it (only a throwing custom baseline gets here).
        member.fallbacks.push(`${when}: no finite forecast; seasonal naive used`);
        f = forecasts.get(BASELINE) ?? new Array<number>(reach).fill(train[train.length - 1] ?? 0);
      }
      forecasts.set(member.name, f);
    }
    const memberErrors = new Map(memberNames.map((m) => [m, errors.error(m)]));
    const recentMemberErrors = new Map(memberNames.map((m) => [m, recentErrors.error(m)]));
    for (const s of WEIGHT_SCHEMES) {
      const weights = ensembleWeights(s === 'softmax_recent' ? recentMemberErrors : memberErrors, { scheme: s, baseline: BASELINE });
      forecasts.set(schemeTrack(s), combine(new Map(memberNames.map((m) => [m, forecasts.get(m)!])), weights));
      if (scoring && s === scheme) for (const [m, w] of weights) weightSums.set(m, weightSums.get(m)! + w);
      if (origin === end && s === scheme) finalWeights = Object.fromEntries([...weights].map(([m, w]) => [m, round(w, 3)]));
    }
    const sigma = randomWalkSigma(train);
    if (origin === end) {
      for (const key of [...memberNames, schemeTrack(scheme)]) {
        const point = forecasts.get(key)!;
        next[key === schemeTrack(scheme) ? ENSEMBLE : key] = { point, intervals: tracks.get(key)!.calibrator.intervals(point, sigma) };
      }
      break;
    }
    const scale = maseScale(train, dailyPeriod);
    if (scoring) {
      evaluated++;
      for (const [key, f] of forecasts) score(tracks.get(key)!, f.slice(0, horizon), origin, scale, sigma);
    }
    pending.push({ origin, scale, forecasts, calibrated: 0 });
  }

  const evaluatedOrigins = origins.filter((o) => o >= evaluationStart);
  const main = tracks.get(schemeTrack(scheme))!;
  return {
    series: series.name,
    points: values.length,
    stepSeconds,
    horizon,
    origins: evaluated,
    scored: main.accuracy.size,
    from: timeOf(evaluatedOrigins[0]!),
    to: timeOf(evaluatedOrigins[evaluatedOrigins.length - 1]!),
    models: Object.fromEntries(
      members.map((m) => [
        m.name,
        {
          ...scoreOf(tracks.get(m.name)!.accuracy),
          trainSeconds: round(m.trainSeconds, 3),
          fits: m.fits,
          description: m.description,
          fallbacks: m.fallbacks,
          ...(m.tuning ? { tuning: m.tuning } : {}),
        },
      ]),
    ),
    ensemble: {
      ...scoreOf(main.accuracy),
      scheme,
      meanWeights: Object.fromEntries([...weightSums].map(([m, w]) => [m, round(w / Math.max(evaluated, 1), 3)])),
      finalWeights,
    },
    schemes: Object.fromEntries(WEIGHT_SCHEMES.map((s) => [s, scoreOf(tracks.get(schemeTrack(s))!.accuracy)])) as Record<WeightScheme, ModelScore>,
    next,
    notes,
  };
}

/** Runs the member's hyperparameter search, if it has one; a search that fails leaves the defaults, with a note. */
async function tune(member: Member, train: number[], ctx: FitContext & { budgetMs: number }, initial: readonly Hyperparameters[] | undefined, notes: string[]): Promise<void> {
  if (!member.factory.tune) return;
  try {
    member.tuning = await member.factory.tune(train, ctx, { initial });
  } catch (err) {
    notes.push(`${member.name}: hyperparameter search failed, defaults used: ${errorMessage(err)}`);
  }
}

/** Fits the member on a fit day, else extends its model to `train`; a failure puts the seasonal naive in its place. */
async function advance(member: Member, train: number[], ctx: FitContext, isFitDay: boolean, when: string): Promise<void> {
  const standIn = (why: string): FittedModel => {
    member.fallbacks.push(`${when}: ${why}; seasonal naive used`);
    return seasonalNaiveFactory.fit(train, ctx) as FittedModel;
  };
  if (isFitDay) {
    const started = performance.now();
    try {
      member.fitted = await member.factory.fit(train, ctx);
      member.description = member.fitted.description;
    } catch (err) {
      member.fitted = standIn(`fit failed: ${errorMessage(err)}`);
      member.description = `${member.fitted.description} (stand-in)`;
    }
    member.trainSeconds += (performance.now() - started) / 1000;
    member.fits++;
    return;
  }
  try {
    member.fitted = member.fitted!.update(train);
  } catch (err) {
    member.fitted = standIn(`update failed: ${errorMessage(err)}`);
  }
}

/** The one-line JSON summary the CLI prints last: scores per model and the ensemble, fit seconds per model. */
export function backtestSummary(report: BacktestReport): Record<string, unknown> {
  const pick = ({ mase, smape, coverage80, coverage95 }: ModelScore): ModelScore => ({ mase, smape, coverage80, coverage95 });
  return {
    series: report.series,
    points: report.points,
    step_seconds: report.stepSeconds,
    horizon: report.horizon,
    models: { ...Object.fromEntries(Object.entries(report.models).map(([m, r]) => [m, pick(r)])), [ENSEMBLE]: pick(report.ensemble) },
    train_seconds: Object.fromEntries(Object.entries(report.models).map(([m, r]) => [m, r.trainSeconds])),
    tuning: Object.fromEntries(
      Object.entries(report.models).flatMap(([m, r]) =>
        r.tuning ? [[m, { method: r.tuning.method, trials: r.tuning.trials, seconds: round(r.tuning.seconds, 3), score: r.tuning.score, default_score: r.tuning.defaultScore, params: r.tuning.params }]] : [],
      ),
    ),
  };
}
