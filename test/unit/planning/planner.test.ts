import { describe, expect, it } from 'vitest';
import { InvalidInputError } from '../../../src/errors.js';
import { moveSeconds, planRebalance, type MoveAction, type Plan, type PlanAction, type PlanInput } from '../../../src/planning/index.js';
import { AS_OF, H, STEP_MS, TEN_MB, flat, node, offset, planInput, ramp, steps, type ShardSpec } from './cases.js';

const TARGET = 0.7;

function moves(plan: Plan): MoveAction[] {
  return plan.actions.filter((a): a is MoveAction => a.kind === 'move');
}

function outlook(plan: Plan, nodeId: number) {
  return plan.nodes.find((n) => n.nodeId === nodeId)!;
}

/** Milliseconds after asOf at which a node is first over target without the plan. */
function firstOverload(plan: Plan, nodeId: number): number {
  const i = outlook(plan, nodeId).without.findIndex((u) => u > TARGET);
  expect(i, `node ${nodeId} is never over target without the plan`).toBeGreaterThanOrEqual(0);
  return i * STEP_MS;
}

function expectUnderTargetEverywhere(plan: Plan): void {
  for (const n of plan.nodes) {
    n.with.forEach((u, i) => expect(u, `${n.name} at step ${i + 1}`).toBeLessThanOrEqual(TARGET + 1e-9));
    // A move's copy may take its source over target, never over the 90% ceiling.
    n.with.forEach((u, i) => expect(u + n.copy[i]!, `${n.name} with copy load at step ${i + 1}`).toBeLessThanOrEqual(0.9 + 1e-9));
  }
  expect(plan.feasible).toBe(true);
}

/** No action that moves data starts in a step where one of its nodes' placed shards are over target with the plan. */
function expectNoStartInPeak(plan: Plan): void {
  for (const a of plan.actions) {
    if (a.kind !== 'move' && a.kind !== 'merge' && a.kind !== 'split') continue;
    expect(a.startsInPeak).toBe(false);
    const step = Math.floor(offset(a.startAt) / STEP_MS);
    const involved = a.kind === 'split' ? [a.fromNodeId, ...a.pieceNodeIds] : [a.fromNodeId, a.toNodeId];
    for (const id of involved) expect(outlook(plan, id).with[step], `node ${id} at the start of ${a.id}`).toBeLessThanOrEqual(TARGET + 1e-9);
  }
}

describe('planRebalance', () => {
  it('moves a rising shard off its node so that the move finishes before the overload', () => {
    // node-1: shard 1 steady at 300 but 40 GB (it cannot move in time), shard 2 rising 100 → 540: over 700 from step 9.
    const input = planInput(
      [node(1), node(2)],
      [
        { id: 1, node: 1, load: flat(300), bytes: 40e9 },
        { id: 2, node: 1, load: ramp(100, 40), bytes: 310e6 },
        { id: 3, node: 2, load: flat(100) },
      ],
    );
    const plan = planRebalance(input);
    const overloadAt = firstOverload(plan, 1);
    expect(overloadAt).toBe(8 * STEP_MS);
    const [move, ...others] = moves(plan);
    expect(others).toEqual([]);
    expect(move).toMatchObject({ shardIds: [2], fromNodeId: 1, toNodeId: 2, bytes: 310e6, late: false, startsInPeak: false });
    const duration = moveSeconds(TEN_MB, 310e6) * 1000;
    expect(move!.etaSeconds).toBe(41);
    expect(offset(move!.startBy)).toBeLessThanOrEqual(overloadAt - duration);
    expect(offset(move!.startAt)).toBeLessThanOrEqual(offset(move!.startBy));
    expect(offset(move!.finishAt)).toBeLessThanOrEqual(overloadAt);
    expect(move!.reason).toMatch(/^node-1 predicted at 84% of capacity at 14:55, 95% bound; moving shard 2 to node-2, 310 MB, ETA 41 s, start by 14:39/);
    expect(move!.benefit.overloadPointSteps).toBeGreaterThan(0);
    expect(move!.benefit.peakBefore).toBeCloseTo(0.84);
    expect(move!.benefit.peakAfter).toBeLessThanOrEqual(TARGET);
    expectUnderTargetEverywhere(plan);
    expectNoStartInPeak(plan);
  });

  it('splits a shard that alone would overload any node, before it does', () => {
    const input = planInput(
      [node(1), node(2), node(3)],
      [{ id: 1, node: 1, load: [500, 500, 500, 500, 500, 500, 900, 900, 900, 900, 900, 900], bytes: 1e9 }],
    );
    const plan = planRebalance(input);
    const splits = plan.actions.filter((a) => a.kind === 'split');
    expect(splits).toHaveLength(1);
    const split = splits[0]!;
    if (split.kind !== 'split') throw new Error('not a split');
    expect(split.shardIds).toEqual([1]);
    expect(split.pieceNodeIds.length).toBeGreaterThanOrEqual(2);
    expect(900 / split.pieceNodeIds.length).toBeLessThanOrEqual(TARGET * 1000);
    expect(new Set(split.pieceNodeIds).size).toBeGreaterThanOrEqual(2);
    expect(offset(split.finishAt)).toBeLessThanOrEqual(firstOverload(plan, 1));
    expect(plan.tables).toEqual([{ table: 't1', peakLoad: 900, shards: 1, neededShards: 2 }]);
    expectUnderTargetEverywhere(plan);
  });

  it('splits a shard already far over its node now, though the copy takes its source past capacity while it runs', () => {
    // 945 load units on node-1 from now on: 135% of the 700 a node takes at target. The split's copy
    // adds 30% of the shard's load to its source (already at 95%): nothing else can relieve it.
    const input = planInput([node(1), node(2), node(3)], [{ id: 1, node: 1, load: flat(945), bytes: 1e9 }]);
    const plan = planRebalance(input);
    const split = plan.actions.find((a) => a.kind === 'split');
    expect(split, plan.notes.join('\n')).toBeDefined();
    if (split?.kind !== 'split') throw new Error('not a split');
    expect(split.startsInPeak).toBe(true);
    expect(split.reactive).toBe(false); // the forecast saw it: not a reactive move
    expect(offset(split.startAt)).toBe(0);
    expect(945 / split.pieceNodeIds.length).toBeLessThanOrEqual(TARGET * 1000);
    // Once done, every node is under target; while it runs, only the source goes past it.
    for (const n of plan.nodes) n.with.slice(1).forEach((u, i) => expect(u, `${n.name} at step ${i + 2}`).toBeLessThanOrEqual(TARGET + 1e-9));
    for (const n of plan.nodes.filter((x) => x.nodeId !== 1)) n.with.forEach((u, i) => expect(u + n.copy[i]!, `${n.name} with copy load at step ${i + 1}`).toBeLessThanOrEqual(TARGET + 1e-9));
  });

  it('does not split a shard that fits on a node: it moves it', () => {
    const input = planInput([node(1), node(2)], [{ id: 1, node: 1, load: ramp(400, 25) }, { id: 2, node: 1, load: flat(200), bytes: 50e9 }]);
    const plan = planRebalance(input);
    expect(plan.actions.map((a) => a.kind)).toEqual(['move']);
  });

  it('scales out: activates a standby node before the peak and moves shards onto it after activation', () => {
    const shards: ShardSpec[] = [];
    // Six shards rising 150 → 260 on two nodes: 1560 at 14:55, more than the 1400 two nodes take at 70%.
    for (let i = 0; i < 6; i++) shards.push({ id: i + 1, node: 1 + (i % 2), load: ramp(150, 10) });
    const input = planInput([node(1), node(2), node(3, { state: 'standby' })], shards);
    const plan = planRebalance(input);
    expect(plan.requiredNodes).toBe(3);
    const activate = plan.actions.find((a) => a.kind === 'activate');
    expect(activate).toMatchObject({ kind: 'activate', nodeId: 3 });
    const onto = moves(plan).filter((m) => m.toNodeId === 3);
    expect(onto.length).toBeGreaterThan(0);
    for (const m of onto) {
      expect(m.after).toContain(activate!.id);
      expect(offset(m.startAt)).toBeGreaterThanOrEqual(offset(activate!.finishAt));
    }
    expect(outlook(plan, 3).state).toBe('active');
    expectUnderTargetEverywhere(plan);
  });

  it('activates a standby node for a peak in the second hour activationLeadSeconds before it is needed, when asked to', () => {
    // Two hours: six shards flat at 150, then from 15:00 rising by 10 a step; the two active nodes are
    // short (over 1400 at 70%) from step 20 (15:40), each node over target from then on too.
    const rise = Array.from({ length: 24 }, (_, i) => (i < 12 ? 150 : 150 + 10 * (i - 11)));
    const shards: ShardSpec[] = Array.from({ length: 6 }, (_, i) => ({ id: i + 1, node: 1 + (i % 2), load: rise }));
    const nodes = [node(1), node(2), node(3, { state: 'standby' })];
    const plan = planRebalance(planInput(nodes, shards, { settings: { horizonSteps: 24, activationLeadSeconds: 1800 } }));
    const activate = plan.actions.find((a) => a.kind === 'activate')!;
    expect(activate).toMatchObject({ kind: 'activate', nodeId: 3 });
    // 30 minutes of lead plus 2 minutes of activation before 15:40.
    expect(offset(activate.startAt)).toBe(20 * STEP_MS - (1800 + 120) * 1000);
    expect(offset(activate.finishAt)).toBe(20 * STEP_MS - 1800 * 1000);
    const onto = moves(plan).filter((m) => m.toNodeId === 3);
    expect(onto.length).toBeGreaterThan(0);
    for (const m of onto) expect(offset(m.startAt)).toBeGreaterThanOrEqual(offset(activate.finishAt));
    expectUnderTargetEverywhere(plan);
    expectNoStartInPeak(plan);

    // By default (a lead of two hours, the forecast's reach), the node is activated at once.
    const eager = planRebalance(planInput(nodes, shards, { settings: { horizonSteps: 24 } }));
    expect(offset(eager.actions.find((a) => a.kind === 'activate')!.startAt)).toBe(0);
  });

  it('scales in on the next hour of the forecast (scaleIn.lookaheadSteps) when the other nodes take the second hour too', () => {
    // node-3 at 15% for an hour, then 35%: low over the look-ahead, not over the whole horizon; its
    // shard fits on the others under target at every step of both hours.
    const later = Array.from({ length: 24 }, (_, i) => (i < 12 ? 150 : 350));
    const shards: ShardSpec[] = [
      { id: 1, node: 1, load: new Array<number>(24).fill(150) },
      { id: 2, node: 2, load: new Array<number>(24).fill(150) },
      { id: 3, node: 3, load: later },
    ];
    const low = { nodeId: 3, values: [0.2, 0.18, 0.17, 0.2, 0.19, 0.17] };
    const input = (lookaheadSteps: number) => planInput([node(1), node(2), node(3)], shards, { utilisationHistory: [low], settings: { horizonSteps: 24, scaleIn: { lookaheadSteps } } });
    const plan = planRebalance(input(12));
    expect(plan.actions.find((a) => a.kind === 'drain')).toMatchObject({ nodeId: 3 });
    expect(plan.actions.find((a) => a.kind === 'drain')!.reason).toMatch(/next 14:00–15:00 \(node-\d+'s peak 15%\)/);
    expectUnderTargetEverywhere(plan);
    // Asked to be low for both hours, it is kept.
    expect(planRebalance(input(24)).actions.find((a) => a.kind === 'drain')).toBeUndefined();
  });

  it('consolidates (scaleIn.consolidateFill): drains a node that is not low itself when the others carry the whole fleet under target', () => {
    // Three nodes at 40%, none low; 1200 units would fit on two at 60%, under 90% of their room at 70% (1260).
    const even = new Array<number>(H).fill(200);
    const shards: ShardSpec[] = Array.from({ length: 6 }, (_, i) => ({ id: i + 1, node: 1 + (i % 3), load: even }));
    const steady = [1, 2, 3].map((nodeId) => ({ nodeId, values: [0.4, 0.4, 0.4, 0.4, 0.4, 0.4] }));
    const input = (consolidateFill: number, history = steady) => planInput([node(1), node(2), node(3)], shards, { utilisationHistory: history, settings: { scaleIn: { consolidateFill } } });
    const plan = planRebalance(input(0.9));
    const drain = plan.actions.find((a) => a.kind === 'drain')!;
    expect(drain).toBeDefined();
    expect(drain.reason).toMatch(/the fleet's load predicted under 90% of what the nodes other than node-\d carry at 70%/);
    expect(plan.actions.filter((a) => a.kind === 'retire')).toHaveLength(1);
    expectUnderTargetEverywhere(plan);
    // Not without consolidation (no node is low), not at a fill the load does not fit (2000 × 70% × 80% = 1120 < 1200),
    // and not when the fleet was busier in one of the last rounds.
    expect(planRebalance(input(0)).actions.find((a) => a.kind === 'drain')).toBeUndefined();
    expect(planRebalance(input(0.8)).actions.find((a) => a.kind === 'drain')).toBeUndefined();
    const busier = steady.map((h) => (h.nodeId === 1 ? { ...h, values: [0.4, 0.4, 0.65, 0.4, 0.4, 0.4] } : h));
    expect(planRebalance(input(0.9, busier)).actions.find((a) => a.kind === 'drain')).toBeUndefined();
  });

  it('does not activate a standby node for an overload no new node could relieve in time', () => {
    // Over target in the first step only: gone before any activated node could take a shard.
    const input = planInput([node(1), node(2, { state: 'standby' })], [{ id: 1, node: 1, load: [750, ...flat(500).slice(1)] }]);
    const plan = planRebalance(input);
    expect(plan.actions).toEqual([]);
    expect(plan.feasible).toBe(false);
    expect(plan.notes.join('\n')).toMatch(/node-1 stays over target from 14:00/);
  });

  it('does not activate standby nodes when no move to them would pass the benefit rule', () => {
    // node-1 at 72% in the last step only: 2 point-steps of overload, 0.2 per GiB for either 10 GiB
    // shard, under minBenefitPerGiB; node-4 has no room for either; the fleet as a whole has room.
    const bytes = 10 * 2 ** 30;
    const input = planInput(
      [node(1), node(2, { state: 'standby' }), node(3, { state: 'standby' }), node(4)],
      [
        { id: 1, node: 1, load: flat(400), bytes },
        { id: 2, node: 1, load: [...flat(300).slice(1), 320], bytes },
        { id: 3, node: 4, load: flat(600), bytes },
      ],
    );
    const plan = planRebalance(input);
    expect(plan.actions).toEqual([]);
    expect(plan.notes.join('\n')).toMatch(/node-1 stays over target from 14:55/);
  });

  it('scales in: drains a node predicted low for a sustained period, merges its cold range into a neighbour, then retires it', () => {
    const shards: ShardSpec[] = [
      { id: 1, node: 1, load: flat(150) },
      { id: 2, node: 2, load: flat(150) },
      { id: 3, node: 3, load: flat(150) },
      { id: 4, node: 1, load: flat(20), group: 'orders', rangeIndex: 0 },
      { id: 5, node: 3, load: flat(20), group: 'orders', rangeIndex: 1 },
    ];
    const low = { nodeId: 3, values: [0.2, 0.18, 0.17, 0.2, 0.19, 0.17] };
    const plan = planRebalance(planInput([node(1), node(2), node(3)], shards, { utilisationHistory: [low] }));
    expect(plan.requiredNodes).toBe(1);
    const drain = plan.actions.find((a) => a.kind === 'drain');
    expect(drain).toMatchObject({ nodeId: 3 });
    const merge = plan.actions.find((a) => a.kind === 'merge');
    expect(merge).toMatchObject({ shardIds: [5], intoShardIds: [4], fromNodeId: 3, toNodeId: 1 });
    const off = moves(plan).filter((m) => m.fromNodeId === 3);
    expect(off.map((m) => m.shardIds)).toEqual([[3]]);
    const retire = plan.actions.find((a) => a.kind === 'retire');
    expect(retire).toMatchObject({ nodeId: 3 });
    expect(retire!.after.sort()).toEqual([merge!.id, off[0]!.id].sort());
    expect(offset(retire!.startAt)).toBeGreaterThanOrEqual(Math.max(offset(merge!.finishAt), offset(off[0]!.finishAt)));
    expect(outlook(plan, 3).state).toBe('retired');
    // Empty from the first step after its movements end (the step they end in carries them on both sides).
    const emptyFrom = Math.ceil(offset(retire!.startAt) / STEP_MS);
    expect(emptyFrom).toBeLessThan(H);
    expect(outlook(plan, 3).with.slice(emptyFrom).every((u) => Math.abs(u) < 1e-9)).toBe(true);
    expectUnderTargetEverywhere(plan);

    // Low for too short a time: kept.
    const brief = planRebalance(planInput([node(1), node(2), node(3)], shards, { utilisationHistory: [{ nodeId: 3, values: [0.5, 0.5, 0.5, 0.2, 0.2, 0.2] }] }));
    expect(brief.actions).toEqual([]);
  });

  it('starts a drain\'s moves at once, not in a later trough: the horizon\'s end moves on with every round, so a trough there would be put off for ever', () => {
    // node-3 low; the nodes that can take its shard are busiest now and quietest at the horizon's end.
    const falling = Array.from({ length: H }, (_, i) => 450 - 20 * i);
    const shards: ShardSpec[] = [
      { id: 1, node: 1, load: falling },
      { id: 2, node: 2, load: falling },
      { id: 3, node: 3, load: flat(150) },
    ];
    const low = { nodeId: 3, values: [0.15, 0.15, 0.15, 0.15, 0.15, 0.15] };
    const plan = planRebalance(planInput([node(1), node(2), node(3)], shards, { utilisationHistory: [low] }));
    expect(plan.actions.find((a) => a.kind === 'drain')).toMatchObject({ nodeId: 3 });
    const off = moves(plan).filter((m) => m.fromNodeId === 3);
    expect(off).toHaveLength(1);
    expect(offset(off[0]!.startAt)).toBe(0);
    expectUnderTargetEverywhere(plan);
  });

  it('does not scale in onto nodes that take the drained load only at the horizon\'s end (a move timed to end there would be put off in every round)', () => {
    // node-3 low (25%); node-1 and node-2 fall from 55% to 33%: the shard fits on them only late in the horizon
    // (the fleet's peak, 1,350, needs two nodes at 70%, so scale-in is considered).
    const falling = Array.from({ length: H }, (_, i) => 550 - 20 * i);
    const shards: ShardSpec[] = [
      { id: 1, node: 1, load: falling },
      { id: 2, node: 2, load: falling },
      { id: 3, node: 3, load: flat(250) },
    ];
    const low = { nodeId: 3, values: [0.25, 0.25, 0.25, 0.25, 0.25, 0.25] };
    const plan = planRebalance(planInput([node(1), node(2), node(3)], shards, { utilisationHistory: [low], settings: { scaleIn: { consolidateFill: 0 } } }));
    expect(plan.actions.filter((a) => a.kind === 'drain' || a.kind === 'move')).toEqual([]);
    expect(plan.notes.join('\n')).toMatch(/node-3 has been predicted low for 6 rounds, but its shards do not fit elsewhere under target: not drained/);
  });

  it('scales in beside a node that relief cannot bring under target, and never adds to its overload', () => {
    // node-1 at 75%: both its shards moved in within the hysteresis window, so relief may not move
    // them. node-2 and node-3 are low (15%): node-3's shard goes to node-2, node-1 stays as it was.
    const justMoved = new Date(Date.parse(AS_OF) - 10 * 60_000).toISOString();
    const shards: ShardSpec[] = [
      { id: 1, node: 1, load: flat(400) },
      { id: 2, node: 1, load: flat(350) },
      { id: 3, node: 2, load: flat(150), bytes: 200e6 },
      { id: 4, node: 3, load: flat(150) },
    ];
    const recentMoves = [1, 2].map((shardId) => ({ shardId, fromNodeId: 3, toNodeId: 1, finishedAt: justMoved }));
    const low = [2, 3].map((nodeId) => ({ nodeId, values: [0.15, 0.15, 0.15, 0.15, 0.15, 0.15] }));
    const plan = planRebalance(planInput([node(1), node(2), node(3)], shards, { recentMoves, utilisationHistory: low }));
    expect(plan.notes.join('\n')).toMatch(/node-1 stays over target/);
    expect(plan.actions.filter((a) => a.kind === 'drain').map((a) => a.kind === 'drain' && a.nodeId)).toEqual([3]);
    expect(moves(plan).map((m) => [m.shardIds, m.toNodeId])).toEqual([[[4], 2]]);
    expect(outlook(plan, 1).with).toEqual(outlook(plan, 1).without);
    expect(Math.max(...outlook(plan, 2).with)).toBeCloseTo(0.3);
  });

  it('does not scale in on a shard without a trustworthy forecast: neither drains its node nor fills that node with a drained one', () => {
    const shards = (untrusted: number | null): ShardSpec[] => [
      { id: 1, node: 1, load: flat(150), trustworthy: untrusted !== 1 },
      { id: 2, node: 2, load: flat(150), trustworthy: untrusted !== 2 },
      { id: 3, node: 3, load: flat(150), trustworthy: untrusted !== 3 },
    ];
    const low = [1, 2, 3].map((nodeId) => ({ nodeId, values: [0.15, 0.15, 0.15, 0.15, 0.15, 0.15] }));
    const drained = (untrusted: number | null) => {
      const plan = planRebalance(planInput([node(1), node(2), node(3)], shards(untrusted), { utilisationHistory: low }));
      return plan.actions.flatMap((a) => (a.kind === 'drain' ? [a.nodeId] : []));
    };
    // Every forecast trustworthy: a low node is drained (the one first by bytes, then id).
    expect(drained(null)).toEqual([1]);
    // node-1's shard planned on its observed load: node-1 is neither drained nor a target; node-2 goes to node-3.
    expect(drained(1)).toEqual([2]);
    const plan = planRebalance(planInput([node(1), node(2), node(3)], shards(1), { utilisationHistory: low }));
    expect(moves(plan).map((m) => m.toNodeId)).toEqual([3]);
  });

  it('packs a drained node\'s shards tightly when spread out by cost they do not all fit', () => {
    // node-3 (68%, low at scaleIn.lowUtilisation 69%) holds 300, 200 and 180; node-1 has room for 400,
    // node-2 for 300. Largest first onto the emptiest node leaves 100 and 100: 180 fits nowhere.
    // Largest first onto the fullest node that takes it: 300 → node-2, 200 and 180 → node-1.
    const shards: ShardSpec[] = [
      { id: 1, node: 1, load: flat(300) },
      { id: 2, node: 2, load: flat(400) },
      { id: 3, node: 3, load: flat(300) },
      { id: 4, node: 3, load: flat(200) },
      { id: 5, node: 3, load: flat(180) },
    ];
    const history = [{ nodeId: 3, values: [0.68, 0.68, 0.68, 0.68, 0.68, 0.68] }];
    const plan = planRebalance(planInput([node(1), node(2), node(3)], shards, { utilisationHistory: history, settings: { scaleIn: { lowUtilisation: 0.69 } } }));
    expect(plan.actions.flatMap((a) => (a.kind === 'drain' || a.kind === 'retire' ? [[a.kind, a.nodeId]] : []))).toEqual([['drain', 3], ['retire', 3]]);
    expect(moves(plan).map((m) => [m.shardIds[0], m.toNodeId]).sort()).toEqual([[3, 2], [4, 1], [5, 1]]);
    expectUnderTargetEverywhere(plan);
  });

  it('keeps room on a node for the observed peak of its shard without a trustworthy forecast, and scales in around it with that room', () => {
    const shards = (peak: number): ShardSpec[] => [
      { id: 1, node: 1, load: flat(150), trustworthy: false, observed: 150, observedPeak: peak },
      { id: 2, node: 2, load: flat(150) },
      { id: 3, node: 3, load: flat(150) },
    ];
    const low = [1, 2, 3].map((nodeId) => ({ nodeId, values: [0.15, 0.15, 0.15, 0.15, 0.15, 0.15] }));
    const plan = (peak: number) => planRebalance(planInput([node(1), node(2), node(3)], shards(peak), { utilisationHistory: low }));
    // Peak 300: node-1 is planned at 15% with 15% kept free, so not low; the fleet (450, and 150 kept)
    // fits on two nodes, so it is consolidated all the same, and node-1 goes first (fewest bytes, then
    // id): shard 1 goes where its 300 fits.
    const p300 = plan(300);
    expect(p300.notes).toContain('shard:1:load: no trustworthy model; planned on its observed load 150, with room kept for its peak of the last day, 300, reactively');
    expect(outlook(p300, 1).without.every((u) => Math.abs(u - 0.15) < 1e-9)).toBe(true);
    expect(p300.actions.flatMap((a) => (a.kind === 'drain' ? [a.nodeId] : []))).toEqual([1]);
    expect(moves(p300)).toHaveLength(1);
    expect(moves(p300)[0]).toMatchObject({ shardIds: [1], fromNodeId: 1 });
    expectUnderTargetEverywhere(p300);
    // Peak 600: it fits on no other node at its peak (600 + 150 > 700), so node-1 stays; node-2's shard
    // goes to node-3, never onto node-1, which has room only for the recent 150.
    // (node-1 was tried first and given up: node-2's drain is planned on the fleet as it was restored, and retires it.)
    const p600 = plan(600);
    expect(p600.actions.flatMap((a) => (a.kind === 'drain' || a.kind === 'retire' ? [[a.kind, a.nodeId]] : []))).toEqual([['drain', 2], ['retire', 2]]);
    expect(outlook(p600, 2).state).toBe('retired');
    expect(moves(p600).map((m) => [m.shardIds, m.toNodeId])).toEqual([[[2], 3]]);
    expectUnderTargetEverywhere(p600);
    // Relief does not fill the room either: node-2, rising over target, sheds its 300 to node-3 (300),
    // not to node-1, which would take it at 150 + 300 but not with its shard's 450 peak. Without the
    // peak it goes to node-1, the emptier.
    const relief = (peak?: number) =>
      planRebalance(planInput([node(1), node(2), node(3)], [
        { id: 1, node: 1, load: flat(150), trustworthy: false, observed: 150, ...(peak ? { observedPeak: peak } : {}) },
        { id: 2, node: 2, load: flat(300) },
        { id: 3, node: 2, load: ramp(200, 40) },
        { id: 4, node: 3, load: flat(300) },
      ]));
    expect(moves(relief(450)).map((m) => m.toNodeId)).toEqual([3]);
    expect(moves(relief()).map((m) => m.toNodeId)).toEqual([1]);
    // Nor does it act on the peak: a node whose observed load is under target is not relieved.
    const quiet = planRebalance(planInput([node(1), node(2)], [
      { id: 1, node: 1, load: flat(150), trustworthy: false, observed: 150, observedPeak: 650 },
      { id: 2, node: 1, load: flat(300) },
    ]));
    expect(moves(quiet)).toEqual([]);
  });

  it('does not ping-pong a shard over repeated planning rounds (hysteresis)', () => {
    const round1 = planInput(
      [node(1), node(2)],
      [
        { id: 1, node: 1, load: flat(400), bytes: 100e6 },
        { id: 2, node: 1, load: ramp(200, 25), bytes: 100e6 },
        { id: 3, node: 2, load: flat(200), bytes: 2e9 },
      ],
    );
    const plan1 = planRebalance(round1);
    const [first] = moves(plan1);
    expect(first).toMatchObject({ shardIds: [1], fromNodeId: 1, toNodeId: 2 });

    // An hour later the load has turned: node-2 is the busy one, and moving shard 1 back is the cheapest relief.
    const asOf2 = new Date(Date.parse(AS_OF) + 3_600_000).toISOString();
    const round2 = (hysteresisSeconds?: number): PlanInput =>
      planInput(
        [node(1), node(2)],
        [
          { id: 1, node: 2, load: flat(400), bytes: 100e6 },
          { id: 2, node: 1, load: flat(250), bytes: 100e6 },
          { id: 3, node: 2, load: ramp(200, 20), bytes: 2e9 },
        ],
        {
          asOf: asOf2,
          recentMoves: [{ shardId: 1, fromNodeId: 1, toNodeId: 2, finishedAt: first!.finishAt }],
          settings: hysteresisSeconds === undefined ? {} : { hysteresisSeconds },
        },
      );
    const without = moves(planRebalance(round2(0)));
    expect(without.map((m) => [m.shardIds, m.toNodeId])).toEqual([[[1], 1]]);
    const plan2 = planRebalance(round2());
    const back = moves(plan2).filter((m) => m.shardIds.includes(1));
    expect(back).toEqual([]);
    expect(moves(plan2).map((m) => [m.shardIds, m.toNodeId])).toEqual([[[3], 1]]);
    expectUnderTargetEverywhere(plan2);
  });

  it('falls back to observed load, reactively, when no model is trustworthy, and says so', () => {
    // The (untrusted) forecasts say 50; the shards are observed at 500 and 300 now.
    const input = planInput(
      [node(1), node(2)],
      [
        { id: 1, node: 1, load: flat(50), trustworthy: false, observed: 500 },
        { id: 2, node: 1, load: flat(50), trustworthy: false, observed: 300 },
        { id: 3, node: 2, load: flat(50), trustworthy: false, observed: 100 },
      ],
    );
    const plan = planRebalance(input);
    expect(plan.fallbackSeries).toEqual(['shard:1:load', 'shard:2:load', 'shard:3:load']);
    expect(plan.notes.filter((n) => /no trustworthy model; planned on its observed load/.test(n))).toHaveLength(3);
    expect(outlook(plan, 1).without[0]).toBeCloseTo(0.8);
    const [move] = moves(plan);
    expect(move).toMatchObject({ fromNodeId: 1, toNodeId: 2, startsInPeak: true, reactive: true });
    expect(move!.startAt).toBe(AS_OF);
    expect(move!.reason).toMatch(/observed load for .*no trustworthy forecast: reactive/);
    const settled = Math.ceil(offset(move!.finishAt) / STEP_MS);
    for (const n of plan.nodes) expect(Math.max(...n.with.slice(settled))).toBeLessThanOrEqual(TARGET);

    // The same shards with trusted forecasts of 50: nothing to do.
    const trusted = planRebalance({ ...input, shardForecasts: input.shardForecasts.map((f) => ({ ...f, trustworthy: true })) });
    expect(trusted.actions).toEqual([]);
    expect(trusted.fallbackSeries).toEqual([]);
  });

  it('co-locates shards with opposite daily peaks in preference to shards with the same peak', () => {
    const noon = Array.from({ length: 24 }, (_, h) => 100 + 80 * Math.cos(((h - 12) * Math.PI) / 12));
    const midnight = noon.map((_, h) => noon[(h + 12) % 24]!);
    // node-1 crosses 70% at 14:30; shard 9 (40 GB) cannot move in time, shard 1 can.
    const shards: ShardSpec[] = [
      { id: 1, node: 1, load: ramp(300, 20) },
      { id: 9, node: 1, load: flat(300), bytes: 40e9 },
      { id: 2, node: 2, load: flat(150) },
      { id: 3, node: 3, load: flat(150) },
    ];
    const place = (p2: number[], p3: number[]) =>
      moves(planRebalance(planInput([node(1), node(2), node(3)], shards, { dailyProfiles: [{ shardId: 1, values: noon }, { shardId: 2, values: p2 }, { shardId: 3, values: p3 }] })));
    expect(place(noon, midnight).map((m) => [m.shardIds, m.toNodeId])).toEqual([[[1], 3]]);
    expect(place(midnight, noon).map((m) => [m.shardIds, m.toNodeId])).toEqual([[[1], 2]]);
  });

  it('places a region-bound shard in its region when the load allows', () => {
    const nodes = [node(1, { region: 'us' }), node(2, { region: 'us' }), node(3, { region: 'eu' })];
    const shardsWith = (euLoad: number): ShardSpec[] => [
      { id: 1, node: 1, load: ramp(300, 20) },
      { id: 9, node: 1, load: flat(300), bytes: 40e9 },
      { id: 2, node: 2, load: flat(100) },
      { id: 3, node: 3, load: flat(euLoad) },
    ];
    const regionShares = [{ shardId: 1, shares: { eu: 0.9, us: 0.1 } }];
    const roomy = moves(planRebalance(planInput(nodes, shardsWith(100), { regionShares })));
    expect(roomy.map((m) => [m.shardIds, m.toNodeId])).toEqual([[[1], 3]]);
    // node-3 has no room for shard 1's 520 at peak: it goes to the other region rather than overload node-3.
    const full = planRebalance(planInput(nodes, shardsWith(300), { regionShares }));
    expect(moves(full).map((m) => [m.shardIds, m.toNodeId])).toEqual([[[1], 2]]);
    expectUnderTargetEverywhere(full);
  });

  it('starts no move inside a predicted peak: it waits for the target to leave its peak', () => {
    // node-2 sits at 68% until 14:25 (the copy's own load would take it over 70%), then drops to 15%.
    const input = planInput(
      [node(1), node(2)],
      [
        { id: 1, node: 1, load: flat(300), bytes: 40e9 },
        { id: 2, node: 1, load: ramp(100, 40), bytes: 310e6 },
        { id: 3, node: 2, load: [680, 680, 680, 680, 680, 150, 150, 150, 150, 150, 150, 150] },
      ],
    );
    const plan = planRebalance(input);
    const [move] = moves(plan);
    expect(move).toMatchObject({ shardIds: [2], toNodeId: 2 });
    expect(offset(move!.startAt)).toBeGreaterThanOrEqual(5 * STEP_MS);
    expect(offset(move!.finishAt)).toBeLessThanOrEqual(firstOverload(plan, 1));
    expect(move!.reason).toMatch(/planned at 14:\d\d, the trough/);
    expectNoStartInPeak(plan);
    expectUnderTargetEverywhere(plan);
  });

  it('keeps every node under target at every step on a larger fleet, deterministically, as plain JSON', () => {
    const shards: ShardSpec[] = [];
    for (let i = 0; i < 16; i++) {
      const phase = (i * 7) % 12;
      const base = 40 + ((i * 37) % 70);
      const load = Array.from({ length: H }, (_, k) => base + 60 * Math.max(0, Math.sin(((k - phase) * Math.PI) / 12)));
      shards.push({ id: i + 1, node: 1 + (i % 3 === 0 ? 0 : i % 4), load, bytes: (1 + (i % 5)) * 200e6 });
    }
    const input = planInput([node(1), node(2), node(3), node(4)], shards, {
      regionShares: shards.map((s) => ({ shardId: s.id, shares: { eu: (s.id % 3) / 3, us: 1 - (s.id % 3) / 3 } })),
    });
    const plan = planRebalance(input);
    expect(plan.nodes.some((n) => n.without.some((u) => u > TARGET))).toBe(true);
    expect(moves(plan).length).toBeGreaterThan(0);
    expectUnderTargetEverywhere(plan);
    expectNoStartInPeak(plan);
    expect(JSON.parse(JSON.stringify(plan))).toEqual(plan);
    expect(planRebalance(input)).toEqual(plan);
    for (const a of plan.actions as PlanAction[]) {
      expect(a.reason.length).toBeGreaterThan(20);
      expect(Number.isFinite(a.benefit.overloadPointSteps)).toBe(true);
    }
  });

  it('runs no more movements at once on a node than allowed, and skips moves that gain too little per byte', () => {
    // node-1 jumps from 65% to 120% at 14:05 and needs three of its 300 MB shards gone by then; each
    // move takes 40 s, so with one movement at a time per node they queue (else all start at 14:00).
    const jump = [130, ...flat(240).slice(1)];
    const shards: ShardSpec[] = [1, 2, 3, 4, 5].map((id) => ({ id, node: 1, load: jump, bytes: 300e6 }));
    const nodes = [node(1), node(2), node(3), node(4)];
    const plan = planRebalance(planInput(nodes, shards, { settings: { maxConcurrentMovesPerNode: 1 } }));
    const ms = moves(plan);
    for (const a of ms) {
      for (const b of ms) {
        if (a === b) continue;
        const overlap = offset(a.startAt) < offset(b.finishAt) && offset(b.startAt) < offset(a.finishAt);
        const shareNode = [a.fromNodeId, a.toNodeId].some((n) => n === b.fromNodeId || n === b.toNodeId);
        expect(overlap && shareNode, `${a.id} and ${b.id} run at once on one node`).toBe(false);
      }
    }
    const parallel = moves(planRebalance(planInput(nodes, shards, { settings: { maxConcurrentMovesPerNode: 3 } })));
    expect(parallel.filter((m) => m.startAt === AS_OF).length).toBe(3);
    expect(parallel.every((m) => !m.late)).toBe(true);
    // One at a time, only two fit before 14:05, and a third would start inside node-1's peak: not planned.
    expect(ms).toHaveLength(2);
    expect(plan.feasible).toBe(false);
    expect(plan.notes.join('\n')).toMatch(/node-1 stays over target from 14:05/);
    // The same moves are refused when each must remove 10000 utilisation-point·steps per GiB.
    const strict = planRebalance(planInput(nodes, shards, { settings: { minBenefitPerGiB: 10_000 } }));
    expect(moves(strict)).toEqual([]);
    expect(strict.feasible).toBe(false);
  });

  it('never targets an unreachable, standby, draining or retired node', () => {
    const input = planInput(
      [node(1), node(2, { reachable: false }), node(3, { state: 'draining' }), node(4, { state: 'retired' }), node(5, { state: 'standby', reachable: false }), node(6)],
      [
        { id: 1, node: 1, load: ramp(300, 20) },
        { id: 9, node: 1, load: flat(300), bytes: 40e9 },
        { id: 2, node: 6, load: flat(100) },
      ],
    );
    const plan = planRebalance(input);
    expect(moves(plan).map((m) => m.toNodeId)).toEqual([6]);
    expect(plan.actions.some((a) => a.kind === 'activate')).toBe(false);
  });
});

describe('planRebalance input checks', () => {
  const good = () => planInput([node(1), node(2)], [{ id: 1, node: 1, load: flat(100) }, { id: 2, node: 2, load: flat(100) }]);

  it.each([
    ['a negative capacity', (i: PlanInput) => void (i.nodes[0]!.capacity = -5), /node "node-1" \(id 1\): capacity must be a positive number, got -5/],
    ['an unknown node in a placement', (i: PlanInput) => void (i.placements[1]!.nodeId = 9), /placement of shard 2: unknown node id 9/],
    ['a NaN forecast', (i: PlanInput) => void (i.shardForecasts[0]!.steps[3]!.hi95 = NaN), /forecast "shard:1:load": step 4 hi95 is NaN, not a finite number/],
    ['a horizon length mismatch', (i: PlanInput) => void (i.shardForecasts[1]!.steps = steps(new Array<number>(11).fill(100))), /forecast "shard:2:load" has 11 steps, the horizon is 12/],
    ['a shard without forecast', (i: PlanInput) => void i.shardForecasts.pop(), /shard 2 has a placement but no forecast/],
    ['a bad setting', (i: PlanInput) => void (i.settings = { targetUtilisation: 1.5 }), /planner settings: targetUtilisation must be in \(0, 1\], got 1.5/],
    ['a negative activation lead', (i: PlanInput) => void (i.settings = { activationLeadSeconds: -1 }), /planner settings: activationLeadSeconds must be a number of seconds ≥ 0, got -1/],
    ['a fractional scale-in look-ahead', (i: PlanInput) => void (i.settings = { scaleIn: { lookaheadSteps: 1.5 } }), /planner settings: scaleIn.lookaheadSteps must be an integer ≥ 1, got 1.5/],
  ])('rejects %s with a clear error', (_name, spoil, message) => {
    const input = good();
    spoil(input);
    expect(() => planRebalance(input)).toThrow(InvalidInputError);
    expect(() => planRebalance(input)).toThrow(message);
  });

  it('accepts the unspoiled input', () => {
    expect(planRebalance(good()).actions).toEqual([]);
  });
});
