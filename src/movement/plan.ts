import type { GovernorSettings } from './governor.js';
import type pg from 'pg';
import type { NodePools } from '../catalog/node-pools.js';
import { getNode, getNodeByName, type NodeRecord, type Queryable } from '../catalog/nodes.js';
import { InvalidInputError, NotFoundError } from '../errors.js';
import { acquireMovementLease, type MovementOperation } from './lease.js';
import { assertMovable, movementNames, shardTables, type MovementNames, type ShardTables } from './replication.js';
import { planMerge, planSplit, type ReshardPlan } from './reshard-plan.js';
import { fencedSchemaName } from './cutover.js';
import { finishMovement } from './lease.js';
import { reverseCaptureState } from './reverse.js';

/**
 * Planning a movement (DESIGN §3): the request checked against the catalog and the nodes, the
 * shard's lease taken, and everything the later steps need resolved into one plan. The plan travels
 * through the workflow as a Temporal payload, so it is plain JSON.
 */

export type { MovementOperation };

/** A move: one shard, with every table of its colocation group, from one node to another. */
export interface MovePlan {
  operation: 'move';
  movementId: string;
  shard: ShardTables;
  source: NodeRecord;
  target: NodeRecord;
  names: MovementNames;
  /** Size of the shard's tables on the source when the movement began. */
  bytes: number;
  /**
   * A move back within the grace period of move `of`: the target still holds the shard's fenced copy
   * (`fencedSchema`), kept in sync by the reverse stream, so the movement is a cutover only.
   */
  reverse?: { of: string; fencedSchema: string };
  /** A move back that could not be a cutover only, and why: it copies the shard as any move does. */
  reverseFallback?: string;
}

export type MovementPlan = MovePlan | ReshardPlan;

/** What planning needs from the request. */
export interface MovementRequest {
  movementId: string;
  workflowId: string;
  /** Default 'move'. */
  operation?: MovementOperation;
  shardId: number;
  /** Move: the target node. Merge: the merged shard's node (default: the lower shard's node). */
  targetNode?: string;
  /** Split: the nodes of the two halves, and the split point (default: the middle of the hash range). */
  splitTargets?: [string, string];
  splitAt?: string;
  /** Merge: the shard merged with `shardId`. */
  mergeWith?: number;
  maxMovesPerNode: number;
  /** A move back: the move it reverses (its source is the target). */
  reverseOf?: string;
  /** When the move back cannot be a cutover only (grace over, stream broken): copy anyway (default) or refuse. */
  reverseFallback?: boolean;
  /** The movement's own copy governor settings: checked here, before anything is leased or created. */
  governor?: Partial<GovernorSettings>;
}

export interface PlanningDeps {
  catalog: pg.Pool;
  nodePools: NodePools;
}

/** Bytes of a shard schema's tables (with indexes and TOAST) on its node. */
export async function schemaBytes(pools: NodePools, node: NodeRecord, schema: string): Promise<number> {
  const { rows } = await pools
    .get(node.dsn)
    .query<{ bytes: string }>('select coalesce(sum(pg_total_relation_size(relid)), 0)::bigint::text as bytes from pg_stat_user_tables where schemaname = $1', [schema]);
  return Number(rows[0]!.bytes);
}

/** Checks the request, takes the shard's lease (or both shards' for a merge), and resolves the plan. */
/**
 * The checks a move request can fail before any workflow starts (the CLI runs them, so a typo is one
 * line and no failed run): the shard exists, the target node exists, is active and is not where the
 * shard is. The workflow's planning checks all of it again under the lease.
 */
export async function precheckMove(db: Pick<pg.Pool, 'query'>, shardId: number, targetNode: string): Promise<void> {
  const { rows } = await db.query<{ node_id: number }>('select node_id::int from shardcast.placements where shard_id = $1', [shardId]);
  if (!rows[0]) throw new NotFoundError(`shard ${shardId} does not exist`);
  const target = await getNodeByName(db, targetNode);
  if (target.id === rows[0].node_id) throw new InvalidInputError(`shard ${shardId} is already on ${target.name}`);
  if (target.state !== 'active') throw new InvalidInputError(`node ${target.name} is ${target.state}, not active: it cannot take shards`);
}

export async function planMovement(deps: PlanningDeps, request: MovementRequest): Promise<MovementPlan> {
  if (request.operation === 'split' || request.operation === 'merge') return planReshard(deps, request);
  return planMove(deps, request);
}

async function planMove(deps: PlanningDeps, request: MovementRequest): Promise<MovePlan> {
  const names = movementNames(request.movementId);
  const { rows } = await deps.catalog.query<{ node_id: number }>('select node_id::int from shardcast.placements where shard_id = $1', [request.shardId]);
  if (!rows[0]) throw new NotFoundError(`shard ${request.shardId} does not exist`);
  const source = await getNode(deps.catalog, rows[0].node_id);
  const reversed = request.reverseOf ? await reversedMove(deps, request, source) : undefined;
  const targetNode = request.targetNode ?? reversed?.source.name;
  if (!targetNode) throw new InvalidInputError('a move needs a target node');
  const target = await getNodeByName(deps.catalog, targetNode);
  if (target.id === source.id) throw new InvalidInputError(`shard ${request.shardId} is already on ${target.name}`);
  if (target.state !== 'active') throw new InvalidInputError(`node ${target.name} is ${target.state}, not active: it cannot take shards`);
  const shard = await shardTables(deps.catalog, request.shardId);
  await assertMovable(deps.nodePools, source, shard);
  if (reversed && target.id !== reversed.source.id) {
    throw new InvalidInputError(`movement ${reversed.id} moved shard ${request.shardId} from ${reversed.source.name}: moving it back goes there, not to ${target.name}`);
  }
  // Refused before the lease, so that a refusal changes nothing; checked again under it (the grace period may end meanwhile).
  const fallback = reversed ? await reverseBlocker(deps, reversed, shard.schema) : undefined;
  if (reversed && fallback && request.reverseFallback === false) throw new InvalidInputError(`${fallback}; not moving it back by a full copy (fallback refused)`);
  await acquireMovementLease(
    deps.catalog,
    {
      id: request.movementId,
      operation: 'move',
      shardId: request.shardId,
      sourceNodeId: source.id,
      targetNodeIds: [target.id],
      workflowId: request.workflowId,
      reverseOf: reversed?.id,
    },
    request.maxMovesPerNode,
  );
  const plan: MovePlan = { operation: 'move', movementId: request.movementId, shard, source, target, names, bytes: await schemaBytes(deps.nodePools, source, shard.schema) };
  await recordBytes(deps, request.movementId, plan.bytes);
  if (!reversed) return plan;
  const blocker = await reverseBlocker(deps, reversed, shard.schema);
  if (!blocker) return { ...plan, reverse: { of: reversed.id, fencedSchema: fencedSchemaName(shard.schema, reversed.id) } };
  if (request.reverseFallback === false) {
    await finishMovement(deps.catalog, request.movementId, 'cancelled');
    throw new InvalidInputError(`${blocker}; not moving it back by a full copy (fallback refused)`);
  }
  return { ...plan, reverseFallback: blocker };
}

interface ReversedMove {
  id: string;
  /** Where the move took the shard from (the move back goes there), and where it put it (the shard's node now). */
  source: NodeRecord;
  target: NodeRecord;
}

/** The move a move back reverses: a finished move of this shard that put it where it is now. Bad input otherwise. */
async function reversedMove(deps: PlanningDeps, request: MovementRequest, placedOn: NodeRecord): Promise<ReversedMove> {
  const id = request.reverseOf!;
  const { rows } = await deps.catalog.query<{ operation: string; shard_id: number; state: string; source: number; target: number }>(
    'select operation, shard_id::int, state, source_node_id::int as source, target_node_ids[1]::int as target from shardcast.movements where id = $1',
    [id],
  );
  const m = rows[0];
  if (!m) throw new NotFoundError(`there is no movement ${id}: nothing to move back`);
  if (m.operation !== 'move' || m.shard_id !== request.shardId) throw new InvalidInputError(`movement ${id} is not a move of shard ${request.shardId}: nothing to move back`);
  if (m.state !== 'done') throw new InvalidInputError(`movement ${id} of shard ${request.shardId} did not complete (${m.state}): nothing to move back`);
  if (m.target !== placedOn.id) throw new InvalidInputError(`shard ${request.shardId} is on ${placedOn.name}, not where movement ${id} put it: it has moved since`);
  return { id, source: await getNode(deps.catalog, m.source), target: placedOn };
}

/** Why the move back cannot be a cutover only (the fenced copy gone, the reverse stream missing or broken), or undefined when it can. */
async function reverseBlocker(deps: PlanningDeps, reversed: ReversedMove, schema: string): Promise<string | undefined> {
  const fenced = fencedSchemaName(schema, reversed.id);
  const { rows } = await deps.nodePools.get(reversed.source.dsn).query('select 1 from pg_namespace where nspname = $1', [fenced]);
  if (!rows.length) return `the fenced copy on ${reversed.source.name} is gone (the grace period of movement ${reversed.id} is over)`;
  const state = await reverseCaptureState(deps.nodePools, reversed.target, reversed.id);
  if (state === 'missing') return `the reverse stream of movement ${reversed.id} on ${reversed.target.name} is gone (ended with the grace period, or broken)`;
  if (state === 'lost') return `the reverse stream of movement ${reversed.id} on ${reversed.target.name} lost WAL it needed (max_slot_wal_keep_size)`;
  return undefined;
}

async function planReshard(deps: PlanningDeps, request: MovementRequest): Promise<ReshardPlan> {
  const base =
    request.operation === 'split'
      ? await planSplit(deps.catalog, { movementId: request.movementId, shardId: request.shardId, targetNodes: request.splitTargets!, at: request.splitAt })
      : await planMerge(deps.catalog, { movementId: request.movementId, shardIds: [request.shardId, request.mergeWith!], targetNode: request.targetNode });
  for (const s of base.sources) {
    await assertMovable(deps.nodePools, s.node, { shardId: s.shardId, schema: s.schema, tables: base.tables }, { primaryKey: true });
  }
  const [first, ...others] = base.sources;
  await acquireMovementLease(
    deps.catalog,
    {
      id: request.movementId,
      operation: base.operation,
      shardId: first!.shardId,
      sourceNodeId: first!.node.id,
      otherShardIds: others.map((s) => s.shardId),
      otherSourceNodeIds: others.map((s) => s.node.id),
      targetNodeIds: base.targets.map((t) => t.node.id),
      workflowId: request.workflowId,
    },
    request.maxMovesPerNode,
  );
  let bytes = 0;
  for (const s of base.sources) bytes += await schemaBytes(deps.nodePools, s.node, s.schema);
  await recordBytes(deps, request.movementId, bytes);
  return { ...base, bytes };
}

/** The movement's size, for the planner's move-duration model (src/planning/duration.ts). */
async function recordBytes(deps: PlanningDeps, movementId: string, bytes: number): Promise<void> {
  await deps.catalog.query('update shardcast.movements set bytes = $2 where id = $1', [movementId, bytes]);
}

/**
 * A plan as it travels through Temporal (inputs, results, continue-as-new, the UI): nodes by id and
 * name only. The DSN (which may hold a password) is left empty; activities resolve it from the
 * catalog with `hydratePlan`.
 */
export function redactPlan<P extends MovementPlan>(plan: P): P {
  const bare = (n: NodeRecord): NodeRecord => ({ ...n, dsn: '' });
  if (plan.operation === 'move') return { ...plan, source: bare(plan.source), target: bare(plan.target) };
  return { ...plan, sources: plan.sources.map((s) => ({ ...s, node: bare(s.node) })), targets: plan.targets.map((t) => ({ ...t, node: bare(t.node) })) };
}

/** The plan with every node's connection read from the catalog (by id), for an activity to use. */
export async function hydratePlan<P extends MovementPlan>(catalog: Queryable, plan: P): Promise<P> {
  const cache = new Map<number, Promise<NodeRecord>>();
  const fresh = (n: NodeRecord): Promise<NodeRecord> => {
    if (!cache.has(n.id)) cache.set(n.id, getNode(catalog, n.id));
    return cache.get(n.id)!;
  };
  if (plan.operation === 'move') return { ...plan, source: await fresh(plan.source), target: await fresh(plan.target) };
  return {
    ...plan,
    sources: await Promise.all(plan.sources.map(async (s) => ({ ...s, node: await fresh(s.node) }))),
    targets: await Promise.all(plan.targets.map(async (t) => ({ ...t, node: await fresh(t.node) }))),
  };
}
