/**
 * `shardcast backup`: a Shardcast table or colocation group, or a plain PostgreSQL table, to a backup
 * directory of Arrow IPC files and a manifest (src/backup).
 */
import type { Command } from 'commander';
import pg from 'pg';
import { guardPool, NodePools } from '../src/catalog/node-pools.js';
import { redactDsn } from '../src/catalog/nodes.js';
import { exportBackup, plainTable, shardcastTables, type TableToExport } from '../src/backup/export.js';
import type { Manifest } from '../src/backup/manifest.js';
import { InvalidInputError } from '../src/errors.js';
import { positiveInt } from './args.js';
import { withCatalog } from './forecast.js';
import { configOf } from './program-config.js';

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

export function registerBackupCommands(program: Command): void {
  program
    .command('backup')
    .description('export a table (or a colocation group) to a directory of Arrow IPC files and manifest.json, every shard in parallel')
    .argument('[name]', 'distributed table, or colocation group (all its tables)')
    .option('--to <dir>', 'backup directory (created; must be empty)')
    .option('--group', 'NAME is a colocation group even when a table has that name')
    .option('--from-url <url>', 'a plain PostgreSQL database instead of the Shardcast cluster (with --table)')
    .option('--table <name>', 'with --from-url: the table, NAME or SCHEMA.NAME')
    .option('--jobs <n>', 'shards read at once', positiveInt, 4)
    .option('--quiet', 'no progress lines')
    .action(async (name: string | undefined, opts: BackupOptions) => {
      if (!opts.to) throw new InvalidInputError('--to DIR is required');
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
        const pool = guardPool(new pg.Pool({ connectionString: opts.fromUrl, max: 2, connectionTimeoutMillis: 5000, application_name: 'shardcast-backup' }));
        try {
          summary(await run([plainTable(pool, opts.table)]), to, (Date.now() - started) / 1000);
        } finally {
          await pool.end();
        }
        return;
      }
      if (opts.table) throw new InvalidInputError('--table is for --from-url; name a Shardcast table as the argument');
      if (!name) throw new InvalidInputError('name the table or colocation group to back up (or use --from-url URL --table NAME)');
      await withCatalog(configOf(program), async (catalog) => {
        const pools = new NodePools({ max: opts.jobs, applicationName: 'shardcast-backup' });
        try {
          summary(await run(await shardcastTables(catalog, pools, name, opts.group ?? false)), to, (Date.now() - started) / 1000);
        } finally {
          await pools.end();
        }
      });
    });
}
