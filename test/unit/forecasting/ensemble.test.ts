import { describe, expect, it } from 'vitest';
import { BacktestErrors, combine, ensembleWeights, type MemberError } from '../../../src/forecasting/ensemble.js';

const errorsOf = (entries: Record<string, MemberError | undefined>) => new Map(Object.entries(entries));

describe('ensembleWeights', () => {
  const errors = errorsOf({ seasonal_naive: { mase: 1, mse: 4 }, ets: { mase: 0.5, mse: 1 }, arima: { mase: 0.8, mse: 2 }, lstm: { mase: 1.2, mse: 9 } });

  it('weighs equally while any error is unknown', () => {
    const w = ensembleWeights(errorsOf({ seasonal_naive: { mase: 1, mse: 1 }, ets: undefined }));
    expect([...w.values()]).toEqual([0.5, 0.5]);
  });

  it('drops members worse than the seasonal naive by more than 5%', () => {
    const w = ensembleWeights(errors, { scheme: 'inverse_mase' });
    expect(w.get('lstm')).toBe(0);
    expect(w.get('ets')! / w.get('arima')!).toBeCloseTo(0.8 / 0.5, 12);
    expect(w.get('seasonal_naive')! / w.get('ets')!).toBeCloseTo(0.5, 12);
    expect([...w.values()].reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
    expect(ensembleWeights(errorsOf({ seasonal_naive: { mase: 1, mse: 1 }, ets: { mase: 1.04, mse: 1 } }), { scheme: 'inverse_mase' }).get('ets')).toBeGreaterThan(0);
  });

  it('weighs by inverse MSE, by a softmax, or picks the best', () => {
    const mse = ensembleWeights(errors, { scheme: 'inverse_mse' });
    expect(mse.get('ets')! / mse.get('arima')!).toBeCloseTo(2, 12);
    const soft = ensembleWeights(errors, { scheme: 'softmax' });
    expect(soft.get('ets')! / soft.get('arima')!).toBeCloseTo(Math.exp(6), 9);
    expect(Object.fromEntries(ensembleWeights(errors, { scheme: 'best' }))).toEqual({ seasonal_naive: 0, ets: 1, arima: 0, lstm: 0 });
  });

  it('gives everything to perfect members', () => {
    const w = ensembleWeights(errorsOf({ seasonal_naive: { mase: 0, mse: 0 }, ets: { mase: 0, mse: 0 }, arima: { mase: 0.1, mse: 0.1 } }));
    expect(Object.fromEntries(w)).toEqual({ seasonal_naive: 0.5, ets: 0.5, arima: 0 });
  });
});

describe('combine', () => {
  it('is the weighted mean step by step', () => {
    const f = new Map([
      ['a', [1, 2]],
      ['b', [3, 4]],
    ]);
    expect(combine(f, new Map([['a', 0.25], ['b', 0.75]]))).toEqual([2.5, 3.5]);
  });
});

describe('BacktestErrors', () => {
  it('averages scaled absolute and squared errors over the origins', () => {
    const e = new BacktestErrors();
    expect(e.error('ets')).toBeUndefined();
    e.add('ets', [], [], 1);
    expect(e.error('ets')).toBeUndefined();
    e.add('ets', [1, 1], [2, 3], 2);
    e.add('ets', [0, 0], [1, 1], 1);
    expect(e.error('ets')).toEqual({ mase: (0.5 + 1 + 1 + 1) / 4, mse: (1 + 4 + 1 + 1) / 4 });
  });

  it('with a half-life, an origin counts half after that many more origins', () => {
    const e = new BacktestErrors({ halfLife: 2 });
    e.add('ets', [0], [4], 1); // error 4, then two more origins
    e.add('ets', [0], [1], 1);
    e.add('ets', [0], [1], 1);
    // Weights: 0.5 for the first, 2^-1/2 for the second, 1 for the last.
    const w = [0.5, Math.SQRT1_2, 1];
    expect(e.error('ets')!.mase).toBeCloseTo((4 * w[0]! + w[1]! + w[2]!) / (w[0]! + w[1]! + w[2]!), 12);
    // A member that turns bad loses its lead faster than under equal weights.
    const [plain, recent] = [new BacktestErrors(), new BacktestErrors({ halfLife: 2 })];
    for (const errors of [plain, recent]) {
      for (let i = 0; i < 20; i++) errors.add('a', [0], [1], 1);
      for (let i = 0; i < 20; i++) errors.add('b', [0], [2], 1);
      for (let i = 0; i < 5; i++) errors.add('a', [0], [4], 1);
      for (let i = 0; i < 5; i++) errors.add('b', [0], [2], 1);
    }
    expect(plain.error('a')!.mase).toBeLessThan(plain.error('b')!.mase);
    expect(recent.error('a')!.mase).toBeGreaterThan(recent.error('b')!.mase);
  });
});
