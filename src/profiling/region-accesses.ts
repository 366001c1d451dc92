/**
 * Accesses per shard and client region (migrations/0014_region_accesses.sql): routers add their
 * counts per hour, the planner reads each shard's shares (its locality cost, src/planning/cost.ts).
 */
import type { Queryable } from '../catalog/nodes.js';
import type { RegionShares } from '../planning/types.js';

/** Adds one region's counts (shard id → statements) to the current hour's. Retried counts would add twice: callers send each count once. */
export async function addRegionAccesses(catalog: Queryable, region: string, counts: ReadonlyMap<number, number>): Promise<void> {
  if (counts.size === 0) return;
  await catalog.query(
    `insert into shardcast_stats.shard_region_accesses as a (shard_id, region, hour, accesses)
     select s, $1, date_trunc('hour', now()), n from unnest($2::bigint[], $3::bigint[]) as t(s, n)
     on conflict (shard_id, region, hour) do update set accesses = a.accesses + excluded.accesses`,
    [region, [...counts.keys()], [...counts.values()]],
  );
}

/** Each shard's share of accesses per region since `hours` before `asOf` (shards with none are absent). */
export async function regionShares(catalog: Queryable, asOf: Date, hours = 24): Promise<RegionShares[]> {
  const { rows } = await catalog.query<{ shard_id: number; region: string; accesses: string }>(
    `select shard_id::int as shard_id, region, sum(accesses)::text as accesses from shardcast_stats.shard_region_accesses
      where hour > $1::timestamptz - make_interval(hours => $2)
      group by shard_id, region order by shard_id, region`,
    [asOf, hours],
  );
  const byShard = new Map<number, Record<string, number>>();
  for (const r of rows) {
    const shares = byShard.get(r.shard_id) ?? {};
    shares[r.region] = Number(r.accesses);
    byShard.set(r.shard_id, shares);
  }
  return [...byShard].map(([shardId, counts]) => {
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    return { shardId, shares: Object.fromEntries(Object.entries(counts).map(([region, n]) => [region, total > 0 ? n / total : 0])) };
  });
}

/** Drops hours older than `keepDays` (the collector's partition upkeep calls it). */
export async function pruneRegionAccesses(catalog: Queryable, keepDays: number): Promise<number> {
  const { rowCount } = await catalog.query(`delete from shardcast_stats.shard_region_accesses where hour < now() - make_interval(days => $1)`, [keepDays]);
  return rowCount ?? 0;
}
