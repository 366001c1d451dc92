/**
 * `shardcast temperature TABLE`: the table's shards classified hot, warm or cold by k-means on their
 * access features and load forecast, with the key map (src/profiling/temperature.ts).
 */
import type { Command } from 'commander';
import type { TemperatureReport } from '../src/profiling/temperature.js';
import { duration } from './args.js';
import { printTable } from './format.js';
import { configOf, withCatalog } from './program-config.js';

interface TemperatureOptions {
  since: number;
  json?: boolean;
  store?: boolean;
}

/** Rates to three significant digits: 0.000123 and 12300 alike. */
const rate = (x: number | null): string => (x === null ? '-' : x === 0 ? '0' : String(Number(x.toPrecision(3))));

function printReport(report: TemperatureReport, stored: boolean): void {
  console.log(`${report.table} (${report.method}): ${report.shards.length} shard(s), ${report.accesses} accesses from ${report.since} to ${report.computedAt}`);
  if (report.accesses === 0) console.log('no accesses recorded in the window (routers record them when created with `profile`)');
  console.log(`classes: ${report.clusters} cluster(s) by k-means on recent, mean and peak rate and trend${report.forecast.used ? ' and forecast peak' : ''}`);
  console.log(`forecast: ${report.forecast.note}`);
  console.log('');
  printTable(
    'shards',
    report.shards.map((s) => ({
      shard: s.shardId,
      class: s.class,
      node: s.node,
      'key range': s.range,
      accesses: s.accesses,
      'recent/s': rate(s.features.recentRate),
      'mean/s': rate(s.features.meanRate),
      'peak/s': rate(s.features.peakRate),
      'trend/s/h': rate(s.features.trend),
      'forecast peak': rate(s.features.forecastPeak),
    })),
    ['shard', 'class', 'node', 'key range', 'accesses', 'recent/s', 'mean/s', 'peak/s', 'trend/s/h', 'forecast peak'],
  );
  console.log('\nkey map');
  for (const c of ['hot', 'warm', 'cold'] as const) {
    const ranges = report.keyMap[c];
    console.log(`${c.padEnd(4)}  ${ranges.length ? ranges.map((r) => `${r.range} (shard ${r.shardId})`).join('; ') : '-'}`);
  }
  if (stored) console.log(`\nstored as the computation of ${report.computedAt}`);
}

export function registerTemperatureCommands(program: Command): void {
  program
    .command('temperature')
    .description('the table\'s shards (key ranges) classified hot, warm or cold by clustering their access rates and load forecasts, and the key map')
    .argument('<table>', 'a distributed table')
    .option('--since <duration>', 'the window: 30m, 6h, 24h, 7d', duration, 24 * 3_600_000)
    .option('--json', 'the report as JSON')
    .option('--store', 'also store it as the table\'s newest key map (shardcast_stats.temperature)')
    .action(async (table: string, opts: TemperatureOptions) => {
      const { computeTemperature, storeTemperature } = await import('../src/profiling/temperature.js');
      const report = await withCatalog(await configOf(program), async (catalog) => {
        const r = await computeTemperature(catalog, { table, sinceMs: opts.since });
        if (opts.store) await storeTemperature(catalog, r);
        return r;
      });
      if (opts.json) console.log(JSON.stringify(report, null, 2));
      else printReport(report, opts.store === true);
    });
}
