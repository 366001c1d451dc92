import { describe, expect, it } from 'vitest';
import { backtest } from '../../../src/forecasting/backtest.js';
import { etsFactory } from '../../../src/forecasting/ets.js';
import { fitMstl, mstlFactory, restoreMstl, type MstlModel } from '../../../src/forecasting/mstl.js';
import { cleanSeries } from '../../../src/forecasting/series.js';
import { forecastCleanSeries, trainCleanSeries } from '../../../src/forecasting/training.js';
import type { FitContext, ModelFactory } from '../../../src/forecasting/types.js';
import { T0, normals, rowsOf } from './synthetic.js';

/** Hourly load with a daily cycle on weekdays, a flatter and lower one at weekends, and noise: what a daily season alone cannot carry. */
function weeklyLoad(days: number, seed = 7): number[] {
  const noise = normals(seed);
  return Array.from({ length: days * 24 }, (_, t) => {
    const weekend = Math.floor(t / 24) % 7 >= 5;
    const daily = Math.sin((2 * Math.PI * (t % 24)) / 24 - Math.PI / 2);
    return Math.max(0, (weekend ? 30 + 8 * daily : 100 + 60 * daily) + 3 * noise());
  });
}

/** The same decomposition with the daily season alone. */
const dailyOnly: ModelFactory = { model: 'mstl_daily', fit: (y, ctx) => fitMstl(y, [Math.round(ctx.dailyPeriod)], [0.25], ctx) };

describe('MSTL member (daily and weekly seasons)', () => {
  it('beats the daily-only decomposition and daily ETS by a clear margin on daily plus weekly cycles, with calibrated intervals', async () => {
    const series = cleanSeries(rowsOf(weeklyLoad(35)), 'weekly');
    const report = await backtest(series, { budgetSeconds: 1, models: [etsFactory, dailyOnly, mstlFactory] });
    const mase = (m: string) => report.models[m]!.mase;
    expect(report.models.mstl!.description).toMatch(/MSTL periods (24\+)?168/);
    expect(mase('mstl')).toBeLessThan(0.7 * mase('mstl_daily'));
    // Daily ETS's score depends on how far its budget gets on a loaded machine: a looser margin.
    expect(mase('mstl')).toBeLessThan(0.9 * mase('ets'));
    // The ensemble leans on it.
    expect(report.ensemble.meanWeights.mstl).toBeGreaterThan(0.5);
    expect(report.ensemble.mase).toBeLessThan(1.05 * mase('mstl'));
    expect(report.ensemble.coverage80).toBeGreaterThan(0.7);
    expect(report.ensemble.coverage80).toBeLessThan(0.9);
    expect(report.ensemble.coverage95).toBeGreaterThan(0.88);
  });

  it('is not used with less than two weeks of history', async () => {
    const ctx: FitContext = { dailyPeriod: 24 };
    expect(mstlFactory.applies!(ctx)).toBe(false);
    expect(mstlFactory.applies!({ ...ctx, weeklyPeriod: 168 })).toBe(true);
    expect(() => mstlFactory.fit(weeklyLoad(13), ctx)).toThrow(/two weeks/);
    const series = cleanSeries(rowsOf(weeklyLoad(13)), 'short');
    const report = await backtest(series, { budgetSeconds: 0.5, models: [etsFactory, mstlFactory] });
    expect(Object.keys(report.models)).toEqual(['seasonal_naive', 'ets']);
    const stored = await trainCleanSeries('short', series, { asOf: new Date(T0 + 13 * 86_400_000), budgetSeconds: 0.5, models: [etsFactory, mstlFactory] });
    expect(stored.members.map((m) => m.model)).not.toContain('mstl');
  });

  it('is stored and restored, and its forecasts with intervals stay within the series domain', async () => {
    const values = weeklyLoad(28);
    const id = 'table:orders:inserts';
    const series = cleanSeries(rowsOf(values.slice(0, 27 * 24)), id);
    const stored = await trainCleanSeries(id, series, { asOf: new Date(T0 + 27 * 86_400_000), budgetSeconds: 1, models: [etsFactory, mstlFactory] });
    expect(stored.status).toBe('trained');
    const member = stored.members.find((m) => m.model === 'mstl');
    expect(member?.weight).toBeGreaterThan(0);

    const fitted = mstlFactory.fit(series.values, { dailyPeriod: 24, weeklyPeriod: 168, budgetMs: 500 }) as MstlModel;
    const restored = restoreMstl(JSON.parse(JSON.stringify(fitted.toJSON())) as Record<string, unknown>);
    expect(restored.forecast(12)).toEqual(fitted.forecast(12));
    const longer = values.slice(0, 27 * 24 + 5);
    expect(restored.update(longer).forecast(12)).toEqual(fitted.update(longer).forecast(12));
    expect(() => restoreMstl({ ...fitted.toJSON(), profiles: [[1, 2]] })).toThrow(/restoreMstl/);

    // Weekend nights are near 0: the 95% band would reach below it without the domain.
    const rows = forecastCleanSeries(id, stored, cleanSeries(rowsOf(values), id), new Date(T0 + 28 * 86_400_000));
    expect(rows[0]!.model).toMatch(/mstl/);
    for (const r of rows) {
      expect(r.lo95).toBeGreaterThanOrEqual(0);
      expect(r.lo95).toBeLessThanOrEqual(r.lo80);
      expect(r.lo80).toBeLessThanOrEqual(r.yhat);
      expect(r.yhat).toBeLessThanOrEqual(r.hi80);
      expect(r.hi80).toBeLessThanOrEqual(r.hi95);
    }
  });
});
