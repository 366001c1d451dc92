import { describe, expect, it } from 'vitest';
import { Accuracy, coverage, mase, maseScale, smape } from '../../../src/forecasting/metrics.js';

describe('maseScale', () => {
  it('is the in-sample MAE of the one-day seasonal naive forecast', () => {
    // Season 2: |3 − 1|, |4 − 2|, |7 − 3| → mean 8/3.
    expect(maseScale([1, 2, 3, 4, 7], 2)).toBeCloseTo(8 / 3, 12);
  });

  it('falls back to the plain naive MAE, then to 1', () => {
    expect(maseScale([1, 3, 1, 3, 1, 3], 2)).toBe(2);
    expect(maseScale([1, 3], 24)).toBe(2);
    expect(maseScale([5, 5, 5, 5], 2)).toBe(1);
    expect(maseScale([0, 0, 0], 2)).toBe(1);
    expect(maseScale([7], 2)).toBe(1);
  });
});

describe('mase, smape and coverage', () => {
  it('compute the textbook values', () => {
    expect(mase([1, 2, 3], [2, 2, 5], 2)).toBeCloseTo(0.5, 12);
    expect(smape([100, 0, 0], [110, 0, 5])).toBeCloseTo((200 * 10) / 210 / 3 + 200 / 3, 10);
    expect(coverage([1, 2, 3, 4], [0, 2, 4, 0], [1, 3, 5, 3])).toBe(0.5);
    expect([mase([], [], 1), smape([], []), coverage([], [], [])]).toEqual([0, 0, 0]);
  });

  it('accumulate over many forecasts', () => {
    const a = new Accuracy();
    a.add(10, 8, 2, [{ level: 0.8, lower: 9, upper: 11 }]);
    a.add(10, 10, 2, [{ level: 0.8, lower: 11, upper: 12 }]);
    expect(a.size).toBe(2);
    expect(a.mase).toBeCloseTo(0.5, 12);
    expect(a.smape).toBeCloseTo((200 * 2) / 18 / 2, 12);
    expect(a.coverage(0.8)).toBe(0.5);
    expect(a.coverage(0.95)).toBe(0);
  });
});

describe('maseScale on an exactly periodic series', () => {
  it('takes rounding noise in the seasonal MAE for 0', () => {
    const sine = Array.from({ length: 96 }, (_, t) => 100 + 20 * Math.sin((2 * Math.PI * t) / 24));
    expect(maseScale(sine, 24)).toBeGreaterThan(1);
  });
});
