/**
 * What the shard-key advisor needs of a live table: its columns and their types, its key and method
 * today, the other tables' keys (join co-location), and its key statistics from PostgreSQL's own
 * pg_stats on every shard the catalog places, combined into the table's (statisticsFromPgStats).
 * Read only, unless asked to ANALYZE the shards first.
 */
import type { NodePools } from '../catalog/node-pools.js';
import type { Queryable } from '../catalog/nodes.js';
import type { ShardMethod } from '../catalog/tables.js';
import { errorMessage, InvalidInputError, NodeUnavailableError, NotFoundError } from '../errors.js';
import { quoteIdent } from '../sql/ident.js';
import { statisticsFromPgStats, type AdvisorColumn, type ColumnStatistics, type KeyColumnType, type PgStatsRow } from './advisor.js';

export interface LiveTable {
  name: string;
  keyColumn: string;
  method: ShardMethod;
  shards: Array<{ shardId: number; schema: string; node: string; dsn: string }>;
  /** The other distributed tables' shard keys. */
  otherKeys: Record<string, string>;
}

/** The catalog's view of a distributed table; NotFoundError naming it when there is none. */
export async function liveTable(catalog: Queryable, name: string): Promise<LiveTable> {
  const { rows } = await catalog.query<{ name: string; key_column: string; method: ShardMethod; group_id: string }>(
    `select t.name, t.key_column, g.method, t.group_id::text from shardcast.distributed_tables t join shardcast.colocation_groups g on g.id = t.group_id
      where t.state = 'active'`,
  );
  const table = rows.find((r) => r.name === name);
  if (!table) throw new NotFoundError(`unknown distributed table "${name}"${rows.length ? ` (there are: ${rows.map((r) => r.name).sort().join(', ')})` : ''}`);
  const shards = await catalog.query<{ shardId: number; schema: string; node: string; dsn: string }>(
    `select s.id::int as "shardId", s.schema_name as schema, n.name as node, n.dsn
       from shardcast.shards s join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id
      where s.group_id = $1 order by s.id`,
    [table.group_id],
  );
  return {
    name,
    keyColumn: table.key_column,
    method: table.method,
    shards: shards.rows,
    otherKeys: Object.fromEntries(rows.filter((r) => r.name !== name).map((r) => [r.name, r.key_column])),
  };
}

/** A PostgreSQL type (information_schema's data_type, or a backup's pgType) as the advisor's kind of key column. */
export function keyColumnType(pgType: string): KeyColumnType {
  const t = pgType.toLowerCase().replace(/\(.*$/, '').trim();
  if (['smallint', 'integer', 'bigint', 'int2', 'int4', 'int8'].includes(t)) return 'integer';
  if (['text', 'character varying', 'varchar', 'character', 'bpchar'].includes(t)) return 'text';
  if (t === 'uuid') return 'uuid';
  if (t === 'date' || t.startsWith('timestamp')) return 'time';
  return 'other';
}

/** The table's columns as one shard holds them. */
export async function liveColumns(pools: NodePools, table: LiveTable): Promise<AdvisorColumn[]> {
  const shard = table.shards[0];
  if (!shard) throw new InvalidInputError(`table "${table.name}" has no shard`);
  const { rows } = await pools
    .get(shard.dsn)
    .query<{ name: string; type: string }>(
      `select column_name as name, data_type as type from information_schema.columns where table_schema = $1 and table_name = $2 order by ordinal_position`,
      [shard.schema, table.name],
    )
    .catch((err: unknown) => {
      throw new NodeUnavailableError(shard.node, `cannot read the columns of table "${table.name}" on shard ${shard.shardId}: ${errorMessage(err)}`, { cause: err });
    });
  if (rows.length === 0) throw new InvalidInputError(`table "${table.name}": shard ${shard.shardId} on ${shard.node} has no table ${shard.schema}.${table.name}`);
  return rows.map((r) => ({ name: r.name, type: keyColumnType(r.type) }));
}

/** One shard's pg_stats rows of the table and its rows (pg_class.reltuples); a shard never analyzed is an error saying so. */
async function shardStatistics(pools: NodePools, table: string, shard: LiveTable['shards'][number], analyze: boolean): Promise<{ rows: number; columns: PgStatsRow[] }> {
  const db = pools.get(shard.dsn);
  const qualified = `${quoteIdent(shard.schema)}.${quoteIdent(table)}`;
  if (analyze) await db.query(`analyze ${qualified}`);
  const rel = await db.query<{ rows: number }>(`select reltuples::float8 as rows from pg_class where oid = to_regclass($1)`, [qualified]);
  const rows = rel.rows[0]?.rows ?? -1;
  const stats = await db.query<{ column: string; null_frac: number; n_distinct: number; mcv: string[] | null; mcf: number[] | null; correlation: number | null }>(
    `select attname as column, null_frac::float8 as null_frac, n_distinct::float8 as n_distinct, most_common_vals::text::text[] as mcv,
            most_common_freqs::float8[] as mcf, correlation::float8 as correlation
       from pg_stats where schemaname = $1 and tablename = $2`,
    [shard.schema, table],
  );
  if (rows < 0 || (rows > 0 && stats.rows.length === 0)) {
    throw new InvalidInputError(`table "${table}": shard ${shard.shardId} on ${shard.node} has no statistics yet (never analyzed): run with --analyze`);
  }
  return {
    rows,
    columns: stats.rows.map((s) => ({ column: s.column, rows, nullFraction: s.null_frac, nDistinct: s.n_distinct, mostCommonValues: s.mcv, mostCommonFreqs: s.mcf, correlation: s.correlation })),
  };
}

/**
 * Every shard's pg_stats of the table, combined per column, and the table's rows. With `analyze`,
 * each shard is analyzed first. An unreachable node is an error naming it.
 */
export async function liveStatistics(pools: NodePools, table: LiveTable, options: { analyze?: boolean } = {}): Promise<{ rows: number; statistics: ColumnStatistics[] }> {
  const shards = await Promise.all(
    table.shards.map((shard) =>
      shardStatistics(pools, table.name, shard, options.analyze ?? false).catch((err: unknown) => {
        if (err instanceof InvalidInputError) throw err;
        throw new NodeUnavailableError(shard.node, `cannot read the statistics of table "${table.name}" on shard ${shard.shardId}: ${errorMessage(err)}`, { cause: err });
      }),
    ),
  );
  const perColumn = new Map<string, PgStatsRow[]>();
  for (const row of shards.flatMap((s) => s.columns)) perColumn.set(row.column, [...(perColumn.get(row.column) ?? []), row]);
  return {
    rows: Math.round(shards.reduce((a, s) => a + s.rows, 0)),
    statistics: [...perColumn].map(([column, rows]) => statisticsFromPgStats(column, rows, { shardKey: column === table.keyColumn })),
  };
}
