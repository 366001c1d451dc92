import { heartbeat, log } from '@temporalio/activity';
import type pg from 'pg';
import { run } from './failures.js';
import type { NodePools } from '../src/catalog/node-pools.js';
import { cutover, fencedSchemaName, settleMove, verifyMove, type CutoverResult } from '../src/movement/cutover.js';
import { failpoint } from '../src/failpoints.js';
import { finishMovement, StaleCutoverAttemptError, type MovementState } from '../src/movement/lease.js';
import { planMovement, type MovePlan, type MovementPlan, type MovementRequest } from '../src/movement/plan.js';
import { dropTargetShard, setSubscriptionEnabled, prepareTarget, startStreaming, stopStreaming, streamProgress, type StreamProgress } from '../src/movement/replication.js';
import { quoteIdent } from '../src/sql/ident.js';
import { applyChanges, captureProgress, copyInitial, dropNewShards, startChangeCapture, stopChangeCapture, type CopyProgress } from '../src/movement/logical-apply.js';
import { fencedSourceName, reshardCutover, settleReshard, verifyReshard } from '../src/movement/reshard-cutover.js';
import type { ReshardPlan } from '../src/movement/reshard-plan.js';

export interface MovementDeps {
  catalog: pg.Pool;
  catalogUrl: string;
  nodePools: NodePools;
}

export type { MovePlan, MovementPlan } from '../src/movement/plan.js';

export function createMovementActivities(deps: MovementDeps) {
  const endpoints = (plan: MovePlan) => ({ source: plan.source, target: plan.target });

  return {
    /** Checks the request, takes the shard's lease, and resolves the plan. */
    async beginMove(request: MovementRequest): Promise<MovementPlan> {
      return run(() => planMovement(deps, request));
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
      return whileHeartbeating('verifying', () =>
        run(() => (plan.operation === 'move' ? verifyMove(verifyDeps, plan, { onWait }) : verifyReshard(verifyDeps, plan, { onWait }))),
      );
    },

    /**
     * The switch. Each attempt takes a new fencing token (the lease's cutover attempt number): an
     * attempt that timed out and still runs beside its retry can no longer prepare or switch anything.
     */
    async cutover(plan: MovementPlan): Promise<CutoverResult> {
      heartbeat('cutover');
      const cutoverDeps = { catalogUrl: deps.catalogUrl, pools: deps.nodePools };
      const onWait = () => heartbeat('waiting for the target');
      // The verify phase compared content at a consistent point; under the cutover's lock, counts are
      // re-checked (hashing every row there would hold writes for seconds on a large shard).
      const options = { onWait, verify: 'counts' as const };
      return whileHeartbeating('cutting over', () =>
        run(async () => {
          try {
            return await (plan.operation === 'move' ? cutover(cutoverDeps, plan, options) : reshardCutover(cutoverDeps, plan, options));
          } catch (err) {
            if (err instanceof StaleCutoverAttemptError) log.warn(`cutover: ${err.message}`);
            throw err;
          }
        }),
      );
    },

    /**
     * After a failed cutover activity, before any compensation: 'forward' when the catalog switch
     * has committed or is prepared (the movement may then only be finished), 'undo' otherwise —
     * decided under the lease, so that no earlier attempt can still switch.
     */
    async settleCutover(plan: MovementPlan): Promise<'forward' | 'undo'> {
      const cutoverDeps = { catalogUrl: deps.catalogUrl, pools: deps.nodePools };
      return run(() => (plan.operation === 'move' ? settleMove(cutoverDeps, plan) : settleReshard(cutoverDeps, plan)));
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

/**
 * Heartbeats every `everyMs` while `work` runs, including while one long query (a lock wait, a
 * checksum) keeps it from heartbeating by itself: a live attempt is never taken for a lost one.
 */
async function whileHeartbeating<T>(what: string, work: () => Promise<T>, everyMs = 2000): Promise<T> {
  const timer = setInterval(() => heartbeat(what), everyMs);
  try {
    return await work();
  } finally {
    clearInterval(timer);
  }
}
