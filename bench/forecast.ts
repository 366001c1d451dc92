import { readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { printTable } from '../cli/format.js';
import { parseConfig } from '../src/config.js';
import { BASELINE, backtest, type BacktestReport, type ModelScore } from '../src/forecasting/backtest.js';
import { WEIGHT_SCHEMES } from '../src/forecasting/ensemble.js';
import { lstmFactory } from '../src/forecasting/lstm.js';
import { cleanSeries, readSeriesCsv } from '../src/forecasting/series.js';
import { compareWithReference, readReference, REFERENCE_FIXTURE } from './statsforecast.js';

/**
 * The forecast back-test (`shardcast forecast backtest`) on every trace in ../shared/data/traces:
 * the ensemble's MASE against the seasonal naive's, per trace and as a geometric mean, and the
 * empirical coverage of its 80% and 95% intervals. The other weighting schemes of the ensemble are
 * scored in the same run, for choosing the default.
 *
 * Budgets are production's by default: `forecast.budgetSeconds` per model for the back-test and
 * `forecast.searchSeconds` of hyperparameter search (config defaults; `--budget`, `--search`
 * override them). Beside the ensemble it prints statsforecast's models on the same protocol, from
 * the committed fixture (bench/statsforecast.ts; `--reference none` leaves them out).
 *
 * The LSTM's hyperparameter search (TPE, `--search` seconds per trace) is measured against the
 * LSTM with its defaults in the same run: a second back-test of the LSTM alone whose fits get the
 * search's seconds on top of their own budget, so that both spend the same time.
 */
/** The bench's options: production budgets unless `--budget`, `--search` say otherwise. */
export function benchOptions(args: string[]) {
  const production = parseConfig({}).forecast;
  const { values } = parseArgs({
    args,
    options: {
      traces: { type: 'string', default: resolve(import.meta.dirname, '../../shared/data/traces') },
      budget: { type: 'string', default: String(production.budgetSeconds) },
      search: { type: 'string', default: String(production.searchSeconds) },
      'compare-search': { type: 'boolean', default: true },
      horizon: { type: 'string' },
      reference: { type: 'string', default: REFERENCE_FIXTURE },
    },
  });
  const budgetSeconds = Number(values.budget);
  const searchSeconds = Number(values.search);
  if (!(budgetSeconds > 0) || !(searchSeconds >= 0)) throw new Error(`--budget must be positive and --search at least 0, got ${values.budget} and ${values.search}`);
  const atProduction = budgetSeconds === production.budgetSeconds && searchSeconds === production.searchSeconds;
  return { ...values, budgetSeconds, searchSeconds, atProduction };
}

export async function run(args: string[]): Promise<void> {
  const values = benchOptions(args);
  const { budgetSeconds, searchSeconds } = values;
  console.log(`budgets: ${budgetSeconds} s per model, ${searchSeconds} s of search${values.atProduction ? ' (production: forecast.budgetSeconds, forecast.searchSeconds)' : ''}`);
  const files = (await readdir(values.traces)).filter((f) => f.endsWith('.csv')).sort();
  if (files.length === 0) throw new Error(`no .csv traces in ${values.traces}`);
  const reports: BacktestReport[] = [];
  const defaults: { trace: string; tuned: number; plain: number; params?: Record<string, unknown> }[] = [];
  for (const file of files) {
    const started = performance.now();
    const { name, rows } = await readSeriesCsv(join(values.traces, file));
    const series = cleanSeries(rows, name);
    const horizon = values.horizon === undefined ? undefined : Number(values.horizon);
    const report = await backtest(series, { budgetSeconds, searchSeconds, horizon });
    reports.push(report);
    if (values['compare-search'] && searchSeconds > 0) {
      const plain = await backtest(series, { budgetSeconds: budgetSeconds + searchSeconds, searchSeconds: 0, horizon, models: [lstmFactory] });
      defaults.push({ trace: name, tuned: report.models.lstm!.mase, plain: plain.models.lstm!.mase, params: report.models.lstm!.tuning?.params });
    }
    const fallbacks = Object.entries(report.models).flatMap(([m, r]) => r.fallbacks.map((f) => `${m}: ${f}`));
    console.log(`${file}: ${((performance.now() - started) / 1000).toFixed(0)} s${fallbacks.length > 0 ? `; fallbacks: ${fallbacks.join('; ')}` : ''}`);
  }

  // MSTL is a member only where the history holds two weeks.
  const models = [...new Set(reports.flatMap((r) => Object.keys(r.models)))];
  const ratio = (r: BacktestReport, score: ModelScore) => score.mase / r.models[BASELINE]!.mase;
  printTable(
    'traces',
    reports.map((r) => ({
      trace: r.series.replace(/\.csv$/, ''),
      step: r.stepSeconds,
      ...Object.fromEntries(models.map((m) => [m, r.models[m]?.mase])),
      ensemble: r.ensemble.mase,
      ratio: round(ratio(r, r.ensemble)),
      cov80: r.ensemble.coverage80,
      cov95: r.ensemble.coverage95,
    })),
    ['trace', 'step', ...models, 'ensemble', 'ratio', 'cov80', 'cov95'] as never[],
  );
  console.log();
  const summaryOf = (scoreOf: (r: BacktestReport) => ModelScore) => ({
    geomean: round(Math.exp(mean(reports.map((r) => Math.log(ratio(r, scoreOf(r))))))),
    worst: round(Math.max(...reports.map((r) => ratio(r, scoreOf(r))))),
    cov80: round(mean(reports.map((r) => scoreOf(r).coverage80))),
    cov95: round(mean(reports.map((r) => scoreOf(r).coverage95))),
  });
  printTable(
    'weighting schemes (MASE over seasonal naive)',
    WEIGHT_SCHEMES.map((scheme) => ({ scheme: scheme === reports[0]!.ensemble.scheme ? `${scheme} (default)` : scheme, ...summaryOf((r) => r.schemes[scheme]) })),
    ['scheme', 'geomean', 'worst', 'cov80', 'cov95'],
  );
  if (defaults.length > 0) {
    console.log();
    printTable(
      `LSTM MASE: TPE search of ${values.search} s against the defaults with the same seconds`,
      defaults.map((d) => ({ trace: d.trace.replace(/\.csv$/, ''), tuned: d.tuned, defaults: d.plain, ratio: round(d.tuned / d.plain), chosen: JSON.stringify(d.params ?? {}) })),
      ['trace', 'tuned', 'defaults', 'ratio', 'chosen'],
    );
  }
  const reference = values.reference === 'none' ? undefined : await readReference(values.reference);
  const comparison = compareWithReference(reports, reference);
  if (reference) {
    console.log();
    printTable(
      `MASE side by side: the ensemble, the seasonal naive and statsforecast ${reference.versions.statsforecast ?? ''} (${values.reference})`,
      comparison.rows.map((r) => ({
        trace: r.trace,
        ensemble: round(r.ensemble),
        seasonal_naive: round(r.naive),
        ...Object.fromEntries(comparison.models.map((m) => [m, r.reference[m]])),
        'ens/naive': round(r.ensembleOverNaive),
        'ens/best_sf': r.ensembleOverBest === undefined ? undefined : round(r.ensembleOverBest),
        best_sf: r.best?.model,
      })),
      ['trace', 'ensemble', 'seasonal_naive', ...comparison.models, 'ens/naive', 'ens/best_sf', 'best_sf'] as never[],
    );
    for (const why of comparison.skipped) console.log(`no reference: ${why}`);
  }
  const main = summaryOf((r) => r.ensemble);
  console.log(
    JSON.stringify({
      bench: 'forecast',
      traces: reports.length,
      budget_seconds: budgetSeconds,
      search_seconds: searchSeconds,
      ensemble_mase_over_naive_geomean: main.geomean,
      worst_trace_ratio: main.worst,
      coverage80_mean: main.cov80,
      coverage95_mean: main.cov95,
      ...(reference
        ? {
            statsforecast_shared_traces: comparison.shared,
            ensemble_over_best_statsforecast_worst: comparison.ensembleOverBestWorst === undefined ? null : round(comparison.ensembleOverBestWorst),
            ensemble_over_best_statsforecast_worst_trace: comparison.worstTrace ?? null,
          }
        : {}),
      ...(defaults.length > 0 ? { lstm_tuned_over_defaults_mase_geomean: round(Math.exp(mean(defaults.map((d) => Math.log(d.tuned / d.plain))))) } : {}),
    }),
  );
}

function mean(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

function round(x: number): number {
  return Math.round(x * 1e4) / 1e4;
}
