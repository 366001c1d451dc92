import type pg from 'pg';
import type { NodePools } from '../catalog/node-pools.js';
import type { NodeRecord, Queryable } from '../catalog/nodes.js';
import { errorMessage } from '../errors.js';

/**
 * One collection round on one node (DESIGN §4): the cumulative counters of pg_stat_user_tables,
 * pg_stat_user_indexes, pg_stat_statements, pg_stat_database, pg_stat_io and the host's /proc,
 * stamped with the node's clock, written to the catalog's daily partitions as they are. Rates are
 * derived later from consecutive samples (src/profiling/rates.ts).
 */

/**
 * Shard schemas only (sc_s<id>), and only where the catalog places them: fenced copies, the new
 * shards a movement is building (its copy's and its apply's writes) and Shardcast's own schemas are
 * not workload. The placements are read before the statistics: a switch in between only drops a
 * schema from this round (the source's is renamed away by its fence).
 */
const SHARD_SCHEMA = '^sc_s[0-9]+$';
const PLACED = `schemaname ~ '${SHARD_SCHEMA}' and schemaname = any($3::text[])`;

/** The schemas of the shards the catalog places on the node. */
async function placedSchemas(catalog: Queryable, nodeId: number): Promise<string[]> {
  const { rows } = await catalog.query<{ schema: string }>(
    // A group none of whose tables is active yet (a restore's import, a table being created) is no workload either.
    `select s.schema_name as schema from shardcast.placements p join shardcast.shards s on s.id = p.shard_id
      where p.node_id = $1
        and exists (select 1 from shardcast.distributed_tables t where t.group_id = s.group_id and t.state <> 'creating')`,
    [nodeId],
  );
  return rows.map((r) => r.schema);
}

/** The node's statistics epoch: a change means every counter was reset (restart or pg_stat_reset). */
const EPOCH = `greatest(pg_postmaster_start_time(), coalesce((select stats_reset from pg_stat_database where datname = current_database()), '-infinity'))`;

/** pg_stat_statements: the most expensive statements only, to bound the volume. */
const STATEMENTS_PER_SAMPLE = 200;

export interface CollectResult {
  node: string;
  ok: boolean;
  tables: number;
  indexes: number;
  statements: number;
  host: boolean;
  error?: string;
}

export async function collectNode(catalog: Queryable, pools: NodePools, node: NodeRecord): Promise<CollectResult> {
  const db = pools.get(node.dsn);
  try {
    const placed = await placedSchemas(catalog, node.id);
    const client = await db.connect();
    let tables: pg.QueryResult;
    let indexes: pg.QueryResult;
    let database: pg.QueryResult;
    let statements: pg.QueryResult | undefined;
    let host: HostStats | undefined;
    try {
      // One snapshot of the statistics for the whole round: the same timestamp for every row.
      await client.query('begin isolation level repeatable read');
      await client.query("set local stats_fetch_consistency = 'snapshot'");
      // As text: a JS Date would drop the microseconds.
      const { rows: clock } = await client.query<{ ts: string; epoch: string }>(`select clock_timestamp()::text as ts, (${EPOCH})::text as epoch`);
      const { ts, epoch } = clock[0]!;
      tables = await client.query(
        `select $1::text as ts, schemaname as schema_name, relname as table_name, relid,
                n_tup_ins, n_tup_upd, n_tup_del, seq_scan, seq_tup_read, coalesce(idx_scan, 0) as idx_scan,
                coalesce(idx_tup_fetch, 0) as idx_tup_fetch, n_live_tup, $2::text as stats_epoch
           from pg_stat_user_tables where ${PLACED}`,
        [ts, epoch, placed],
      );
      indexes = await client.query(
        `select $1::text as ts, schemaname as schema_name, relname as table_name, indexrelname as index_name, relid,
                idx_scan, idx_tup_read, $2::text as stats_epoch
           from pg_stat_user_indexes where ${PLACED}`,
        [ts, epoch, placed],
      );
      database = await client.query(
        `select $1::text as ts, d.xact_commit, d.xact_rollback, d.blks_read, d.blks_hit, d.blk_read_time, d.blk_write_time,
                io.reads as io_reads, io.writes as io_writes, io.read_time as io_read_time, io.write_time as io_write_time,
                $2::text as stats_epoch
           from pg_stat_database d,
                (select sum(reads)::bigint as reads, sum(writes)::bigint as writes, sum(read_time) as read_time, sum(write_time) as write_time from pg_stat_io) io
          where d.datname = current_database()`,
        [ts, epoch],
      );
      const hasStatements = await client.query<{ ok: boolean }>("select to_regclass('pg_stat_statements') is not null as ok");
      if (hasStatements.rows[0]?.ok) {
        statements = await client.query(
          `select $1::text as ts, queryid, left(query, 2000) as query, calls, total_exec_time, mean_exec_time, $2::text as stats_epoch
             from pg_stat_statements where dbid = (select oid from pg_database where datname = current_database()) and queryid is not null
            order by total_exec_time desc limit ${STATEMENTS_PER_SAMPLE}`,
          [ts, epoch],
        );
      }
      await client.query('commit');
      host = await readHost(client);
    } finally {
      client.release();
    }
    await insertSamples(catalog, node.id, tables.rows, indexes.rows, statements?.rows ?? [], { ...database.rows[0], ...hostColumns(host) });
    await recordNodeHealth(catalog, node.id, null);
    return { node: node.name, ok: true, tables: tables.rowCount ?? 0, indexes: indexes.rowCount ?? 0, statements: statements?.rowCount ?? 0, host: host !== undefined };
  } catch (err) {
    await recordNodeHealth(catalog, node.id, errorMessage(err)).catch(() => undefined); // the catalog may be what failed
    return { node: node.name, ok: false, tables: 0, indexes: 0, statements: 0, host: false, error: errorMessage(err) };
  }
}

/** Whether the node answered this round (`error` null) or not, and why. */
async function recordNodeHealth(catalog: Queryable, nodeId: number, error: string | null): Promise<void> {
  await catalog.query(
    `insert into shardcast_stats.node_health (node_id, checked_at, reachable, error, last_ok_at)
     values ($1, now(), $2::text is null, $2::text, case when $2::text is null then now() end)
     on conflict (node_id) do update set checked_at = excluded.checked_at, reachable = excluded.reachable, error = excluded.error,
       last_ok_at = coalesce(excluded.last_ok_at, shardcast_stats.node_health.last_ok_at)`,
    [nodeId, error],
  );
}

export interface NodeHealth {
  node: string;
  /** null: never checked (no collection round since it was added). */
  reachable: boolean | null;
  checkedAt: Date | null;
  lastOkAt: Date | null;
  error: string | null;
}

/** Every node's health as the last collection round found it. */
export async function nodeHealth(catalog: Queryable): Promise<NodeHealth[]> {
  const { rows } = await catalog.query<{ node: string; reachable: boolean | null; checked_at: Date | null; last_ok_at: Date | null; error: string | null }>(
    `select n.name as node, h.reachable, h.checked_at, h.last_ok_at, h.error
       from shardcast.nodes n left join shardcast_stats.node_health h on h.node_id = n.id order by n.name`,
  );
  return rows.map((r) => ({ node: r.node, reachable: r.reachable, checkedAt: r.checked_at, lastOkAt: r.last_ok_at, error: r.error }));
}

/** How `status` shows a node's health. */
export function describeHealth(h: NodeHealth | undefined): string {
  if (!h || h.reachable === null) return 'not checked yet';
  if (h.reachable) return 'ok';
  const since = h.lastOkAt ? ` (last answered ${h.lastOkAt.toISOString().slice(11, 19)} UTC)` : '';
  return `unreachable${since}: ${h.error ?? 'no answer'}`;
}

/**
 * pg_stat_statements lives in a database once the extension is created there; the collector
 * creates it when the server preloads the library (a superuser's right), and goes without otherwise.
 */
export async function ensureStatementStats(pools: NodePools, node: NodeRecord): Promise<boolean> {
  const db = pools.get(node.dsn);
  try {
    const { rows } = await db.query<{ preload: string }>("select current_setting('shared_preload_libraries') as preload");
    if (!rows[0]?.preload.split(',').some((l) => l.trim() === 'pg_stat_statements')) return false;
    await db.query('create extension if not exists pg_stat_statements');
    return true;
  } catch {
    return false;
  }
}

export interface HostStats {
  cpuBusy: number;
  cpuTotal: number;
  memTotalKb: number;
  memAvailableKb: number;
  diskReadSectors: number;
  diskWriteSectors: number;
}

/**
 * The node's host, read through PostgreSQL (pg_read_file needs superuser or pg_read_server_files):
 * the collector may run elsewhere, the node's database is where its machine can be seen.
 * Undefined where /proc cannot be read (not Linux, or no such right).
 */
async function readHost(client: pg.ClientBase): Promise<HostStats | undefined> {
  try {
    const { rows } = await client.query<{ stat: string; meminfo: string; diskstats: string }>(
      "select pg_read_file('/proc/stat') as stat, pg_read_file('/proc/meminfo') as meminfo, pg_read_file('/proc/diskstats') as diskstats",
    );
    return parseHost(rows[0]!.stat, rows[0]!.meminfo, rows[0]!.diskstats);
  } catch {
    return undefined;
  }
}

/** Whole disks only (not partitions, loop or RAM devices), so that no I/O is counted twice. */
const WHOLE_DISK = /^(sd[a-z]+|vd[a-z]+|xvd[a-z]+|hd[a-z]+|nvme\d+n\d+|mmcblk\d+)$/;

export function parseHost(stat: string, meminfo: string, diskstats: string): HostStats {
  const cpu = stat.split('\n').find((l) => l.startsWith('cpu '));
  if (!cpu) throw new Error('/proc/stat has no cpu line');
  // user nice system idle iowait irq softirq steal (guest time is already inside user).
  const f = cpu.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  const mem = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(meminfo)?.[1] ?? 0);
  let reads = 0;
  let writes = 0;
  for (const line of diskstats.split('\n')) {
    const p = line.trim().split(/\s+/);
    if (p.length < 10 || !WHOLE_DISK.test(p[2]!)) continue;
    reads += Number(p[5]);
    writes += Number(p[9]);
  }
  return { cpuBusy: total - idle, cpuTotal: total, memTotalKb: mem('MemTotal'), memAvailableKb: mem('MemAvailable'), diskReadSectors: reads, diskWriteSectors: writes };
}

function hostColumns(h: HostStats | undefined): Record<string, number | null> {
  return {
    cpu_busy_jiffies: h?.cpuBusy ?? null,
    cpu_total_jiffies: h?.cpuTotal ?? null,
    mem_total_kb: h?.memTotalKb ?? null,
    mem_available_kb: h?.memAvailableKb ?? null,
    disk_read_sectors: h?.diskReadSectors ?? null,
    disk_write_sectors: h?.diskWriteSectors ?? null,
  };
}

const COLUMNS = {
  table_samples: ['ts', 'schema_name', 'table_name', 'relid', 'n_tup_ins', 'n_tup_upd', 'n_tup_del', 'seq_scan', 'seq_tup_read', 'idx_scan', 'idx_tup_fetch', 'n_live_tup', 'stats_epoch'],
  index_samples: ['ts', 'schema_name', 'table_name', 'index_name', 'relid', 'idx_scan', 'idx_tup_read', 'stats_epoch'],
  statement_samples: ['ts', 'queryid', 'query', 'calls', 'total_exec_time', 'mean_exec_time', 'stats_epoch'],
  node_samples: [
    'ts', 'xact_commit', 'xact_rollback', 'blks_read', 'blks_hit', 'blk_read_time', 'blk_write_time', 'io_reads', 'io_writes', 'io_read_time',
    'io_write_time', 'cpu_busy_jiffies', 'cpu_total_jiffies', 'mem_total_kb', 'mem_available_kb', 'disk_read_sectors', 'disk_write_sectors', 'stats_epoch',
  ],
} as const;

/** Rows as JSON, expanded on the catalog by json_populate_recordset into the table's own types. */
async function insertSamples(
  catalog: Queryable,
  nodeId: number,
  tables: Record<string, unknown>[],
  indexes: Record<string, unknown>[],
  statements: Record<string, unknown>[],
  node: Record<string, unknown>,
): Promise<void> {
  const write = async (table: keyof typeof COLUMNS, rows: Record<string, unknown>[]): Promise<void> => {
    if (rows.length === 0) return;
    const cols = COLUMNS[table].join(', ');
    await catalog.query(
      `insert into shardcast_stats.${table} (node_id, ${cols})
       select $1, ${cols} from json_populate_recordset(null::shardcast_stats.${table}, $2::json)`,
      [nodeId, JSON.stringify(rows)],
    );
  };
  await write('table_samples', tables);
  await write('index_samples', indexes);
  await write('statement_samples', statements);
  await write('node_samples', [node]);
}
