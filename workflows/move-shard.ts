import {
  ActivityCancellationType,
  allHandlersFinished,
  ApplicationFailure,
  continueAsNew,
  ContinueAsNew,
  CancellationScope,
  condition,
  isCancellation,
  log,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  sleep,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { createMovementActivities } from '../activities/movement.js';
import type { MovementPlan } from '../src/movement/plan.js';
import { BUSINESS_ERROR_TYPES } from '../src/errors.js';
import { describeMovement } from './describe.js';
import { approvalReason } from '../src/movement/approval.js';
import { SA_GROUP, SA_OPERATION, SA_PHASE, SA_SHARD, SA_SOURCE_NODE, SA_TARGET_NODE } from '../src/search-attributes.js';
import {
  approveSignal,
  movementProgressQuery,
  pauseSignal,
  rejectSignal,
  resumeSignal,
  type MoveShardInput,
  type MoveShardResult,
  type MovementPhase,
  type MovementProgress,
  type ReverseMovement,
} from './messages.js';

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

// The initial copy of a split or merge runs as one activity, heartbeating as it goes.
const COPY = { ...STEP, startToCloseTimeout: '6 hours', heartbeatTimeout: '30 seconds' } as const;

const begin = proxyActivities<Activities>(BEGIN);

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

function reverseOf(plan: MovementPlan): ReverseMovement {
  if (plan.operation === 'move') return { operation: 'move', shardId: plan.shard.shardId, targetNode: plan.source.name };
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
 * or merges two adjacent shards (DESIGN §3): prepare → copy + stream → catch up → approval gate →
 * cutover → cleanup. Before the cutover every failure, cancellation or rejection is undone; after
 * it, undo is a move back.
 */
export async function moveShard(input: MoveShardInput): Promise<MoveShardResult> {
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
  const what = describeMovement(input);
  const operation = input.operation ?? 'move';

  // Also when started with the temporal CLI, which sets no search attributes.
  upsertSearchAttributes([
    { key: SA_SHARD, value: input.shardId },
    { key: SA_OPERATION, value: operation },
  ]);

  /** Lease, prepare the target, start streaming (and for a split or merge, copy): the plan. */
  const start = async (): Promise<MovementPlan> => {
    enter('prepare', `checking and leasing ${what}`);
    const p = await begin.beginMove.executeWithOptions({ ...BEGIN, summary: `lease ${what}` }, [
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
      },
    ]);
    plan = p;
    const nodes = planNodes(p);
    upsertSearchAttributes([
      { key: SA_GROUP, value: nodes.group },
      { key: SA_SOURCE_NODE, value: nodes.sources },
      { key: SA_TARGET_NODE, value: nodes.targets },
    ]);
    await step.prepareTarget.executeWithOptions({ ...STEP_RUN, summary: `create the new tables on ${nodes.targets}` }, [p]);

    enter('copy', `copying ${nodes.schemas} from ${nodes.sources} to ${nodes.targets}`);
    await step.startStreaming.executeWithOptions(
      { ...STEP_RUN, summary: p.operation === 'move' ? `publish on ${nodes.sources}, subscribe on ${nodes.targets}` : `publication and slot on ${nodes.sources}` },
      [p],
    );
    if (p.operation !== 'move') {
      const copied = await step.copyRows.executeWithOptions({ ...COPY_RUN, summary: `copy rows into ${p.targets.map((t) => t.schema).join(', ')}` }, [p, input.governor]);
      Object.assign(progress, { rowsCopied: copied.rows, bytesCopied: copied.bytes, throttledMs: copied.throttledMs ?? 0, copyDone: true });
      baselinesMs = copied.baselinesMs;
    }
    return p;
  };

  let plan: MovementPlan | undefined = input.resume?.plan;
  let cutOver = false;
  let baselinesMs: number[] | undefined = input.resume?.baselinesMs;
  // A move's copy runs beside the copy loop (which measures it and pauses it), in a scope of its own so that a failure can stop it.
  const copyScope = new CancellationScope();
  let copyRun: Promise<unknown> | undefined;
  let copyError: unknown;
  try {
    if (!plan) plan = await start();
    const p = plan;
    const nodes = planNodes(p);

    // Copy, then catch up: measured every few seconds, pausing when asked, until the lag is small.
    let lastBytes = progress.bytesCopied;
    if (p.operation === 'move' && !progress.copyDone) {
      copyRun = copyScope
        .run(() => step.copyRows.executeWithOptions({ ...COPY_RUN, cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED, summary: `copy ${nodes.schemas} (paced by the governor)` }, [p, input.governor]))
        .then(
          (copied) => {
            progress.copyDone = true;
            progress.throttledMs = copied.throttledMs ?? progress.throttledMs;
          },
          (err: unknown) => void (copyError = err),
        )
        .finally(() => void (copyRun = undefined));
    }
    for (;;) {
      if (copyError) throw copyError;
      if (progress.paused) {
        await step.setStreaming(p, false);
        setCurrentDetails(`paused in ${progress.phase}`);
        await condition(() => !progress.paused || rejected);
        await step.setStreaming(p, true);
      }
      if (rejected) throw ApplicationFailure.create({ type: 'MovementRejected', nonRetryable: true, message: `${what} was rejected` });
      // A long copy would grow the history without end: carry on in a fresh run with the same state.
      const info = workflowInfo();
      // (Not before the copy is done and measured: a move's copy would start over; the loop polls less often instead.)
      const longHistory = info.continueAsNewSuggested || info.historyLength > (input.historyLimit ?? 10_000);
      if (longHistory && !copyRun && progress.phase !== 'copy') {
        await condition(allHandlersFinished);
        return await continueAsNew<typeof moveShard>({ ...input, resume: { plan: p, progress, baselinesMs } });
      }
      // A split or merge applies the sources' changes here, for up to one poll interval.
      const applyMs = p.operation === 'move' ? 0 : input.pollSeconds * 1000;
      const measured = await step.measureProgress.executeWithOptions({ ...STEP_RUN, summary: applyMs ? 'apply changes, measure lag' : 'measure copy and lag' }, [
        p,
        applyMs,
        input.governor,
        baselinesMs,
      ]);
      const copied = measured.bytesCopied - lastBytes;
      lastBytes = measured.bytesCopied;
      // A move's copy reports its total time throttled; a split's or merge's apply its share of this poll.
      const throttledMs = p.operation === 'move' ? (measured.throttledMs ?? progress.throttledMs) : (progress.throttledMs ?? 0) + (measured.throttledMs ?? 0);
      Object.assign(progress, measured, {
        throttledMs,
        etaSeconds: measured.lagBytes !== null && copied > 0 ? Math.round((measured.lagBytes / copied) * input.pollSeconds) : null,
      });
      const copying = measured.tablesReady < measured.tables || measured.tables === 0;
      if (!copying && progress.phase === 'copy') enter('catch-up', `catching up: lag ${measured.lagBytes ?? '?'} bytes`);
      setCurrentDetails(`${progress.phase}: ${measured.rowsCopied} rows, ${measured.bytesCopied} bytes, lag ${measured.lagBytes ?? '?'} bytes`);
      if (!copying && !copyRun && measured.lagBytes !== null && measured.lagBytes <= input.catchUpLagBytes) break;
      if (!applyMs) await sleep(`${longHistory ? Math.max(60, input.pollSeconds) : input.pollSeconds} seconds`);
    }

    enter('verify', `comparing counts and checksums: ${nodes.sources} against ${nodes.targets}`);
    const verified = await step.verify.executeWithOptions({ ...STEP_RUN, summary: 'verify counts and checksums at a consistent point' }, [p]);
    progress.verifyBlockedMs = verified.blockedMs;

    progress.approvalReason = approvalReason(input, p.bytes, new Date());
    if (progress.approvalReason && !progress.approved) {
      enter('approval', `waiting for approve or reject (${what}): ${progress.approvalReason}`);
      const decided = await condition(() => progress.approved || rejected, input.approvalTimeoutSeconds ? `${input.approvalTimeoutSeconds} seconds` : undefined);
      if (!decided && input.approvalTimeoutAction === 'approve') progress.approved = true;
      if (rejected || !progress.approved) {
        throw ApplicationFailure.create({ type: 'MovementRejected', nonRetryable: true, message: `${what} was ${rejected ? 'rejected' : 'not approved in time'}` });
      }
    }
    if (progress.paused) await condition(() => !progress.paused);

    enter('cutover', `switching ${nodes.schemas} to ${nodes.targets}`);
    const switched = await step.cutover.executeWithOptions({ ...STEP_RUN, summary: `cutover ${nodes.schemas}: ${nodes.sources} → ${nodes.targets}` }, [p]);
    cutOver = true;

    enter('cleanup', `dropping replication; the fenced copy on ${nodes.sources} goes in ${input.graceSeconds} s`);
    await step.stopStreaming.executeWithOptions({ ...STEP_RUN, summary: 'drop subscription, slot and publication' }, [p]);
    await sleep(`${input.graceSeconds} seconds`);
    await step.dropFencedSource.executeWithOptions({ ...STEP_RUN, summary: `drop the fenced copy on ${nodes.sources}` }, [p]);
    await step.finishMove(input.movementId, 'done');
    enter('done', `${what}: done, writes blocked ${switched.blockedMs} ms at cutover`);
    return {
      movementId: input.movementId,
      operation,
      shardId: input.shardId,
      source: nodes.sources,
      target: nodes.targets,
      shards: nodes.shards,
      cutoverBlockedMs: switched.blockedMs,
      reverse: reverseOf(p),
    };
  } catch (err) {
    if (err instanceof ContinueAsNew) throw err;
    const cancelled = isCancellation(err);
    if (cutOver) {
      // After the switch there is nothing to undo here: leave a clear failure (undo is a move back).
      enter('failed', `failed after cutover: ${(err as Error).message}`);
      throw err;
    }
    enter('compensate', cancelled ? 'cancelled: undoing' : rejected ? 'rejected: undoing' : `failed: undoing (${(err as Error).message})`);
    await CancellationScope.nonCancellable(async () => {
      // A copy still running stops first (it checks between chunks), so that nothing is created after the undo.
      copyScope.cancel();
      await copyRun;
      if (plan) {
        try {
          await undo.abortMove.executeWithOptions({ ...UNDO_RUN, summary: 'undo: drop replication and the target copy' }, [plan]);
        } catch (undoErr) {
          log.error('undo failed', { error: (undoErr as Error).message });
        }
        await undo.finishMove(input.movementId, cancelled || rejected ? 'cancelled' : 'failed');
      }
    });
    enter(cancelled ? 'cancelled' : rejected ? 'rejected' : 'failed', cancelled ? 'cancelled; undone' : `undone: ${(err as Error).message}`);
    throw err;
  }
}

