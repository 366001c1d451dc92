import { describe, expect, it } from 'vitest';
import { SimFleet, type SimNode } from '../../../src/simulation/fleet.js';
import { DEFAULT_REACTIVE, reactiveMemory, reactiveRound } from '../../../src/simulation/reactive.js';

const COPY = { copyLoadFactor: 0.3, bulkCopyShare: 0.03 };
const S = { ...DEFAULT_REACTIVE, high: 0.8, sustainMinutes: 10, low: 0.3, lowSustainMinutes: 30, target: 0.7 };

function node(id: number, state: SimNode['state'] = 'active'): SimNode {
  return { id, name: `node-${id}`, capacity: 100, state, readyAt: 0 };
}

function fleetOf(nodes: SimNode[], placement: Record<number, number>): SimFleet {
  return new SimFleet(nodes, Object.entries(placement).map(([s, n]) => ({ shardId: Number(s), bytes: 1e9, nodeId: n })), 7200, COPY);
}

const loads = (l: Record<number, number>) => new Map(Object.entries(l).map(([k, v]) => [Number(k), v]));

describe('reactive policy', () => {
  it('waits until a node has been above the high threshold for the sustain time, then sheds the coldest shard that is enough', () => {
    const fleet = fleetOf([node(1), node(2), node(3)], { 1: 1, 2: 1, 3: 1, 4: 2, 5: 3 });
    const observed = loads({ 1: 50, 2: 20, 3: 15, 4: 40, 5: 30 });
    const memory = reactiveMemory();
    expect(reactiveRound(0, fleet, observed, S, memory)).toEqual([]);
    expect(reactiveRound(300, fleet, observed, S, memory)).toEqual([]);
    // 85% for 10 minutes: shard 3 (15) brings node 1 to 70%; node 3 (30%) is the least loaded.
    expect(reactiveRound(600, fleet, observed, S, memory)).toEqual([{ kind: 'move', shardId: 3, to: 3 }]);
  });

  it('forgets a node that dropped under the threshold', () => {
    const fleet = fleetOf([node(1), node(2)], { 1: 1, 2: 2 });
    const memory = reactiveMemory();
    reactiveRound(0, fleet, loads({ 1: 85, 2: 10 }), S, memory);
    reactiveRound(300, fleet, loads({ 1: 75, 2: 10 }), S, memory);
    expect(reactiveRound(600, fleet, loads({ 1: 85, 2: 10 }), S, memory)).toEqual([]);
  });

  it('activates a standby node when no active node takes a shard under target', () => {
    const fleet = fleetOf([node(1), node(2), node(3, 'standby')], { 1: 1, 2: 1, 3: 2 });
    const observed = loads({ 1: 45, 2: 45, 3: 65 });
    const memory = reactiveMemory();
    reactiveRound(0, fleet, observed, S, memory);
    expect(reactiveRound(600, fleet, observed, S, memory)).toEqual([{ kind: 'activate', nodeId: 3 }]);
  });

  it('leaves shards moved within the hysteresis window where they are (so none goes back to a node it left)', () => {
    const fleet = fleetOf([node(1), node(2), node(3)], { 1: 1, 2: 1, 3: 3 });
    fleet.startMove(1, 2, 0, 60, false);
    fleet.startMove(2, 2, 0, 60, false);
    fleet.account(0, 120, () => 10);
    // Node 2 at 85%: node 1 (0%) and node 3 (20%) have room, but both shards moved just now.
    const heavy = loads({ 1: 45, 2: 40, 3: 20 });
    const memory = reactiveMemory();
    reactiveRound(300, fleet, heavy, S, memory);
    expect(reactiveRound(900, fleet, heavy, S, memory)).toEqual([]);
    expect(reactiveRound(7200 + 59, fleet, heavy, S, memory)).toEqual([]);
    // Once the window has passed, the coldest shard that is enough goes to the least loaded node.
    expect(reactiveRound(7200 + 60, fleet, heavy, S, memory)).toEqual([{ kind: 'move', shardId: 2, to: 1 }]);
  });

  it('drains a node that stayed under the low threshold when its shards fit elsewhere', () => {
    const fleet = fleetOf([node(1), node(2)], { 1: 1, 2: 2 });
    const observed = loads({ 1: 40, 2: 10 });
    const memory = reactiveMemory();
    expect(reactiveRound(0, fleet, observed, S, memory)).toEqual([]);
    expect(reactiveRound(1800, fleet, observed, S, memory)).toEqual([{ kind: 'drain', nodeId: 2 }, { kind: 'move', shardId: 2, to: 1 }]);
  });

  it('does not drain when the shards would push another node over target', () => {
    const fleet = fleetOf([node(1), node(2)], { 1: 1, 2: 2 });
    const observed = loads({ 1: 65, 2: 10 });
    const memory = reactiveMemory();
    reactiveRound(0, fleet, observed, S, memory);
    expect(reactiveRound(1800, fleet, observed, S, memory)).toEqual([]);
  });
});
