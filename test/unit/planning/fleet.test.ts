import { describe, expect, it } from 'vitest';
import { Fleet, type Unit } from '../../../src/planning/fleet.js';
import { resolveSettings } from '../../../src/planning/settings.js';
import { H, node } from './cases.js';

function unit(load: number): Unit {
  return { key: 'u1', shardIds: [1], tables: ['t'], group: 'g', rangeIndex: 0, nodeId: 1, bytes: 1e9, load: new Array<number>(H).fill(load), fallback: false, peakExtra: 0, peakUnknown: false, shares: {}, frozen: false, avoid: [] };
}

describe('Fleet.tryTransfer', () => {
  it('charges the copy to the source in full and to each target by its share of the unit (a split into pieces)', () => {
    const settings = resolveSettings({ horizonSteps: H, copyLoadFactor: 0.3, bulkCopyShare: 0 });
    const fleet = new Fleet([node(1), node(2), node(3), node(4)], settings);
    const u = unit(400);
    fleet.addUnit(u);
    // A three-way split: a quarter stays on node-1, a half goes to node-2, a quarter to node-3; it runs the whole horizon.
    const trial = fleet.tryTransfer({ unit: u, from: 1, parts: [{ to: 1, fraction: 0.25 }, { to: 2, fraction: 0.5 }, { to: 3, fraction: 0.25 }], start: 0, seconds: H * settings.stepSeconds })!;
    expect(trial).toBeDefined();
    expect(trial.after.get(1)!.copy[0]).toBeCloseTo(0.3 * 400);
    expect(trial.after.get(2)!.copy[0]).toBeCloseTo(0.3 * 0.5 * 400);
    expect(trial.after.get(3)!.copy[0]).toBeCloseTo(0.3 * 0.25 * 400);
    // A whole move charges its one target in full.
    const move = fleet.tryTransfer({ unit: u, from: 1, parts: [{ to: 4, fraction: 1 }], start: 0, seconds: 600 })!;
    expect(move.after.get(4)!.copy[0]).toBeCloseTo(0.3 * 400);
  });

  it('refuses a transfer that ends past the horizon onto a target without room for it at the last step', () => {
    const settings = resolveSettings({ horizonSteps: H, copyLoadFactor: 0, bulkCopyShare: 0 });
    const fleet = new Fleet([node(1), node(2)], settings);
    const u = unit(300);
    fleet.addUnit(u);
    fleet.addUnit({ ...unit(500), key: 'u2', shardIds: [2], nodeId: 2 });
    // Ends after the horizon: the checks within it never see the unit on node-2 (500 + 300 = 80% > 70%).
    expect(fleet.tryTransfer({ unit: u, from: 1, parts: [{ to: 2, fraction: 1 }], start: (H - 1) * settings.stepSeconds, seconds: 2 * settings.stepSeconds })).toBeUndefined();
    // Room for it: allowed.
    const roomy = new Fleet([node(1), node(2)], settings);
    roomy.addUnit(u);
    roomy.addUnit({ ...unit(300), key: 'u2', shardIds: [2], nodeId: 2 });
    expect(roomy.tryTransfer({ unit: u, from: 1, parts: [{ to: 2, fraction: 1 }], start: (H - 1) * settings.stepSeconds, seconds: 2 * settings.stepSeconds })).toBeDefined();
  });
});
