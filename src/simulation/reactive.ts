import type { SimFleet } from './fleet.js';

/**
 * The reactive baseline, as threshold rebalancers do it (CockroachDB's and TiKV's hot-range
 * schedulers): it acts on observed load only.
 * - Relief: a node whose shards' observed load stayed above `high` × capacity for `sustainMinutes`
 *   sheds one shard per round (no new one while one of its movements runs): the coldest shard whose
 *   departure brings it under `target`, else the hottest, to the least loaded node that stays under
 *   `target` with it. When no node can take one, a standby node is activated (one at a time).
 * - Scale-in: a node below `low` for `lowSustainMinutes`, when every one of its shards fits on the
 *   others under `target` and more than `minActiveNodes` stay, is drained (one node at a time).
 * The same stability rules as the planner: a shard moved within the hysteresis window stays, and
 * never goes back to a node it left; at most `maxConcurrentMovesPerNode` movements per node.
 * Observed load counts a shard in flight on both its source and its target, so that two rounds do not
 * pile shards onto one node.
 */
export interface ReactiveSettings {
  high: number;
  sustainMinutes: number;
  low: number;
  lowSustainMinutes: number;
  target: number;
  maxConcurrentMovesPerNode: number;
  minActiveNodes: number;
}

/**
 * Tuned on the tuning fleet (bench/rebalance.ts) for the fewest overload minutes over high 0.7–0.85,
 * sustain 5 or 10 minutes and low sustain 30 or 60 minutes: 28 overload minutes, against 115 for
 * 0.8 / 10 min, at about the same node-hours.
 */
export const DEFAULT_REACTIVE: ReactiveSettings = {
  high: 0.75,
  sustainMinutes: 5,
  low: 0.3,
  lowSustainMinutes: 60,
  target: 0.7,
  maxConcurrentMovesPerNode: 2,
  minActiveNodes: 1,
};

export type ReactiveAction = { kind: 'move'; shardId: number; to: number } | { kind: 'activate'; nodeId: number } | { kind: 'drain'; nodeId: number };

/** Since when each node has been above `high` and below `low`: the thresholds' memory between rounds. */
export interface ReactiveMemory {
  highSince: Map<number, number>;
  lowSince: Map<number, number>;
}

export function reactiveMemory(): ReactiveMemory {
  return { highSince: new Map(), lowSince: new Map() };
}

/** One round at `now` (seconds) on the observed shard loads; the actions to take now. */
export function reactiveRound(now: number, fleet: SimFleet, observed: ReadonlyMap<number, number>, s: ReactiveSettings, memory: ReactiveMemory): ReactiveAction[] {
  const actions: ReactiveAction[] = [];
  const committed = new Map(fleet.nodes.map((n) => [n.id, 0]));
  for (const [shardId, nodeId] of fleet.placement) committed.set(nodeId, committed.get(nodeId)! + (observed.get(shardId) ?? 0));
  for (const m of fleet.running) committed.set(m.to, committed.get(m.to)! + (observed.get(m.shardId) ?? 0));
  const util = (id: number) => committed.get(id)! / fleet.node(id).capacity;
  const ready = fleet.nodes.filter((n) => n.state === 'active' && n.readyAt <= now);
  const moves = new Map(fleet.nodes.map((n) => [n.id, fleet.movesOn(n.id)]));

  for (const n of fleet.nodes) {
    const u = util(n.id);
    if (n.state !== 'active' || !(u > s.high)) memory.highSince.delete(n.id);
    else if (!memory.highSince.has(n.id)) memory.highSince.set(n.id, now);
    if (n.state !== 'active' || !(u < s.low)) memory.lowSince.delete(n.id);
    else if (!memory.lowSince.has(n.id)) memory.lowSince.set(n.id, now);
  }

  const movable = (shardId: number) => !fleet.moving(shardId) && !fleet.finished.some((m) => m.shardId === shardId && now - m.end < fleet.hysteresisSeconds);
  /** The least loaded node that takes the shard under target, or undefined. */
  const targetFor = (shardId: number, from: number, exclude: ReadonlySet<number> = new Set()): number | undefined => {
    const load = observed.get(shardId) ?? 0;
    const fits = ready
      .filter((n) => n.id !== from && !exclude.has(n.id) && (moves.get(n.id) ?? 0) < s.maxConcurrentMovesPerNode && !fleet.leftRecently(shardId, n.id, now))
      .filter((n) => (committed.get(n.id)! + load) / n.capacity <= s.target)
      .sort((a, b) => util(a.id) - util(b.id) || a.id - b.id);
    return fits[0]?.id;
  };
  const move = (shardId: number, from: number, to: number) => {
    const load = observed.get(shardId) ?? 0;
    committed.set(to, committed.get(to)! + load);
    moves.set(from, moves.get(from)! + 1);
    moves.set(to, moves.get(to)! + 1);
    actions.push({ kind: 'move', shardId, to });
  };

  // Relief, hottest node first.
  const hot = [...memory.highSince].filter(([, since]) => now - since >= s.sustainMinutes * 60).map(([id]) => id).sort((a, b) => util(b) - util(a) || a - b);
  let activating = fleet.nodes.some((n) => n.state === 'active' && n.readyAt > now);
  for (const nodeId of hot) {
    if (fleet.running.some((m) => m.from === nodeId) || moves.get(nodeId)! >= s.maxConcurrentMovesPerNode) continue;
    const cap = fleet.node(nodeId).capacity;
    const shards = fleet.shardsOn(nodeId).filter(movable);
    const enough = shards.filter((id) => (committed.get(nodeId)! - (observed.get(id) ?? 0)) / cap <= s.target).sort((a, b) => (observed.get(a) ?? 0) - (observed.get(b) ?? 0) || a - b);
    const hottest = [...shards].sort((a, b) => (observed.get(b) ?? 0) - (observed.get(a) ?? 0) || a - b);
    const pick = [...enough, ...hottest].map((id) => [id, targetFor(id, nodeId)] as const).find(([, to]) => to !== undefined);
    if (pick) {
      move(pick[0], nodeId, pick[1]!);
      continue;
    }
    const standby = fleet.nodes.filter((n) => n.state === 'standby').sort((a, b) => b.capacity - a.capacity || a.id - b.id)[0];
    if (standby && !activating && shards.length > 0) {
      actions.push({ kind: 'activate', nodeId: standby.id });
      activating = true;
    }
  }

  // Draining nodes: move what is left.
  for (const n of fleet.nodes.filter((x) => x.state === 'draining')) {
    for (const shardId of fleet.shardsOn(n.id)) {
      if (fleet.moving(shardId) || moves.get(n.id)! >= s.maxConcurrentMovesPerNode) continue;
      const to = targetFor(shardId, n.id);
      if (to !== undefined) move(shardId, n.id, to);
    }
  }

  // Scale-in: one node at a time, only when nothing is hot.
  if (hot.length > 0 || fleet.nodes.some((n) => n.state === 'draining') || activating) return actions;
  const active = fleet.nodes.filter((n) => n.state === 'active');
  if (active.length <= s.minActiveNodes) return actions;
  const cold = [...memory.lowSince].filter(([, since]) => now - since >= s.lowSustainMinutes * 60).map(([id]) => id).sort((a, b) => util(a) - util(b) || a - b);
  for (const nodeId of cold) {
    const shards = fleet.shardsOn(nodeId);
    if (shards.some((id) => fleet.moving(id))) continue;
    // Every shard must fit elsewhere under target, placed greedily; only the first ones move now.
    const trial = new Map(committed);
    const others = active.filter((n) => n.id !== nodeId);
    const fits = shards.every((id) => {
      const load = observed.get(id) ?? 0;
      const to = others.filter((n) => !fleet.leftRecently(id, n.id, now) && (trial.get(n.id)! + load) / n.capacity <= s.target).sort((a, b) => trial.get(a.id)! / a.capacity - trial.get(b.id)! / b.capacity || a.id - b.id)[0];
      if (!to) return false;
      trial.set(to.id, trial.get(to.id)! + load);
      return true;
    });
    if (!fits) continue;
    actions.push({ kind: 'drain', nodeId });
    for (const shardId of shards) {
      if (moves.get(nodeId)! >= s.maxConcurrentMovesPerNode) break;
      const to = targetFor(shardId, nodeId);
      if (to !== undefined) move(shardId, nodeId, to);
    }
    break;
  }
  return actions;
}
