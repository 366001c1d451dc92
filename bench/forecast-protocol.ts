/**
 * Prints, as JSON, the back-test protocol of `npm run bench -- forecast` on every trace of a
 * directory: the cleaned series (series.ts), the horizon, and for every evaluated origin its
 * training window, the origin of the daily fit it extends, the weekly season length that fit sees,
 * and the MASE scale. scripts/statsforecast_reference.py reads it, so that the reference models are
 * scored on exactly the bench's origins, windows and metric.
 *
 *     npx tsx bench/forecast-protocol.ts [--traces DIR] [--horizon STEPS]
 */
import { readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { backtestPlan, backtestSchedule } from '../src/forecasting/backtest.js';
import { maseScale } from '../src/forecasting/metrics.js';
import { cleanSeries, readSeriesCsv, seasonLengths } from '../src/forecasting/series.js';

const { values: args } = parseArgs({
  options: {
    traces: { type: 'string', default: resolve(import.meta.dirname, '../../shared/data/traces') },
    horizon: { type: 'string' },
  },
});

const files = (await readdir(args.traces)).filter((f) => f.endsWith('.csv')).sort();
const traces = [];
for (const file of files) {
  const { name, rows } = await readSeriesCsv(join(args.traces, file));
  const series = cleanSeries(rows, name);
  const options = { horizon: args.horizon === undefined ? undefined : Number(args.horizon) };
  const { horizon } = backtestPlan(series, options);
  let fitOrigin = 0;
  const origins = [];
  for (const o of backtestSchedule(series, options)) {
    if (o.isFitDay) fitOrigin = o.origin;
    if (!o.scoring) continue;
    const fitLength = fitOrigin - o.trainStart;
    const { weeklyPeriod } = seasonLengths(series.stepSeconds, fitLength);
    const scale = maseScale(series.values.slice(o.trainStart, o.origin), series.dailyPeriod);
    origins.push({ origin: o.origin, trainStart: o.trainStart, fitOrigin, weeklyPeriod: weeklyPeriod ?? null, scale });
  }
  traces.push({
    trace: file.replace(/\.csv$/, ''),
    stepSeconds: series.stepSeconds,
    dailyPeriod: series.dailyPeriod,
    horizon,
    values: series.values,
    observed: series.observed,
    origins,
  });
}
console.log(JSON.stringify({ traces }));
