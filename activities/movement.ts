import { Context, heartbeat, log } from '@temporalio/activity';
import type pg from 'pg';
import { run, runOn, toApplicationFailure } from './failures.js';
import { getNode, type NodeRecord } from '../src/catalog/nodes.js';
import type { NodePools } from '../src/catalog/node-pools.js';
import { cutover, fencedSchemaName, settleMove, VerificationError, type CutoverResult } from '../src/movement/cutover.js';
import { dropVerifySlots, furthest, refreshVerification, verifyChunks, type VerifyProgress } from '../src/movement/verify.js';
import { whileHeartbeating } from './heartbeat.js';
import { failpoint } from '../src/failpoints.js';
import { tablesyncReads, type OwnReadCount } from '../src/movement/own-reads.js';
import { recordMovementReads } from '../src/profiling/series.js';
import { finishMovement, movementStart, NodeBusyError, StaleCutoverAttemptError, catalogSwitchUntouched, type MovementState } from '../src/movement/lease.js';
import { schemaExists } from '../src/catalog/shard-ddl.js';
import { hydratePlan, planMovement, redactPlan, type MovePlan, type MovementPlan, type MovementRequest } from '../src/movement/plan.js';
import { copyMove, dropTargetShard, paceSubscription, setSubscriptionEnabled, prepareTarget, resumeAutovacuum, startStreaming, stopStreaming, streamProgress, type StreamProgress } from '../src/movement/replication.js';
import { dropSchemaGuarded } from '../src/movement/drop-guard.js';
import { checkResumedPlan } from '../src/movement/resume-check.js';
import { applyChanges, captureProgress, copyInitial, dropNewShards, startChangeCapture, stopChangeCapture, type CopyProgress } from '../src/movement/logical-apply.js';
import { fencedSourceName, reshardCutover, settleReshard } from '../src/movement/reshard-cutover.js';
import type { ReshardPlan } from '../src/movement/reshard-plan.js';
import type { FencedCopy, ReverseFollow, ReverseFollowResult } from '../workflows/messages.js';
import { applyReverse, dropFencedCopyUnlessReversing, reverseCaptureState, reverseCutover, startReverseCapture, stopReverseCapture } from '../src/movement/reverse.js';
import { Governor, resolveGovernor, type GovernorSettings } from '../src/movement/governor.js';
import { movementThrottledSeconds } from '../src/metrics/metrics.js';

export interface MovementDeps {
  catalog: pg.Pool;
  catalogUrl: string;
  nodePools: NodePools;
  /** The cutover's connections: limited (statement_timeout, idle-in-transaction timeout, keepalives) so a hung worker cannot hold the write lock. */
  cutoverPools?: NodePools;
  /** The copy governor's settings (config movement.governor) under each movement's own; default DEFAULT_GOVERNOR. */
  governor?: GovernorSettings;
}

export type { MovePlan, MovementPlan } from '../src/movement/plan.js';

/** The lease and the plan, or (while a node involved runs as many movements as allowed) why the movement waits. */
export type BeginResult = { plan: MovementPlan } | { queued: { node: string; running: number; limit: number } };

/** Every node a movement touches, so that a lost connection can be said to be lost to which node. */
function nodesOf(plan: MovementPlan): NodeRecord[] {
  return plan.operation === 'move' ? [plan.source, plan.target] : [...plan.sources.map((s) => s.node), ...plan.targets.map((t) => t.node)];
}

export function createMovementActivities(deps: MovementDeps) {
  const endpoints = (plan: MovePlan) => ({ source: plan.source, target: plan.target });
  /** No part of the switch prepared or committed yet: the catalog has no prepared switch and still places the shard on its source. */
  const switchUntouched = async (plan: MovementPlan): Promise<boolean> => {
    const gid = plan.operation === 'move' ? plan.names.gid : plan.catalogGid;
    const shardId = plan.operation === 'move' ? plan.shard.shardId : plan.sources[0]!.shardId;
    const sourceId = plan.operation === 'move' ? plan.source.id : plan.sources[0]!.node.id;
    return catalogSwitchUntouched(deps.catalog, gid, shardId, sourceId);
  };

  return {
    /** Checks the request, takes the shard's lease, and resolves the plan; or says why it must wait for a slot. */
    async beginMove(request: MovementRequest): Promise<BeginResult> {
      return run(async () => {
        // A bad governor setting is refused before the lease: nothing is changed.
        resolveGovernor(request.governor, deps.governor);
        try {
          return { plan: redactPlan(await planMovement(deps, request)) }; // no DSN in Temporal's history
        } catch (err) {
          if (err instanceof NodeBusyError) return { queued: { node: err.node, running: err.running, limit: err.limit } };
          throw err;
        }
      });
    },

    /** A plan handed over by continue-as-new, checked against the catalog before the new run uses it (src/movement/resume-check.ts). */
    async checkResumedPlan(plan: MovementPlan, resumed: { workflowId: string; forward: boolean }): Promise<void> {
      return run(() => checkResumedPlan(deps.catalog, plan, resumed));
    },

    async prepareTarget(plan: MovementPlan): Promise<void> {
      plan = await hydratePlan(deps.catalog, plan); // the DSNs, from the catalog: the workflow carries none
      return runOn(nodesOf(plan), async () => {
        if (plan.operation === 'move') return prepareTarget(deps.nodePools, plan.target, plan.shard);
        for (const t of plan.targets) await prepareTarget(deps.nodePools, t.node, { shardId: t.shardId, schema: t.schema, tables: plan.tables });
      });
    },

    /** Move: the publication (the copy creates slot and subscription). Split or merge: publications and slots. */
    async startStreaming(plan: MovementPlan): Promise<void> {
      plan = await hydratePlan(deps.catalog, plan); // the DSNs, from the catalog: the workflow carries none
      return runOn(nodesOf(plan), () =>
        plan.operation === 'move'
          ? startStreaming(deps.nodePools, endpoints(plan), plan.shard, plan.names, { copy: 'own' })
          : startChangeCapture(deps.nodePools, plan, slotWaitReporter(plan.movementId)),
      );
    },

    /**
     * The initial copy, paced by the governor, heartbeating its progress. A move copies inside its
     * slot's exported snapshot and then starts its subscription; a split or merge copies into the
     * new shards. A retry starts over.
     */
    async copyRows(plan: MovementPlan, governor?: Partial<GovernorSettings>): Promise<CopyProgress> {
      plan = await hydratePlan(deps.catalog, plan); // the DSNs, from the catalog: the workflow carries none
      const settings = resolveGovernor(governor, deps.governor);
      // Progress is reported from stream callbacks, outside the activity's async context: keep the context at hand.
      const context = Context.current();
      const signal = context.cancellationSignal;
      const beat = (p: CopyProgress) => context.heartbeat(p);
      // A copy that cannot begin (its slot waits for someone's open transaction) says so.
      const waiting = slotWaitReporter(plan.movementId, context);
      const cancelled = () => signal.aborted;
      const counted = (ms: number) => movementThrottledSeconds.inc({ operation: plan.operation, phase: 'copy' }, ms / 1000);
      try {
        return await runOn(nodesOf(plan), async () => {
          if (plan.operation === 'move') {
            const g = new Governor(settings, [plan.source.dsn, plan.target.dsn], counted);
            // The copy's reads of the source are no workload: told as the copy ends (tablesyncReads is for a table sync's copy only).
            const onOwnReads = (read: OwnReadCount[]) => recordMovementReads(deps.catalog, read, plan.movementId);
            return copyMove(deps.nodePools, endpoints(plan), plan.shard, plan.names, { governor: g, beat, waiting, cancelled, onOwnReads });
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
              { governor: g, onOwnReads: (read) => recordMovementReads(deps.catalog, read, plan.movementId) },
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
      plan = await hydratePlan(deps.catalog, plan); // the DSNs, from the catalog: the workflow carries none
      return runOn(nodesOf(plan), async () => {
        if (plan.operation !== 'move' || plan.reverse) return;
        await setSubscriptionEnabled(deps.nodePools, plan.target, plan.names, enabled);
      });
    },

    /**
     * Copy state and lag. For a split or merge this is also where changes are applied: for up to
     * `applyMs`, then measured.
     */
    async measureProgress(plan: MovementPlan, applyMs = 0, governor?: Partial<GovernorSettings>, baselinesMs?: number[]): Promise<StreamProgress> {
      plan = await hydratePlan(deps.catalog, plan); // the DSNs, from the catalog: the workflow carries none
      return runOn(nodesOf(plan), async () => {
        if (plan.operation === 'move') {
          // After the copy: the subscription's apply is paced for up to applyMs (disabled while the probes are over the limit).
          const settings = resolveGovernor(governor, deps.governor);
          let pacedMs = 0;
          if (settings.enabled && applyMs > 0) {
            const started = Date.now();
            const g = new Governor(settings, [plan.source.dsn, plan.target.dsn]);
            await g.start(baselinesMs);
            try {
              const held = await paceSubscription(deps.nodePools, endpoints(plan), plan.shard, plan.names, g, started + applyMs, () => heartbeat('pacing the apply'));
              if (held > 0) movementThrottledSeconds.inc({ operation: 'move', phase: 'apply' }, held / 1000);
            } finally {
              await g.stop();
            }
            pacedMs = Date.now() - started;
          }
          const progress = await streamProgress(deps.nodePools, endpoints(plan), plan.shard, plan.names);
          if (!progress.ownCopy && progress.tables > 0 && progress.tablesReady === progress.tables) {
            // PostgreSQL's table sync did the copy: its reads of the source are no workload, told once, when it is done.
            const read = await tablesyncReads(deps.nodePools.get(plan.target.dsn), plan.source, plan.shard.schema, await movementStart(deps.catalog, plan.movementId));
            await recordMovementReads(deps.catalog, read, plan.movementId, true);
          }
          return { ...progress, pacedMs };
        }
        // The apply is paced too: `throttledMs` here is this call's share (the workflow adds them up).
        const settings = resolveGovernor(governor, deps.governor);
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

    /**
     * The verify phase, one slice: chunk digests compared in consistent snapshots (writes wait only
     * while they are taken), for about `sliceMs`, resuming after `resume` or after what an earlier
     * attempt heartbeated. The heartbeat (with the progress) fires every second, also during long
     * chunk queries; a cancelled or timed-out attempt cancels its queries.
     */
    async verify(plan: MovementPlan, resume?: VerifyProgress, sliceMs?: number, chunkRows?: number): Promise<VerifyProgress> {
      plan = await hydratePlan(deps.catalog, plan); // the DSNs, from the catalog: the workflow carries none
      await failpoint('verify.before');
      const ctx = Context.current();
      const beaten = ctx.info.heartbeatDetails as VerifyProgress | string | undefined;
      let latest = furthest(resume, typeof beaten === 'object' && beaten?.cursors ? beaten : undefined);
      const beat = () => heartbeat(latest ?? 'taking snapshots');
      const timer = setInterval(beat, 1000);
      try {
        return await run(() =>
          verifyChunks(deps.nodePools, plan, {
            resume: latest,
            sliceMs,
            chunkRows,
            signal: ctx.cancellationSignal,
            onOwnReads: (read) => recordMovementReads(deps.catalog, read, plan.movementId),
            onWait: beat,
            onProgress: (p) => {
              latest = structuredClone(p);
              beat();
            },
          }),
        );
      } finally {
        clearInterval(timer);
      }
    },

    /**
     * The switch. Each attempt takes a new fencing token (the lease's cutover attempt number): an
     * attempt that timed out and still runs beside its retry can no longer prepare or switch anything.
     */
    async cutover(plan: MovementPlan): Promise<CutoverResult> {
      plan = await hydratePlan(deps.catalog, plan); // the DSNs, from the catalog: the workflow carries none
      heartbeat('cutover');
      const cutoverDeps = { catalogUrl: deps.catalogUrl, pools: deps.cutoverPools ?? deps.nodePools };
      const onWait = () => heartbeat('waiting for the target');
      // Rows changed since the verify phase are compared first without the cutover's lock (in fresh
      // snapshots), so that under it only the changes of the last moments are re-checked ('changes').
      // Only while nothing of the switch has happened: a retry after it goes straight to recovery.
      if (plan.operation === 'move' && plan.reverse) {
        const stream = { movementId: plan.reverse.of, placement: plan.source, fenced: plan.target, fencedSchema: plan.reverse.fencedSchema };
        return whileHeartbeating('cutting over (move back)', () => run(() => reverseCutover(cutoverDeps, plan, stream, { onWait })));
      }
      if (await switchUntouched(plan)) {
        try {
          await refreshVerification(deps.nodePools, plan, { onWait, onOwnReads: (read) => recordMovementReads(deps.catalog, read, plan.movementId) });
        } catch (err) {
          if (err instanceof VerificationError) return toApplicationFailure(err);
          // Not needed for correctness: the cutover re-checks everything since the last refresh.
        }
      }
      // The re-check's reads of the sources are recorded once the lock is gone (statistics only).
      const reads: OwnReadCount[] = [];
      const options = { onWait, verify: 'changes' as const, onOwnReads: (read: OwnReadCount[]) => void reads.push(...read) };
      return whileHeartbeating('cutting over', () =>
        run(async () => {
          try {
            return await (plan.operation === 'move' ? cutover(cutoverDeps, plan, options) : reshardCutover(cutoverDeps, plan, options));
          } catch (err) {
            if (err instanceof StaleCutoverAttemptError) log.warn(`cutover: ${err.message}`);
            throw err;
          } finally {
            await recordMovementReads(deps.catalog, reads, plan.movementId).catch(() => undefined);
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
      plan = await hydratePlan(deps.catalog, plan); // the DSNs, from the catalog: the workflow carries none
      const cutoverDeps = { catalogUrl: deps.catalogUrl, pools: deps.nodePools };
      return run(() => (plan.operation === 'move' ? settleMove(cutoverDeps, plan) : settleReshard(cutoverDeps, plan)));
    },

    async stopStreaming(plan: MovementPlan): Promise<void> {
      plan = await hydratePlan(deps.catalog, plan); // the DSNs, from the catalog: the workflow carries none
      return runOn(nodesOf(plan), async () => {
        await (plan.operation === 'move' ? stopStreaming(deps.nodePools, endpoints(plan), plan.names) : stopChangeCapture(deps.nodePools, plan));
        // A move back: the stream it was cut over from has served (its copy is the shard now).
        if (plan.operation === 'move' && plan.reverse) await stopReverseCapture(deps.nodePools, plan.source, plan.reverse.of);
        await dropVerifySlots(deps.nodePools, plan);
        // Runs after the switch (cleanup): the new placement's tables are autovacuumed again.
        const tables = plan.operation === 'move' ? plan.shard.tables.map((t) => t.name) : plan.tables.map((t) => t.name);
        const targets = plan.operation === 'move' ? [{ node: plan.target, schema: plan.shard.schema }] : plan.targets.map((t) => ({ node: t.node, schema: t.schema }));
        for (const t of targets) await resumeAutovacuum(deps.nodePools, t.node, t.schema, tables);
      });
    },

    /** Split or merge, beside the initial copy: what the targets hold so far (sizes grow as the copy writes). */
    async copyProgress(plan: ReshardPlan): Promise<{ rowsCopied: number; bytesCopied: number }> {
      plan = await hydratePlan(deps.catalog, plan); // the DSNs, from the catalog: the workflow carries none
      return runOn(nodesOf(plan), async () => {
        const { rowsCopied, bytesCopied } = await captureProgress(deps.nodePools, plan);
        return { rowsCopied, bytesCopied };
      });
    },

    /**
     * A move, just before its cutover: the reverse stream's publication and slot on the target, so
     * that the fenced copy can follow the new placement during the grace period. Not for a move back
     * (its fenced copy is not followed: moving back again is a full move).
     */
    async startReverseCapture(plan: MovementPlan): Promise<boolean> {
      plan = await hydratePlan(deps.catalog, plan); // the DSNs, from the catalog: the workflow carries none
      return runOn(nodesOf(plan), async () => {
        if (plan.operation !== 'move' || plan.reverse || plan.reverseFallback !== undefined) return false;
        await startReverseCapture(deps.nodePools, plan.target, plan.shard, plan.movementId, slotWaitReporter(plan.movementId));
        return true;
      });
    },

    /**
     * During the grace period: applies the reverse stream into the fenced copy for about `sliceMs`,
     * heartbeating. 'gone' when the fenced copy is no longer there (moved back, or dropped), 'lost'
     * when the stream cannot go on (its slot is gone or invalidated): the stream is then dropped.
     */
    async followReverse(follow: ReverseFollow, sliceMs: number): Promise<ReverseFollowResult> {
      const placement = await getNode(deps.catalog, follow.placementNodeId);
      const fenced = await getNode(deps.catalog, follow.copy.nodeId);
      return runOn([placement, fenced], async () => {
        if (!(await schemaExists(deps.nodePools.get(fenced.dsn), follow.copy.schema))) {
          await stopReverseCapture(deps.nodePools, placement, follow.movementId);
          return { state: 'gone', applied: 0, lagBytes: null };
        }
        const state = await reverseCaptureState(deps.nodePools, placement, follow.movementId);
        if (state !== 'following') {
          await stopReverseCapture(deps.nodePools, placement, follow.movementId);
          return { state: 'lost', applied: 0, lagBytes: null };
        }
        const stream = { movementId: follow.movementId, placement, fenced, fencedSchema: follow.copy.schema };
        const deadline = Date.now() + sliceMs;
        let applied = 0;
        let lagBytes: number | null = null;
        while (Date.now() < deadline) {
          const r = await applyReverse(deps.nodePools, stream, { deadline, onBatch: (n) => heartbeat(applied + n) });
          applied += r.changes;
          lagBytes = r.lagBytes;
          heartbeat(applied);
          if (r.drained) await new Promise((resolve) => setTimeout(resolve, Math.min(200, Math.max(0, deadline - Date.now()))));
        }
        return { state: 'following', applied, lagBytes };
      });
    },

    /** A reverse stream that broke: its slot and publication go (a move back then copies in full). */
    async endReverse(movementId: string, placementNodeId: number): Promise<void> {
      const placement = await getNode(deps.catalog, placementNodeId);
      await runOn([placement], () => stopReverseCapture(deps.nodePools, placement, movementId));
    },

    /** The fenced copies a cutover leaves on the sources, by node id and name (no DSN travels in the workflow). */
    async fencedCopies(plan: MovementPlan): Promise<FencedCopy[]> {
      const copy = (node: NodeRecord, schema: string, shardId: number): FencedCopy => ({ nodeId: node.id, node: node.name, schema, shardId });
      return plan.operation === 'move'
        ? [copy(plan.source, fencedSchemaName(plan.shard.schema, plan.movementId), plan.shard.shardId)]
        : plan.sources.map((s) => copy(s.node, fencedSourceName(plan, s), s.shardId));
    },

    /**
     * After the grace period: the fenced copies on the sources go (their nodes as the catalog has them
     * now), with the move's reverse stream. 'busy' (nothing dropped) while a move back of it runs.
     */
    async dropFencedCopies(copies: FencedCopy[], reverse?: Pick<ReverseFollow, 'movementId' | 'placementNodeId'>): Promise<'dropped' | 'busy'> {
      return run(async () => {
        if (reverse) {
          const placement = await getNode(deps.catalog, reverse.placementNodeId);
          const fenced = await getNode(deps.catalog, copies[0]!.nodeId);
          return runOn([placement, fenced], () => dropFencedCopyUnlessReversing(deps.catalog, deps.nodePools, reverse.movementId, placement, fenced, copies[0]!));
        }
        for (const c of copies) {
          const node = await getNode(deps.catalog, c.nodeId);
          await runOn([node], () => dropSchemaGuarded(deps.catalog, deps.nodePools, node, c.schema, [c.shardId]));
        }
        return 'dropped' as const;
      });
    },

    /** Compensation before cutover: replication objects and the targets' copies go, the sources stay as they were. */
    async abortMove(plan: MovementPlan): Promise<void> {
      plan = await hydratePlan(deps.catalog, plan); // the DSNs, from the catalog: the workflow carries none
      return runOn(nodesOf(plan), async () => {
        if (plan.operation === 'move') {
          await stopStreaming(deps.nodePools, endpoints(plan), plan.names);
          await stopReverseCapture(deps.nodePools, plan.target, plan.movementId);
          await dropVerifySlots(deps.nodePools, plan);
          await dropTargetShard(deps.catalog, deps.nodePools, plan.target, plan.shard);
          return;
        }
        await stopChangeCapture(deps.nodePools, plan);
        await dropVerifySlots(deps.nodePools, plan);
        await dropNewShards(deps.catalog, deps.nodePools, plan);
      });
    },

    async finishMove(movementId: string, state: Exclude<MovementState, 'running'>): Promise<void> {
      return run(() => finishMovement(deps.catalog, movementId, state));
    },
  };
}

/**
 * A slot's creation that waits for someone's open transaction: logged once per change, and
 * heartbeated. Reports come from a timer: the activity's context is taken where it is created.
 */
function slotWaitReporter(movementId: string, context: Context = Context.current()): (waitingFor: string) => void {
  let said = '';
  return (waitingFor) => {
    if (waitingFor !== said) context.log.warn(`movement ${movementId}: ${(said = waitingFor)}`);
    context.heartbeat(waitingFor);
  };
}
