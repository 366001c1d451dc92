import {
  ActivityCancellationType,
  ActivityFailure,
  allHandlersFinished,
  ApplicationFailure,
  continueAsNew,
  ContinueAsNew,
  CancellationScope,
  condition,
  isCancellation,
  log,
  ParentClosePolicy,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  sleep,
  startChild,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { createMovementActivities } from '../activities/movement.js';
import type { MovementPlan } from '../src/movement/plan.js';
import type { VerifyProgress } from '../src/movement/verify.js';
import { BUSINESS_ERROR_TYPES } from '../src/errors.js';
import { describeMovement } from './describe.js';
import { approvalReason } from '../src/movement/approval.js';
import { SA_GROUP, SA_OPERATION, SA_PHASE, SA_SHARD, SA_SOURCE_NODE, SA_TARGET_NODE } from '../src/search-attributes.js';
import {
  approveSignal,
  fencedCopyProgressQuery,
  movementProgressQuery,
  pauseSignal,
  rejectSignal,
  resumeSignal,
  type DropFencedCopyInput,
  type FencedCopyProgress,
  type MoveShardInput,
  type MoveShardResult,
  type MovementPhase,
  type MovementProgress,
  type ReverseMovement,
} from './messages.js';
import { validInput } from './validate.js';
import { dropFencedCopyInputSchema, moveShardInputSchema } from '../src/inputs.js';

type Activities = ReturnType<typeof createMovementActivities>;

const NON_RETRYABLE = [...BUSINESS_ERROR_TYPES];

// A lost worker is noticed within the heartbeat timeout: steps are short or heartbeat while they wait.
const STEP = {
  startToCloseTimeout: '10 minutes',
  heartbeatTimeout: '10 seconds',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: 10, nonRetryableErrorTypes: NON_RETRYABLE },
} as const;

const BEGIN = {
  startToCloseTimeout: '1 minute',
  // A node at its movement limit is worth waiting for; bad input is not.
  retry: { initialInterval: '2 seconds', backoffCoefficient: 2, maximumInterval: '1 minute', maximumAttempts: 30, nonRetryableErrorTypes: NON_RETRYABLE },
} as const;

const UNDO = {
  startToCloseTimeout: '2 minutes',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute', maximumAttempts: 50, nonRetryableErrorTypes: NON_RETRYABLE },
} as const;

// After a failed cutover: whether the switch committed decides between forward and undo. Never given
// up on: without an answer, undoing could drop the only copy that the catalog now places.
const SETTLE = {
  startToCloseTimeout: '1 minute',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute' }, // no maximumAttempts: unlimited
} as const;

// Finishing a switch that committed: rounds of retries, each round reported, without end.
const FORWARD = {
  startToCloseTimeout: '2 minutes',
  heartbeatTimeout: '10 seconds',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute', maximumAttempts: 10 },
} as const;

// The initial copy of a split or merge runs as one activity, heartbeating as it goes.
const COPY = { ...STEP, startToCloseTimeout: '6 hours', heartbeatTimeout: '30 seconds' } as const;

const begin = proxyActivities<Activities>(BEGIN);

/** How often a queued movement asks for its slot again: soon at first, then every 10 s at most. */
const QUEUE_POLL_MAX_SECONDS = 10;

/** Names for summaries and search attributes: where the rows come from and go to, and the shards afterwards. */
function planNodes(plan: MovementPlan): { group: string; sources: string; targets: string; schemas: string; shards: number[] } {
  if (plan.operation === 'move') {
    return { group: plan.shard.group ?? '', sources: plan.source.name, targets: plan.target.name, schemas: plan.shard.schema, shards: [plan.shard.shardId] };
  }
  return {
    group: plan.groupName,
    sources: plan.sources.map((s) => s.node.name).join(','),
    targets: plan.targets.map((t) => t.node.name).join(','),
    schemas: plan.sources.map((s) => s.schema).join(' + '),
    shards: plan.targets.map((t) => t.shardId),
  };
}

/** "move shard 17 of orders: node-1 → node-3", "merge shards 3 + 4 of orders: node-1,node-2 → node-3": for one-line outcomes. */
function movementLabel(plan: MovementPlan): string {
  const nodes = planNodes(plan);
  const ids = plan.operation === 'merge' ? `shards ${plan.sources.map((s) => s.shardId).join(' + ')}` : `shard ${plan.operation === 'move' ? plan.shard.shardId : plan.sources[0]!.shardId}`;
  return `${plan.operation} ${ids}${nodes.group ? ` of ${nodes.group}` : ''}: ${nodes.sources} → ${nodes.targets}`;
}

/** What went wrong, in the words of the innermost error that has any (not "Activity task failed"). */
function causeOf(err: unknown): { message: string; type?: string } {
  let message: string | undefined;
  let type: string | undefined;
  for (let e: unknown = err; e instanceof Error; e = (e as { cause?: unknown }).cause) {
    if (e instanceof ActivityFailure) continue;
    message ??= e.message;
    if (e instanceof ApplicationFailure && e.type) type ??= e.type;
  }
  return { message: message ?? String(err), type };
}

/** "14:35:07 UTC", for a summary line. */
function clock(at: Date): string {
  return `${at.toISOString().slice(11, 19)} UTC`;
}

/** An activity failure's own message (the cause), not "Activity task failed". */
function failureText(err: unknown): string {
  const e = err as { message?: string; cause?: { message?: string } };
  return e.cause?.message || e.message || String(err);
}

function reverseOf(plan: MovementPlan): ReverseMovement {
  if (plan.operation === 'move') return { operation: 'move', shardId: plan.shard.shardId, targetNode: plan.source.name, of: plan.movementId };
  if (plan.operation === 'split') {
    return { operation: 'merge', shardIds: [plan.targets[0]!.shardId, plan.targets[1]!.shardId], targetNode: plan.sources[0]!.node.name };
  }
  const lower = plan.sources[0]!.range;
  return {
    operation: 'split',
    shardId: plan.targets[0]!.shardId,
    splitTargets: [plan.sources[0]!.node.name, plan.sources[1]!.node.name],
    splitAt: 'hashMax' in lower ? lower.hashMax : lower.rangeMax,
  };
}

/**
 * Moves one shard (its whole colocation group's tables) to another node online, splits it in two,
 * or merges two adjacent shards (DESIGN §3): (queued →) prepare → copy + stream → catch up →
 * approval gate → cutover → cleanup. Before the cutover every failure, cancellation or rejection is
 * undone; after it, undo is a move back. The workflow completes at the switch: the lease is
 * finished then, and a child workflow (abandoned by this one) drops the fenced source copy after
 * the grace period.
 */
export async function moveShard(input: MoveShardInput): Promise<MoveShardResult> {
  validInput(moveShardInputSchema, input);
  const progress: MovementProgress = input.resume?.progress ?? {
    phase: 'prepare',
    paused: false,
    approved: false,
    approvalReason: null,
    rowsCopied: 0,
    bytesCopied: 0,
    lagBytes: null,
    tablesReady: 0,
    tables: 0,
    etaSeconds: null,
    throttledMs: 0,
  };
  let rejected = false;
  setHandler(movementProgressQuery, () => progress);
  setHandler(pauseSignal, () => void (progress.paused = true));
  setHandler(resumeSignal, () => void (progress.paused = false));
  setHandler(approveSignal, () => void (progress.approved = true));
  setHandler(rejectSignal, () => void (rejected = true));

  const enter = (phase: MovementPhase, details: string): void => {
    progress.phase = phase;
    upsertSearchAttributes([{ key: SA_PHASE, value: phase }]);
    setCurrentDetails(details);
  };
  // Retries can be tightened per run (tests do, to fail over in seconds rather than minutes).
  const tuned = input.retry;
  const retry = tuned
    ? { maximumAttempts: tuned.maximumAttempts, initialInterval: tuned.initialIntervalMs, maximumInterval: tuned.maximumIntervalMs ?? STEP.retry.maximumInterval }
    : {};
  const STEP_RUN = { ...STEP, retry: { ...STEP.retry, ...retry } };
  const COPY_RUN = { ...COPY, retry: STEP_RUN.retry };
  const UNDO_RUN = { ...UNDO, retry: { ...UNDO.retry, ...(tuned?.maximumIntervalMs ? { initialInterval: tuned.initialIntervalMs, maximumInterval: tuned.maximumIntervalMs } : {}) } };
  const step = proxyActivities<Activities>(STEP_RUN);
  const undo = proxyActivities<Activities>(UNDO_RUN);
  const cap = tuned?.maximumIntervalMs ? { initialInterval: tuned.initialIntervalMs, maximumInterval: tuned.maximumIntervalMs } : {};
  const SETTLE_RUN = { ...SETTLE, retry: { ...SETTLE.retry, ...cap } };
  const FORWARD_RUN = { ...FORWARD, retry: { ...FORWARD.retry, ...cap, ...(tuned ? { maximumAttempts: tuned.maximumAttempts } : {}) } };
  const settle = proxyActivities<Activities>(SETTLE_RUN);
  const forward = proxyActivities<Activities>(FORWARD_RUN);
  const what = describeMovement(input);
  const operation = input.operation ?? 'move';

  // Also when started with the temporal CLI, which sets no search attributes.
  upsertSearchAttributes([
    { key: SA_SHARD, value: input.shardId },
    { key: SA_OPERATION, value: operation },
  ]);

  const rejectedFailure = (reason: string) => ApplicationFailure.create({ type: 'MovementRejected', nonRetryable: true, message: reason });

  /** The governor's idle baselines, measured before the copy: the apply of a split or merge compares against them. */
  let baselinesMs: number[] | undefined = input.resume?.baselinesMs;
  // A move's copy runs beside the catch-up loop (which measures it and pauses it), in a scope of its own so that a failure can stop it.
  const copyScope = new CancellationScope();
  let copyRun: Promise<unknown> | undefined;
  let copyError: unknown;

  /** A long wait would grow the history without end: carry on in a fresh run with the same state. */
  const longHistory = (): boolean => {
    const info = workflowInfo();
    return info.continueAsNewSuggested || info.historyLength > (input.historyLimit ?? 10_000);
  };
  const continueIfLong = async (p: MovementPlan | undefined): Promise<void> => {
    // Not while a move's own copy runs: it would start over in the new run (the catch-up loop polls less often instead).
    if (copyRun) return;
    if (longHistory()) {
      await condition(allHandlersFinished);
      await continueAsNew<typeof moveShard>({ ...input, resume: { plan: p, progress, baselinesMs } });
    }
  };

  /**
   * The lease, or a place in the queue: while a node involved runs as many movements as allowed,
   * the movement waits (phase 'queued', saying for which node) and asks again, soon at first.
   */
  const lease = async (): Promise<MovementPlan> => {
    let waitSeconds = Math.min(1, input.pollSeconds);
    for (;;) {
      if (progress.paused) {
        setCurrentDetails(`paused in ${progress.phase}`);
        await condition(() => !progress.paused || rejected);
      }
      if (rejected) throw rejectedFailure('rejected');
      const begun = await begin.beginMove.executeWithOptions({ ...BEGIN, summary: `lease ${what}` }, [
        {
          movementId: input.movementId,
          operation,
          shardId: input.shardId,
          targetNode: input.targetNode,
          splitTargets: input.splitTargets,
          splitAt: input.splitAt,
          mergeWith: input.mergeWith,
          maxMovesPerNode: input.maxMovesPerNode,
          workflowId: input.workflowId,
          ...(input.reverseOf ? { reverseOf: input.reverseOf, reverseFallback: input.reverseFallback } : {}),
          ...(input.governor ? { governor: input.governor } : {}),
        },
      ]);
      if ('plan' in begun) {
        progress.queued = null;
        return begun.plan;
      }
      const { node, running, limit } = begun.queued;
      progress.queued = { node, running, limit, since: progress.queued?.since ?? new Date().toISOString() };
      enter('queued', `queued: node ${node} runs ${running} movement(s), its limit is ${limit}`);
      await condition(() => rejected || progress.paused, `${waitSeconds} seconds`);
      waitSeconds = Math.min(waitSeconds * 2, QUEUE_POLL_MAX_SECONDS);
      await continueIfLong(undefined);
    }
  };

  /**
   * ETA from the last two measurements: during the copy, bytes still to copy (of the source's size
   * when the movement began) over the copy rate; after it, the lag over the rate it shrinks at. The
   * first measurement is taken against the moment the estimator was made (with `startBytes` copied
   * then), so that even a copy measured only once has an ETA.
   */
  const etaEstimator = (totalBytes: number, startBytes = 0) => {
    let last: { at: number; bytes: number; lag: number | null } | undefined = { at: Date.now(), bytes: startBytes, lag: null };
    return (bytes: number, lag: number | null, copying: boolean): number | null => {
      const now = Date.now();
      const before = last;
      last = { at: now, bytes, lag };
      if (!before || now <= before.at) return null;
      const seconds = (now - before.at) / 1000;
      if (copying) {
        const rate = (bytes - before.bytes) / seconds;
        return rate > 0 ? Math.max(1, Math.round(Math.max(totalBytes - bytes, 0) / rate)) : null;
      }
      if (lag === null) return null;
      if (lag <= input.catchUpLagBytes) return 0;
      const shrink = before.lag === null ? 0 : (before.lag - lag) / seconds;
      return shrink > 0 ? Math.round(lag / shrink) : null;
    };
  };

  /** Lease, prepare the target, start streaming (and for a split or merge, copy): the plan. */
  const start = async (): Promise<MovementPlan> => {
    if (progress.phase !== 'queued') enter('prepare', `checking and leasing ${what}`);
    const p = await lease();
    enter('prepare', `preparing ${what}`);
    plan = p;
    const nodes = planNodes(p);
    upsertSearchAttributes([
      { key: SA_GROUP, value: nodes.group },
      { key: SA_SOURCE_NODE, value: nodes.sources },
      { key: SA_TARGET_NODE, value: nodes.targets },
    ]);
    if (p.operation === 'move' && input.reverseOf) {
      progress.movedBack = p.reverse ? { of: p.reverse.of, cutoverOnly: true } : { of: input.reverseOf, cutoverOnly: false, why: p.reverseFallback };
      // Within the grace period the fenced copy is in sync: nothing to prepare or copy.
      if (p.reverse) return p;
      log.info(`moving back by a full move: ${p.reverseFallback ?? ''}`);
    }
    await step.prepareTarget.executeWithOptions({ ...STEP_RUN, summary: `create the new tables on ${nodes.targets}` }, [p]);

    enter('copy', `copying ${nodes.schemas} from ${nodes.sources} to ${nodes.targets}`);
    await step.startStreaming.executeWithOptions(
      { ...STEP_RUN, summary: p.operation === 'move' ? `publish on ${nodes.sources}, subscribe on ${nodes.targets}` : `publication and slot on ${nodes.sources}` },
      [p],
    );
    if (p.operation !== 'move') {
      // The copy is one activity; beside it, the targets' sizes are measured for progress and an ETA.
      let copyDone = false;
      const copying = step.copyRows.executeWithOptions({ ...COPY_RUN, summary: `copy rows into ${p.targets.map((t) => t.schema).join(', ')}` }, [p, input.governor]);
      void copying.then(
        () => (copyDone = true),
        () => (copyDone = true),
      );
      const eta = etaEstimator(p.bytes, 0);
      while (!(await condition(() => copyDone, `${input.pollSeconds} seconds`))) {
        const measured = await step.copyProgress.executeWithOptions({ ...STEP_RUN, summary: 'measure the copy' }, [p]);
        Object.assign(progress, { rowsCopied: measured.rowsCopied, bytesCopied: measured.bytesCopied, etaSeconds: eta(measured.bytesCopied, null, true) });
        setCurrentDetails(`copy: ${measured.bytesCopied} of about ${p.bytes} bytes`);
      }
      const copied = await copying;
      Object.assign(progress, { rowsCopied: copied.rows, bytesCopied: copied.bytes, etaSeconds: null, throttledMs: copied.throttledMs ?? 0, copyDone: true });
      baselinesMs = copied.baselinesMs;
    }
    return p;
  };

  /** Pausing stops the stream (the subscription stops consuming the source) until resume, in any phase. */
  const holdWhilePaused = async (p: MovementPlan): Promise<boolean> => {
    if (!progress.paused) return false;
    await step.setStreaming(p, false);
    setCurrentDetails(`paused in ${progress.phase}`);
    await condition(() => !progress.paused || rejected);
    await step.setStreaming(p, true);
    return true;
  };

  /** Copy, then catch up: measured every few seconds, pausing when asked, until the lag is small. */
  const catchUp = async (p: MovementPlan): Promise<void> => {
    let eta = etaEstimator(p.bytes, progress.bytesCopied);
    for (;;) {
      if (copyError) throw copyError;
      if (await holdWhilePaused(p)) eta = etaEstimator(p.bytes, progress.bytesCopied); // the pause is no part of any rate
      if (rejected) throw rejectedFailure('rejected');
      await continueIfLong(p);
      // A split or merge applies the sources' changes here (paced by the governor), for up to one poll
      // interval; a move's apply (its subscription) is paced here once its own copy is done.
      const applyMs = p.operation === 'move' && !progress.copyDone ? 0 : input.pollSeconds * 1000;
      const measured = await step.measureProgress.executeWithOptions({ ...STEP_RUN, summary: applyMs ? 'apply changes, measure lag' : 'measure copy and lag' }, [
        p,
        applyMs,
        input.governor,
        baselinesMs,
      ]);
      const copying = measured.tablesReady < measured.tables || measured.tables === 0;
      // A split's or merge's rows: the copy's exact count stands until the targets' statistics catch up with it.
      const rowsCopied = p.operation === 'move' ? measured.rowsCopied : Math.max(measured.rowsCopied, progress.rowsCopied);
      // A move's copy reports its total time throttled; a split's or merge's apply its share of this poll.
      const throttledMs = p.operation === 'move' ? (measured.throttledMs ?? progress.throttledMs) : (progress.throttledMs ?? 0) + (measured.throttledMs ?? 0);
      const { pacedMs, ...state } = measured;
      Object.assign(progress, state, { rowsCopied, throttledMs, etaSeconds: eta(measured.bytesCopied, measured.lagBytes, copying) });
      if (!copying && progress.phase === 'copy') enter('catch-up', `catching up: lag ${measured.lagBytes ?? '?'} bytes`);
      setCurrentDetails(
        `${progress.phase}: ${rowsCopied} rows, ${measured.bytesCopied} bytes, lag ${measured.lagBytes ?? '?'} bytes${throttledMs ? `, throttled ${Math.round(throttledMs / 1000)} s` : ''}`,
      );
      if (!copying && !copyRun && measured.lagBytes !== null && measured.lagBytes <= input.catchUpLagBytes) break;
      const waited = p.operation === 'move' ? (pacedMs ?? 0) > 0 : applyMs > 0;
      if (!waited) await sleep(`${copyRun && longHistory() ? Math.max(60, input.pollSeconds) : input.pollSeconds} seconds`);
    }
  };

  /** A move's own copy, started beside the catch-up loop; its end (or failure) is noted for the loop. */
  const startOwnCopy = (p: MovementPlan): void => {
    copyRun = copyScope
      .run(() =>
        step.copyRows.executeWithOptions(
          { ...COPY_RUN, cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED, summary: `copy ${planNodes(p).schemas} (paced by the governor)` },
          [p, input.governor],
        ),
      )
      .then(
        (copied) => {
          progress.copyDone = true;
          progress.throttledMs = copied.throttledMs ?? progress.throttledMs;
          baselinesMs = copied.baselinesMs ?? baselinesMs; // the apply's governor compares against the idle nodes, not the copying ones
        },
        (err: unknown) => void (copyError = err),
      )
      .finally(() => void (copyRun = undefined));
  };

  /**
   * After the switch the movement is done; the fenced copy stays for the grace period, then a child
   * workflow drops it. The child is abandoned by this workflow (it outlives it, durably: its timer is
   * in its own history), so the movement's workflow id and lease are free at once.
   */
  const dropFencedCopyLater = async (p: MovementPlan, sources: string, reversible: boolean): Promise<MoveShardResult['fencedCopy']> => {
    const copies = await step.fencedCopies(p);
    const dropAt = new Date(Date.now() + input.graceSeconds * 1000).toISOString();
    // The fenced copy follows the new placement until it goes (reverse replication).
    const reverse = reversible && p.operation === 'move' ? { movementId: p.movementId, placementNodeId: p.target.id, placementNode: p.target.name } : undefined;
    if (input.graceSeconds <= 0) {
      await step.dropFencedCopies.executeWithOptions({ ...STEP_RUN, summary: `drop the fenced copy on ${sources}` }, reverse ? [copies, reverse] : [copies]);
      return { nodes: sources, dropAt, workflowId: null };
    }
    const workflowId = `${input.workflowId}-drop-fenced-${input.movementId}`; // from the input, so that a replay under another id still matches
    await startChild(dropFencedCopy, {
      workflowId,
      args: [{ movementId: input.movementId, what, copies, dropAt, ...(reverse ? { reverse } : {}) }],
      parentClosePolicy: ParentClosePolicy.ABANDON,
      staticSummary: `drop the fenced copy of ${what} on ${sources} at ${clock(new Date(dropAt))}`,
      typedSearchAttributes: [
        { key: SA_SHARD, value: input.shardId },
        { key: SA_OPERATION, value: 'drop-fenced-copy' },
      ],
    });
    return { nodes: sources, dropAt, workflowId };
  };

  /**
   * Finishing a switch that committed: rounds of retries of the cutover (which commits what is still
   * prepared), each failed round reported (details, a warning; the gauge
   * shardcast_movements_switched_unfinished alerts), without end. A long wait continues as new here.
   */
  /** Whether a reverse stream was started for a move back within grace (kept across a forward continue-as-new). */
  let reversible = input.resume?.forward?.reversible ?? false;
  const finishForward = async (p: MovementPlan, from: { failures: number; lastError: string }): Promise<Awaited<ReturnType<Activities['cutover']>>> => {
    const nodes = planNodes(p);
    let { failures, lastError } = from;
    for (;;) {
      setCurrentDetails(`switched to ${nodes.targets}; finishing the cutover on ${nodes.sources} failed (${failures + 1}×: ${lastError}); retrying until it answers`);
      log.warn('cutover switched but not finished: alert', { movementId: input.movementId, failures: failures + 1, error: lastError });
      try {
        const done = await forward.cutover.executeWithOptions({ ...FORWARD_RUN, summary: `finish the cutover on ${nodes.sources} (the switch committed)` }, [p]);
        setCurrentDetails(`switched to ${nodes.targets}; cutover finished on ${nodes.sources}`);
        return done;
      } catch (again) {
        failures++;
        lastError = failureText(again);
        await sleep(FORWARD_RUN.retry.maximumInterval);
      }
      const info = workflowInfo();
      if (info.continueAsNewSuggested || info.historyLength > (input.historyLimit ?? 10_000)) {
        await condition(allHandlersFinished);
        await continueAsNew<typeof moveShard>({ ...input, resume: { plan: p, progress, forward: { failures, lastError, reversible } } });
      }
    }
  };

  // A forward run continued as new says at once what it is doing (the UI and `movements` show it while the plan is checked).
  if (input.resume?.plan && input.resume.forward) {
    const n = planNodes(input.resume.plan);
    const f = input.resume.forward;
    setCurrentDetails(`switched to ${n.targets}; finishing the cutover on ${n.sources} failed (${f.failures}×: ${f.lastError}); retrying until it answers`);
  }
  // A plan from continue-as-new is input too: checked against the catalog (the lease held by this
  // workflow, nodes, placement, tables) before anything uses it; a refusal undoes nothing with it.
  if (input.resume?.plan && patched('recheck-resumed-plan')) {
    try {
      await begin.checkResumedPlan.executeWithOptions({ ...BEGIN, summary: 'check the resumed plan against the catalog' }, [
        input.resume.plan,
        { workflowId: workflowInfo().workflowId, forward: input.resume.forward !== undefined },
      ]);
    } catch (err) {
      const cause = causeOf(err);
      throw ApplicationFailure.create({ type: cause.type ?? 'InvalidInputError', nonRetryable: true, message: cause.message, cause: err instanceof Error ? err : undefined });
    }
  }
  let plan: MovementPlan | undefined = input.resume?.plan;
  let cutOver = false;
  try {
    if (!plan) plan = await start();
    const p = plan;
    const nodes = planNodes(p);

    let switched: Awaited<ReturnType<Activities['cutover']>>;
    if (input.resume?.forward) {
      // Continued as new while finishing a switch that committed: only forward from here.
      cutOver = true;
      switched = await CancellationScope.nonCancellable(() => finishForward(p, input.resume!.forward!));
    } else {
      // A move back within the grace period: its copy is the fenced one, kept in sync; the cutover checks it.
      const cutoverOnly = p.operation === 'move' && p.reverse !== undefined;
      // Any other move copies by itself (paced by the governor), beside the catch-up loop that measures and pauses it.
      if (p.operation === 'move' && !cutoverOnly && !progress.copyDone) startOwnCopy(p);
      if (!cutoverOnly) await catchUp(p);

      // Verify: chunk digests in consistent snapshots, one slice per activity so that progress shows.
      if (!cutoverOnly) enter('verify', `verifying ${nodes.sources} against ${nodes.targets}`);
      let verified: VerifyProgress | undefined;
      while (!cutoverOnly) {
        verified = await step.verify.executeWithOptions({ ...STEP_RUN, summary: 'compare chunk digests in consistent snapshots' }, [
          p,
          verified,
          (input.verifySliceSeconds ?? 10) * 1000,
          input.verifyChunkRows,
        ]);
        Object.assign(progress, { verifyBlockedMs: verified.blockedMs, rowsVerified: verified.rowsVerified, rowsToVerify: verified.rowsTotal, etaSeconds: verified.etaSeconds });
        setCurrentDetails(`verify: ${verified.rowsVerified} of ~${verified.rowsTotal} rows${verified.etaSeconds !== null ? `, eta ${verified.etaSeconds} s` : ''}, writes blocked ${verified.blockedMs} ms`);
        if (verified.done) break;
      }

      progress.approvalReason = approvalReason(input, p.bytes, new Date());
      let pausedSinceCatchUp = false;
      if (progress.approvalReason && !progress.approved) {
        enter('approval', `waiting for approve or reject (${what}): ${progress.approvalReason}`);
        const deadline = input.approvalTimeoutSeconds ? Date.now() + input.approvalTimeoutSeconds * 1000 : undefined;
        for (;;) {
          // Paused at the gate: streaming stops too, as in the copy.
          if (await holdWhilePaused(p)) {
            pausedSinceCatchUp = true;
            setCurrentDetails(`waiting for approve or reject (${what}): ${progress.approvalReason}`);
          }
          if (rejected || progress.approved) break;
          const left = deadline === undefined ? undefined : deadline - Date.now();
          if (left !== undefined && left <= 0) {
            if (input.approvalTimeoutAction === 'approve') progress.approved = true;
            break;
          }
          await condition(() => progress.approved || rejected || progress.paused, left);
        }
        if (rejected || !progress.approved) {
          const reason = rejected ? 'rejected' : 'not approved in time';
          rejected = true;
          throw rejectedFailure(reason);
        }
      }
      if (await holdWhilePaused(p)) pausedSinceCatchUp = true;
      if (rejected) throw rejectedFailure('rejected');
      // A pause after the catch-up let the lag grow: catch up again, so the cutover's lock stays short.
      if (pausedSinceCatchUp) {
        enter('catch-up', `catching up after the pause: ${what}`);
        await catchUp(p);
      }

      // The reverse stream starts before the cutover (a slot's creation waits for running transactions; the cutover prepares some).
      if (p.operation === 'move' && !cutoverOnly && patched('reverse-capture')) {
        reversible = await step.startReverseCapture.executeWithOptions({ ...STEP_RUN, summary: `reverse stream on ${nodes.targets}, for a move back within grace` }, [p]);
      }

      enter('cutover', `switching ${nodes.schemas} to ${nodes.targets}`);
      try {
        switched = await step.cutover.executeWithOptions({ ...STEP_RUN, summary: `cutover ${nodes.schemas}: ${nodes.sources} → ${nodes.targets}` }, [p]);
      } catch (err) {
        // Before any undo: has the switch committed (or been prepared)? Then the movement only goes forward.
        // Until that is known nothing may be undone (cutOver set), even should the question itself fail.
        cutOver = true;
        const decided = await CancellationScope.nonCancellable(() =>
          settle.settleCutover.executeWithOptions({ ...SETTLE_RUN, summary: 'did the catalog switch commit?' }, [p]),
        );
        if (decided === 'undo') {
          cutOver = false;
          throw err;
        }
        switched = await CancellationScope.nonCancellable(() => finishForward(p, { failures: 0, lastError: failureText(err) }));
      }
    }
    cutOver = true;

    enter('cleanup', `dropping replication; the fenced copy on ${nodes.sources} stays ${input.graceSeconds} s`);
    await step.stopStreaming.executeWithOptions({ ...STEP_RUN, summary: 'drop subscription, slot and publication' }, [p]);
    // The node's movement slot is free from here: the grace period holds no lease.
    await step.finishMove(input.movementId, 'done');
    const fencedCopy = await dropFencedCopyLater(p, nodes.sources, reversible);
    enter('done', `${what}: done, writes blocked ${switched.blockedMs} ms at cutover; fenced copy on ${nodes.sources} dropped at ${clock(new Date(fencedCopy.dropAt))}`);
    return {
      movementId: input.movementId,
      operation,
      shardId: input.shardId,
      source: nodes.sources,
      target: nodes.targets,
      shards: nodes.shards,
      cutoverBlockedMs: switched.blockedMs,
      fencedCopy,
      reverse: reverseOf(p),
      ...(progress.movedBack ? { movedBack: progress.movedBack } : {}),
    };
  } catch (err) {
    if (err instanceof ContinueAsNew) throw err;
    const cancelled = isCancellation(err);
    if (cutOver) {
      // After the switch there is nothing to undo here: leave a clear failure (undo is a move back).
      enter('failed', `failed after cutover: ${(err as Error).message}`);
      throw err;
    }
    const failedIn = progress.phase;
    const cause = causeOf(err);
    enter('compensate', cancelled ? 'cancelled: undoing' : rejected ? 'rejected: undoing' : `failed: undoing (${cause.message})`);
    let undoError: string | undefined;
    await CancellationScope.nonCancellable(async () => {
      // A copy still running stops first (it checks between chunks), so that nothing is created after the undo.
      copyScope.cancel();
      await copyRun;
      if (plan) {
        try {
          await undo.abortMove.executeWithOptions({ ...UNDO_RUN, summary: 'undo: drop replication and the target copy' }, [plan]);
        } catch (undoErr) {
          undoError = causeOf(undoErr).message;
          log.error('undo failed', { error: undoError });
        }
        await undo.finishMove(input.movementId, cancelled || rejected ? 'cancelled' : 'failed');
      }
    });
    // One line: what, where, why, and that it was undone (or that nothing had been changed yet).
    const outcome = !plan ? 'nothing was changed' : undoError ? `undo failed: ${undoError}` : 'undone';
    const label = plan ? movementLabel(plan) : what;
    if (cancelled) {
      enter('cancelled', `${label}: cancelled in ${failedIn}; ${outcome}`);
      throw err;
    }
    if (rejected) {
      const line = `${label}: ${cause.message} in ${failedIn}; ${outcome}`;
      enter('rejected', line);
      throw ApplicationFailure.create({ type: 'MovementRejected', nonRetryable: true, message: line });
    }
    const line = `${label} failed in ${failedIn}: ${cause.message}; ${outcome}`;
    enter('failed', line);
    // The type stays the cause's (a refused request is still InvalidInputError to the client); the message is the line.
    throw ApplicationFailure.create({ type: cause.type ?? 'MovementFailed', nonRetryable: true, message: line, cause: err instanceof Error ? err : undefined });
  }
}

/**
 * The fenced source copies of a finished movement, dropped once the grace period is over (a durable
 * timer). Started by moveShard at its switch and abandoned by it, so it runs on after the movement
 * has completed.
 */
export async function dropFencedCopy(input: DropFencedCopyInput): Promise<void> {
  validInput(dropFencedCopyInputSchema, input);
  const nodes = [...new Set(input.copies.map((c) => c.node))].join(',');
  const progress: FencedCopyProgress = { dropAt: input.dropAt, reverse: input.reverse ? 'following' : 'off', reverseLagBytes: null, changesApplied: 0, dropped: false };
  setHandler(fencedCopyProgressQuery, () => progress);
  setCurrentDetails(`the fenced copy of ${input.what} on ${nodes} goes at ${clock(new Date(input.dropAt))}`);
  if (input.reverse) await followReverse(input, progress);
  const wait = Date.parse(input.dropAt) - Date.now();
  if (wait > 0 && progress.reverse !== 'gone') await sleep(wait);
  const undo = proxyActivities<Activities>(UNDO);
  const args: Parameters<Activities['dropFencedCopies']> = input.reverse ? [input.copies, input.reverse] : [input.copies];
  // While a move back of this movement runs, its copy is in use: asked again shortly.
  while ((await undo.dropFencedCopies.executeWithOptions({ ...UNDO, summary: `drop the fenced copy on ${nodes}` }, args)) === 'busy') {
    setCurrentDetails(`the fenced copy of ${input.what} on ${nodes} is being moved back into service`);
    await sleep('5 seconds');
  }
  progress.dropped = true;
  setCurrentDetails(`the fenced copy of ${input.what} on ${nodes} was ${progress.reverse === 'gone' ? 'moved back into service' : 'dropped'}`);
}

// Following the new placement: a slice per activity (heartbeating), retried across worker restarts.
const FOLLOW = {
  startToCloseTimeout: '2 minutes',
  heartbeatTimeout: '10 seconds',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: 20, nonRetryableErrorTypes: NON_RETRYABLE },
} as const;
const FOLLOW_SLICE_MS = 5_000; // progress (the lag) is reported after every slice

/** Applies the reverse stream into the fenced copy until the grace period ends, the copy is gone, or the stream breaks. */
async function followReverse(input: DropFencedCopyInput, progress: FencedCopyProgress): Promise<void> {
  const reverse = input.reverse!;
  const follow = proxyActivities<Activities>(FOLLOW);
  const stream = { ...reverse, copy: input.copies[0]! };
  for (;;) {
    const left = Date.parse(input.dropAt) - Date.now();
    if (left <= 0 || progress.reverse !== 'following') return;
    try {
      const r = await follow.followReverse.executeWithOptions({ ...FOLLOW, summary: `keep the fenced copy in sync from ${reverse.placementNode}` }, [stream, Math.min(left, FOLLOW_SLICE_MS)]);
      Object.assign(progress, { reverse: r.state, reverseLagBytes: r.lagBytes, changesApplied: progress.changesApplied + r.applied });
    } catch (err) {
      // A stream that cannot be applied is dropped: a move back then copies in full, rather than trust it.
      log.warn('reverse stream broken: dropped', { movementId: input.movementId, error: failureText(err) });
      await proxyActivities<Activities>(UNDO).endReverse(reverse.movementId, reverse.placementNodeId);
      progress.reverse = 'lost';
    }
    setCurrentDetails(
      `the fenced copy of ${input.what} ${progress.reverse === 'following' ? `follows ${reverse.placementNode} (lag ${progress.reverseLagBytes ?? '?'} bytes)` : `stopped following: ${progress.reverse}`}; goes at ${clock(new Date(input.dropAt))}`,
    );
    if (workflowInfo().historyLength > 5_000) await continueAsNew<typeof dropFencedCopy>(input);
  }
}
