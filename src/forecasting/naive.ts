/**
 * Naive forecasts, the baseline every model is measured against. The seasonal naive forecast of
 * step h repeats the value one season earlier: ŷ(n + h) = y(n + h − m·⌈h/m⌉). The season is a day
 * or a week; `seasonalNaiveFactory` picks the one that forecast the last week of the training
 * series better (for h ≤ m every origin forecasts y(t) by y(t − m), so that comparison is exactly a
 * rolling-origin back-test of the two). A series shorter than one season gets the plain naive
 * forecast (the last value repeated), and says so in its description.
 */
import { InvalidInputError } from '../errors.js';
import type { FitContext, FittedModel, ModelFactory } from './types.js';

/** The seasonal naive forecast of y with season m (m = 1: the plain naive forecast). */
export class SeasonalNaiveModel implements FittedModel {
  readonly model = 'seasonal_naive';
  readonly description: string;

  constructor(
    private readonly y: readonly number[],
    readonly period: number,
    /** What the season is ("daily", "weekly") or why there is none. */
    private readonly label?: string,
  ) {
    if (y.length === 0) throw new InvalidInputError('seasonal_naive: cannot forecast an empty series');
    const details = [label, period > 1 ? `period ${period}` : undefined].filter(Boolean);
    this.description = `${period > 1 ? 'seasonal naive' : 'naive'}${details.length > 0 ? ` (${details.join(', ')})` : ''}`;
  }

  forecast(horizon: number): number[] {
    const { y, period } = this;
    const n = y.length;
    return Array.from({ length: horizon }, (_, i) => y[n - period + (i % period)]!);
  }

  update(y: readonly number[]): SeasonalNaiveModel {
    return new SeasonalNaiveModel(y, y.length >= this.period ? this.period : 1, this.label);
  }

  toJSON(): Record<string, unknown> {
    return { model: this.model, version: 1, period: this.period, label: this.label, last: this.y.slice(-this.period) };
  }
}

/** Seasonal naive with season `period`, or the plain naive forecast when y is shorter than one season. */
export function seasonalNaive(y: readonly number[], period: number, label?: string): SeasonalNaiveModel {
  const m = Math.round(period);
  return m > 1 && y.length >= m ? new SeasonalNaiveModel(y, m, label) : new SeasonalNaiveModel(y, 1, m > 1 ? `fallback: shorter than one season of ${m}` : label);
}

/** Mean |y(t) − y(t − m)| over the last `window` steps, or Infinity when there are not that many lags. */
function recentSeasonalError(y: readonly number[], m: number, window: number): number {
  const n = y.length;
  if (n - window - m < 0) return Infinity;
  let sum = 0;
  for (let t = n - window; t < n; t++) sum += Math.abs(y[t]! - y[t - m]!);
  return sum / window;
}

/** The daily seasonal naive forecast, or the weekly one when the series holds two weeks and that forecast its last week better. */
export const seasonalNaiveFactory: ModelFactory = {
  model: 'seasonal_naive',
  fit(y: readonly number[], ctx: FitContext): SeasonalNaiveModel {
    const daily = Math.round(ctx.dailyPeriod);
    const weekly = ctx.weeklyPeriod === undefined ? undefined : Math.round(ctx.weeklyPeriod);
    if (weekly !== undefined && y.length >= 2 * weekly && recentSeasonalError(y, weekly, weekly) < recentSeasonalError(y, daily, weekly)) {
      return seasonalNaive(y, weekly, 'weekly');
    }
    return seasonalNaive(y, daily, daily > 1 ? 'daily' : undefined);
  },
};
