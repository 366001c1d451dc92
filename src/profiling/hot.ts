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
 * Drops the workload profile older than `keepDays`: per-minute rows, flush ids, templates not seen
 * since, and the temperature computations made from them (the collector's partition upkeep calls it,
 * as for the samples).
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
    // Last: a worker ahead of its catalog (no migration 0020) has pruned the rest when this fails.
    ['temperature', 'computed_at'],
  ] as const) {
    const { rowCount } = await catalog.query(`delete from shardcast_stats.${table} where ${column} < now() - make_interval(days => $1)`, [keepDays]);
    n += rowCount ?? 0;
  }
  return n;
}

export interface HeatMap {
  table: string;
  /** Minute buckets, oldest first (ISO). */
  buckets: string[];
  /** Shard ids, most accessed first. */
  shards: number[];
  /** counts[shard index][bucket index]. */
  counts: number[][];
}

/** Accesses per shard and minute of one table since `sinceMs` ago (at most `maxShards` shards, the most accessed). */
export async function heatMap(catalog: Queryable, table: string, sinceMs: number, maxShards = 64): Promise<HeatMap> {
  const { rows } = await catalog.query<{ shard_id: string; bucket: Date; n: string }>(
    `select shard_id::text, bucket, accesses::text as n from shardcast_stats.shard_accesses
      where table_name = $1 and bucket >= date_trunc('minute', now() - make_interval(secs => $2::float8 / 1000)) order by bucket`,
    [table, sinceMs],
  );
  const totals = new Map<number, number>();
  for (const r of rows) totals.set(Number(r.shard_id), (totals.get(Number(r.shard_id)) ?? 0) + Number(r.n));
  const shards = [...totals].sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, maxShards).map(([s]) => s);
  const buckets = [...new Set(rows.map((r) => r.bucket.toISOString()))].sort();
  const counts = shards.map(() => buckets.map(() => 0));
  for (const r of rows) {
    const s = shards.indexOf(Number(r.shard_id));
    if (s >= 0) counts[s]![buckets.indexOf(r.bucket.toISOString())] = Number(r.n);
  }
  return { table, buckets, shards, counts };
}

/** The heat map as SVG: a row per shard, a column per minute, darker for more accesses. */
export function heatMapSvg(map: HeatMap): string {
  const cell = 14;
  const left = 90;
  const top = 40;
  const columns = Math.max(map.buckets.length, 1);
  const width = left + columns * cell + 20;
  const height = top + Math.max(map.shards.length, 1) * cell + 40;
  const max = Math.max(1, ...map.counts.flat());
  const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  const cells: string[] = [];
  map.shards.forEach((shard, i) => {
    cells.push(`<text x="${left - 6}" y="${top + i * cell + cell - 3}" font-size="10" text-anchor="end">shard ${shard}</text>`);
    map.counts[i]!.forEach((n, j) => {
      const heat = n / max;
      // From pale yellow (cold) to dark red (hot).
      const color = `rgb(${Math.round(255 - 100 * heat)},${Math.round(240 - 220 * heat)},${Math.round(200 - 180 * heat)})`;
      cells.push(`<rect x="${left + j * cell}" y="${top + i * cell}" width="${cell - 1}" height="${cell - 1}" fill="${color}"><title>${n}</title></rect>`);
    });
  });
  const first = map.buckets[0] ?? '';
  const last = map.buckets.at(-1) ?? '';
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="20" font-size="13">${esc(map.table)}: accesses per shard and minute (max ${max})</text>`,
    ...cells,
    `<text x="${left}" y="${height - 12}" font-size="10">${esc(first.slice(0, 16))}</text>`,
    `<text x="${width - 20}" y="${height - 12}" font-size="10" text-anchor="end">${esc(last.slice(0, 16))}</text>`,
    '</svg>',
  ].join('\n');
}
