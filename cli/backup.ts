/**
 * `shardcast backup`: a Shardcast table or colocation group, or a plain PostgreSQL table, to a backup
 * directory of Arrow IPC files and a manifest (src/backup).
 */
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import type { TableToExport } from '../src/backup/export.js';
import type { Manifest, ManifestTable } from '../src/backup/manifest.js';
import { InvalidInputError } from '../src/errors.js';
import type { Proposal, ProposalNode } from '../src/restore/proposal.js';
import type { Workload } from '../src/restore/workload.js';
import type { RestoreProgress } from '../workflows/messages.js';
import { wholeNumber } from './args.js';
import { configOf, withCatalog, withTemporal } from './program-config.js';

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
  as?: string;
  yes?: boolean;
  jobs?: number;
  detach?: boolean;
  key?: string;
  method?: string;
  shards?: number;
  history?: string[];
}

const TIME_TYPES = /^(date|timestamp)/;

/** The column retention goes by: the workload's, else the shard key when it is a date or time, else the table's only one. */
function retentionColumn(table: ManifestTable, keyColumn: string, workload: Workload | null): string | null {
  if (!workload?.retentionDays) return null;
  const times = table.columns.filter((c) => TIME_TYPES.test(c.pgType));
  if (workload.retentionColumn) {
    if (!times.some((c) => c.name === workload.retentionColumn)) {
      throw new InvalidInputError(`retention_column: "${workload.retentionColumn}" is not a date or timestamp column of ${table.name} (it has ${times.map((c) => c.name).join(', ') || 'none'})`);
    }
    return workload.retentionColumn;
  }
  if (times.some((c) => c.name === keyColumn)) return keyColumn;
  if (times.length === 1) return times[0]!.name;
  throw new InvalidInputError(
    `data_retention_policy: ${table.name} has ${times.length ? `several date or timestamp columns (${times.map((c) => c.name).join(', ')})` : 'no date or timestamp column'}: name one with retention_column`,
  );
}

/** A restore's progress: its phase, then a bar per shard (rows so far) during the import. */
function restoreLines(p: RestoreProgress): string[] {
  const pct = p.rowsExpected ? Math.min(100, Math.floor((100 * p.rowsImported) / p.rowsExpected)) : 0;
  const lines = [`${p.phase.padEnd(13)} ${p.rowsImported}/${p.rowsExpected} rows (${pct}%), ${p.unitsDone}/${p.units} units`];
  const shards = Object.keys(p.shardNodes).sort((a, b) => Number(a) - Number(b));
  const each = p.rowsExpected / Math.max(1, shards.length);
  for (const id of shards) {
    const rows = p.perShard[id] ?? 0;
    const filled = each > 0 ? Math.min(20, Math.round((20 * rows) / each)) : 0;
    lines.push(`  shard ${id.padStart(5)} on ${p.shardNodes[id]!.padEnd(12)} [${'#'.repeat(filled).padEnd(20, '.')}] ${rows} rows`);
  }
  return lines;
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
  p.shards.forEach((s, i) => {
    const r = p.ranges?.[i];
    const predicted = r ? `  ${r.rowsNow} rows now, ${r.rowsAtHorizon} in ${p.growth.horizonMonths} months, ${(r.loadShare * 100).toFixed(1)}% of the load` : '';
    console.log(`  shard ${s.index + 1} on ${s.node}${s.range ? `  [${s.range[0]}, ${s.range[1]})` : ''}${predicted}`);
  });
}

export function registerBackupCommands(program: Command): void {
  program
    .command('restore')
    .description('restore a backup into a layout designed for its workload: proposes the shard key, method, shard count and placement, then (unless --dry-run) creates the shards, imports in parallel, verifies and publishes')
    .argument('<backup>', 'backup directory or http(s):// URL, or a pg_dump -Fd directory')
    .option('--dry-run', 'print the proposal and stop')
    .option('--workload <file>', 'workload description (JSON or YAML): predicted_peak_qps, predicted_data_volume, data_retention_policy, rebalance_threshold, growth_per_month')
    .option('--query-log <file>', 'pg_stat_statements export (CSV with a header, or JSON) with query and calls')
    .option('--table <name>', 'only this table of the backup')
    .option('--nodes <names>', 'nodes to place shards on, comma-separated (default: the catalog\'s active nodes)')
    .option('--json', 'the proposals as JSON (with --dry-run), or the result')
    .option('--as <name>', 'the table\'s name in the cluster (default: its name in the backup; one table only)')
    .option('--yes', 'approve the printed proposal at once (default: restore.requireApproval waits for `shardcast approve ID`)')
    .option('--jobs <n>', 'import units at once, 1 to 64 (default restore.parallelism); 1: one COPY stream at a time, like pg_restore without -j', wholeNumber(1, 64))
    .option('--detach', 'start the restore and return, without following it')
    .option('--key <column>', 'the shard key, instead of the proposal\'s')
    .option('--method <method>', 'hash or range, instead of the proposal\'s')
    .option('--shards <n>', 'the number of shards (range: of ranges, from the key\'s quantiles), 1 to 4096, instead of the proposal\'s', wholeNumber(1, 4096))
    .option('--history <backup>', 'an earlier Shardcast backup (directory or URL) of the same table: its growth is measured from them (repeatable; only their manifests are read)', (v: string, acc: string[] = []) => [...acc, v])
    .action(async (location: string, opts: RestoreOptions) => {
      const [{ proposeLayout }, { analyzeQueries, readQueryLog }, { openRestoreSource }, { parseWorkload }, { listNodes }] = await Promise.all([
        import('../src/restore/proposal.js'),
        import('../src/restore/query-log.js'),
        import('../src/restore/source.js'),
        import('../src/restore/workload.js'),
        import('../src/catalog/nodes.js'),
      ]);
      if (opts.method !== undefined && opts.method !== 'hash' && opts.method !== 'range') throw new InvalidInputError(`--method: expected hash or range, got ${JSON.stringify(opts.method)}`);
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
      // Earlier backups of the same tables: their manifests only (the data is not read).
      const history: Array<{ at: string; tables: ManifestTable[] }> = [];
      if ((opts.history?.length ?? 0) > 0 && !source.exportedAt) throw new InvalidInputError(`--history: ${location} is a pg_dump directory, which does not say when it was made; growth cannot be measured against it`);
      for (const h of opts.history ?? []) {
        // Its manifest only (a pg_dump directory has none, and does not say when it was made: refused as no Shardcast backup).
        const { manifest } = await (await import('../src/backup/reader.js')).openBackup(h);
        history.push({ at: manifest.createdAt, tables: manifest.tables });
      }
      const proposals: Proposal[] = [];
      for (const t of tables) {
        const analysis = log ? await analyzeQueries(log, t.name, t.columns.map((c) => c.name)) : null;
        const past = history.flatMap((h) => h.tables.filter((pt) => pt.name === t.name).map((pt) => ({ at: h.at, rows: pt.rows, keyStats: pt.keyStats })));
        if ((opts.history?.length ?? 0) > 0 && past.length === 0) throw new InvalidInputError(`--history: no earlier backup holds table ${t.name}`);
        proposals.push(
          proposeLayout(t, {
            analysis,
            workload,
            nodes,
            bytes: source.bytes(t.name),
            overrides: { keyColumn: opts.key, method: opts.method as 'hash' | 'range' | undefined, shardCount: opts.shards },
            ...(source.exportedAt ? { exportedAt: source.exportedAt } : {}),
            history: past,
          }),
        );
      }
      if (opts.dryRun) {
        if (opts.json) console.log(JSON.stringify(proposals, null, 2));
        else proposals.forEach(printProposal);
        return;
      }
      if (opts.as !== undefined && tables.length !== 1) throw new InvalidInputError('--as names one table: give --table too');
      if (!opts.json) proposals.forEach(printProposal);
      const cfg = await configOf(program);
      const [{ newRestoreId, restoreResult, startRestore }, { restoreProgressQuery }] = await Promise.all([import('../client/index.js'), import('../workflows/messages.js')]);
      // A local backup is named by its absolute path: the workers read it (they must see the same path).
      const backup = /^https?:\/\//i.test(location) ? location : (await import('node:path')).resolve(location);
      await withTemporal(cfg, async (client) => {
        for (const [i, t] of tables.entries()) {
          const p = proposals[i]!;
          const target = opts.as ?? t.name;
          const input = {
            restoreId: newRestoreId(target),
            backup,
            sourceKind: source.kind,
            sourceTable: t.name,
            targetTable: target,
            layout: {
              keyColumn: p.keyColumn,
              method: p.method,
              ...(p.method === 'hash' ? { shardCount: p.shardCount } : { rangeBounds: p.rangeBounds! }),
              nodes: p.shards.map((s) => s.node),
              reasons: p.reasons,
            },
            requireApproval: cfg.restore.requireApproval && !opts.yes,
            parallelism: opts.jobs ?? cfg.restore.parallelism,
            batchesPerUnit: cfg.restore.batchesPerUnit,
            retentionDays: workload?.retentionDays ?? null,
            retentionColumn: retentionColumn(t, p.keyColumn, workload),
            rebalanceThreshold: workload?.rebalanceThreshold ?? null,
          };
          const handle = await startRestore({ client, taskQueue: cfg.temporal.taskQueue }, input);
          if (!opts.json) console.log(`restore ${handle.workflowId} started${input.requireApproval ? `; it waits for approval: shardcast approve ${handle.workflowId} (or reject)` : ''}`);
          if (opts.detach) continue;
          const tty = process.stdout.isTTY && !opts.json;
          let shown = 0;
          let lastPrint = 0;
          const timer = setInterval(() => {
            void handle.query(restoreProgressQuery).then(
              (progress) => {
                if (opts.json) return;
                const lines = restoreLines(progress);
                if (tty) {
                  if (shown) process.stdout.write(`\x1b[${shown}A\x1b[J`);
                  process.stdout.write(`${lines.join('\n')}\n`);
                  shown = lines.length;
                } else if (Date.now() - lastPrint >= 5000) {
                  lastPrint = Date.now();
                  console.log(lines[0]);
                }
              },
              () => undefined,
            );
          }, 1000);
          try {
            const result = await restoreResult(handle);
            if (opts.json) console.log(JSON.stringify(result));
            else {
              console.log(`${result.table}: ${result.rows} rows restored into ${result.shards} shard(s) on ${result.nodes.join(', ')}, verified against the backup's checksum; published (map version ${result.mapVersion})`);
              if (result.phases) console.log(`  ${result.phases.map((p) => `${p.phase} ${p.seconds.toFixed(1)} s`).join(', ')}`);
            }
          } finally {
            clearInterval(timer);
          }
        }
      });
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
