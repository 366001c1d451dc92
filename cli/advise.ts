/**
 * `shardcast advise TABLE --query-log FILE`: the shard-key advisor (src/profiling/advisor.ts) on a
 * pg_stat_statements export, with the key statistics of the live table (pg_stats on every shard the
 * catalog places) or of a backup (`--backup DIR`, its manifest's key statistics).
 */
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { InvalidInputError } from '../src/errors.js';
import type { Advice, AdvisorColumn, CandidateReport, ColumnStatistics, KeyMethod } from '../src/profiling/advisor.js';
import { wholeNumber } from './args.js';
import { printTable } from './format.js';
import { configOf, withCatalog } from './program-config.js';

interface AdviseOptions {
  queryLog?: string;
  backup?: string;
  shards?: number;
  analyze?: boolean;
  top: number;
  json?: boolean;
}

/** What the advisor needs of the table, from the catalog and its shards or from a backup. */
interface TableInputs {
  columns: AdvisorColumn[];
  statistics: ColumnStatistics[];
  rows: number | null;
  shardCount: number;
  otherKeys: Record<string, string>;
  current: { key: string; method: KeyMethod } | null;
  source: string;
}

const split = (d: CandidateReport['reads']) => `${d.singleShard}/${d.multiShard}/${d.scatterGather}`;

function printAdvice(advice: Advice, inputs: TableInputs, top: number): void {
  console.log(
    `${advice.table}: ${advice.calls} calls in ${advice.templates} template(s)${advice.unparsed ? `, ${advice.unparsed} calls unparsed` : ''}; judged for ${advice.shardCount} shards; key statistics from ${inputs.source}`,
  );
  const shown = advice.candidates.slice(0, top);
  printTable(
    'candidate keys (no query of the log filters or joins on a key column)',
    shown.map((c, i) => ({
      rank: i + 1,
      key: c.key.join(',') + (c.current ? ' (current)' : ''),
      method: c.method,
      score: c.score,
      'reads%': split(c.reads),
      'writes%': split(c.writes),
      'key-updates%': c.shardKeyUpdates.percent,
      'joins-colocated%': c.joins.calls ? c.joins.percent : null,
      cardinality: c.cardinality,
      'top-value%': c.mostCommon[0] ? Number((c.mostCommon[0].frequency * 100).toPrecision(2)) : null,
      monotonic: c.monotonicity.type,
    })),
    ['rank', 'key', 'method', 'score', 'reads%', 'writes%', 'key-updates%', 'joins-colocated%', 'cardinality', 'top-value%', 'monotonic'],
  );
  if (shown.length) console.log('reads% and writes%: single-shard/multi-shard/scatter-gather');
  for (const [i, c] of shown.entries()) {
    console.log(`\n${i + 1}. ${c.method} on ${c.key.join(', ')} (score ${c.score})`);
    for (const r of c.reasons) console.log(`   ${r}`);
  }
}

async function fromBackup(dir: string, table: string): Promise<TableInputs> {
  const [{ openRestoreSource }, { statisticsFromKeyStats }, { keyColumnType }] = await Promise.all([
    import('../src/restore/source.js'),
    import('../src/profiling/advisor.js'),
    import('../src/profiling/key-statistics.js'),
  ]);
  const source = await openRestoreSource(dir);
  const t = source.tables.find((x) => x.name === table);
  if (!t) throw new InvalidInputError(`${dir}: no table "${table}" in the backup (there are: ${source.tables.map((x) => x.name).join(', ')})`);
  const current = t.source.keyColumn && t.source.method ? { key: t.source.keyColumn, method: t.source.method } : null;
  return {
    columns: t.columns.map((c) => ({ name: c.name, type: keyColumnType(c.pgType) })),
    statistics: t.keyStats.map(statisticsFromKeyStats),
    rows: t.rows,
    // A plain table's backup: judged for 8 shards unless --shards says otherwise.
    shardCount: t.source.kind === 'shardcast' ? t.source.shards : 8,
    otherKeys: Object.fromEntries(source.tables.filter((x) => x.name !== table && x.source.keyColumn).map((x) => [x.name, x.source.keyColumn!])),
    current,
    source: `the backup ${dir}`,
  };
}

async function fromCatalog(program: Command, table: string, analyze: boolean): Promise<TableInputs> {
  const [{ NodePools }, { liveColumns, liveStatistics, liveTable }] = await Promise.all([import('../src/catalog/node-pools.js'), import('../src/profiling/key-statistics.js')]);
  return withCatalog(await configOf(program), async (catalog) => {
    const live = await liveTable(catalog, table);
    const pools = new NodePools({ max: 2, applicationName: 'shardcast-advise' });
    try {
      const columns = await liveColumns(pools, live);
      const { rows, statistics } = await liveStatistics(pools, live, { analyze });
      return {
        columns,
        statistics,
        rows,
        shardCount: live.shards.length,
        otherKeys: live.otherKeys,
        current: { key: live.keyColumn, method: live.method },
        source: `pg_stats on its ${live.shards.length} shard(s)`,
      };
    } finally {
      await pools.end();
    }
  });
}

export function registerAdviseCommands(program: Command): void {
  program
    .command('advise')
    .description('rank shard keys for a table from a query log: % single-shard/multi-shard/scatter-gather reads and writes, cardinality, skew, monotonicity, key updates, join co-location')
    .argument('<table>', 'the table (a distributed table, or with --backup a table of the backup)')
    .option('--query-log <file>', 'pg_stat_statements export (CSV with a header, or JSON) with query and calls')
    .option('--backup <dir>', 'key statistics from this backup\'s manifest instead of the live table\'s pg_stats')
    .option('--shards <n>', 'judge the keys for this many shards (default: the table\'s today)', wholeNumber(1, 4096, 'shards'))
    .option('--analyze', 'ANALYZE every shard of the table first (pg_stats are empty until the table is analyzed)')
    .option('--top <n>', 'candidates shown', wholeNumber(1, 1000, 'candidates'), 10)
    .option('--json', 'the whole advice as JSON')
    .action(async (table: string, opts: AdviseOptions) => {
      if (!opts.queryLog) throw new InvalidInputError('--query-log FILE is required (a pg_stat_statements export with query and calls)');
      if (opts.backup && opts.analyze) throw new InvalidInputError('--analyze is for a live table, not --backup');
      const [{ readQueryLog }, { adviseShardKey, profileQueryLog }] = await Promise.all([import('../src/restore/query-log.js'), import('../src/profiling/advisor.js')]);
      const text = await readFile(opts.queryLog, 'utf8').catch((err: NodeJS.ErrnoException) => {
        throw new InvalidInputError(`--query-log ${opts.queryLog}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`);
      });
      const log = readQueryLog(text, opts.queryLog);
      const inputs = opts.backup ? await fromBackup(opts.backup, table) : await fromCatalog(program, table, opts.analyze ?? false);
      const profile = await profileQueryLog(log, table, inputs.columns.map((c) => c.name));
      if (profile.calls === 0) throw new InvalidInputError(`${opts.queryLog}: no statement of the log touches "${table}"${profile.unparsed ? ` (${profile.unparsed} calls did not parse)` : ''}`);
      const advice = adviseShardKey(profile, inputs.columns, inputs.statistics, {
        shardCount: opts.shards ?? inputs.shardCount,
        rows: inputs.rows,
        otherKeys: inputs.otherKeys,
        current: inputs.current,
      });
      if (opts.json) console.log(JSON.stringify({ ...advice, statisticsSource: inputs.source, current: inputs.current }, null, 2));
      else printAdvice(advice, inputs, opts.top);
    });
}
