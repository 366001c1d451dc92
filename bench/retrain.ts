import { readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { printTable } from '../cli/format.js';
import { parseConfig } from '../src/config.js';
import { DEFAULT_MODELS } from '../src/forecasting/backtest.js';
import { cleanSeries, readSeriesCsv, type Observation } from '../src/forecasting/series.js';
import type { StoredModel } from '../src/forecasting/store.js';
import { uniforms } from '../src/forecasting/random.js';
import { initBackend } from '../src/forecasting/tf-backend.js';
import { forecastCleanSeries, HORIZON, trainCleanSeries } from '../src/forecasting/training.js';
import type { FitContext, FittedModel, ModelFactory } from '../src/forecasting/types.js';
import { round } from './fleet.js';

/**
 * The daily retrain and the hourly forecast of a fleet's series, timed the way one worker runs
 * them (activities/forecasting.ts: one series after the other, in one process):
 *
 * - Series: `--series` synthetic series of 30 days at 5 minutes (8640 points), each built from one
 *   trace of ../shared/data/traces (round robin), from its own start position (offset) and times
 *   its own scale (log-uniform in [e^-1.5, e^1.5]), seeded so that runs are comparable. Traces are
 *   cleaned (series.ts) and brought to 5 minutes first: the 1-minute trace by the mean of each
 *   5 minutes, the 30-minute trace (passengers per 30 min) by linear interpolation, divided by 6.
 * - Tiling: a trace too short for its offset plus 30 days and 10 hours is looped over a whole
 *   number of weeks of it (whole days when it is shorter than a week), so the daily and weekly
 *   cycles run on across a seam. A seam would still jump by the difference between the trace's end
 *   and start level: each copy after the first gets the difference between the means of the
 *   trace's last and first hour added, fading linearly to zero over the copy's first day, so the
 *   level is continuous and the original values come back after one day. A trace that never goes
 *   below zero is kept at or above zero.
 * - Retrain: per series, the in-memory part of production's `trainSeries`: `cleanSeries` of the 8640
 *   buckets before `asOf`, then `trainCleanSeries` (training.ts; trainSeries calls it after the
 *   catalog read) with the configuration's default `forecast.trainingDays` and
 *   `forecast.budgetSeconds` (or `--budget`) and `forecast.searchSeconds` (or `--search`; a search's time counts as its model's fit time). The catalog reads and `storeModel` are not timed; the
 *   models are kept as the JSON text the catalog would store.
 * - Forecast: `--forecast-series` forecasts, as the hourly runs after the retrain make them: every
 *   model forecasts its series at the next hourly issues (1 h, 2 h, … after `asOf`, 10 issues for
 *   the defaults), each the in-memory part of `forecastSeries`: parse the stored model's JSON,
 *   `cleanSeries` of the series since the model's start (8640 + 12·k buckets), restore every
 *   member, extend it with `update`, forecast 12 steps with intervals (`forecastCleanSeries`).
 * - Time per model family: the default models are wrapped (same name, same fits, same JSON) to
 *   time their `fit` calls, and the `update` and `forecast` calls of what they fitted, over the
 *   back-test and the final fit; the rest (seasonal naive, calibration, ensemble) is "other".
 */
export async function run(args: string[]): Promise<void> {
  const config = parseConfig({});
  const { values } = parseArgs({
    args,
    options: {
      traces: { type: 'string', default: resolve(import.meta.dirname, '../../shared/data/traces') },
      series: { type: 'string', default: '100' },
      'forecast-series': { type: 'string', default: '1000' },
      budget: { type: 'string', default: String(config.forecast.budgetSeconds) },
      search: { type: 'string', default: String(config.forecast.searchSeconds) },
      seed: { type: 'string', default: '1' },
    },
  });
  const seriesCount = positiveInt(values.series, '--series');
  const forecastCount = positiveInt(values['forecast-series'], '--forecast-series');
  const budgetSeconds = Number(values.budget);
  if (!(budgetSeconds > 0)) throw new Error(`--budget must be positive, got ${values.budget}`);
  const searchSeconds = Number(values.search);
  if (!(searchSeconds >= 0)) throw new Error(`--search must be 0 or more seconds, got ${values.search}`);
  const trainingDays = config.forecast.trainingDays;
  const trainingPoints = trainingDays * DAY_STEPS;
  const issues = Math.ceil(forecastCount / seriesCount);
  const backend = await initBackend(config.forecast.backend);

  const traces = await loadTraces(values.traces);
  const random = uniforms(Number(values.seed));
  const series = buildSeries(traces, seriesCount, trainingPoints + issues * HOUR_STEPS, random);
  console.log(
    `${seriesCount} series of ${trainingDays} days at 5 min from ${traces.length} traces; budget ${budgetSeconds} s per model, search ${searchSeconds} s; backend ${backend}; ` +
      `${forecastCount} forecasts (${issues} hourly issue(s) per model)`,
  );

  // Retrain, one series after the other.
  const timing = new Map<string, FamilyTime>(DEFAULT_MODELS.map((f) => [f.model, { fit: 0, apply: 0 }]));
  const models = DEFAULT_MODELS.map((f) => timed(f, timing.get(f.model)!));
  const asOf = new Date(AS_OF);
  const start = AS_OF - trainingPoints * STEP_MS;
  const stored: string[] = [];
  const perSeries: number[] = [];
  const memberCount = new Map<string, number>();
  const statusCount = new Map<string, number>();
  const retrainStarted = performance.now();
  for (const s of series) {
    const t0 = performance.now();
    const clean = cleanSeries(rowsOf(s.values, start, trainingPoints), s.id);
    const model = await trainCleanSeries(s.id, clean, { asOf, trainingDays, budgetSeconds, searchSeconds, models });
    perSeries.push((performance.now() - t0) / 1000);
    stored.push(JSON.stringify(model));
    statusCount.set(model.status, (statusCount.get(model.status) ?? 0) + 1);
    for (const m of model.members) memberCount.set(m.model, (memberCount.get(m.model) ?? 0) + 1);
  }
  const retrainSeconds = (performance.now() - retrainStarted) / 1000;

  // Forecast: the hourly issues after the retrain, every model at each.
  let forecasts = 0;
  let forecastFailures = 0;
  const forecastStarted = performance.now();
  for (let k = 1; k <= issues && forecasts < forecastCount; k++) {
    const issuedAt = new Date(AS_OF + k * HOUR_STEPS * STEP_MS + 2 * 60_000);
    for (let i = 0; i < series.length && forecasts < forecastCount; i++) {
      const s = series[i]!;
      const model = parseStored(stored[i]!);
      const clean = cleanSeries(rowsOf(s.values, start, trainingPoints + k * HOUR_STEPS), s.id);
      const rows = forecastCleanSeries(s.id, model, clean, issuedAt);
      if (rows.length !== HORIZON) forecastFailures++;
      forecasts++;
    }
  }
  const forecastSeconds = (performance.now() - forecastStarted) / 1000;

  const fitted = DEFAULT_MODELS.map((f) => f.model);
  const other = perSeries.reduce((a, b) => a + b, 0) - [...timing.values()].reduce((a, t) => a + t.fit + t.apply, 0);
  printTable(
    'model families',
    [
      { family: 'seasonal_naive', member: memberCount.get('seasonal_naive') ?? 0, mean_train_s: '(in other)', mean_fit_s: '', mean_update_forecast_s: '' },
      ...fitted.map((m) => {
        const t = timing.get(m)!;
        return {
          family: m,
          member: memberCount.get(m) ?? 0,
          mean_train_s: round((t.fit + t.apply) / seriesCount, 3),
          mean_fit_s: round(t.fit / seriesCount, 3),
          mean_update_forecast_s: round(t.apply / seriesCount, 3),
        };
      }),
      { family: '(other: naive, calibration, ensemble)', member: NaN, mean_train_s: round(other / seriesCount, 3), mean_fit_s: '', mean_update_forecast_s: '' },
    ].map((r) => ({ ...r, member: Number.isNaN(r.member) ? '' : `${r.member}/${seriesCount}` })) as Array<Record<string, unknown>>,
    ['family', 'member', 'mean_train_s', 'mean_fit_s', 'mean_update_forecast_s'],
  );
  const sorted = [...perSeries].sort((a, b) => a - b);
  console.log(
    `\nper series: mean ${round(retrainSeconds / seriesCount, 2)} s, median ${round(sorted[sorted.length >> 1]!, 2)} s, max ${round(sorted[sorted.length - 1]!, 2)} s; ` +
      `status ${[...statusCount].map(([k, v]) => `${k} ${v}`).join(', ')}`,
  );
  const retrainGoal = RETRAIN_GOAL_SECONDS * (seriesCount / 100);
  const forecastGoal = FORECAST_GOAL_SECONDS * (forecastCount / 1000);
  console.log(`retrain: ${round(retrainSeconds)} s for ${seriesCount} series (goal ≤ ${round(retrainGoal)} s): ${retrainSeconds <= retrainGoal ? 'met' : 'MISSED'}`);
  console.log(
    `forecast: ${round(forecastSeconds)} s for ${forecasts} series (goal ≤ ${round(forecastGoal)} s): ${forecastSeconds <= forecastGoal ? 'met' : 'MISSED'}` +
      (forecastFailures > 0 ? `; ${forecastFailures} without ${HORIZON} steps` : ''),
  );
  console.log(JSON.stringify({ bench: 'retrain', series: seriesCount, seconds: round(retrainSeconds), forecast_1000_series_seconds: round(forecastSeconds) }));
}

const STEP_MS = 300_000;
const DAY_STEPS = 288;
const WEEK_STEPS = 7 * DAY_STEPS;
const HOUR_STEPS = 12;
/** The run's time: a Monday, at the default `retrainAt`. */
const AS_OF = Date.UTC(2025, 0, 6, 3, 0);
/** The issue's goals, for 100 series and 1000 forecasts (scaled to other counts). */
const RETRAIN_GOAL_SECONDS = 600;
const FORECAST_GOAL_SECONDS = 30;

interface FamilyTime {
  fit: number;
  apply: number;
}

interface Trace {
  name: string;
  /** 5-minute values, gap-free. */
  values: number[];
}

interface SyntheticSeries {
  id: string;
  values: number[];
}

function positiveInt(text: string, name: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got ${text}`);
  return n;
}

/** Every trace, cleaned and brought to 5 minutes (see the module comment). */
async function loadTraces(dir: string): Promise<Trace[]> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.csv')).sort();
  if (files.length === 0) throw new Error(`no .csv traces in ${dir}`);
  const traces: Trace[] = [];
  for (const file of files) {
    const { name, rows } = await readSeriesCsv(join(dir, file));
    const clean = cleanSeries(rows, name);
    traces.push({ name, values: toFiveMinutes(clean.values, clean.stepSeconds, name) });
  }
  return traces;
}

function toFiveMinutes(values: number[], stepSeconds: number, name: string): number[] {
  if (stepSeconds === 300) return values;
  if (stepSeconds < 300 && 300 % stepSeconds === 0) {
    const k = 300 / stepSeconds;
    const out: number[] = [];
    for (let i = 0; i + k <= values.length; i += k) out.push(values.slice(i, i + k).reduce((a, b) => a + b, 0) / k);
    return out;
  }
  if (stepSeconds > 300 && stepSeconds % 300 === 0) {
    const k = stepSeconds / 300;
    const out: number[] = [];
    for (let i = 0; i + 1 < values.length; i++) for (let j = 0; j < k; j++) out.push((values[i]! + ((values[i + 1]! - values[i]!) * j) / k) / k);
    out.push(values[values.length - 1]! / k);
    return out;
  }
  throw new Error(`${name}: a step of ${stepSeconds} s does not resample to 5 minutes`);
}

/** `count` series of `length` points, round robin over the traces, each with its own offset and scale. */
function buildSeries(traces: Trace[], count: number, length: number, random: () => number): SyntheticSeries[] {
  const used = new Map<string, Set<number>>(traces.map((t) => [t.name, new Set()]));
  const out: SyntheticSeries[] = [];
  for (let i = 0; i < count; i++) {
    const trace = traces[i % traces.length]!;
    const offsets = used.get(trace.name)!;
    let offset: number;
    do offset = Math.floor(random() * trace.values.length);
    while (offsets.has(offset));
    offsets.add(offset);
    const scale = Math.exp(3 * random() - 1.5);
    const values = tiled(trace.values, offset, length).map((v) => v * scale);
    out.push({ id: `bench:${trace.name.replace(/\.csv$/, '')}@${offset}x${scale.toFixed(3)}:load`, values });
  }
  return out;
}

/** `length` points of the trace from `offset`, looped with level-continuous seams (see the module comment). */
function tiled(values: number[], offset: number, length: number): number[] {
  const n = values.length;
  if (offset + length <= n) return values.slice(offset, offset + length);
  const period = n >= WEEK_STEPS ? Math.floor(n / WEEK_STEPS) * WEEK_STEPS : Math.max(DAY_STEPS, Math.floor(n / DAY_STEPS) * DAY_STEPS);
  if (period > n) throw new Error(`a trace of ${n} points is shorter than one day`);
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const shift = mean(values.slice(period - HOUR_STEPS, period)) - mean(values.slice(0, HOUR_STEPS));
  const floor = Math.min(...values) >= 0 ? 0 : -Infinity;
  const out: number[] = [];
  for (let p = offset; p < offset + length; p++) {
    const copy = Math.floor(p / period);
    const k = p % period;
    const fade = copy > 0 && k < DAY_STEPS ? shift * (1 - k / DAY_STEPS) : 0;
    out.push(Math.max(floor, values[k]! + fade));
  }
  return out;
}

/** The first `count` values as the 5-minute buckets from `start`, as the catalog read gives them. */
function rowsOf(values: number[], start: number, count: number): Observation[] {
  return values.slice(0, count).map((value, i) => ({ time: start + i * STEP_MS, value }));
}

/** A stored model as the catalog read gives it back (dates as Date). */
function parseStored(text: string): StoredModel {
  const m = JSON.parse(text) as StoredModel & { trainedAt: string; seriesStart?: string };
  return { ...m, trainedAt: new Date(m.trainedAt), ...(m.seriesStart ? { seriesStart: new Date(m.seriesStart) } : {}) };
}

/** The factory under the same name, timing its fits and the update and forecast calls of what it fits. */
function timed(factory: ModelFactory, time: FamilyTime): ModelFactory {
  const wrap = (inner: FittedModel): FittedModel => ({
    get model() {
      return inner.model;
    },
    get description() {
      return inner.description;
    },
    forecast(horizon: number) {
      const t0 = performance.now();
      try {
        return inner.forecast(horizon);
      } finally {
        time.apply += (performance.now() - t0) / 1000;
      }
    },
    update(y: readonly number[]) {
      const t0 = performance.now();
      try {
        return wrap(inner.update(y));
      } finally {
        time.apply += (performance.now() - t0) / 1000;
      }
    },
    toJSON: () => inner.toJSON(),
  });
  return {
    model: factory.model,
    async fit(y: readonly number[], ctx: FitContext) {
      const t0 = performance.now();
      try {
        return wrap(await factory.fit(y, ctx));
      } finally {
        time.fit += (performance.now() - t0) / 1000;
      }
    },
    ...(factory.tune
      ? {
          async tune(y: readonly number[], ctx: FitContext & { budgetMs: number }, options?: Parameters<NonNullable<ModelFactory['tune']>>[2]) {
            const t0 = performance.now();
            try {
              return await factory.tune!(y, ctx, options);
            } finally {
              time.fit += (performance.now() - t0) / 1000;
            }
          },
        }
      : {}),
  };
}
