/**
 * What `shardcast hot` shows: from the workload profile routers flush to the catalog
 * (migrations/0019_workload_profile.sql), per distributed table the most accessed shards and
 * shard-key values since a time, each with its share of the table's accesses, and the most called
 * templates.
 */
import type { Queryable } from '../catalog/nodes.js';
import { UnknownTableError } from '../errors.js';

export interface HotShard {
  shardId: number;
  accesses: number;
  /** Of the table's shard accesses in the window (a scatter statement is one access to each shard). */
  share: number;
}

export interface HotKey {
  key: string;
  /** Upper estimate (count-min), summed over the intervals the key was among the top keys. */
  count: number;
  lowerBound: number;
  /** Of the table's accesses by key (forKey) in the window. */
  share: number;
}

export interface HotTable {
  table: string;
  shardAccesses: number;
  keyAccesses: number;
  shards: HotShard[];
  keys: HotKey[];
}

export interface HotTemplate {
  templateId: string;
  query: string;
  kind: string;
  tables: string[];
  calls: number;
  rows: number;
  meanMs: number;
  singleShard: number;
  scatter: number;
}

export interface HotReport {
  since: string;
  tables: HotTable[];
  templates: HotTemplate[];
}

/** The report for the window since `sinceMs` ago; `table` must be a distributed table. */
export async function hotReport(catalog: Queryable, options: { table?: string; sinceMs: number; top: number }): Promise<HotReport> {
  if (options.table !== undefined) {
    const { rowCount } = await catalog.query('select 1 from shardcast.distributed_tables where name = $1', [options.table]);
    if (!rowCount) throw new UnknownTableError(options.table);
  }
  const { rows: since } = await catalog.query<{ at: Date }>("select now() - make_interval(secs => $1::float8 / 1000) as at", [options.sinceMs]);
  const at = since[0]!.at;
  const table = options.table ?? null;
  const { rows: shardRows } = await catalog.query<{ table_name: string; shard_id: string; n: string }>(
    `select table_name, shard_id::text, sum(accesses)::text as n from shardcast_stats.shard_accesses
      where bucket >= date_trunc('minute', $1::timestamptz) and ($2::text is null or table_name = $2)
      group by table_name, shard_id order by table_name, sum(accesses) desc, shard_id`,
    [at, table],
  );
  const { rows: keyed } = await catalog.query<{ table_name: string; n: string }>(
    `select table_name, sum(accesses)::text as n from shardcast_stats.key_accesses
      where bucket >= date_trunc('minute', $1::timestamptz) and ($2::text is null or table_name = $2) group by table_name`,
    [at, table],
  );
  const { rows: keyRows } = await catalog.query<{ table_name: string; key: string; n: string; lb: string }>(
    `select table_name, key, n, lb from (
       select table_name, key, sum(count)::text as n, sum(lower_bound)::text as lb,
              row_number() over (partition by table_name order by sum(count) desc, key) as r
         from shardcast_stats.hot_keys
        where bucket >= date_trunc('minute', $1::timestamptz) and ($2::text is null or table_name = $2)
        group by table_name, key) k
      where r <= $3 order by table_name, r`,
    [at, table, options.top],
  );
  const tables = new Map<string, HotTable>();
  const of = (name: string): HotTable => {
    let t = tables.get(name);
    if (!t) tables.set(name, (t = { table: name, shardAccesses: 0, keyAccesses: 0, shards: [], keys: [] }));
    return t;
  };
  for (const r of shardRows) of(r.table_name).shardAccesses += Number(r.n);
  for (const r of keyed) of(r.table_name).keyAccesses = Number(r.n);
  for (const r of shardRows) {
    const t = of(r.table_name);
    if (t.shards.length < options.top) t.shards.push({ shardId: Number(r.shard_id), accesses: Number(r.n), share: share(Number(r.n), t.shardAccesses) });
  }
  for (const r of keyRows) {
    const t = of(r.table_name);
    t.keys.push({ key: r.key, count: Number(r.n), lowerBound: Math.max(0, Number(r.lb)), share: share(Number(r.n), t.keyAccesses) });
  }
  const { rows: templateRows } = await catalog.query<{ template_id: string; query: string; kind: string; tables: string[]; calls: string; rows: string; ms: number; single: string; scatter: string }>(
    `select q.template_id, q.query, q.kind, q.tables, sum(c.calls)::text as calls, sum(c.rows)::text as rows,
            sum(c.total_ms) / nullif(sum(c.calls), 0) as ms, sum(c.single_shard)::text as single, sum(c.scatter)::text as scatter
       from shardcast_stats.template_calls c join shardcast_stats.query_templates q using (template_id)
      where c.bucket >= date_trunc('minute', $1::timestamptz) and ($2::text is null or $2 = any(q.tables))
      group by q.template_id order by sum(c.calls) desc, q.template_id limit $3`,
    [at, table, options.top],
  );
  return {
    since: at.toISOString(),
    tables: [...tables.values()].sort((a, b) => b.shardAccesses - a.shardAccesses || a.table.localeCompare(b.table)),
    templates: templateRows.map((r) => ({
      templateId: r.template_id,
      query: r.query,
      kind: r.kind,
      tables: r.tables,
      calls: Number(r.calls),
      rows: Number(r.rows),
      meanMs: Math.round((r.ms ?? 0) * 1000) / 1000,
      singleShard: Number(r.single),
      scatter: Number(r.scatter),
    })),
  };
}

function share(n: number, total: number): number {
  return total > 0 ? Math.round((n / total) * 10_000) / 10_000 : 0;
}

/**
 * Drops the workload profile older than `keepDays`: per-minute rows, flush ids, and templates not
 * seen since (the collector's partition upkeep calls it, as for the samples).
 */
export async function pruneWorkloadProfile(catalog: Queryable, keepDays: number): Promise<number> {
  let n = 0;
  for (const [table, column] of [
    ['template_calls', 'bucket'],
    ['shard_accesses', 'bucket'],
    ['key_accesses', 'bucket'],
    ['hot_keys', 'bucket'],
    ['query_templates', 'last_seen'],
    ['profile_flushes', 'flushed_at'],
  ] as const) {
    const { rowCount } = await catalog.query(`delete from shardcast_stats.${table} where ${column} < now() - make_interval(days => $1)`, [keepDays]);
    n += rowCount ?? 0;
  }
  return n;
}
