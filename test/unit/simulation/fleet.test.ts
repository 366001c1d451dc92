import { describe, expect, it } from 'vitest';
import { SimFleet, type SimNode } from '../../../src/simulation/fleet.js';

const COPY = { copyLoadFactor: 0.3, bulkCopyShare: 0.03 };
const HOUR = 3600;

function node(id: number, state: SimNode['state'] = 'active'): SimNode {
  return { id, name: `node-${id}`, capacity: 100, state, readyAt: 0 };
}

/** Shard loads that do not change with time. */
const constant = (loads: Record<number, number>) => (shardId: number) => loads[shardId] ?? 0;

describe('simulated fleet accounting', () => {
  it('counts one overload minute per node per minute over capacity, none at capacity', () => {
    const fleet = new SimFleet([node(1), node(2)], [{ shardId: 1, bytes: 1, nodeId: 1 }, { shardId: 2, bytes: 1, nodeId: 2 }], HOUR, COPY);
    fleet.account(0, 600, constant({ 1: 120, 2: 100 }));
    expect(fleet.metrics.overloadMinutes).toBe(10);
    fleet.account(600, 900, (s, at) => (s === 2 && at >= 720 ? 101 : 50));
    expect(fleet.metrics.overloadMinutes).toBe(13);
  });

  it('counts node-hours of active and draining nodes, not standby; an emptied draining node goes to standby', () => {
    const fleet = new SimFleet([node(1), node(2), node(3, 'standby')], [{ shardId: 1, bytes: 1, nodeId: 1 }], HOUR, COPY);
    fleet.drain(2);
    fleet.account(0, HOUR, constant({ 1: 10 }));
    expect(fleet.metrics.nodeHours).toBeCloseTo(1, 6);
    expect(fleet.node(2).state).toBe('standby');
    fleet.activate(3, HOUR, 120);
    fleet.account(HOUR, 2 * HOUR, constant({ 1: 10 }));
    expect(fleet.metrics.nodeHours).toBeCloseTo(3, 6);
  });

  it('loads source and target with the copy while a movement runs, and cuts over at its end', () => {
    const fleet = new SimFleet([node(1), node(2)], [{ shardId: 1, bytes: 5e9, nodeId: 1 }], HOUR, COPY);
    expect(fleet.startMove(1, 2, 60, 300, false)).toBe(true);
    const during = fleet.nodeLoads(120, constant({ 1: 50 }));
    expect(during.get(1)).toBeCloseTo(50 + 0.3 * 50 + 3, 9);
    expect(during.get(2)).toBeCloseTo(0.3 * 50 + 3, 9);
    fleet.account(0, 600, constant({ 1: 50 }));
    expect(fleet.placement.get(1)).toBe(2);
    expect(fleet.running).toHaveLength(0);
    expect(fleet.metrics).toMatchObject({ moves: 1, bytesMoved: 5e9, movesStartedInPeak: 0 });
  });

  it('refuses a second movement of a shard in flight', () => {
    const fleet = new SimFleet([node(1), node(2), node(3)], [{ shardId: 1, bytes: 1, nodeId: 1 }], HOUR, COPY);
    expect(fleet.startMove(1, 2, 0, 600, true)).toBe(true);
    expect(fleet.startMove(1, 3, 60, 600, false)).toBe(false);
    expect(fleet.metrics).toMatchObject({ moves: 1, movesStartedInPeak: 1 });
  });

  it('counts a move back to a node the shard left within the hysteresis window as an oscillation, not after it', () => {
    const fleet = new SimFleet([node(1), node(2)], [{ shardId: 1, bytes: 1, nodeId: 1 }, { shardId: 2, bytes: 1, nodeId: 1 }], HOUR, COPY);
    fleet.startMove(1, 2, 0, 60, false);
    fleet.startMove(2, 2, 0, 60, false);
    fleet.account(0, 120, constant({}));
    fleet.startMove(1, 1, 120 + HOUR - 61, 60, false);
    expect(fleet.metrics.oscillations).toBe(1);
    fleet.startMove(2, 1, 60 + HOUR, 60, false);
    expect(fleet.metrics.oscillations).toBe(1);
    expect(fleet.leftRecently(2, 1, 59 + HOUR)).toBe(true);
  });
});
