/**
 * `shardcast hot`: the hottest shards, shard-key values and templates from the workload profile
 * routers created with `profile` flush to the catalog (src/profiling/hot.ts).
 */
import { writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { InvalidInputError } from '../src/errors.js';
import type { HotReport } from '../src/profiling/hot.js';
import { duration, wholeNumber } from './args.js';
import { printTable } from './format.js';
import { configOf, withCatalog } from './program-config.js';

interface HotOptions {
  table?: string;
  since: number;
  top: number;
  json?: boolean;
  png?: string;
}

const percent = (share: number): number => Math.round(share * 1000) / 10;

function printReport(report: HotReport, table: string | undefined): void {
  console.log(`since ${report.since}`);
  if (report.tables.length === 0) console.log(`no accesses recorded${table ? ` for ${table}` : ''} (routers record them when created with \`profile\`)`);
  for (const t of report.tables) {
    console.log(`\n${t.table}: ${t.shardAccesses} shard accesses, ${t.keyAccesses} by key`);
    printTable(
      'shard accesses',
      t.shards.map((s) => ({ shard: s.shardId, accesses: s.accesses, 'share%': percent(s.share) })),
      ['shard', 'accesses', 'share%'],
    );
    printTable(
      'hot keys',
      t.keys.map((k) => ({ key: k.key, count: k.count, 'at-least': k.lowerBound, 'share%': percent(k.share) })),
      ['key', 'count', 'at-least', 'share%'],
    );
  }
  console.log('');
  printTable(
    'templates called',
    report.templates.map((q) => ({ calls: q.calls, rows: q.rows, 'mean-ms': q.meanMs, 'single/scatter': `${q.singleShard}/${q.scatter}`, query: q.query })),
    ['calls', 'rows', 'mean-ms', 'single/scatter', 'query'],
  );
}

export function registerHotCommands(program: Command): void {
  program
    .command('hot')
    .description('the hottest shards, shard-key values (with their share of the table\'s accesses) and query templates, from the routers\' workload profile')
    .option('--table <table>', 'only this distributed table')
    .option('--since <duration>', 'the window: 30s, 15m, 2h, 7d', duration, 3_600_000)
    .option('--top <n>', 'shards, keys and templates shown', wholeNumber(1, 1000, 'entries'), 10)
    .option('--json', 'the report as JSON')
    .option('--png <file>', 'also draw a heat map of the table\'s accesses per shard and minute (needs --table)')
    .action(async (opts: HotOptions) => {
      if (opts.png && !opts.table) throw new InvalidInputError('--png draws one table: give --table');
      const { hotReport, heatMap, heatMapSvg } = await import('../src/profiling/hot.js');
      const { report, map } = await withCatalog(await configOf(program), async (catalog) => {
        const r = await hotReport(catalog, { table: opts.table, sinceMs: opts.since, top: opts.top });
        return { report: r, map: opts.png && opts.table ? await heatMap(catalog, opts.table, opts.since) : undefined };
      });
      // Drawn before anything is printed: a missing renderer leaves no half of the output behind.
      const picture = map ? await (await import('./png.js')).svgToPng(heatMapSvg(map)) : undefined;
      if (opts.json) console.log(JSON.stringify(report, null, 2));
      else printReport(report, opts.table);
      if (opts.png && picture && map) {
        await writeFile(opts.png, picture.png);
        if (!opts.json) console.log(`wrote ${opts.png} (${map.shards.length} shard(s) × ${map.buckets.length} minute(s))`);
      }
    });
}
