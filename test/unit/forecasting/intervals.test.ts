import { describe, expect, it } from 'vitest';
import { ConformalCalibrator, conformalQuantile, normalQuantile, randomWalkSigma } from '../../../src/forecasting/intervals.js';
import { normals } from './synthetic.js';

describe('conformalQuantile', () => {
  it('takes the ⌈(k + 1)·level⌉-th smallest absolute residual', () => {
    const r = Array.from({ length: 19 }, (_, i) => 19 - i);
    expect(conformalQuantile(r, 0.95)).toBe(19);
    expect(conformalQuantile(r, 0.8)).toBe(16);
    expect(conformalQuantile([3, 1, 2, 4], 0.8)).toBe(4);
  });

  it('is undefined with too few residuals for the level', () => {
    expect(conformalQuantile(Array.from({ length: 18 }, (_, i) => i), 0.95)).toBeUndefined();
    expect(conformalQuantile([1, 2, 3], 0.8)).toBeUndefined();
    expect(conformalQuantile([], 0.8)).toBeUndefined();
  });
});

describe('normalQuantile and randomWalkSigma', () => {
  it('match the textbook values', () => {
    expect(normalQuantile(0.975)).toBeCloseTo(1.959964, 5);
    expect(normalQuantile(0.9)).toBeCloseTo(1.281552, 5);
    expect(normalQuantile(0.005)).toBeCloseTo(-2.575829, 5);
    expect(randomWalkSigma([1, 3, 1])).toBe(2);
    expect(randomWalkSigma([5])).toBe(0);
  });
});

describe('ConformalCalibrator', () => {
  it('falls back to a random-walk width, z·σ·√h, before it has residuals', () => {
    const c = new ConformalCalibrator(4);
    const [i80, i95] = c.intervals([10, 10, 10, 10], 2);
    expect(i80!.upper[0]! - 10).toBeCloseTo(1.281552 * 2, 5);
    expect(i95!.upper[3]! - 10).toBeCloseTo(1.959964 * 2 * 2, 5);
    expect(i95!.lower[3]! - 10).toBeCloseTo(-1.959964 * 2 * 2, 5);
    expect(c.intervals([5], 0)[1]).toEqual({ level: 0.95, lower: [5], upper: [5] });
  });

  it('uses the residuals of each step separately, keeping the last `window`', () => {
    const c = new ConformalCalibrator(2, { window: 4 });
    for (const r of [100, -1, 2, -3, 4]) c.add(1, r);
    for (const r of [10, -20, 30, -40]) c.add(2, r);
    expect(c.count(1)).toBe(4);
    const [i80] = c.intervals([0, 0], 1);
    expect(i80!.upper).toEqual([4, 40]);
  });

  it('covers i.i.d. noise at close to the nominal level', () => {
    const z = normals(7);
    const c = new ConformalCalibrator(1);
    const hits = { 0.8: 0, 0.95: 0 };
    const trials = 4000;
    for (let t = 0; t < 100; t++) c.add(1, z());
    for (let t = 0; t < trials; t++) {
      const y = z();
      for (const iv of c.intervals([0], 0)) if (y >= iv.lower[0]! && y <= iv.upper[0]!) hits[iv.level as 0.8 | 0.95]++;
      c.add(1, y);
    }
    expect(hits[0.8] / trials).toBeGreaterThan(0.78);
    expect(hits[0.8] / trials).toBeLessThan(0.82);
    expect(hits[0.95] / trials).toBeGreaterThan(0.94);
    expect(hits[0.95] / trials).toBeLessThan(0.96);
  });
});

describe('adaptive conformal calibration', () => {
  it('recovers the nominal coverage when the residuals grow', () => {
    const z = normals(9);
    const plain = new ConformalCalibrator(1);
    const adaptive = new ConformalCalibrator(1, { adaptRate: 0.02 });
    for (let t = 0; t < 300; t++) {
      const r = z();
      plain.add(1, r);
      adaptive.add(1, r);
    }
    const hits = new Map([
      [plain, 0],
      [adaptive, 0],
    ]);
    const trials = 1000;
    for (let t = 0; t < trials; t++) {
      const y = 3 * z();
      for (const c of [plain, adaptive]) {
        const iv = c.intervals([0], 0)[0]!;
        if (y >= iv.lower[0]! && y <= iv.upper[0]!) hits.set(c, hits.get(c)! + 1);
        c.add(1, y);
      }
    }
    expect(hits.get(plain)! / trials).toBeLessThan(0.75);
    expect(Math.abs(hits.get(adaptive)! / trials - 0.8)).toBeLessThan(0.03);
  });
});
