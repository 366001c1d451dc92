/**
 * Split points of a range shard (issue 13: split points at logical boundaries). A hash shard is cut
 * where its pieces carry even load by the routers' profile (profiling/tenants.ts); a range shard has
 * no such profile over its keys, so it is cut by its rows: at the keys of the row quantiles j/pieces,
 * read from the shard itself. Each point is then moved to a logical boundary:
 *  - a range split at key k keeps every row of k on one side (the upper), so an integer, text or uuid
 *    key (a tenant, an order) is never separated across pieces or colocated tables whatever k is;
 *  - a time key is moved down to the start of its day (UTC), else of its hour, when that still lies
 *    strictly inside the shard, above the previous point and above the shard's lowest row (so no piece
 *    is empty): a day's rows stay together, and retention and time-range queries find whole days.
 * The shares of rows below each point are counted in the same snapshot.
 */
import { compareKeys, isTimeKey, keyToText, normalizeKey, timeKeyText, timeKeyValue, type KeyType } from '../catalog/keys.js';
import type pg from 'pg';
import type { NodePools } from '../catalog/node-pools.js';
import type { Queryable } from '../catalog/nodes.js';
import { canonicalSettingsSql } from '../backup/values.js';
import { quoteIdent } from '../sql/ident.js';

export interface RangeShardRows {
  schema: string;
  table: string;
  keyColumn: string;
  keyType: KeyType;
  rangeMin: string;
  rangeMax: string;
}

export interface RangeSplits {
  points: string[];
  /** Each piece's share of the shard's rows. */
  shares: number[];
  /** Per point: the boundary it was moved to ('day', 'hour'), or 'key' (the quantile's key itself). */
  boundaries: Array<'day' | 'hour' | 'key'>;
}

const DAY_US = 86_400_000_000n;
const HOUR_US = 3_600_000_000n;

/**
 * The logical boundary at or below `point` for a time key (see the module): the day's start, else the
 * hour's, else the point itself; `above` is the lowest value a boundary may take (exclusive), `below`
 * the highest (exclusive). Pure.
 */
export function boundaryOf(keyType: KeyType, point: string, above: string, below: string): { at: string; boundary: 'day' | 'hour' | 'key' } {
  const key = keyToText(normalizeKey(keyType, point));
  if (!isTimeKey(keyType) || keyType === 'date') return { at: key, boundary: 'key' };
  const us = timeKeyValue(keyType, key);
  const floor = (v: bigint, unit: bigint) => v - (((v % unit) + unit) % unit);
  for (const [boundary, unit] of [['day', DAY_US], ['hour', HOUR_US]] as const) {
    const at = timeKeyText(keyType, floor(us, unit));
    if (compareKeys(keyType, at, above) > 0 && compareKeys(keyType, at, below) < 0) return { at, boundary };
  }
  return { at: key, boundary: 'key' };
}

/**
 * The `pieces − 1` split points of a range shard from its rows, read on the shard's node through
 * `client` (a connection of its own: one snapshot), at logical boundaries. Undefined when the shard
 * has too few distinct keys for that many non-empty pieces.
 */
export async function rangeSplitPoints(client: pg.ClientBase, shard: RangeShardRows, pieces: number): Promise<RangeSplits | undefined> {
  if (!(Number.isInteger(pieces) && pieces >= 2)) return undefined;
  const key = quoteIdent(shard.keyColumn);
  const from = `${quoteIdent(shard.schema)}.${quoteIdent(shard.table)}`;
  const fractions = Array.from({ length: pieces - 1 }, (_, j) => (j + 1) / pieces);
  // Under the canonical settings: keys come back as the catalog keeps them (UTC, ISO).
  await client.query('begin isolation level repeatable read read only');
  try {
    for (const sql of canonicalSettingsSql()) await client.query(sql);
    const { rows } = await client.query<{ low: string | null; points: string[] | null }>(
      `select min(${key})::text as low, (percentile_disc($1::float8[]) within group (order by ${key}))::text[] as points from ${from}`,
      [fractions],
    );
    const low = rows[0]?.low ?? null;
    const quantiles = rows[0]?.points ?? [];
    if (low === null || quantiles.length !== pieces - 1) return undefined;
    const points: string[] = [];
    const boundaries: RangeSplits['boundaries'] = [];
    let above = low; // a point must lie above the lowest row, and above the previous point: no piece is empty
    for (const q of quantiles) {
      const b = boundaryOf(shard.keyType, q, above, shard.rangeMax);
      if (compareKeys(shard.keyType, b.at, above) <= 0 || compareKeys(shard.keyType, b.at, shard.rangeMax) >= 0) return undefined;
      points.push(b.at);
      boundaries.push(b.boundary);
      above = b.at;
    }
    const below = points.map((_, j) => `count(*) filter (where ${key} < $${j + 1}::${shard.keyType})`).join(', ');
    const { rows: c } = await client.query<{ n: string; below: string[] }>(`select count(*)::text as n, array[${below}]::text[] as below from ${from}`, points);
    const n = Number(c[0]!.n);
    const under = c[0]!.below.map(Number);
    const counts = [...under, n].map((v, i) => v - (i === 0 ? 0 : under[i - 1]!));
    return { points, shares: counts.map((v) => (n > 0 ? v / n : 0)), boundaries };
  } finally {
    await client.query('rollback').catch(() => undefined);
  }
}

/**
 * The split points of shard `shardId` when it is range-sharded (rangeSplitPoints on its node, over
 * `table`, by default the first active table of its colocation group: the group's tables share the
 * key, and a split cuts them all at the same key); null for a hash shard or a shard (or table) that is
 * not in the catalog.
 */
export async function rangeSplitsFor(catalog: Queryable, pools: NodePools, shardId: number, pieces: number, table?: string): Promise<RangeSplits | undefined | null> {
  const { rows } = await catalog.query<{ method: string; key_type: KeyType; key_column: string; table: string; schema: string; range_min: string | null; range_max: string | null; dsn: string }>(
    `select g.method, g.key_type, t.key_column, t.name as table, s.schema_name as schema, s.range_min, s.range_max, n.dsn
       from shardcast.shards s join shardcast.colocation_groups g on g.id = s.group_id
       join shardcast.distributed_tables t on t.group_id = g.id and t.state = 'active'
       join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id
      where s.id = $1 and ($2::text is null or t.name = $2) order by t.id limit 1`,
    [shardId, table ?? null],
  );
  const r = rows[0];
  if (!r || r.method !== 'range' || r.range_min === null || r.range_max === null) return null;
  const client = await pools.get(r.dsn).connect();
  try {
    return await rangeSplitPoints(client, { schema: r.schema, table: r.table, keyColumn: r.key_column, keyType: r.key_type, rangeMin: r.range_min, rangeMax: r.range_max }, pieces);
  } finally {
    client.release();
  }
}
