/**
 * Shardability of an entity (issue 13): how much cutting it out of its shard (a shard-key value: a
 * tenant) or moving it (a key range: a shard) is worth. Three facts, each from the planner's inputs:
 *  - its predicted load: the peak over the horizon of its shard's load forecast at the planning bound
 *    (planning.bound, default the 95% upper bound), times the entity's share of the shard's accesses
 *    for a key (the routers' profile), whole for a key range;
 *  - its size: the bytes it holds (for a key, its rows' share of the shard's bytes), what a split or
 *    move copies;
 *  - the load of its node: the node's predicted peak utilisation over the horizon.
 * score = relief × pressure ÷ (1 + GiB), where relief is the share of its node's capacity the entity
 * would free (predicted load ÷ capacity) and pressure the node's predicted peak utilisation over the
 * target utilisation (1 at the target): a hot entity on an overloaded node that is cheap to copy
 * scores highest; one on a node under its target scores low whatever its load. shardability() and
 * shardFacts() are pure; scoreEntities() reads the catalog and the nodes.
 */
import type { NodePools } from '../catalog/node-pools.js';
import type pg from 'pg';
import { gatherPlanInput } from '../planning/inputs.js';
import { resolveSettings } from '../planning/settings.js';
import type { PlanInput } from '../planning/types.js';
import { quoteIdent } from '../sql/ident.js';

type PlannerSettingsInput = NonNullable<PlanInput['settings']>;

export interface EntityFacts {
  /** The entity's predicted peak load over the horizon, in load units. */
  predictedLoad: number;
  bytes: number;
  /** Its node's capacity (load units) and predicted peak utilisation over the horizon (load ÷ capacity). */
  nodeCapacity: number;
  nodeUtilisation: number;
  targetUtilisation: number;
}

export interface Shardability {
  score: number;
  /** Share of its node's capacity the entity would free. */
  relief: number;
  /** Its node's predicted peak utilisation over the target. */
  pressure: number;
  gib: number;
}

export function shardability(f: EntityFacts): Shardability {
  const relief = f.nodeCapacity > 0 ? Math.max(0, f.predictedLoad) / f.nodeCapacity : 0;
  const pressure = f.targetUtilisation > 0 ? Math.max(0, f.nodeUtilisation) / f.targetUtilisation : 0;
  const gib = Math.max(0, f.bytes) / 2 ** 30;
  const round = (x: number) => Math.round(x * 1e4) / 1e4;
  return { score: round((relief * pressure) / (1 + gib)), relief: round(relief), pressure: round(pressure), gib: round(gib) };
}

/** What the planner's inputs give for a shard: its predicted peak load and bytes, its node's capacity and predicted peak utilisation. */
export interface ShardFacts {
  shardId: number;
  node: string;
  predictedLoad: number;
  bytes: number;
  nodeCapacity: number;
  nodeUtilisation: number;
}

/**
 * Per shard, from a plan input (gatherPlanInput): the shard's forecast at `bound`, peak over the
 * horizon, and its node's peak of the summed forecasts of its shards over capacity. Pure.
 */
export function shardFacts(
  input: { nodes: ReadonlyArray<{ id: number; name: string; capacity: number }>; placements: ReadonlyArray<{ shardId: number; nodeId: number; bytes: number }>; shardForecasts: ReadonlyArray<{ shardId: number; steps: ReadonlyArray<Record<'point' | 'hi80' | 'hi95', number>> }> },
  bound: 'point' | 'upper80' | 'upper95',
  horizon: number,
): Map<number, ShardFacts> {
  const pick = (s: Record<'point' | 'hi80' | 'hi95', number>) => Math.max(0, bound === 'point' ? s.point : bound === 'upper80' ? s.hi80 : s.hi95);
  const load = new Map(input.shardForecasts.map((f) => [f.shardId, f.steps.slice(0, horizon).map(pick)]));
  const nodeLoad = new Map<number, number[]>();
  for (const p of input.placements) {
    const l = load.get(p.shardId) ?? [];
    const sum = nodeLoad.get(p.nodeId) ?? [];
    l.forEach((v, t) => (sum[t] = (sum[t] ?? 0) + v));
    nodeLoad.set(p.nodeId, sum);
  }
  const out = new Map<number, ShardFacts>();
  for (const p of input.placements) {
    const node = input.nodes.find((n) => n.id === p.nodeId);
    if (!node) continue;
    const peak = Math.max(0, ...(nodeLoad.get(p.nodeId) ?? []));
    out.set(p.shardId, {
      shardId: p.shardId,
      node: node.name,
      predictedLoad: Math.max(0, ...(load.get(p.shardId) ?? [])),
      bytes: p.bytes,
      nodeCapacity: node.capacity,
      nodeUtilisation: node.capacity > 0 ? peak / node.capacity : 0,
    });
  }
  return out;
}

export interface ScoredEntity {
  table: string;
  /** A shard-key value, or null for a key range (the shard). */
  key: string | null;
  shardId: number;
  node: string;
  predictedLoad: number;
  bytes: number;
  nodeUtilisation: number;
  shardability: Shardability;
}

/**
 * Shardability of hot tenants (keys) and of the shards (key ranges) of their tables, from the
 * planner's inputs (gatherPlanInput) and, for a key's size, its rows counted on its node against the
 * shard's row estimate. Highest first.
 */
export async function scoreEntities(
  catalog: pg.Pool,
  pools: NodePools,
  tenants: ReadonlyArray<{ table: string; key: string; shardId: number; share: number }>,
  settings: PlannerSettingsInput,
  ranges: { tables: readonly string[] },
): Promise<{ keys: ScoredEntity[]; ranges: ScoredEntity[] }> {
  // Nothing to score: no plan input gathered (it reads every node's shard sizes).
  if (tenants.length === 0 && ranges.tables.length === 0) return { keys: [], ranges: [] };
  const resolved = resolveSettings(settings);
  const { input } = await gatherPlanInput(catalog, pools, { settings });
  const facts = shardFacts(input, resolved.bound, resolved.horizonSteps);
  const target = resolved.targetUtilisation;
  const score = (table: string, key: string | null, f: ShardFacts, load: number, bytes: number): ScoredEntity => ({
    table,
    key,
    shardId: f.shardId,
    node: f.node,
    predictedLoad: Math.round(load * 100) / 100,
    bytes: Math.round(bytes),
    nodeUtilisation: Math.round(f.nodeUtilisation * 1e4) / 1e4,
    shardability: shardability({ predictedLoad: load, bytes, nodeCapacity: f.nodeCapacity, nodeUtilisation: f.nodeUtilisation, targetUtilisation: target }),
  });
  const keys: ScoredEntity[] = [];
  for (const t of tenants) {
    const f = facts.get(t.shardId);
    if (!f) continue;
    const { rows } = await catalog.query<{ key_column: string; schema: string; dsn: string }>(
      `select t.key_column, s.schema_name as schema, n.dsn from shardcast.distributed_tables t join shardcast.shards s on s.group_id = t.group_id
         join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id where t.name = $1 and s.id = $2`,
      [t.table, t.shardId],
    );
    let share = 0;
    if (rows[0]) {
      const rel = `${quoteIdent(rows[0].schema)}.${quoteIdent(t.table)}`;
      // The key's rows by the shard key's index; the shard's from its statistics (counted when it has none).
      const { rows: c } = await pools.get(rows[0].dsn).query<{ n: string; total: string }>(
        `select (select count(*) from ${rel} where ${quoteIdent(rows[0].key_column)} = $1)::text as n,
                (select case when c.reltuples >= 1 then c.reltuples::bigint else (select greatest(count(*), 1) from ${rel}) end from pg_class c where c.oid = $2::regclass)::text as total`,
        [t.key, rel],
      );
      share = Math.min(1, Number(c[0]!.n) / Math.max(1, Number(c[0]!.total)));
    }
    keys.push(score(t.table, t.key, f, f.predictedLoad * t.share, f.bytes * share));
  }
  const scored: ScoredEntity[] = [];
  for (const p of input.placements) {
    if (!ranges.tables.includes(p.table)) continue;
    const f = facts.get(p.shardId);
    if (f) scored.push(score(p.table, null, f, f.predictedLoad, f.bytes));
  }
  const order = (a: ScoredEntity, b: ScoredEntity) => b.shardability.score - a.shardability.score || a.shardId - b.shardId;
  return { keys: keys.sort(order), ranges: scored.sort(order) };
}
