import { describe, expect, it } from 'vitest';
import { seasonalNaive, seasonalNaiveFactory } from '../../../src/forecasting/naive.js';

describe('seasonalNaive', () => {
  it('repeats the last season, cycling past one season', () => {
    const model = seasonalNaive([9, 9, 1, 2, 3], 3);
    expect(model.forecast(7)).toEqual([1, 2, 3, 1, 2, 3, 1]);
    expect(model.description).toBe('seasonal naive (period 3)');
    expect(seasonalNaive([1, 2, 3], 3, 'daily').description).toBe('seasonal naive (daily, period 3)');
  });

  it('falls back to the plain naive forecast on a series shorter than one season', () => {
    const model = seasonalNaive([4, 5], 3);
    expect(model.forecast(3)).toEqual([5, 5, 5]);
    expect(model.period).toBe(1);
    expect(model.description).toBe('naive (fallback: shorter than one season of 3)');
  });

  it('updates to a longer series without changing the season, and once it holds one season uses it', () => {
    expect(seasonalNaive([1, 2, 3], 3).update([1, 2, 3, 4, 5, 6]).forecast(3)).toEqual([4, 5, 6]);
    expect(seasonalNaive([1, 2], 3).update([1, 2, 3, 4]).forecast(2)).toEqual([4, 4]);
  });

  it('refuses an empty series', () => {
    expect(() => seasonalNaive([], 3)).toThrow(/empty/);
  });
});

describe('seasonalNaiveFactory', () => {
  const daily = 4;
  const weekly = 7 * daily;
  /** Weekly pattern: every day is different, each week the same. */
  const weeklyPattern = Array.from({ length: 3 * weekly }, (_, t) => (Math.floor(t / daily) % 7) * 10 + (t % daily));
  /** Daily pattern with a weekly drift: yesterday is closer than last week. */
  const dailyPattern = Array.from({ length: 3 * weekly }, (_, t) => t / daily + (t % daily));

  it('picks the weekly season when it forecast the last week better', async () => {
    const model = await seasonalNaiveFactory.fit(weeklyPattern, { dailyPeriod: daily, weeklyPeriod: weekly });
    expect(model.description).toContain('weekly');
    expect(model.forecast(daily)).toEqual(weeklyPattern.slice(-weekly, -weekly + daily));
  });

  it('picks the daily season otherwise, or without a weekly period', async () => {
    expect((await seasonalNaiveFactory.fit(dailyPattern, { dailyPeriod: daily, weeklyPeriod: weekly })).description).toContain('daily');
    expect((await seasonalNaiveFactory.fit(weeklyPattern, { dailyPeriod: daily })).description).toContain('daily');
  });

  it('has finite forecasts on hostile series', async () => {
    for (const y of [[0], [0, 0, 0], [-5, 3], [1e308, -1e308, 1e308]]) {
      const model = await seasonalNaiveFactory.fit(y, { dailyPeriod: 24 });
      expect(model.forecast(30).every(Number.isFinite)).toBe(true);
    }
  });
});
