import { InvalidArgumentError, type Command } from 'commander';
import { backtest, backtestSummary, type BacktestReport } from '../src/forecasting/backtest.js';
import { cleanSeries, readSeriesCsv } from '../src/forecasting/series.js';
import { printTable } from './format.js';

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

function positiveNumber(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive number');
  return n;
}

/** `shardcast forecast …`: the forecasting engine on files, without the fleet. */
export function registerForecastCommands(program: Command): void {
  const forecast = program.command('forecast').description('forecast load series and evaluate the models');
  forecast
    .command('backtest')
    .description('rolling-origin back-test of every model, the seasonal naive baseline and the ensemble on a timestamp,value CSV; the last line is JSON')
    .requiredOption('--csv <file>', 'CSV with the header timestamp,value (ISO-8601 UTC, any step from 1 minute to 1 hour)')
    .option('--horizon <steps>', 'steps ahead (default: one hour of steps)', positiveInt)
    .option('--budget <seconds>', 'fitting budget of each model over the whole back-test', positiveNumber, 30)
    .option('--json', 'print only the JSON summary')
    .action(async (opts: { csv: string; horizon?: number; budget: number; json?: boolean }) => {
      const { name, rows } = await readSeriesCsv(opts.csv);
      const series = cleanSeries(rows, name);
      const report = await backtest(series, {
        horizon: opts.horizon,
        budgetSeconds: opts.budget,
        log: opts.json ? undefined : (line) => console.error(line),
      });
      if (!opts.json) printReport(report);
      console.log(JSON.stringify(backtestSummary(report)));
    });
}

/** The human-readable part of the back-test output. */
export function printReport(report: BacktestReport): void {
  console.log(`${report.series}: ${report.points} points of ${report.stepSeconds} s, horizon ${report.horizon} steps`);
  console.log(`${report.origins} origins from ${report.from} to ${report.to}, ${report.scored} values scored per model`);
  for (const note of report.notes) console.log(`cleaning: ${note}`);
  const rows = [
    ...Object.entries(report.models).map(([model, r]) => ({ model, ...r, fitted: r.description })),
    { model: `ensemble (${report.ensemble.scheme})`, ...report.ensemble, trainSeconds: undefined, fitted: Object.entries(report.ensemble.meanWeights).map(([m, w]) => `${m} ${w}`).join(', ') },
  ];
  printTable('models', rows, ['model', 'mase', 'smape', 'coverage80', 'coverage95', 'trainSeconds', 'fitted']);
  for (const [model, r] of Object.entries(report.models)) {
    for (const fallback of r.fallbacks) console.log(`fallback: ${model}: ${fallback}`);
  }
}
