/**
 * `shardcast backup`: a Shardcast table or colocation group, or a plain PostgreSQL table, to a backup
 * directory of Arrow IPC files and a manifest (src/backup).
 */
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import type { TableToExport } from '../src/backup/export.js';
import type { Manifest } from '../src/backup/manifest.js';
import { InvalidInputError } from '../src/errors.js';
import type { Proposal, ProposalNode } from '../src/restore/proposal.js';
import { wholeNumber } from './args.js';
import { configOf, withCatalog } from './program-config.js';

interface BackupOptions {
  to?: string;
  group?: boolean;
  fromUrl?: string;
  table?: string;
  jobs: number;
  quiet?: boolean;
}

function summary(manifest: Manifest, dir: string, seconds: number): void {
  for (const t of manifest.tables) {
    const f = t.files[0]!;
    console.log(`${t.name}: ${t.rows} rows from ${t.source.shards} ${t.source.kind === 'shardcast' ? 'shard(s)' : 'table'} → ${f.path} (${(f.bytes / 1048576).toFixed(1)} MiB, ${f.batches} batches), checksum ${t.checksum.sum}`);
  }
  console.log(`backup written to ${dir} in ${seconds.toFixed(1)} s; ${manifest.tables.length} table(s), manifest.json last`);
}

interface RestoreOptions {
  dryRun?: boolean;
  workload?: string;
  queryLog?: string;
  table?: string;
  nodes?: string;
  json?: boolean;
}

async function readInput(file: string, what: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new InvalidInputError(`${what} ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : String(err)}`);
  }
}

function printProposal(p: Proposal): void {
  console.log(`${p.table}: ${p.method} on ${p.keyColumn}, ${p.shardCount} shard(s)`);
  for (const r of p.reasons) console.log(`  ${r}`);
  for (const s of p.shards) console.log(`  shard ${s.index + 1} on ${s.node}${s.range ? `  [${s.range[0]}, ${s.range[1]})` : ''}`);
}

export function registerBackupCommands(program: Command): void {
  program
    .command('restore')
    .description('propose the layout to restore a backup into (shard key, hash or range, shard count, placement), from the expected workload')
    .argument('<backup>', 'backup directory or http(s):// URL, or a pg_dump -Fd directory')
    .option('--dry-run', 'print the proposal and stop')
    .option('--workload <file>', 'workload description (JSON or YAML): predicted_peak_qps, predicted_data_volume, data_retention_policy, rebalance_threshold, growth_per_month')
    .option('--query-log <file>', 'pg_stat_statements export (CSV with a header, or JSON) with query and calls')
    .option('--table <name>', 'only this table of the backup')
    .option('--nodes <names>', 'nodes to place shards on, comma-separated (default: the catalog\'s active nodes)')
    .option('--json', 'the proposals as JSON')
    .action(async (location: string, opts: RestoreOptions) => {
      if (!opts.dryRun) throw new InvalidInputError('only `shardcast restore --dry-run` exists yet: the restore workflow (shard creation, parallel import, verify) is not built');
      const [{ proposeLayout }, { analyzeQueries, readQueryLog }, { openRestoreSource }, { parseWorkload }, { listNodes }] = await Promise.all([
        import('../src/restore/proposal.js'),
        import('../src/restore/query-log.js'),
        import('../src/restore/source.js'),
        import('../src/restore/workload.js'),
        import('../src/catalog/nodes.js'),
      ]);
      const workload = opts.workload ? parseWorkload(await readInput(opts.workload, '--workload'), opts.workload) : null;
      const log = opts.queryLog ? readQueryLog(await readInput(opts.queryLog, '--query-log'), opts.queryLog) : null;
      const source = await openRestoreSource(location);
      const tables = opts.table ? source.tables.filter((t) => t.name === opts.table) : source.tables;
      if (tables.length === 0) throw new InvalidInputError(`${location}: no table "${opts.table}" in the backup`);
      let nodes: ProposalNode[];
      if (opts.nodes) nodes = opts.nodes.split(',').map((n) => ({ name: n.trim(), capacity: 1 })).filter((n) => n.name);
      else {
        nodes = await withCatalog(await configOf(program), async (catalog) =>
          (await listNodes(catalog)).filter((n) => n.state === 'active').map((n) => ({ name: n.name, capacity: n.capacity ?? 1 })),
        );
      }
      if (nodes.length === 0) throw new InvalidInputError('no node to place shards on: give --nodes or add nodes to the catalog');
      const proposals: Proposal[] = [];
      for (const t of tables) {
        const analysis = log ? await analyzeQueries(log, t.name, t.columns.map((c) => c.name)) : null;
        proposals.push(proposeLayout(t, { analysis, workload, nodes, bytes: source.bytes(t.name) }));
      }
      if (opts.json) console.log(JSON.stringify(proposals, null, 2));
      else proposals.forEach(printProposal);
    });


  program
    .command('backup')
    .description('export a table (or a colocation group) to a directory of Arrow IPC files and manifest.json, every shard in parallel')
    .argument('[name]', 'distributed table, or colocation group (all its tables)')
    .option('--to <dir>', 'backup directory (created; must be empty)')
    .option('--group', 'NAME is a colocation group even when a table has that name')
    .option('--from-url <url>', 'a plain PostgreSQL database instead of the Shardcast cluster (with --table)')
    .option('--table <name>', 'with --from-url: the table, NAME or SCHEMA.NAME')
    .option('--jobs <n>', 'shards read at once, 1 to 64', wholeNumber(1, 64), 4)
    .option('--quiet', 'no progress lines')
    .action(async (name: string | undefined, opts: BackupOptions) => {
      if (!opts.to) throw new InvalidInputError('--to DIR is required');
      const [{ exportBackup, plainTable, shardcastTables }, { guardPool, NodePools }, { redactDsn }, { newPgPool }] = await Promise.all([
        import('../src/backup/export.js'),
        import('../src/catalog/node-pools.js'),
        import('../src/catalog/nodes.js'),
        import('../src/catalog/pg-tls.js'),
      ]);
      const to = opts.to;
      const started = Date.now();
      const last = new Map<string, number>();
      const onProgress = opts.quiet
        ? undefined
        : (p: { table: string; part: string; rows: number; done: boolean }) => {
            const key = `${p.table} ${p.part}`;
            // A line per shard at most every 5 s, and when it is done.
            if (!p.done && Date.now() - (last.get(key) ?? 0) < 5000) return;
            last.set(key, Date.now());
            console.error(`${p.table}: ${p.part}: ${p.rows} rows${p.done ? ', done' : ''}`);
          };
      const run = async (tables: TableToExport[]) => exportBackup(tables, to, { jobs: opts.jobs, onProgress });
      if (opts.fromUrl !== undefined) {
        if (name !== undefined || opts.group) throw new InvalidInputError('--from-url takes the table with --table, not a NAME argument or --group');
        if (!opts.table) throw new InvalidInputError('--from-url needs --table NAME');
        if (!/^postgres(ql)?:\/\//.test(opts.fromUrl)) throw new InvalidInputError(`--from-url must be a postgres:// URL, got ${JSON.stringify(redactDsn(opts.fromUrl))}`);
        const pool = guardPool(newPgPool(opts.fromUrl, { max: 2, connectionTimeoutMillis: 5000, application_name: 'shardcast-backup' }));
        try {
          summary(await run([plainTable(pool, opts.table)]), to, (Date.now() - started) / 1000);
        } finally {
          await pool.end();
        }
        return;
      }
      if (opts.table) throw new InvalidInputError('--table is for --from-url; name a Shardcast table as the argument');
      if (!name) throw new InvalidInputError('name the table or colocation group to back up (or use --from-url URL --table NAME)');
      await withCatalog(await configOf(program), async (catalog) => {
        const pools = new NodePools({ max: opts.jobs, applicationName: 'shardcast-backup' });
        try {
          summary(await run(await shardcastTables(catalog, pools, name, opts.group ?? false)), to, (Date.now() - started) / 1000);
        } finally {
          await pools.end();
        }
      });
    });
}
