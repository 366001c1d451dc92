import { heartbeat } from '@temporalio/activity';
import { run } from './failures.js';
import type pg from 'pg';
import type { NodePools } from '../src/catalog/node-pools.js';
import { getNode, getNodeByName, type NodeRecord } from '../src/catalog/nodes.js';
import { InvalidInputError, NotFoundError } from '../src/errors.js';
import { cutover, fencedSchemaName, verifyMove, type CutoverResult } from '../src/movement/cutover.js';
import { failpoint } from '../src/failpoints.js';
import { acquireMovementLease, finishMovement, type MovementState } from '../src/movement/lease.js';
import {
  assertMovable,
  dropTargetShard,
  setSubscriptionEnabled,
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
import type { MoveShardInput } from '../workflows/messages.js';
import { applyChanges, captureProgress, copyInitial, dropNewShards, startChangeCapture, stopChangeCapture, type CopyProgress } from '../src/movement/logical-apply.js';
import { fencedSourceName, reshardCutover, verifyReshard } from '../src/movement/reshard-cutover.js';
import { planMerge, planSplit, type ReshardPlan } from '../src/movement/reshard-plan.js';

export interface MovementDeps {
  catalog: pg.Pool;
  catalogUrl: string;
  nodePools: NodePools;
}

/** Everything a movement's activities need, resolved once by beginMove and passed back in. */
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

/** What beginMove needs from the workflow's input. */
export type BeginMoveInput = Pick<MoveShardInput, 'movementId' | 'operation' | 'shardId' | 'targetNode' | 'splitTargets' | 'splitAt' | 'mergeWith' | 'maxMovesPerNode' | 'workflowId'>;

/** Names for summaries and search attributes: where the rows come from and go to. */
export function planNodes(plan: MovementPlan): { sources: string[]; targets: string[]; schemas: string[] } {
  if (plan.operation === 'move') return { sources: [plan.source.name], targets: [plan.target.name], schemas: [plan.shard.schema] };
  return { sources: plan.sources.map((s) => s.node.name), targets: plan.targets.map((t) => t.node.name), schemas: plan.sources.map((s) => s.schema) };
}

export function createMovementActivities(deps: MovementDeps) {
  const endpoints = (plan: MovePlan) => ({ source: plan.source, target: plan.target });
  const sizeOf = async (node: NodeRecord, schema: string): Promise<number> => {
    const { rows } = await deps.nodePools
      .get(node.dsn)
      .query<{ bytes: string }>('select coalesce(sum(pg_total_relation_size(relid)), 0)::bigint::text as bytes from pg_stat_user_tables where schemaname = $1', [schema]);
    return Number(rows[0]!.bytes);
  };

  /** Split or merge: plan, check, lease. */
  const beginReshard = async (input: BeginMoveInput): Promise<ReshardPlan> => {
    const base =
      input.operation === 'split'
        ? await planSplit(deps.catalog, { movementId: input.movementId, shardId: input.shardId, targetNodes: input.splitTargets!, at: input.splitAt })
        : await planMerge(deps.catalog, { movementId: input.movementId, shardIds: [input.shardId, input.mergeWith!], targetNode: input.targetNode });
    for (const s of base.sources) {
      await assertMovable(deps.nodePools, s.node, { shardId: s.shardId, schema: s.schema, tables: base.tables }, { primaryKey: true });
    }
    const [first, ...others] = base.sources;
    await acquireMovementLease(
      deps.catalog,
      {
        id: input.movementId,
        operation: base.operation,
        shardId: first!.shardId,
        sourceNodeId: first!.node.id,
        otherShardIds: others.map((s) => s.shardId),
        otherSourceNodeIds: others.map((s) => s.node.id),
        targetNodeIds: base.targets.map((t) => t.node.id),
        workflowId: input.workflowId,
      },
      input.maxMovesPerNode,
    );
    let bytes = 0;
    for (const s of base.sources) bytes += await sizeOf(s.node, s.schema);
    return { ...base, bytes };
  };

  return {
    /** Checks the request, takes the shard's lease, and resolves the plan. */
    async beginMove(input: BeginMoveInput): Promise<MovementPlan> {
      return run(async () => {
        if (input.operation === 'split' || input.operation === 'merge') return beginReshard(input);
        if (!input.targetNode) throw new InvalidInputError('a move needs a target node');
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
        return { operation: 'move', movementId: input.movementId, shard, source, target, names, bytes: await sizeOf(source, shard.schema) };
      });
    },

    async prepareTarget(plan: MovementPlan): Promise<void> {
      return run(async () => {
        if (plan.operation === 'move') return prepareTarget(deps.nodePools, plan.target, plan.shard);
        for (const t of plan.targets) await prepareTarget(deps.nodePools, t.node, { shardId: t.shardId, schema: t.schema, tables: plan.tables });
      });
    },

    /** Move: publication and subscription (which copies by itself). Split or merge: publications and slots. */
    async startStreaming(plan: MovementPlan): Promise<void> {
      return run(() =>
        plan.operation === 'move' ? startStreaming(deps.nodePools, endpoints(plan), plan.shard, plan.names) : startChangeCapture(deps.nodePools, plan),
      );
    },

    /** Split or merge: the initial copy into the new shards, heartbeating its progress. */
    async copyRows(plan: ReshardPlan): Promise<CopyProgress> {
      return run(async () => {
        let last = 0;
        return copyInitial(deps.nodePools, plan, (p) => {
          if (Date.now() - last > 1000) {
            last = Date.now();
            heartbeat(p);
          }
        });
      });
    },

    /** Pausing stops the subscription from consuming the source; resuming starts it again. Splits and merges consume only when asked. */
    async setStreaming(plan: MovementPlan, enabled: boolean): Promise<void> {
      return run(async () => {
        if (plan.operation !== 'move') return;
        await setSubscriptionEnabled(deps.nodePools, plan.target, plan.names, enabled);
      });
    },

    /**
     * Copy state and lag. For a split or merge this is also where changes are applied: for up to
     * `applyMs`, then measured.
     */
    async measureProgress(plan: MovementPlan, applyMs = 0): Promise<StreamProgress> {
      return run(async () => {
        if (plan.operation === 'move') return streamProgress(deps.nodePools, endpoints(plan), plan.shard, plan.names);
        await applyChanges(deps.nodePools, plan, { deadline: Date.now() + applyMs, onBatch: (n) => heartbeat(n) });
        const measured = await captureProgress(deps.nodePools, plan);
        const tables = plan.tables.length * plan.targets.length;
        return { ...measured, tables, tablesReady: tables };
      });
    },

    /** Counts and checksums compared at a consistent point, without switching (the verify phase). */
    async verify(plan: MovementPlan): Promise<{ blockedMs: number }> {
      await failpoint('verify.before');
      const verifyDeps = { catalogUrl: deps.catalogUrl, pools: deps.nodePools };
      const onWait = () => heartbeat('waiting for the target');
      return run(() => (plan.operation === 'move' ? verifyMove(verifyDeps, plan, { onWait }) : verifyReshard(verifyDeps, plan, { onWait })));
    },

    async cutover(plan: MovementPlan): Promise<CutoverResult> {
      heartbeat('cutover');
      const cutoverDeps = { catalogUrl: deps.catalogUrl, pools: deps.nodePools };
      const onWait = () => heartbeat('waiting for the target');
      // The verify phase compared content at a consistent point; under the cutover's lock, counts are
      // re-checked (hashing every row there would hold writes for seconds on a large shard).
      const options = { onWait, verify: 'counts' as const };
      return run(() => (plan.operation === 'move' ? cutover(cutoverDeps, plan, options) : reshardCutover(cutoverDeps, plan, options)));
    },

    async stopStreaming(plan: MovementPlan): Promise<void> {
      return run(() => (plan.operation === 'move' ? stopStreaming(deps.nodePools, endpoints(plan), plan.names) : stopChangeCapture(deps.nodePools, plan)));
    },

    /** After the grace period: the fenced copies on the sources go. */
    async dropFencedSource(plan: MovementPlan): Promise<void> {
      return run(async () => {
        const fenced =
          plan.operation === 'move'
            ? [{ node: plan.source, schema: fencedSchemaName(plan.shard.schema, plan.movementId) }]
            : plan.sources.map((s) => ({ node: s.node, schema: fencedSourceName(plan, s) }));
        for (const f of fenced) await deps.nodePools.get(f.node.dsn).query(`drop schema if exists ${quoteIdent(f.schema)} cascade`);
      });
    },

    /** Compensation before cutover: replication objects and the targets' copies go, the sources stay as they were. */
    async abortMove(plan: MovementPlan): Promise<void> {
      return run(async () => {
        if (plan.operation === 'move') {
          await stopStreaming(deps.nodePools, endpoints(plan), plan.names);
          await dropTargetShard(deps.catalog, deps.nodePools, plan.target, plan.shard);
          return;
        }
        await stopChangeCapture(deps.nodePools, plan);
        await dropNewShards(deps.catalog, deps.nodePools, plan);
      });
    },

    async finishMove(movementId: string, state: Exclude<MovementState, 'running'>): Promise<void> {
      return run(() => finishMovement(deps.catalog, movementId, state));
    },
  };
}
