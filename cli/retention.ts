/**
 * `shardcast retention`: the retention of restored tables (their restore's data_retention_policy) and
 * the rebalance-threshold check, now instead of at the schedule's time. `--dry-run` reads the catalog
 * and the nodes only (what would be archived, what the check would decide); without it the
 * `retention` workflow runs on the workers and its result is printed.
 */
import type { Command } from 'commander';
import type { RetentionResult } from '../workflows/retention.js';
import { configOf, withCatalog, withTemporal } from './program-config.js';

interface RetentionOptions {
  table?: string;
  dryRun?: boolean;
  json?: boolean;
}

function printResult(r: RetentionResult): void {
  if (r.tables.length === 0) console.log('no restored table with a data_retention_policy or a rebalance_threshold');
  for (const t of r.tables) {
    const policy = t.column !== null && t.retentionDays !== null ? `rows with ${t.column} older than ${t.retentionDays} day(s)` : 'no retention policy';
    console.log(`${t.table}: ${policy}${t.cutoff ? ` (before ${t.cutoff})` : ''}`);
    if (t.problem) console.log(`  not run: ${t.problem}`);
    for (const s of t.shards) {
      const what =
        s.state === 'would-archive'
          ? `${s.rows} row(s) would be archived and deleted`
          : s.state === 'archived'
            ? `${s.rows} row(s) archived and deleted → ${s.file}${s.replayed ? ' (done by an earlier attempt)' : ''}`
            : s.state === 'empty'
              ? 'nothing expired'
              : `skipped: ${s.reason}`;
      console.log(`  shard ${s.shardId}${s.node ? ` on ${s.node}` : ''}: ${what}`);
    }
    for (const f of t.failures) console.log(`  failed: ${f}`);
    if (t.column !== null && !t.problem) console.log(`  ${r.dryRun ? 'would archive' : 'archived'} ${t.rows} row(s)${t.dir ? `; backup directory ${t.dir}` : ''}`);
    if (t.balance) {
      const b = t.balance;
      console.log(`  balance: ${b.action === 'split' ? (r.dryRun ? 'would split' : 'split') : 'no action'}: ${b.reason}`);
      if (b.outcome) console.log(`  ${b.outcome}`);
    }
  }
}

async function dryRun(cfg: Awaited<ReturnType<typeof configOf>>, table: string | undefined): Promise<RetentionResult> {
  const [{ NodePools }, { restoredTables, retentionCutoff, countExpired }, { checkBalance }, { errorMessage }] = await Promise.all([
    import('../src/catalog/node-pools.js'),
    import('../src/restore/retention.js'),
    import('../src/restore/balance-check.js'),
    import('../src/errors.js'),
  ]);
  return withCatalog(cfg, async (catalog) => {
    const pools = new NodePools({ max: 1, applicationName: 'shardcast-retention' });
    try {
      const out: RetentionResult = { dryRun: true, tables: [] };
      const now = Date.now();
      for (const t of await restoredTables(catalog, table)) {
        const r: RetentionResult['tables'][number] = { table: t.table, column: t.column, retentionDays: t.retentionDays, shards: [], rows: 0, dir: null, failures: [] };
        out.tables.push(r);
        if (t.column !== null && t.retentionDays !== null) {
          r.cutoff = retentionCutoff(now, t.retentionDays);
          try {
            const counts = await countExpired(catalog, pools, { table: t.table, groupId: t.groupId, column: t.column }, r.cutoff);
            r.shards = counts.map((c) => ({ ...c, state: 'would-archive' as const }));
            r.rows = counts.reduce((a, c) => a + c.rows, 0);
          } catch (err) {
            if (table !== undefined) throw err;
            r.problem = errorMessage(err);
          }
        }
        if (cfg.retention.rebalanceCheck && t.rebalanceThreshold !== null) r.balance = await checkBalance(catalog, pools, t, { now: new Date(now), minShardBytes: cfg.retention.minShardBytes });
      }
      return out;
    } finally {
      await pools.end();
    }
  });
}

export function registerRetentionCommands(program: Command): void {
  program
    .command('retention')
    .description('archive (to Arrow, a backup directory per run) and delete the rows of restored tables past their data_retention_policy, then check their rebalance_threshold: now, instead of at the schedule\'s time')
    .option('--table <name>', 'only this restored table')
    .option('--dry-run', 'print what would be archived and what the balance check would decide; change nothing')
    .option('--json', 'the result as JSON')
    .action(async (opts: RetentionOptions) => {
      const cfg = await configOf(program);
      let result: RetentionResult;
      if (opts.dryRun) result = await dryRun(cfg, opts.table);
      else {
        const { clientOptionsFromConfig, runRetentionNow, toShardcastError } = await import('../client/index.js');
        result = await withTemporal(cfg, (client) => runRetentionNow(clientOptionsFromConfig(client, cfg), cfg, { table: opts.table }).catch((err: unknown) => Promise.reject(toShardcastError(err))));
      }
      if (opts.json) console.log(JSON.stringify(result, null, 2));
      else printResult(result);
      const problems = result.tables.filter((t) => t.problem || t.failures.length > 0);
      if (problems.length === 1) throw new Error(problems[0]!.problem ?? `${problems[0]!.table}: ${problems[0]!.failures[0]}`);
      if (problems.length > 1) throw new Error(`${problems.length} tables could not be done in full: see above`);
    });
}
