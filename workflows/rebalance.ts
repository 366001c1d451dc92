import {
  CancellationScope,
  condition,
  executeChild,
  isCancellation,
  log,
  ParentClosePolicy,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  sleep,
  startChild,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { createPlanningActivities } from '../activities/planning.js';
import type { LoadSplits } from '../src/profiling/tenants.js';
import { SA_OPERATION } from '../src/search-attributes.js';
import { describeMovement, isolateWorkflowId, moveWorkflowId, type MovementOperationInput } from './describe.js';
import {
  pauseSignal,
  rebalanceProgressQuery,
  resumeSignal,
  type MoveShardResult,
  type RebalanceAction,
  type RebalanceActionOutcome,
  type RebalanceInput,
  type RebalancePlanned,
  type RebalanceProgress,
  type RebalanceResult,
  type ScaleOutResult,
} from './messages.js';
import { failureMessage, startMovementChild } from './movement-child.js';
import { validInput } from './validate.js';
import { rebalanceInputSchema } from '../src/inputs.js';

type Activities = ReturnType<typeof createPlanningActivities>;

const { makeRebalancePlan } = proxyActivities<Activities>({ startToCloseTimeout: '5 minutes', retry: { initialInterval: '2 seconds', maximumAttempts: 5 } });
const { markPlanAction, setNodeLifecycle, shardsOnNode, splitPointsByLoad } = proxyActivities<Activities>({
  startToCloseTimeout: '1 minute',
  retry: { initialInterval: '1 second', maximumInterval: '30 seconds', maximumAttempts: 10 },
});

/**
 * The rebalancer (DESIGN §5): plans now (activity makeRebalancePlan: forecasts, placements and
 * capacities from the catalog; the plan stored with every action's reason), then carries the plan
 * out. Each action waits for the actions it comes after, then for its planned start (in a predicted
 * trough when its deadline allows), then while the rebalancer is paused; then it starts the movement
 * workflow (move, split, merge: the movements' own approval policy applies, and they outlive this
 * run) or makes the node step (activate, drain, retire), and records the outcome in the catalog. An
 * action whose predecessor failed is skipped. A dry run stores the plan and starts nothing.
 *
 * Signals: pause (no further action starts; running movements go on), resume. Query: progress.
 */
export async function rebalance(input: RebalanceInput): Promise<RebalanceResult> {
  validInput(rebalanceInputSchema, input);
  let paused = false;
  let signalled = false;
  const progress: RebalanceProgress = { planId: null, paused, actions: [] };
  setHandler(rebalanceProgressQuery, () => ({ ...progress, paused }));
  setHandler(pauseSignal, () => void ((paused = true), (signalled = true)));
  setHandler(resumeSignal, () => void ((paused = false), (signalled = true)));
  const planned = await makeRebalancePlan(input);
  const planId = planned.planId ?? null;
  // The catalog's switch as it was when planning, unless an operator signalled since.
  if (!signalled) paused = planned.paused;
  progress.planId = planId;
  progress.actions = planned.actions.map((a) => ({ id: a.id, kind: a.kind, state: 'planned', startAt: a.startAt }));
  const notes = [...planned.notes];
  if (input.dryRun || planId === null) {
    return { planId, dryRun: input.dryRun, ...(planned.skipped ? { skipped: planned.skipped } : {}), actions: planned.actions.map((a) => ({ id: a.id, state: 'dry-run', outcome: a.reason })), notes };
  }
  setCurrentDetails(`plan ${planId}: ${planned.actions.length} action(s)`);

  const byId = new Map(planned.actions.map((a) => [a.id, a]));
  // A receding horizon: what starts after this round is planned again by the next one.
  const roundEnd = input.startWithinSeconds !== undefined ? Date.now() + input.startWithinSeconds * 1000 : Infinity;
  /** The planned name of a node a provisioner made → its real name. */
  const provisioned = new Map<string, string>();
  const results = new Map<string, Promise<RebalanceActionOutcome>>();
  const state = (id: string, s: RebalanceProgress['actions'][number]['state'], outcome?: string) => {
    const entry = progress.actions.find((x) => x.id === id);
    if (entry) Object.assign(entry, { state: s, ...(outcome !== undefined ? { outcome } : {}) });
  };
  const finish = async (a: RebalanceAction, r: RebalanceActionOutcome): Promise<RebalanceActionOutcome> => {
    state(a.id, r.state, r.outcome);
    await CancellationScope.nonCancellable(() => markPlanAction({ planId, actionId: a.id, state: r.state, outcome: r.outcome, ...(r.workflowId ? { workflowId: r.workflowId } : {}) }));
    return r;
  };
  const carryOut = (a: RebalanceAction): Promise<RebalanceActionOutcome> => {
    let pending = results.get(a.id);
    if (!pending) {
      pending = (async () => {
        try {
          for (const dep of a.after) {
            const before = byId.get(dep);
            const r = before ? await carryOut(before) : { id: dep, state: 'failed' as const, outcome: 'not in the plan' };
            if (r.state === 'started') return await finish(a, { id: a.id, state: 'skipped', outcome: `${dep} was still running when this round ended: the next round plans it again` });
            if (r.state !== 'done') return await finish(a, { id: a.id, state: 'skipped', outcome: `${dep} did not complete (${r.state})` });
          }
          if (Date.parse(a.startAt) > roundEnd) {
            return await finish(a, { id: a.id, state: 'skipped', outcome: `starts at ${a.startAt}, after this round: the next round plans it again` });
          }
          const wait = Date.parse(a.startAt) - Date.now();
          if (wait > 0) {
            state(a.id, 'waiting');
            await markPlanAction({ planId, actionId: a.id, state: 'waiting' });
            await sleep(wait);
          }
          await condition(() => !paused);
          const late = Date.now() - Date.parse(a.startBy);
          const r = await act(input, a, planId, provisioned, roundEnd);
          if (late > 1000 && r.state === 'done') r.outcome += ` (started ${Math.round(late / 1000)} s after its start-by)`;
          return await finish(a, r);
        } catch (err) {
          if (isCancellation(err)) return await finish(a, { id: a.id, state: 'cancelled', outcome: 'the rebalance run was cancelled before it started' });
          return await finish(a, { id: a.id, state: 'failed', outcome: failureMessage(err) });
        }
      })();
      results.set(a.id, pending);
    }
    return pending;
  };
  // Hot tenants split off into shards of their own (their shards are not in this round's actions);
  // the isolations outlive the round, like its movements. Histories of earlier code had none.
  const isolating = planned.isolations ?? [];
  const isolated =
    isolating.length > 0 && patched('rebalance-isolates-tenants')
      ? (async () => {
          await condition(() => !paused);
          for (const t of isolating) notes.push(await startIsolation(input, planId, t));
        })()
      : Promise.resolve();
  const outcomes = await Promise.all(planned.actions.map((a) => carryOut(a)));
  await isolated;
  if (input.drainNode) {
    const left = await shardsOnNode(input.drainNode);
    notes.push(left === 0 ? `${input.drainNode} is drained: it holds no shard and takes none` : `${input.drainNode} still holds ${left} shard(s): see the plan's notes`);
  }
  return { planId, dryRun: false, actions: outcomes, notes };
}

/** Starts the isolation of a hot tenant as a child workflow that outlives the round; says what happened. */
async function startIsolation(input: RebalanceInput, planId: number, t: NonNullable<RebalancePlanned['isolations']>[number]): Promise<string> {
  const workflowId = isolateWorkflowId(t.table, t.key, input.workflowIdPrefix);
  const what = `isolating key ${t.key} of ${t.table} (${Math.round(t.share * 100)}% of shard ${t.shardId}'s accesses on ${t.node})`;
  try {
    await startChild('isolateKey', {
      workflowId,
      args: [{ table: t.table, key: t.key, movement: input.movement, ...(input.workflowIdPrefix ? { workflowIdPrefix: input.workflowIdPrefix } : {}) }],
      parentClosePolicy: ParentClosePolicy.ABANDON,
      staticSummary: `isolate key ${t.key} of ${t.table} (plan ${planId})`,
    });
    return `${what}: started ${workflowId}`;
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) return `${what}: ${workflowId} is already running`;
    return `${what}: could not start: ${failureMessage(err)}`;
  }
}

/** One action: a movement workflow started and awaited, or a node step (a scale-out through the provisioner: a child workflow). */
async function act(input: RebalanceInput, a: RebalanceAction, planId: number, provisioned: Map<string, string>, roundEnd: number): Promise<RebalanceActionOutcome> {
  if (a.kind === 'activate' && a.provision) {
    const { timeoutSeconds, ...want } = a.provision;
    const workflowId = `${input.workflowIdPrefix ?? ''}scale-out-plan-${planId}-${a.id}`;
    const r: ScaleOutResult = await executeChild('scaleOut', {
      workflowId,
      args: [{ request: { requestId: workflowId, ...want, reason: a.reason }, provisionTimeoutSeconds: timeoutSeconds }],
      // A cancelled rebalance cancels the scale-out, whose compensation still runs.
      parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL,
      typedSearchAttributes: [{ key: SA_OPERATION, value: 'scale-out' }],
      staticSummary: `scale-out through the provisioner (plan ${planId}, ${a.id})`,
    });
    provisioned.set(a.node!, r.node);
    return { id: a.id, state: 'done', outcome: r.outcome, workflowId };
  }
  if (a.kind === 'activate' || a.kind === 'drain' || a.kind === 'retire') {
    const to = a.kind === 'activate' ? 'active' : a.kind === 'drain' ? 'draining' : 'retired';
    return { id: a.id, state: 'done', outcome: await setNodeLifecycle({ node: a.node!, to }) };
  }
  const real = (name: string | undefined) => (name === undefined ? undefined : (provisioned.get(name) ?? name));
  const pieces = a.pieceNodes?.map((n) => real(n)!);
  if (a.kind === 'split' && pieces && pieces.length > 2) return splitInPieces(input, a, planId, pieces);
  const op = movementOf({ ...a, node: real(a.node), ...(pieces ? { pieceNodes: pieces } : {}) });
  if (typeof op === 'string') return { id: a.id, state: 'skipped', outcome: op };
  // A split in two of a hash shard is made where its halves carry even load by the routers' profile (its heavy
  // keys), not at the middle of its hash range; without a profile, or when it cannot be read, at the middle.
  // A range shard (it has no middle) at its rows' median, moved to a logical boundary (movement/range-splits.ts).
  // (Histories of earlier code split at the middle.)
  let at = '';
  if (op.operation === 'split' && op.splitAt === undefined && patched('rebalance-split-at-even-load')) {
    const cut = await evenLoadCut(op.shardId, 2);
    if (cut) {
      op.splitAt = cut.points[0]!;
      at =
        cut.basis === 'rows'
          ? `; split at key ${cut.points[0]}${boundaryText(cut.boundaries?.[0])}, where its halves hold ${percents(cut.shares).join(' and ')} of its rows`
          : `; split at hash ${cut.points[0]}, where its halves carry ${percents(cut.shares).join(' and ')} of its accesses (its heavy keys take ${percent(cut.heavyShare)})`;
    }
  }
  const run = await runMovement(input, a, planId, op, roundEnd);
  return { id: a.id, state: run.state, outcome: `${run.outcome}${at}`, ...(run.workflowId ? { workflowId: run.workflowId } : {}) };
}

/**
 * A split into more pieces than two (a power of two, in key order): successive halvings, as the
 * movement engine splits in two. The shard is halved onto the nodes of the first piece of each half,
 * then each half (a shard of its own) is halved again, the halves side by side, until every piece is
 * on its node. A halving that fails stops its side; the outcome says how far each side got.
 */
async function splitInPieces(input: RebalanceInput, a: RebalanceAction, planId: number, pieces: string[]): Promise<RebalanceActionOutcome> {
  const shardId = a.shardIds[0];
  if (shardId === undefined) return { id: a.id, state: 'skipped', outcome: 'no shard in the action' };
  if ((pieces.length & (pieces.length - 1)) !== 0) return { id: a.id, state: 'skipped', outcome: `a split into ${pieces.length} pieces: only powers of two are halvings` };
  const done: string[] = [];
  const failed: string[] = [];
  const workflowIds: string[] = [];
  // Cut where each piece carries even load by the routers' profile (as a split in two is), read once for
  // the whole shard: the halves made on the way have no profile of their own yet. (Histories of earlier
  // code cut every range at its middle.)
  const cut = patched('rebalance-split-pieces-at-even-load') ? await evenLoadCut(shardId, pieces.length) : undefined;
  const points = cut?.points;
  const evenly = !cut
    ? ''
    : cut.basis === 'rows'
      ? `; cut at keys ${cut.points.map((p, i) => `${p}${boundaryText(cut.boundaries?.[i])}`).join(', ')}, where its pieces hold ${percents(cut.shares).join(', ')} of its rows`
      : `; cut where its pieces carry ${percents(cut.shares).join(', ')} of its accesses (its heavy keys take ${percent(cut.heavyShare)})`;
  const halve = async (id: number, nodes: string[], first = 0): Promise<void> => {
    if (nodes.length < 2) return;
    const half = nodes.length / 2;
    const op: MovementOperationInput = { operation: 'split', shardId: id, splitTargets: [nodes[0]!, nodes[half]!], ...(points ? { splitAt: points[first + half - 1]! } : {}) };
    const run = await runMovement(input, a, planId, op);
    if (run.workflowId) workflowIds.push(run.workflowId);
    if (run.state !== 'done' || !run.shards || run.shards.length !== 2) {
      failed.push(run.outcome);
      return;
    }
    done.push(run.outcome);
    await Promise.all([halve(run.shards[0]!, nodes.slice(0, half), first), halve(run.shards[1]!, nodes.slice(half), first + half)]);
  };
  await halve(shardId, pieces);
  const summary = `split shard ${shardId} into ${pieces.length} by halvings${evenly}`;
  return {
    id: a.id,
    state: failed.length === 0 ? 'done' : 'failed',
    outcome: failed.length === 0 ? `${summary}: ${done.join('; ')}` : `${summary}: ${done.length} halving(s) done, then ${failed.join('; ')}`,
    ...(workflowIds.length > 0 ? { workflowId: workflowIds.join(',') } : {}),
  };
}

/**
 * Where a shard's split into `pieces` leaves even load in each piece, by the routers' profile; undefined
 * (the middles) without a profile, or when it cannot be read: a split is not held up by its profile.
 */
async function evenLoadCut(shardId: number, pieces: number): Promise<LoadSplits | undefined> {
  try {
    return (await splitPointsByLoad({ shardId, pieces })) ?? undefined;
  } catch (err) {
    if (isCancellation(err)) throw err;
    log.warn('split points by load not read: cutting at the middles', { shardId, pieces, error: failureMessage(err) });
    return undefined;
  }
}

const percent = (share: number): string => `${Math.round(share * 100)}%`;
const percents = (shares: readonly number[]): string[] => shares.map(percent);
const boundaryText = (b: 'day' | 'hour' | 'key' | undefined): string => (b === 'day' ? ' (the start of its day)' : b === 'hour' ? ' (the start of its hour)' : '');

interface MovementRun {
  state: RebalanceActionOutcome['state'];
  outcome: string;
  workflowId?: string;
  /** The shards in place of the old ones, once done. */
  shards?: number[];
}

/**
 * One movement workflow started as a child (it outlives this run) and awaited — in a replanning
 * round, only until the round ends (`roundEnd`): a movement still running then (waiting for an
 * operator's approval, or a long copy) is left running, the action recorded as started, and the
 * round ends, so that the next rounds are not held up by it. They plan the shard where it is going
 * and leave it alone (src/planning/inputs.ts), and record the action's outcome once the movement
 * has finished (settleStartedActions in src/planning/store.ts).
 */
async function runMovement(input: RebalanceInput, a: RebalanceAction, planId: number, op: MovementOperationInput, roundEnd = Infinity): Promise<MovementRun> {
  const workflowId = moveWorkflowId(op.shardId, input.workflowIdPrefix);
  let child;
  try {
    ({ child } = await startMovementChild(op, input.movement, input.workflowIdPrefix, `plan ${planId}, ${a.id}`));
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) {
      return { state: 'skipped', outcome: `shard ${op.shardId} is already being moved, split or merged (workflow ${workflowId})`, workflowId };
    }
    throw err;
  }
  // Histories of earlier code awaited every movement to its end.
  if (Number.isFinite(roundEnd) && patched('replan-round-ends-with-running-movements')) {
    await markPlanAction({ planId, actionId: a.id, state: 'started', workflowId });
    const result = child.result();
    result.catch(() => undefined);
    const scope = new CancellationScope();
    const ended = scope.run(() => sleep(Math.max(0, roundEnd - Date.now()))).then(
      () => true,
      () => false,
    );
    const over = await Promise.race([result.then(() => false, () => false), ended]);
    scope.cancel();
    if (over) {
      return { state: 'started', outcome: `${describeMovement(op)}: still running when this round ended (workflow ${workflowId}); its outcome is recorded once it finishes`, workflowId };
    }
  }
  try {
    const r = (await child.result()) as MoveShardResult;
    return { state: 'done', outcome: `${describeMovement(op)}: done, writes blocked ${r.cutoverBlockedMs} ms`, workflowId, shards: r.shards };
  } catch (err) {
    if (isCancellation(err)) throw err;
    return { state: 'failed', outcome: `${describeMovement(op)}: ${failureMessage(err)}`, workflowId };
  }
}

/** The movement request of a move, split or merge action; a string says why it cannot be one. */
function movementOf(a: RebalanceAction): MovementOperationInput | string {
  const shardId = a.shardIds[0];
  if (shardId === undefined) return 'no shard in the action';
  if (a.kind === 'move') return { operation: 'move', shardId, targetNode: a.node! };
  if (a.kind === 'split') {
    const pieces = a.pieceNodes ?? [];
    if (pieces.length !== 2) return `a split into ${pieces.length} pieces is successive halvings`;
    return { operation: 'split', shardId, splitTargets: [pieces[0]!, pieces[1]!] };
  }
  const into = a.intoShardIds?.[0];
  if (into === undefined) return 'a merge without the shard it merges into';
  return { operation: 'merge', shardId: Math.min(shardId, into), mergeWith: Math.max(shardId, into), targetNode: a.node };
}

