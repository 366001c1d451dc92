import { describe, expect, it } from 'vitest';
import { firstFitDecreasing, hourlyProfile } from '../../../src/simulation/simulate.js';
import { DEFAULT_GROUP_OPTIONS, normalise, shardGroups, toSimSteps } from '../../../src/simulation/trace.js';

const trace = (n: number, f: (i: number) => number) => normalise('t', Array.from({ length: n }, (_, i) => f(i)));

describe('traces to shard loads', () => {
  it('brings a 1-minute trace to 5-minute means and interpolates a 30-minute one', () => {
    expect(toSimSteps([1, 2, 3, 4, 5, 10, 10, 10, 10, 10], 60)).toEqual([3, 10]);
    expect(toSimSteps([0, 6, 12], 1800)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 12, 12, 12, 12, 12]);
  });

  it('normalises by the 99th percentile and refuses a trace without positive values', () => {
    const t = trace(1000, (i) => (i % 100) * 3);
    expect(Math.max(...t.values)).toBeGreaterThan(1);
    expect(t.values.filter((v) => v <= 1).length).toBeGreaterThanOrEqual(990);
    expect(() => normalise('zero', [0, 0, 0])).toThrow(/zero: its 99th percentile is 0/);
  });

  it('draws the same shards from the same seed and other shards from another', () => {
    const traces = [trace(600, (i) => 1 + Math.sin(i / 20)), trace(600, (i) => 2 + Math.cos(i / 7))];
    const a = shardGroups(traces, 400, { ...DEFAULT_GROUP_OPTIONS, seed: 5 });
    const b = shardGroups(traces, 400, { ...DEFAULT_GROUP_OPTIONS, seed: 5 });
    const c = shardGroups(traces, 400, { ...DEFAULT_GROUP_OPTIONS, seed: 6 });
    expect(a).toEqual(b);
    expect(c.map((s) => [s.share, s.shiftSteps, s.bytes])).not.toEqual(a.map((s) => [s.share, s.shiftSteps, s.bytes]));
  });

  it('scales, skews and shifts: shares of a group sum to 1, the largest share follows the skew, a shard lags its trace by its shift', () => {
    const t = trace(600, (i) => 1 + (i % 50));
    const opts = { ...DEFAULT_GROUP_OPTIONS, shardsPerTrace: 5, skew: 1.5, maxShiftHours: 2, seed: 3 };
    const shards = shardGroups([t], 300, opts);
    expect(shards.map((s) => s.shardId)).toEqual([1, 2, 3, 4, 5]);
    expect(shards.reduce((a, s) => a + s.share, 0)).toBeCloseTo(1, 9);
    // Rank 0 weighs 1, rank 4 weighs 5^-1.5 ≈ 0.09, each ×[0.8, 1.2]: the largest share is well above the smallest.
    const shares = shards.map((s) => s.share).sort((x, y) => x - y);
    expect(shares[4]! / shares[0]!).toBeGreaterThan((0.8 / 1.2) * 5 ** 1.5);
    const maxShift = 24;
    for (const s of shards) {
      expect(s.shiftSteps).toBeGreaterThanOrEqual(0);
      expect(s.shiftSteps).toBeLessThanOrEqual(maxShift);
      expect(s.bytes).toBeGreaterThanOrEqual(opts.minGiB * 2 ** 30);
      expect(s.bytes).toBeLessThanOrEqual(opts.maxGiB * 2 ** 30);
      for (const k of [0, 17, 299]) expect(s.load[k]).toBeCloseTo(opts.groupPeak * s.share * t.values[k + maxShift - s.shiftSteps]!, 9);
    }
  });

  it('refuses a trace too short for the simulation, naming it', () => {
    expect(() => shardGroups([trace(100, () => 1)], 200, DEFAULT_GROUP_OPTIONS)).toThrow(/^t: 0.3 days of data, the simulation needs 0.9 days/);
  });
});

describe('static provisioning and daily profiles', () => {
  it('packs peaks first-fit decreasing within the room', () => {
    const placement = firstFitDecreasing([{ shardId: 1, peak: 40 }, { shardId: 2, peak: 50 }, { shardId: 3, peak: 30 }, { shardId: 4, peak: 20 }], 70);
    expect([...placement].sort((a, b) => a[0] - b[0])).toEqual([[1, 2], [2, 1], [3, 2], [4, 1]]);
  });

  it('averages each hour of the day over the history', () => {
    const load = Array.from({ length: 2 * 288 }, (_, i) => Math.floor((i % 288) / 12) + (i >= 288 ? 2 : 0));
    const profile = hourlyProfile(load, 2 * 288);
    expect(profile).toHaveLength(24);
    expect(profile[0]).toBe(1);
    expect(profile[23]).toBe(24);
  });
});
