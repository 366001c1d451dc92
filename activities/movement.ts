import { heartbeat } from '@temporalio/activity';
import { run } from './failures.js';
import type pg from 'pg';
import type { NodePools } from '../src/catalog/node-pools.js';
import { getNode, getNodeByName, type NodeRecord } from '../src/catalog/nodes.js';
import { InvalidInputError, NotFoundError } from '../src/errors.js';
import { cutover, fencedSchemaName, type CutoverResult } from '../src/movement/cutover.js';
import { acquireMovementLease, finishMovement, type MovementState } from '../src/movement/lease.js';
import {
  assertMovable,
  dropTargetShard,
  movementNames,
  prepareTarget,
  shardTables,
  startStreaming,
  stopStreaming,
  streamProgress,
  type MovementNames,
  type ShardTables,
  type StreamProgress,
} from '../src/movement/replication.js';
import { quoteIdent } from '../src/sql/ident.js';

export interface MovementDeps {
  catalog: pg.Pool;
  catalogUrl: string;
  nodePools: NodePools;
}

/** Everything a movement's activities need, resolved once by beginMove and passed back in. */
export interface MovePlan {
  movementId: string;
  shard: ShardTables;
  source: NodeRecord;
  target: NodeRecord;
  names: MovementNames;
  /** Size of the shard's tables on the source when the movement began. */
  bytes: number;
}

export function createMovementActivities(deps: MovementDeps) {
  const endpoints = (plan: MovePlan) => ({ source: plan.source, target: plan.target });
  return {
    /** Checks the request, takes the shard's lease, and resolves the plan. */
    async beginMove(input: { movementId: string; shardId: number; targetNode: string; maxMovesPerNode: number; workflowId: string }): Promise<MovePlan> {
      return run(async () => {
        const names = movementNames(input.movementId);
        const { rows } = await deps.catalog.query<{ node_id: number }>('select node_id::int from shardcast.placements where shard_id = $1', [input.shardId]);
        if (!rows[0]) throw new NotFoundError(`shard ${input.shardId} does not exist`);
        const source = await getNode(deps.catalog, rows[0].node_id);
        const target = await getNodeByName(deps.catalog, input.targetNode);
        if (target.id === source.id) throw new InvalidInputError(`shard ${input.shardId} is already on ${target.name}`);
        if (target.state !== 'active') throw new InvalidInputError(`node ${target.name} is ${target.state}, not active: it cannot take shards`);
        const shard = await shardTables(deps.catalog, input.shardId);
        await assertMovable(deps.nodePools, source, shard);
        await acquireMovementLease(
          deps.catalog,
          { id: input.movementId, operation: 'move', shardId: input.shardId, sourceNodeId: source.id, targetNodeIds: [target.id], workflowId: input.workflowId },
          input.maxMovesPerNode,
        );
        const { rows: size } = await deps.nodePools
          .get(source.dsn)
          .query<{ bytes: string }>('select coalesce(sum(pg_total_relation_size(relid)), 0)::bigint::text as bytes from pg_stat_user_tables where schemaname = $1', [
            shard.schema,
          ]);
        return { movementId: input.movementId, shard, source, target, names, bytes: Number(size[0]!.bytes) };
      });
    },

    async prepareTarget(plan: MovePlan): Promise<void> {
      return run(() => prepareTarget(deps.nodePools, plan.target, plan.shard));
    },

    async startStreaming(plan: MovePlan): Promise<void> {
      return run(() => startStreaming(deps.nodePools, endpoints(plan), plan.shard, plan.names));
    },

    /** Pausing stops the subscription from consuming the source; resuming starts it again. */
    async setStreaming(plan: MovePlan, enabled: boolean): Promise<void> {
      return run(async () => {
        await deps.nodePools.get(plan.target.dsn).query(`alter subscription ${quoteIdent(plan.names.subscription)} ${enabled ? 'enable' : 'disable'}`);
      });
    },

    async measureProgress(plan: MovePlan): Promise<StreamProgress> {
      return run(() => streamProgress(deps.nodePools, endpoints(plan), plan.shard, plan.names));
    },

    async cutover(plan: MovePlan): Promise<CutoverResult> {
      heartbeat('cutover');
      return run(() => cutover({ catalogUrl: deps.catalogUrl, pools: deps.nodePools }, plan, { onWait: () => heartbeat('waiting for the target') }));
    },

    async stopStreaming(plan: MovePlan): Promise<void> {
      return run(() => stopStreaming(deps.nodePools, endpoints(plan), plan.names));
    },

    /** After the grace period: the fenced copy on the source goes. */
    async dropFencedSource(plan: MovePlan): Promise<void> {
      return run(async () => {
        const fenced = fencedSchemaName(plan.shard.schema, plan.movementId);
        await deps.nodePools.get(plan.source.dsn).query(`drop schema if exists ${quoteIdent(fenced)} cascade`);
      });
    },

    /** Compensation before cutover: replication objects and the target's copy go, the source stays as it was. */
    async abortMove(plan: MovePlan): Promise<void> {
      return run(async () => {
        await stopStreaming(deps.nodePools, endpoints(plan), plan.names);
        await dropTargetShard(deps.catalog, deps.nodePools, plan.target, plan.shard);
      });
    },

    async finishMove(movementId: string, state: Exclude<MovementState, 'running'>): Promise<void> {
      return run(() => finishMovement(deps.catalog, movementId, state));
    },
  };
}
