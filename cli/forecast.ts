/**
 * `shardcast retrain`, `forecast run|show|list|backtest`. The forecasting engine (TensorFlow.js), the
 * catalog and the Temporal client load inside the commands that use them.
 */
import { stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import type { ForecastingRun } from '../client/index.js';
import type { Config } from '../src/config.js';
import { InvalidInputError } from '../src/errors.js';
import type { BacktestReport } from '../src/forecasting/backtest.js';
import type { ForecastingSummary } from '../src/forecasting/runs.js';
import type { Tuning } from '../src/forecasting/types.js';
import { budgetSeconds, searchSeconds, wholeNumber } from './args.js';
import { svgChart, terminalChart } from './chart.js';
import { printTable } from './format.js';
import { configOf, withCatalog, withTemporal } from './program-config.js';
import { svgToPng } from './png.js';

/** One line for a hyperparameter search: how it went and what it chose. */
export function describeTuning(t: Tuning): string {
  const chosen = Object.entries(t.params)
    .map(([k, v]) => `${k} ${typeof v === 'number' && !Number.isInteger(v) ? v.toPrecision(3) : v}`)
    .join(', ');
  return `${t.method}, ${t.trials} trials in ${t.seconds.toFixed(1)} s${t.failedTrials > 0 ? ` (${t.failedTrials} failed)` : ''}: ${t.objective} ${t.score.toPrecision(3)} (defaults ${t.defaultScore.toPrecision(3)}); ${chosen}`;
}

/** Triggers retraining or forecasting (see runForecastingNow); with `wait`, prints the run's summary. */
async function runNow(program: Command, run: ForecastingRun, wait: boolean): Promise<void> {
  const cfg = await configOf(program);
  const [{ clientOptionsFromConfig, runForecastingNow, toShardcastError }, { describeSummary }] = await Promise.all([import('../client/index.js'), import('../src/forecasting/runs.js')]);
  await withTemporal(cfg, async (client) => {
    const { handle, via } = await runForecastingNow(clientOptionsFromConfig(client, cfg), cfg, run);
    console.log(via === 'running' ? `already running: ${handle.workflowId}` : `started ${handle.workflowId}${via === 'schedule' ? ' (schedule triggered)' : ''}`);
    if (!wait) return;
    const summary = (await handle.result().catch((err: unknown) => Promise.reject(toShardcastError(err)))) as ForecastingSummary;
    console.log(describeSummary(summary));
    for (const f of summary.failures) console.log(`failed: ${f.series}: ${f.error}`);
  });
}

/** Fails before any work when `file` could not be written because its directory is not there. */
export async function assertDirectoryOf(file: string, option: string): Promise<void> {
  const dir = path.dirname(path.resolve(file));
  const isDirectory = await stat(dir).then((s) => s.isDirectory(), () => false);
  if (!isDirectory) throw new InvalidInputError(`${option} ${file}: cannot write there: no such directory ${dir}`);
}

/** `shardcast retrain`, and `shardcast forecast …`: runs on the fleet, and the engine on files. */
export function registerForecastCommands(program: Command): void {
  program
    .command('retrain')
    .description('retrain the forecasting models of every series now (triggers the schedule shardcast-retrain-daily)')
    .option('--wait', 'wait for the run and print its summary')
    .action(async (opts: { wait?: boolean }) => runNow(program, 'retrain', opts.wait ?? false));

  const forecast = program.command('forecast').description('forecast load series and evaluate the models');
  forecast
    .command('run')
    .description('forecast the next hour of every series now (triggers the schedule shardcast-forecast-hourly)')
    .option('--wait', 'wait for the run and print its summary')
    .action(async (opts: { wait?: boolean }) => runNow(program, 'forecast', opts.wait ?? false));

  forecast
    .command('show')
    .description('recent history and the latest forecast of a series with its 80% and 95% intervals, as a chart')
    .argument('<series>', 'e.g. table:orders:inserts, shard:3:load, node:node-1:cpu')
    .option('--hours <n>', 'hours of history, 1 to 720', wholeNumber(1, 720, 'hours'), 6)
    .option('--svg <file>', 'also write the chart as an SVG picture')
    .option('--png <file>', 'also write the chart as a PNG picture (800×360)')
    .option('--json', 'print history and forecast as JSON instead')
    .action(async (series: string, opts: { hours: number; svg?: string; png?: string; json?: boolean }) => {
      if (opts.svg) await assertDirectoryOf(opts.svg, '--svg');
      if (opts.png) await assertDirectoryOf(opts.png, '--png');
      const cfg = await configOf(program);
      const [{ hasModel, latestForecast }, { dayMs, hourMs, stepStart }, { assertKnownSeries, loadSeries }] = await Promise.all([
        import('../src/forecasting/store.js'),
        import('../src/clock.js'),
        import('../src/profiling/series.js'),
      ]);
      const data = await withCatalog(cfg, async (pool) => {
        await assertKnownSeries(pool, series, new Date(Date.now() - cfg.forecast.trainingDays * dayMs()), (id) => hasModel(pool, id));
        const to = new Date(stepStart(Date.now()));
        const history = await loadSeries(pool, series, new Date(to.getTime() - opts.hours * hourMs()), to);
        const rows = await latestForecast(pool, series);
        const issued = rows[0] ? `forecast issued ${rows[0].issuedAt.toISOString()} by ${rows[0].model}` : 'no forecast yet';
        return { title: `${series}: ${issued}`, history, forecast: rows };
      });
      if (opts.json) console.log(JSON.stringify(data, null, 2));
      else console.log(terminalChart(data));
      const svg = svgChart(data);
      // Drawn before anything is written: a missing renderer leaves no half of the output behind.
      const picture = opts.png ? await svgToPng(svg) : undefined;
      if (opts.svg) {
        await writeFile(opts.svg, svg);
        console.log(`wrote ${opts.svg}`);
      }
      if (opts.png && picture) {
        await writeFile(opts.png, picture.png);
        console.log(`wrote ${opts.png}`);
        if (!picture.textDrawn) console.error(`warning: ${opts.png}: no font found, so the title, axis labels and legend could not be drawn (install one, e.g. fonts-dejavu-core)`);
      }
    });
  forecast
    .command('list')
    .description('the series there are (sampled in the training window, or with a model), each with its newest model and back-test score')
    .option('--json', 'print JSON instead of a table')
    .action(async (opts: { json?: boolean }) => {
      const cfg = await configOf(program);
      const [{ listSeriesWithModels }, { listSeries }] = await Promise.all([import('../src/forecasting/store.js'), import('../src/profiling/series.js')]);
      const listing = await withCatalog(cfg, async (pool) =>
        listSeriesWithModels(pool, await listSeries(pool, new Date(Date.now() - cfg.forecast.trainingDays * 86_400_000))),
      );
      if (opts.json) {
        console.log(JSON.stringify(listing, null, 2));
        return;
      }
      printTable(
        'series',
        listing.map((l) => ({
          series: l.series,
          status: l.status ?? 'not trained',
          model: l.model ?? '',
          trained: l.trainedAt ? l.trainedAt.toISOString().slice(0, 16).replace('T', ' ') : '',
          mase: l.mase ?? '',
          'naive mase': l.baselineMase ?? '',
          error: l.error ?? '',
        })),
        ['series', 'status', 'model', 'trained', 'mase', 'naive mase', 'error'],
      );
    });
  forecast
    .command('backtest')
    .description('rolling-origin back-test of every model, the seasonal naive baseline and the ensemble on a timestamp,value CSV; the last line is JSON')
    .requiredOption('--csv <file>', 'CSV with the header timestamp,value (ISO-8601 UTC, any step from 1 minute to 1 hour)')
    .option('--horizon <steps>', 'steps ahead, 1 to 1440 (default: one hour of steps)', wholeNumber(1, 1440, 'steps'))
    .option('--budget <seconds>', 'fitting budget of each model over the whole back-test, above 0 up to 600 (default: forecast.budgetSeconds, as in production: 1.2)', budgetSeconds)
    .option('--search <seconds>', 'hyperparameter search (TPE) per model that has one, before the first fit, 0 to 600; 0 for the defaults (default: forecast.searchSeconds, 1.5)', searchSeconds)
    .option('--json', 'print only the JSON summary')
    .action(async (opts: { csv: string; horizon?: number; budget?: number; search?: number; json?: boolean }) => {
      const [{ cleanSeries, readSeriesCsv }, { backtest, backtestSummary }] = await Promise.all([import('../src/forecasting/series.js'), import('../src/forecasting/backtest.js')]);
      const { name, rows } = await readSeriesCsv(opts.csv);
      const series = cleanSeries(rows, name);
      const budgets = backtestBudgets(opts, await configOf(program));
      if (!opts.json) console.error(`budgets: ${budgets.budgetSeconds} s per model, ${budgets.searchSeconds} s of search`);
      const report = await backtest(series, {
        horizon: opts.horizon,
        ...budgets,
        log: opts.json ? undefined : (line) => console.error(line),
      });
      if (!opts.json) printReport(report);
      console.log(JSON.stringify(backtestSummary(report)));
    });
}

/** The back-test's budgets: production's (`forecast.budgetSeconds`, `forecast.searchSeconds` of the configuration) unless the options give others. */
export function backtestBudgets(opts: { budget?: number; search?: number }, cfg: Pick<Config, 'forecast'>): { budgetSeconds: number; searchSeconds: number } {
  return { budgetSeconds: opts.budget ?? cfg.forecast.budgetSeconds, searchSeconds: opts.search ?? cfg.forecast.searchSeconds };
}

/** The human-readable part of the back-test output. */
export function printReport(report: BacktestReport): void {
  console.log(`${report.series}: ${report.points} points of ${report.stepSeconds} s, horizon ${report.horizon} steps`);
  console.log(`${report.origins} origins from ${report.from} to ${report.to}, ${report.scored} values scored per model`);
  for (const note of report.notes) console.log(`note: ${note}`);
  const rows = [
    ...Object.entries(report.models).map(([model, r]) => ({ model, ...r, fitted: r.description })),
    { model: `ensemble (${report.ensemble.scheme})`, ...report.ensemble, trainSeconds: undefined, fitted: `mean weights ${Object.entries(report.ensemble.meanWeights).map(([m, w]) => `${m} ${w}`).join(', ')}; at the end ${Object.entries(report.ensemble.finalWeights).map(([m, w]) => `${m} ${w}`).join(', ')}` },
  ];
  printTable('models', rows, ['model', 'mase', 'smape', 'coverage80', 'coverage95', 'trainSeconds', 'fitted']);
  for (const [model, r] of Object.entries(report.models)) {
    for (const fallback of r.fallbacks) console.log(`fallback: ${model}: ${fallback}`);
    if (r.tuning) console.log(`tuning: ${model}: ${describeTuning(r.tuning)}`);
  }
}
