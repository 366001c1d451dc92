/**
 * `shardcast advise TABLE --query-log FILE`: the shard-key advisor (src/profiling/advisor.ts) on a
 * pg_stat_statements export, with the key statistics of the live table (pg_stats on every shard the
 * catalog places) or of a backup (`--backup DIR`, its manifest's key statistics).
 */
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { InvalidInputError } from '../src/errors.js';
import type { Advice, AdvisorColumn, CandidateReport, ColumnStatistics, KeyMethod, WorkloadProfile, WorkloadTemplate } from '../src/profiling/advisor.js';
import type { LayoutProjection, ProjectionContext } from '../src/profiling/projection.js';
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
  compare?: boolean;
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
  // The best `top`, and the current key wherever it ranks: what the advice is measured against.
  const ranked = advice.candidates.map((c, i) => ({ c, rank: i + 1 }));
  const shown = ranked.filter(({ c, rank }) => rank <= top || c.current);
  printTable(
    'candidate keys (no query of the log filters or joins on a key column)',
    shown.map(({ c, rank }) => ({
      rank,
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
  for (const { c, rank } of shown) {
    console.log(`\n${rank}. ${c.method} on ${c.key.join(', ')}${c.current ? ' (current)' : ''} (score ${c.score})`);
    for (const r of c.reasons) console.log(`   ${r}`);
  }
}

/** The candidates compared with the current configuration: the best this many (the current one besides). */
const COMPARED = 3;

interface Comparison {
  context: ProjectionContext;
  bound: string;
  /** Lines of the planner's inputs about this table's shards (forecasts it could not trust). */
  notes: string[];
  projections: LayoutProjection[];
}

/** The current configuration and the best candidates projected over the forecast horizon, from the planner's inputs. */
async function compare(program: Command, table: string, advice: Advice, profile: WorkloadProfile, statistics: readonly ColumnStatistics[], cost: (t: WorkloadTemplate) => number): Promise<Comparison> {
  const [{ NodePools }, { liveTable }, { gatherPlanInput }, { atBound }, { resolveSettings }, { PROVISIONED_NODE_ID }, { plannerSettings }, projection] = await Promise.all([
    import('../src/catalog/node-pools.js'),
    import('../src/profiling/key-statistics.js'),
    import('../src/planning/inputs.js'),
    import('../src/planning/planner.js'),
    import('../src/planning/settings.js'),
    import('../src/planning/provisioner.js'),
    import('../src/config.js'),
    import('../src/profiling/projection.js'),
  ]);
  const config = await configOf(program);
  return withCatalog(config, async (catalog) => {
    const live = await liveTable(catalog, table);
    const pools = new NodePools({ max: 2, applicationName: 'shardcast-advise' });
    try {
      const settings = plannerSettings(config);
      const { input, notes } = await gatherPlanInput(catalog, pools, { settings });
      const mine = new Set(live.shards.map((s) => s.shardId));
      const steps = resolveSettings(input.settings ?? settings).horizonSteps;
      const load = new Map(input.shardForecasts.map((f) => [f.shardId, f.steps.slice(0, steps).map((s) => atBound(s, settings.bound))]));
      const nodes = input.nodes.filter((n) => n.id !== PROVISIONED_NODE_ID && n.state !== 'retired');
      const nameOf = new Map(nodes.map((n) => [n.id, n.name]));
      const zero = () => new Array<number>(steps).fill(0);
      const context: ProjectionContext = {
        currentShards: input.placements.filter((p) => mine.has(p.shardId)).map((p) => ({ shardId: p.shardId, node: nameOf.get(p.nodeId)!, load: load.get(p.shardId) ?? zero() })),
        nodes: nodes.map((n) => {
          const other = zero();
          for (const p of input.placements) if (p.nodeId === n.id && !mine.has(p.shardId)) (load.get(p.shardId) ?? []).forEach((v, t) => (other[t]! += v));
          return { name: n.name, capacity: n.capacity, otherLoad: other, takesShards: n.state === 'active' && n.reachable };
        }),
        startsAt: input.asOf,
        stepSeconds: resolveSettings(input.settings ?? settings).stepSeconds,
      };
      const current = advice.candidates.find((c) => c.current);
      const best = advice.candidates.filter((c) => !c.current).slice(0, COMPARED);
      const projections = [
        ...(current ? [projection.projectCurrent(current, context)] : []),
        ...best.map((c) => projection.projectCandidate(c, profile, statistics, advice.shardCount, context, cost)),
      ];
      const own = input.shardForecasts.filter((f) => mine.has(f.shardId) && !f.trustworthy).map((f) => `${f.series}: no trustworthy forecast (${f.untrustedBecause}); its observed load is projected flat`);
      return { context, bound: settings.bound, notes: [...own, ...notes.filter((n) => !n.includes('shard:'))], projections };
    } finally {
      await pools.end();
    }
  });
}

function printComparison(c: Comparison): void {
  const minutes = Math.round((c.context.stepSeconds * (c.context.currentShards[0]?.load.length ?? 0)) / 60);
  console.log(`
projected over the next ${minutes} min from ${c.context.startsAt} (the forecasts' ${c.bound} bound; other tables' load kept where it is):`);
  printTable(
    'projections',
    c.projections.map((p) => ({
      configuration: `${p.method} on ${p.key.join(', ')}${p.current ? ' (current)' : ''}`,
      shards: p.shardCount,
      'cross-shard%': p.crossShardPercent,
      'busiest-shard%': Math.round(100 * Math.max(...p.shards.map((s) => s.share))),
      'max-utilisation%': p.maxUtilisation === null ? null : Math.round(100 * p.maxUtilisation),
      peak: `${p.peak.node} at ${p.peak.at.slice(11, 16)} (${p.peak.load.toPrecision(3)})`,
    })),
    ['configuration', 'shards', 'cross-shard%', 'busiest-shard%', 'max-utilisation%', 'peak'],
  );
  for (const p of c.projections) {
    const placed = [...new Set(p.shards.map((s) => s.node))].sort().map((n) => `${n}: ${p.shards.filter((s) => s.node === n).length}`);
    console.log(`  ${p.method} on ${p.key.join(', ')}: shards per node ${placed.join(', ')}${p.notes.length ? `; ${p.notes.join('; ')}` : ''}`);
  }
  for (const n of c.notes) console.log(`  note: ${n}`);
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
    .option('--top <n>', 'candidates shown (and the current key wherever it ranks)', wholeNumber(1, 1000, 'candidates'), 10)
    .option('--compare', 'also project the current configuration and the best candidates over the forecast horizon: per-node load, cross-shard calls, max utilisation')
    .option('--json', 'the whole advice as JSON')
    .action(async (table: string, opts: AdviseOptions) => {
      if (!opts.queryLog) throw new InvalidInputError('--query-log FILE is required (a pg_stat_statements export with query and calls)');
      if (opts.backup && opts.analyze) throw new InvalidInputError('--analyze is for a live table, not --backup');
      if (opts.backup && opts.compare) throw new InvalidInputError('--compare projects the live table\'s forecasts, not a backup: leave out --backup');
      const [{ readQueryLog }, { adviseShardKey, profileQueryLog }] = await Promise.all([import('../src/restore/query-log.js'), import('../src/profiling/advisor.js')]);
      const text = await readFile(opts.queryLog, 'utf8').catch((err: NodeJS.ErrnoException) => {
        throw new InvalidInputError(`--query-log ${opts.queryLog}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`);
      });
      const log = readQueryLog(text, opts.queryLog);
      const inputs = opts.backup ? await fromBackup(opts.backup, table) : await fromCatalog(program, table, opts.analyze ?? false);
      const profile = await profileQueryLog(log, table, inputs.columns.map((c) => c.name));
      if (profile.calls === 0) throw new InvalidInputError(`${opts.queryLog}: no statement of the log touches "${table}"${profile.unparsed ? ` (${profile.unparsed} calls did not parse)` : ''}`);
      const projection = await import('../src/profiling/projection.js');
      const rowsPerCall = projection.rowsPerCall(profile, inputs.statistics, inputs.rows);
      const advice = adviseShardKey(profile, inputs.columns, inputs.statistics, {
        shardCount: opts.shards ?? inputs.shardCount,
        rows: inputs.rows,
        otherKeys: inputs.otherKeys,
        current: inputs.current,
        rowsPerCall,
      });
      const comparison = opts.compare ? await compare(program, table, advice, profile, inputs.statistics, rowsPerCall) : undefined;
      if (opts.json) {
        const projected = comparison ? { projections: comparison.projections, projectionNotes: comparison.notes, projectedFrom: comparison.context.startsAt, bound: comparison.bound } : {};
        console.log(JSON.stringify({ ...advice, statisticsSource: inputs.source, current: inputs.current, ...projected }, null, 2));
      } else {
        printAdvice(advice, inputs, opts.top);
        if (comparison) printComparison(comparison);
      }
    });
}
