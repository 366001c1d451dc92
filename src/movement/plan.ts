import type { GovernorSettings } from './governor.js';
import type pg from 'pg';
import type { NodePools } from '../catalog/node-pools.js';
import { getNode, getNodeByName, type NodeRecord } from '../catalog/nodes.js';
import { InvalidInputError, NotFoundError } from '../errors.js';
import { acquireMovementLease, type MovementOperation } from './lease.js';
import { assertMovable, movementNames, shardTables, type MovementNames, type ShardTables } from './replication.js';
import { planMerge, planSplit, type ReshardPlan } from './reshard-plan.js';

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
export async function planMovement(deps: PlanningDeps, request: MovementRequest): Promise<MovementPlan> {
  if (request.operation === 'split' || request.operation === 'merge') return planReshard(deps, request);
  return planMove(deps, request);
}

async function planMove(deps: PlanningDeps, request: MovementRequest): Promise<MovePlan> {
  if (!request.targetNode) throw new InvalidInputError('a move needs a target node');
  const names = movementNames(request.movementId);
  const { rows } = await deps.catalog.query<{ node_id: number }>('select node_id::int from shardcast.placements where shard_id = $1', [request.shardId]);
  if (!rows[0]) throw new NotFoundError(`shard ${request.shardId} does not exist`);
  const source = await getNode(deps.catalog, rows[0].node_id);
  const target = await getNodeByName(deps.catalog, request.targetNode);
  if (target.id === source.id) throw new InvalidInputError(`shard ${request.shardId} is already on ${target.name}`);
  if (target.state !== 'active') throw new InvalidInputError(`node ${target.name} is ${target.state}, not active: it cannot take shards`);
  const shard = await shardTables(deps.catalog, request.shardId);
  await assertMovable(deps.nodePools, source, shard);
  await acquireMovementLease(
    deps.catalog,
    { id: request.movementId, operation: 'move', shardId: request.shardId, sourceNodeId: source.id, targetNodeIds: [target.id], workflowId: request.workflowId },
    request.maxMovesPerNode,
  );
  return { operation: 'move', movementId: request.movementId, shard, source, target, names, bytes: await schemaBytes(deps.nodePools, source, shard.schema) };
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
  return { ...base, bytes };
}
