/**
 * The rebalance-threshold check of a restored table (the restore's `rebalance_threshold`): the size of
 * every shard (pg_table_size on its node) and, when the collector has samples of the last hour, its
 * load (rows written and read per second), each compared with the table's mean. When the largest (or
 * the busiest) shard exceeds the mean by more than the threshold (as a fraction of the mean), it is
 * split in two: the lower half stays, the upper half goes to the node holding the least of the table.
 * Conservative: one split per table per run, none while any movement of the table's group runs, none
 * of a shard under `minShardBytes`, and the decision always says why.
 */
import type pg from 'pg';
import type { NodePools } from '../catalog/node-pools.js';
import { rangeSplitsFor } from '../movement/range-splits.js';
import type { Queryable } from '../catalog/nodes.js';
import { ShardcastError, errorMessage } from '../errors.js';
import { quoteIdent } from '../sql/ident.js';
import { shardsOfGroup, type RetentionTable } from './retention.js';

export interface ShardBalance {
  shardId: number;
  node: string;
  bytes: number;
  /** Rows written and read per second over the last hour; null when the collector has too few samples. */
  load: number | null;
}

export interface BalanceDecision {
  table: string;
  action: 'split' | 'none';
  /** Why, in words. */
  reason: string;
  threshold: number | null;
  shards: ShardBalance[];
  meanBytes: number;
  /** (largest − mean) / mean. */
  sizeSkew: number;
  /** The same for load, when every shard has one. */
  loadSkew: number | null;
  split?: { shardId: number; targetNodes: [string, string]; at?: string; by: 'size' | 'load' };
}

/** The shards' load (rows per second) from the collector's samples of the hour before `now`. */
async function shardLoads(catalog: Queryable, table: string, now: Date): Promise<Map<string, number>> {
  const { rows } = await catalog.query<{ schema_name: string; rate: number | null }>(
    `with s as (
       select schema_name, ts, stats_epoch, n_tup_ins + n_tup_upd + n_tup_del + seq_tup_read + idx_tup_fetch as c,
              max(stats_epoch) over (partition by schema_name) as epoch
         from shardcast_stats.table_samples where table_name = $1 and ts > $2::timestamptz - interval '1 hour' and ts <= $2::timestamptz)
     select schema_name, (max(c) - min(c))::float8 / nullif(extract(epoch from max(ts) - min(ts)), 0) as rate
       from s where stats_epoch = epoch group by schema_name having count(*) >= 2`,
    [table, now.toISOString()],
  );
  return new Map(rows.filter((r) => r.rate !== null).map((r) => [r.schema_name, r.rate!]));
}

const skewOf = (values: number[]): { mean: number; skew: number; at: number } => {
  const mean = values.reduce((a, v) => a + v, 0) / values.length;
  let at = 0;
  values.forEach((v, i) => {
    if (v > values[at]!) at = i;
  });
  return { mean, at, skew: mean > 0 ? (values[at]! - mean) / mean : 0 };
};

export async function checkBalance(
  catalog: pg.Pool,
  pools: NodePools,
  t: Pick<RetentionTable, 'table' | 'groupId' | 'method' | 'keyColumn' | 'rebalanceThreshold'>,
  options: { now: Date; minShardBytes: number },
): Promise<BalanceDecision> {
  const shards = await shardsOfGroup(catalog, t.groupId);
  const sizes: ShardBalance[] = [];
  const loads = await shardLoads(catalog, t.table, options.now);
  for (const s of shards) {
    let bytes: number;
    try {
      const { rows } = await pools.get(s.dsn).query<{ b: string }>('select coalesce(pg_table_size(to_regclass($1)), 0)::text as b', [`${quoteIdent(s.schema)}.${quoteIdent(t.table)}`]);
      bytes = Number(rows[0]!.b);
    } catch (err) {
      throw new ShardcastError('BALANCE_CHECK_FAILED', `table ${t.table}: cannot read the size of shard ${s.shardId} on ${s.node}: ${errorMessage(err)}`, { cause: err });
    }
    sizes.push({ shardId: s.shardId, node: s.node, bytes, load: loads.get(s.schema) ?? null });
  }
  const size = skewOf(sizes.map((s) => s.bytes));
  const withLoad = sizes.every((s) => s.load !== null) && sizes.length > 0;
  const load = withLoad ? skewOf(sizes.map((s) => s.load!)) : null;
  const base = { table: t.table, threshold: t.rebalanceThreshold, shards: sizes, meanBytes: Math.round(size.mean), sizeSkew: size.skew, loadSkew: load?.skew ?? null };
  const none = (reason: string): BalanceDecision => ({ ...base, action: 'none', reason });
  const pct = (x: number) => `${(x * 100).toFixed(0)}%`;
  if (t.rebalanceThreshold === null) return none('no rebalance_threshold in its restore');
  if (sizes.length === 0) return none('the table has no shard');
  const moving = await catalog.query<{ id: string; operation: string; shard: number }>(
    `select m.id, m.operation, m.shard_id::int as shard from shardcast.movements m
      where m.state = 'running' and exists (select 1 from shardcast.shards s where s.group_id = $1 and s.id = any(array_prepend(m.shard_id, m.other_shard_ids)))
      limit 1`,
    [t.groupId],
  );
  if (moving.rows[0]) return none(`a ${moving.rows[0].operation} of shard ${moving.rows[0].shard} runs (movement ${moving.rows[0].id}): nothing until it ends`);
  const threshold = t.rebalanceThreshold;
  const bySize = size.skew > threshold;
  const byLoad = !bySize && load !== null && load.skew > threshold;
  const loadText = load ? `, load skew ${pct(load.skew)}` : ', no load figures (collector samples of the last hour)';
  if (!bySize && !byLoad) return none(`size skew ${pct(size.skew)}${loadText}: within the threshold ${pct(threshold)}`);
  const chosen = sizes[bySize ? size.at : load!.at]!;
  if (chosen.bytes < options.minShardBytes) {
    return none(`shard ${chosen.shardId} is ${pct(bySize ? size.skew : load!.skew)} over the mean ${bySize ? 'size' : 'load'} (threshold ${pct(threshold)}) but holds only ${chosen.bytes} bytes, under the ${options.minShardBytes} a split is worth`);
  }
  // The upper half goes to the active node holding the least of the table (maybe the shard's own).
  const active = await catalog.query<{ name: string }>(`select name from shardcast.nodes where state = 'active' order by id`);
  const held = new Map<string, number>(active.rows.map((n) => [n.name, 0]));
  for (const s of sizes) if (held.has(s.node)) held.set(s.node, held.get(s.node)! + s.bytes);
  const lightest = [...held.entries()].sort((a, b) => a[1] - b[1])[0]?.[0] ?? chosen.node;
  let at: string | undefined;
  if (t.method === 'range') {
    // At its rows' median, moved to a logical boundary (the start of a day for a time key).
    const cut = await rangeSplitsFor(catalog, pools, chosen.shardId, 2, t.table);
    if (!cut) return none(`shard ${chosen.shardId} is over the threshold, but half its rows share its lowest key: no split point`);
    at = cut.points[0]!;
  }
  const by = bySize ? 'size' : 'load';
  const skew = bySize ? size.skew : load!.skew;
  return {
    ...base,
    action: 'split',
    reason: `shard ${chosen.shardId} on ${chosen.node} is ${pct(skew)} over the mean ${by} (threshold ${pct(threshold)}${bySize ? loadText : `, size skew ${pct(size.skew)}`}): split, the upper half to ${lightest}`,
    split: { shardId: chosen.shardId, targetNodes: [chosen.node, lightest], ...(at !== undefined ? { at } : {}), by },
  };
}
