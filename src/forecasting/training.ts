/**
 * Daily training and hourly forecasting of one collected series (DESIGN §4), free of Temporal.
 *
 * Training (`trainSeries`): the last `trainingDays` of complete 5-minute buckets (the bucket in
 * progress is left out), nulls as gaps, cleaned by series.ts; a rolling-origin back-test
 * (backtest.ts) scores every model and gives the ensemble weights and the conformal half-widths of
 * the next hour's steps; then every member is fitted once more on the whole window and stored with
 * its weight. Half of `budgetSeconds` goes to the back-test, half to the final fit, per model.
 * Models with a hyperparameter search (the LSTM) get `searchSeconds` more, before the back-test
 * (backtest.ts); the final fit uses what it found, and the search of the next run starts from it.
 * A series with less than MIN_HISTORY_DAYS of data gets the seasonal naive forecast with
 * random-walk intervals (status 'fallback'); one without two observed buckets cannot be
 * forecast at all and throws (the caller records it as 'failed').
 *
 * Forecasting (`forecastSeries`): the newest usable model's members are restored and extended with
 * `update` to the series as it is now (loaded from the same start, so that the members see the
 * series they were fitted on, plus what came since), combined with their weights, and given the
 * frozen half-widths. The steps follow the last observed bucket: normally the bucket in progress
 * and the eleven after it.
 */
import type { Queryable } from '../catalog/nodes.js';
import { InvalidInputError, errorMessage } from '../errors.js';
import { loadSeries, seriesDomain } from '../profiling/series.js';
import { dayMs, stepStart } from '../clock.js';
import { restoreArima } from './arima.js';
import { backtest, BASELINE, DEFAULT_MODELS, ENSEMBLE } from './backtest.js';
import { combine } from './ensemble.js';
import { restoreEts } from './ets.js';
import { LEVELS, normalQuantile, randomWalkSigma } from './intervals.js';
import { restoreLstm } from './lstm.js';
import { restoreMstl } from './mstl.js';
import { restoreTheta } from './theta.js';
import { seasonalNaiveFactory, SeasonalNaiveModel } from './naive.js';
import { cleanSeries, seasonLengths, type CleanSeries } from './series.js';
import { latestUsableModel, type Calibration, type ForecastRow, type StoredMember, type StoredModel } from './store.js';
import type { FittedModel, Hyperparameters, InitialParams, ModelFactory } from './types.js';

/** Steps the back-tests score: one hour of 5-minute buckets. */
export const HORIZON = 12;
/**
 * Steps of the hourly forecast: two hours of 5-minute buckets, each step with intervals calibrated on
 * its own back-test residuals. An hourly forecast of one hour would leave a plan made late in the hour
 * blind to a peak just past it (the planner needs its horizon to reach past the next forecast by the
 * length of a move); the scores stay those of the first hour.
 */
export const FORECAST_STEPS = 24;
/** Less history than this is forecast by the seasonal naive fallback. */
export const MIN_HISTORY_DAYS = 2;

export interface TrainingOptions {
  /** The run's time: training uses the complete buckets before it, and it keys the stored row. */
  asOf: Date;
  trainingDays?: number;
  /** Seconds per model for the series: half for the back-test, half for the final fit (default 2). */
  budgetSeconds?: number;
  /** Models besides the seasonal naive baseline (default DEFAULT_MODELS). */
  models?: readonly ModelFactory[];
  /** Days of rolling origins the back-test scores (default 2, so that a daily run stays cheap). */
  evaluationDays?: number;
  /** Seconds of hyperparameter search per model that has one (default 0: its defaults); see backtest.ts. */
  searchSeconds?: number;
  /** Points each model's search tries first, by model: `previousParams` gives the last run's best. */
  initialParams?: InitialParams;
}

const bucketStart = (t: Date) => new Date(stepStart(t.getTime()));

/** The series between `from` and the start of the bucket in progress at `asOf`, cleaned; throws InvalidInputError without two observed buckets. */
async function loadClean(catalog: Queryable, id: string, from: Date, asOf: Date): Promise<CleanSeries> {
  const points = await loadSeries(catalog, id, from, bucketStart(asOf));
  const rows = points.filter((p) => p.value !== null).map((p) => ({ time: p.ts.getTime(), value: p.value! }));
  return cleanSeries(rows, id);
}

function restoreMember(json: Record<string, unknown>): FittedModel {
  switch (json.model) {
    case 'ets':
      return restoreEts(json);
    case 'arima':
      return restoreArima(json);
    case 'lstm':
      return restoreLstm(json);
    case 'mstl':
      return restoreMstl(json);
    case 'theta':
      return restoreTheta(json);
    case 'seasonal_naive':
      return new SeasonalNaiveModel(json.last as number[], json.period as number, (json.label as string | null) ?? undefined);
    default:
      throw new InvalidInputError(`no model called ${JSON.stringify(json.model)}`);
  }
}

/** Random-walk half-widths z·σ·√h for every level: the fallback's intervals (intervals.ts). */
function randomWalkCalibration(values: readonly number[]): Calibration {
  const sigma = randomWalkSigma(values);
  const halfWidths = Object.fromEntries(LEVELS.map((level) => [String(level), Array.from({ length: FORECAST_STEPS }, (_, i) => normalQuantile(0.5 + level / 2) * sigma * Math.sqrt(i + 1))]));
  return { horizon: FORECAST_STEPS, halfWidths };
}

/** Trains one series (see the module comment). Throws only when the series cannot be forecast at all. */
export async function trainSeries(catalog: Queryable, id: string, options: TrainingOptions): Promise<StoredModel> {
  const trainingDays = options.trainingDays ?? 30;
  const series = await loadClean(catalog, id, new Date(options.asOf.getTime() - trainingDays * dayMs()), options.asOf);
  const initialParams = options.initialParams ?? (options.searchSeconds ? previousParams(await latestUsableModel(catalog, id)) : undefined);
  return trainCleanSeries(id, series, { ...options, initialParams });
}

/** The hyperparameters a stored model's searches chose, by model: the next search starts from them. */
export function previousParams(stored: StoredModel | undefined): Record<string, Hyperparameters[]> {
  const models = (stored?.scores?.models ?? {}) as Record<string, { tuning?: { params?: unknown } }>;
  return Object.fromEntries(
    Object.entries(models).flatMap(([model, r]) => {
      const params = r?.tuning?.params;
      return params && typeof params === 'object' && !Array.isArray(params) ? [[model, [params as Hyperparameters]]] : [];
    }),
  );
}

/** `trainSeries` once the series is loaded and cleaned: everything but the catalog read (benches call it with in-memory series). */
export async function trainCleanSeries(id: string, series: CleanSeries, options: TrainingOptions): Promise<StoredModel> {
  const trainingDays = options.trainingDays ?? 30;
  const budgetSeconds = options.budgetSeconds ?? 2;
  const base = { series: id, trainedAt: options.asOf, seriesStart: new Date(series.start), stepSeconds: series.stepSeconds };
  const ctx = { ...seasonLengths(series.stepSeconds, series.values.length), seed: 1 };

  if (series.values.length * series.stepSeconds * 1000 < MIN_HISTORY_DAYS * dayMs()) {
    const naive = seasonalNaiveFactory.fit(series.values, ctx) as FittedModel;
    return {
      ...base,
      status: 'fallback',
      members: [{ model: naive.model, weight: 1, json: naive.toJSON() }],
      calibration: randomWalkCalibration(series.values),
      scores: { points: series.values.length, reason: `less than ${MIN_HISTORY_DAYS} days of history`, notes: series.notes },
    };
  }

  const models = options.models ?? DEFAULT_MODELS;
  const report = await backtest(series, {
    horizon: HORIZON,
    reach: FORECAST_STEPS,
    models,
    budgetSeconds: budgetSeconds / 2,
    trainingDays,
    evaluationDays: options.evaluationDays ?? 2,
    searchSeconds: options.searchSeconds,
    initialParams: options.initialParams,
  });
  const next = report.next[ENSEMBLE]!;
  const halfWidths = Object.fromEntries(next.intervals.map((iv) => [String(iv.level), iv.upper.map((u, i) => u - next.point[i]!)]));

  // The final members, on the whole window; one that fails here is left out and the others reweighed.
  const members: StoredMember[] = [];
  const notes: string[] = [];
  for (const factory of [seasonalNaiveFactory, ...models]) {
    // The weights the ensemble has at the end of the back-test: what its intervals were calibrated for.
    const weight = report.ensemble.finalWeights[factory.model] ?? 0;
    if (!(weight > 0)) continue;
    try {
      const params = report.models[factory.model]?.tuning?.params;
      const fitted = await factory.fit(series.values, { ...ctx, budgetMs: (budgetSeconds / 2) * 1000, ...(params ? { params } : {}) });
      if (!fitted.forecast(FORECAST_STEPS).every(Number.isFinite)) throw new Error('forecasts a non-finite value');
      members.push({ model: factory.model, weight, json: fitted.toJSON() });
    } catch (err) {
      notes.push(`${factory.model}: final fit failed, left out: ${errorMessage(err)}`);
    }
  }
  if (members.length === 0) {
    const naive = seasonalNaiveFactory.fit(series.values, ctx) as FittedModel;
    members.push({ model: BASELINE, weight: 1, json: naive.toJSON() });
  }
  const total = members.reduce((s, m) => s + m.weight, 0);
  for (const m of members) m.weight = m.weight / total;

  return {
    ...base,
    status: 'trained',
    members,
    calibration: { horizon: FORECAST_STEPS, halfWidths },
    scores: {
      points: report.points,
      origins: report.origins,
      from: report.from,
      to: report.to,
      models: Object.fromEntries(
        Object.entries(report.models).map(([m, r]) => [
          m,
          { mase: r.mase, smape: r.smape, coverage80: r.coverage80, coverage95: r.coverage95, trainSeconds: r.trainSeconds, description: r.description, fallbacks: r.fallbacks.length, ...(r.tuning ? { tuning: r.tuning } : {}) },
        ]),
      ),
      ensemble: report.ensemble,
      notes: [...report.notes, ...notes],
    },
  };
}

/** The next hour of the series from its newest usable model (see the module comment). */
export async function forecastSeries(catalog: Queryable, id: string, issuedAt: Date): Promise<ForecastRow[]> {
  const stored = await latestUsableModel(catalog, id);
  if (!stored || !stored.seriesStart || !stored.calibration) throw new InvalidInputError(`series ${id} has no usable model: retrain first`);
  const series = await loadClean(catalog, id, stored.seriesStart, issuedAt);
  return forecastCleanSeries(id, stored, series, issuedAt);
}

/** `forecastSeries` once the model and the series are loaded: everything but the catalog reads (benches call it with in-memory ones). */
export function forecastCleanSeries(id: string, stored: StoredModel, series: CleanSeries, issuedAt: Date): ForecastRow[] {
  if (!stored.seriesStart || !stored.calibration) throw new InvalidInputError(`series ${id} has no usable model: retrain first`);
  if (series.start !== stored.seriesStart.getTime()) {
    throw new InvalidInputError(`series ${id}: the data its model was trained from (since ${stored.seriesStart.toISOString()}) is no longer all there: retrain`);
  }
  const forecasts = new Map<string, number[]>();
  const weights = new Map<string, number>();
  for (const m of stored.members) {
    // As many steps as the model's intervals were calibrated for (models stored before two-hour forecasts: one hour).
    forecasts.set(m.model, restoreMember(m.json).update(series.values).forecast(stored.calibration.horizon));
    weights.set(m.model, m.weight);
  }
  const point = combine(forecasts, weights);
  const width = (level: number, i: number) => stored.calibration!.halfWidths[String(level)]?.[i] ?? NaN;
  const model = stored.members.length === 1 ? stored.members[0]!.model : `${ENSEMBLE}(${stored.members.map((m) => m.model).join(',')})`;
  const end = series.start + (series.values.length - 1) * series.stepSeconds * 1000;
  // The forecast and its intervals stay within what the series can be (no negative rate, no CPU over 100%).
  const { min, max } = seriesDomain(id);
  const within = (v: number) => Math.min(max, Math.max(min, v));
  return point.map((yhat, i) => {
    const [w80, w95] = [width(0.8, i), width(0.95, i)];
    if (!Number.isFinite(yhat) || !Number.isFinite(w80) || !Number.isFinite(w95)) throw new InvalidInputError(`series ${id}: step ${i + 1} of the forecast is not finite`);
    return {
      series: id,
      issuedAt,
      step: i + 1,
      ts: new Date(end + (i + 1) * series.stepSeconds * 1000),
      yhat: within(yhat),
      lo80: within(yhat - w80),
      hi80: within(yhat + w80),
      lo95: within(yhat - w95),
      hi95: within(yhat + w95),
      model,
    };
  });
}
