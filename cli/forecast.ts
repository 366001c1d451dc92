import { writeFile } from 'node:fs/promises';
import { InvalidArgumentError, type Command } from 'commander';
import pg from 'pg';
import { clientOptionsFromConfig, connectTemporal, runForecastingNow, toShardcastError, type ForecastingRun } from '../client/index.js';
import { assertMigrated } from '../src/catalog/migrate.js';
import { redactDsn } from '../src/catalog/nodes.js';
import { loadConfig, localUrl, type Config } from '../src/config.js';
import { InvalidInputError, ShardcastError, errorMessage } from '../src/errors.js';
import { backtest, backtestSummary, type BacktestReport } from '../src/forecasting/backtest.js';
import { describeSummary, type ForecastingSummary } from '../src/forecasting/runs.js';
import { cleanSeries, readSeriesCsv } from '../src/forecasting/series.js';
import { latestForecast } from '../src/forecasting/store.js';
import { BUCKET_MS } from '../src/profiling/rates.js';
import { loadSeries } from '../src/profiling/series.js';
import { svgChart, terminalChart } from './chart.js';
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

/** The configuration as the global options of `program` say (the same as cli/main.ts reads it). */
function configOf(program: Command): Config {
  const opts = program.opts<{ config?: string; catalogUrl?: string; temporalAddress?: string }>();
  return loadConfig({ file: opts.config, overrides: { 'catalog.url': opts.catalogUrl, 'temporal.address': opts.temporalAddress } });
}

/** Triggers retraining or forecasting (see runForecastingNow); with `wait`, prints the run's summary. */
async function runNow(program: Command, run: ForecastingRun, wait: boolean): Promise<void> {
  const cfg = configOf(program);
  const client = await connectTemporal(cfg.temporal.address ?? `127.0.0.1:${cfg.temporal.port}`, cfg.temporal.namespace);
  try {
    const { handle, via } = await runForecastingNow(clientOptionsFromConfig(client, cfg), cfg, run);
    console.log(via === 'running' ? `already running: ${handle.workflowId}` : `started ${handle.workflowId}${via === 'schedule' ? ' (schedule triggered)' : ''}`);
    if (!wait) return;
    const summary = (await handle.result().catch((err: unknown) => Promise.reject(toShardcastError(err)))) as ForecastingSummary;
    console.log(describeSummary(summary));
    for (const f of summary.failures) console.log(`failed: ${f.series}: ${f.error}`);
  } finally {
    await client.connection.close();
  }
}

/** Runs `fn` with a pool on the migrated catalog. */
async function withCatalog<T>(cfg: Config, fn: (pool: pg.Pool) => Promise<T>): Promise<T> {
  const url = cfg.catalog.url ?? localUrl(cfg, cfg.catalog.port, cfg.catalog.database);
  const pool = new pg.Pool({ connectionString: url, max: 2, connectionTimeoutMillis: 5000, application_name: 'shardcast-cli' });
  pool.on('error', () => undefined);
  try {
    const client = await pool.connect().catch((err: unknown) => {
      throw new ShardcastError('CATALOG_UNAVAILABLE', `cannot connect to the catalog at ${redactDsn(url)}: ${errorMessage(err)} (is \`shardcast up\` running?)`, { cause: err });
    });
    try {
      await assertMigrated(client);
    } finally {
      client.release();
    }
    return await fn(pool);
  } finally {
    await pool.end();
  }
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
    .option('--hours <n>', 'hours of history', positiveInt, 6)
    .option('--svg <file>', 'also write the chart as an SVG picture')
    .option('--png <file>', 'PNG picture: not available (no renderer shipped); use --svg')
    .option('--json', 'print history and forecast as JSON instead')
    .action(async (series: string, opts: { hours: number; svg?: string; png?: string; json?: boolean }) => {
      if (opts.png) throw new InvalidInputError('--png is not available: Shardcast ships no PNG renderer; use --svg FILE (and convert it if needed, e.g. rsvg-convert)');
      const cfg = configOf(program);
      const data = await withCatalog(cfg, async (pool) => {
        const to = new Date(Math.floor(Date.now() / BUCKET_MS) * BUCKET_MS);
        const history = await loadSeries(pool, series, new Date(to.getTime() - opts.hours * 3_600_000), to);
        const rows = await latestForecast(pool, series);
        const issued = rows[0] ? `forecast issued ${rows[0].issuedAt.toISOString()} by ${rows[0].model}` : 'no forecast yet';
        return { title: `${series}: ${issued}`, history, forecast: rows };
      });
      if (opts.json) console.log(JSON.stringify(data, null, 2));
      else console.log(terminalChart(data));
      if (opts.svg) {
        await writeFile(opts.svg, svgChart(data));
        console.log(`wrote ${opts.svg}`);
      }
    });
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
