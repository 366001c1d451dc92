import type { Queryable } from '../catalog/nodes.js';
import { InvalidInputError } from '../errors.js';
import { movementLeaseRow } from './lease.js';
import type { MovementPlan } from './plan.js';
import type { ShardRange } from './reshard-plan.js';

/**
 * A plan handed to a new run (continue-as-new's `resume.plan`) is input like any other: anyone who
 * may start a workflow could forge one. Before the run uses it, it is checked against the catalog:
 * the movement's lease is held, by this workflow, for these shards and nodes; the nodes are the
 * catalog's (by id and name); the shards are where the plan says (the sources, or after a committed
 * switch the targets); the tables and their definitions are the catalog's. Any difference refuses
 * the plan (InvalidInputError) and nothing is done with it.
 */
export async function checkResumedPlan(catalog: Queryable, plan: MovementPlan, run: { workflowId: string; forward: boolean }): Promise<void> {
  const refuse = (why: string): never => {
    throw new InvalidInputError(`resume.plan of movement ${plan.movementId} refused: ${why}`);
  };
  const lease = await movementLeaseRow(catalog, plan.movementId);
  if (!lease) refuse('the catalog has no such movement (a resumed plan needs the lease its movement took)');
  const m = lease!;
  if (m.state !== 'running') refuse(`the movement is ${m.state}, not running`);
  if (m.workflow_id !== run.workflowId) refuse(`its lease is held by workflow ${m.workflow_id ?? '(none)'}, not ${run.workflowId}`);
  if (m.operation !== plan.operation) refuse(`the movement is a ${m.operation}, the plan a ${plan.operation}`);

  const sources = plan.operation === 'move' ? [{ shardId: plan.shard.shardId, node: plan.source }] : plan.sources.map((s) => ({ shardId: s.shardId, node: s.node }));
  const targets = plan.operation === 'move' ? [plan.target] : plan.targets.map((t) => t.node);
  const same = (a: number[], b: number[]) => a.length === b.length && a.every((x, i) => x === b[i]);
  if (!same([m.shard_id, ...m.other_shard_ids], sources.map((s) => s.shardId))) refuse(`the lease is for shard(s) ${[m.shard_id, ...m.other_shard_ids].join(', ')}`);
  if (!same([m.source_node_id, ...m.other_source_node_ids], sources.map((s) => s.node.id))) refuse('its source nodes are not the lease\'s');
  if (!same(m.target_node_ids, targets.map((t) => t.id))) refuse('its target nodes are not the lease\'s');

  // Every node by id and name, as the catalog has them.
  const nodes = [...sources.map((s) => s.node), ...targets];
  const { rows: known } = await catalog.query<{ id: number; name: string }>('select id::int, name from shardcast.nodes where id = any($1::bigint[])', [nodes.map((n) => n.id)]);
  for (const n of nodes) {
    const row = known.find((k) => k.id === n.id);
    if (!row) refuse(`node #${n.id} (${n.name}) is not in the catalog`);
    if (row!.name !== n.name) refuse(`node #${n.id} is ${row!.name} in the catalog, not ${n.name}`);
  }

  if (plan.operation === 'move') {
    if (plan.reverse && m.reverse_of !== plan.reverse.of) refuse(`the movement does not move back movement ${plan.reverse.of}`);
    const shard = await shardRow(catalog, plan.shard.shardId);
    if (!shard) refuse(`shard ${plan.shard.shardId} is not in the catalog`);
    if (shard!.schema_name !== plan.shard.schema) refuse(`shard ${plan.shard.shardId}'s schema is ${shard!.schema_name}, not ${plan.shard.schema}`);
    if (plan.shard.group !== undefined && shard!.group_name !== plan.shard.group) refuse(`shard ${plan.shard.shardId} belongs to ${shard!.group_name}, not ${plan.shard.group}`);
    const placedOk = shard!.node_id === plan.source.id || (run.forward && shard!.node_id === plan.target.id);
    if (!placedOk) refuse(`shard ${plan.shard.shardId} is not on ${run.forward ? `${plan.source.name} or ${plan.target.name}` : plan.source.name}`);
    await checkTables(catalog, shard!.group_id, plan.shard.tables, refuse);
    return;
  }

  const { rows: groups } = await catalog.query<{ name: string; method: string; key_type: string }>('select name, method, key_type from shardcast.colocation_groups where id = $1', [plan.groupId]);
  const group = groups[0];
  if (!group) refuse(`colocation group #${plan.groupId} is not in the catalog`);
  if (group!.name !== plan.groupName || group!.method !== plan.method || group!.key_type !== plan.keyType) {
    refuse(`colocation group #${plan.groupId} is ${group!.name} (${group!.method}, ${group!.key_type}), not ${plan.groupName} (${plan.method}, ${plan.keyType})`);
  }
  await checkTables(catalog, plan.groupId, plan.tables, refuse);
  // The shards as placed now: the sources (before the switch), or after a committed switch possibly the targets.
  const placedAsPlanned = async (shards: Array<{ shardId: number; schema: string; node: { id: number }; range: ShardRange }>): Promise<boolean> => {
    for (const s of shards) {
      const row = await shardRow(catalog, s.shardId);
      if (!row || row.group_id !== plan.groupId || row.schema_name !== s.schema || row.node_id !== s.node.id || !sameRange(row, s.range)) return false;
    }
    return true;
  };
  if (await placedAsPlanned(plan.sources)) {
    checkPieces(plan, refuse);
    // Before the switch the new shards are not in the catalog yet: a target naming an existing shard would be another's schema.
    for (const t of plan.targets) if (await shardRow(catalog, t.shardId)) refuse(`new shard ${t.shardId} already exists in the catalog`);
    return;
  }
  if (run.forward && (await placedAsPlanned(plan.targets))) return;
  refuse(`shard(s) ${plan.sources.map((s) => s.shardId).join(', ')} are not placed, nor ranged, as the plan says`);
}

interface ShardRow {
  schema_name: string;
  group_id: number;
  group_name: string;
  node_id: number | null;
  hash_min: string | null;
  hash_max: string | null;
  range_min: string | null;
  range_max: string | null;
}

async function shardRow(catalog: Queryable, shardId: number): Promise<ShardRow | undefined> {
  const { rows } = await catalog.query<ShardRow>(
    `select s.schema_name, s.group_id::int, g.name as group_name, p.node_id::int, s.hash_min::text, s.hash_max::text, s.range_min, s.range_max
       from shardcast.shards s join shardcast.colocation_groups g on g.id = s.group_id left join shardcast.placements p on p.shard_id = s.id
      where s.id = $1`,
    [shardId],
  );
  return rows[0];
}

function sameRange(row: ShardRow, range: ShardRange): boolean {
  return 'hashMin' in range ? row.hash_min === range.hashMin && row.hash_max === range.hashMax : row.range_min === range.rangeMin && row.range_max === range.rangeMax;
}

/** Every table of the plan is an active table of the group, with the catalog's definition (the DDL a target runs). */
async function checkTables(catalog: Queryable, groupId: number, tables: Array<{ name: string; columns: string; keyColumn?: string }>, refuse: (why: string) => never): Promise<void> {
  const { rows } = await catalog.query<{ name: string; columns: string; key_column: string }>(
    "select name, columns_ddl as columns, key_column from shardcast.distributed_tables where group_id = $1 and state = 'active'",
    [groupId],
  );
  for (const t of tables) {
    const row = rows.find((r) => r.name === t.name);
    if (!row) refuse(`table ${t.name} is not an active table of the shard's group`);
    if (row!.columns !== t.columns) refuse(`table ${t.name}'s columns differ from the catalog's`);
    if (t.keyColumn !== undefined && row!.key_column !== t.keyColumn) refuse(`table ${t.name}'s shard key is ${row!.key_column}, not ${t.keyColumn}`);
  }
}

/** A split's halves cover its source exactly, adjacent; a merge's target covers its two sources. */
function checkPieces(plan: Extract<MovementPlan, { operation: 'split' | 'merge' }>, refuse: (why: string) => never): void {
  const lo = (r: ShardRange) => ('hashMin' in r ? r.hashMin : r.rangeMin);
  const hi = (r: ShardRange) => ('hashMin' in r ? r.hashMax : r.rangeMax);
  const next = (r: ShardRange) => ('hashMin' in r ? (BigInt(r.hashMax) + 1n).toString() : r.rangeMax);
  const whole = plan.operation === 'split' ? plan.sources[0]!.range : plan.targets[0]!.range;
  const parts = plan.operation === 'split' ? plan.targets.map((t) => t.range) : plan.sources.map((s) => s.range);
  const ok = parts.length === 2 && lo(parts[0]!) === lo(whole) && hi(parts[1]!) === hi(whole) && next(parts[0]!) === lo(parts[1]!);
  if (!ok) refuse(`the ${plan.operation === 'split' ? 'halves do not cover the shard' : 'merged range does not cover the two shards'} exactly`);
}
