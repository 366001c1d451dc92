import { Context, heartbeat } from '@temporalio/activity';
import type pg from 'pg';
import { run } from './failures.js';
import type { NodePools } from '../src/catalog/node-pools.js';
import { cutover, fencedSchemaName, verifyMove, type CutoverResult } from '../src/movement/cutover.js';
import { failpoint } from '../src/failpoints.js';
import { finishMovement, type MovementState } from '../src/movement/lease.js';
import { planMovement, type MovePlan, type MovementPlan, type MovementRequest } from '../src/movement/plan.js';
import { copyMove, dropTargetShard, setSubscriptionEnabled, prepareTarget, startStreaming, stopStreaming, streamProgress, type StreamProgress } from '../src/movement/replication.js';
import { Governor, resolveGovernor, type GovernorSettings } from '../src/movement/governor.js';
import { movementThrottledSeconds } from '../src/metrics/metrics.js';
import { quoteIdent } from '../src/sql/ident.js';
import { applyChanges, captureProgress, copyInitial, dropNewShards, startChangeCapture, stopChangeCapture, type CopyProgress } from '../src/movement/logical-apply.js';
import { fencedSourceName, reshardCutover, verifyReshard } from '../src/movement/reshard-cutover.js';

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

    /** Move: the publication (the copy creates slot and subscription). Split or merge: publications and slots. */
    async startStreaming(plan: MovementPlan): Promise<void> {
      return run(() =>
        plan.operation === 'move'
          ? startStreaming(deps.nodePools, endpoints(plan), plan.shard, plan.names, { copy: 'own' })
          : startChangeCapture(deps.nodePools, plan),
      );
    },

    /**
     * The initial copy, paced by the governor, heartbeating its progress. A move copies inside its
     * slot's exported snapshot and then starts its subscription; a split or merge copies into the
     * new shards. A retry starts over.
     */
    async copyRows(plan: MovementPlan, governor?: Partial<GovernorSettings>): Promise<CopyProgress> {
      const settings = resolveGovernor(governor);
      // Progress is reported from stream callbacks, outside the activity's async context: keep the context at hand.
      const context = Context.current();
      const signal = context.cancellationSignal;
      const beat = (p: CopyProgress) => context.heartbeat(p);
      const cancelled = () => signal.aborted;
      const counted = (ms: number) => movementThrottledSeconds.inc({ operation: plan.operation, phase: 'copy' }, ms / 1000);
      try {
        return await run(async () => {
          if (plan.operation === 'move') {
            const g = new Governor(settings, [plan.source.dsn, plan.target.dsn], counted);
            return copyMove(deps.nodePools, endpoints(plan), plan.shard, plan.names, { governor: g, beat, cancelled });
          }
          const g = new Governor(settings, [...plan.sources.map((s) => s.node.dsn), ...plan.targets.map((t) => t.node.dsn)], counted);
          await g.start();
          let last = 0;
          try {
            const copied = await copyInitial(
              deps.nodePools,
              plan,
              (p) => {
                if (Date.now() - last > 1000) {
                  last = Date.now();
                  beat(p);
                }
              },
              { governor: g },
            );
            return { ...copied, baselinesMs: g.baselines() };
          } finally {
            await g.stop();
          }
        });
      } catch (err) {
        // A cancelled copy reports the cancellation itself, not the error its interrupted chunk ended with.
        if (signal.aborted) throw signal.reason;
        throw err;
      }
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
    async measureProgress(plan: MovementPlan, applyMs = 0, governor?: Partial<GovernorSettings>, baselinesMs?: number[]): Promise<StreamProgress> {
      return run(async () => {
        if (plan.operation === 'move') return streamProgress(deps.nodePools, endpoints(plan), plan.shard, plan.names);
        // The apply is paced too: `throttledMs` here is this call's share (the workflow adds them up).
        const settings = resolveGovernor(governor);
        const paced = settings.enabled && applyMs > 0;
        const counted = (ms: number) => movementThrottledSeconds.inc({ operation: plan.operation, phase: 'apply' }, ms / 1000);
        const g = paced ? new Governor(settings, [...plan.sources.map((s) => s.node.dsn), ...plan.targets.map((t) => t.node.dsn)], counted) : undefined;
        await g?.start(baselinesMs);
        try {
          await applyChanges(deps.nodePools, plan, { deadline: Date.now() + applyMs, onBatch: (n) => heartbeat(n), governor: g });
        } finally {
          await g?.stop();
        }
        const measured = await captureProgress(deps.nodePools, plan);
        const tables = plan.tables.length * plan.targets.length;
        return { ...measured, tables, tablesReady: tables, throttledMs: g?.stats.throttledMs ?? 0 };
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
