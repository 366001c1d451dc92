import { describe, expect, it } from 'vitest';
import { seasonalNaiveFactory } from '../../../src/forecasting/naive.js';
import { cleanSeries, seasonLengths } from '../../../src/forecasting/series.js';
import type { StoredModel } from '../../../src/forecasting/store.js';
import { forecastCleanSeries, HORIZON } from '../../../src/forecasting/training.js';
import type { FittedModel } from '../../../src/forecasting/types.js';
import { seriesDomain } from '../../../src/profiling/series.js';
import { normals } from './synthetic.js';

const STEP_MS = 300_000;
const T0 = Date.UTC(2026, 0, 1);

/** Two days of five-minute values around `level`, and a model whose intervals are `halfWidth` wide. */
function forecastAround(id: string, level: number, halfWidth: number) {
  const noise = normals(5);
  const rows = Array.from({ length: 2 * 288 }, (_, t) => ({ time: T0 + t * STEP_MS, value: level + Math.sin((2 * Math.PI * t) / 288) * level * 0.5 + noise() }));
  const series = cleanSeries(rows, id);
  const ctx = { ...seasonLengths(series.stepSeconds, series.values.length), budgetMs: 100, seed: 1, params: {} };
  const naive = seasonalNaiveFactory.fit(series.values, ctx) as FittedModel;
  const model: StoredModel = {
    series: id,
    trainedAt: new Date(T0 + series.values.length * STEP_MS),
    status: 'trained',
    seriesStart: new Date(series.start),
    stepSeconds: series.stepSeconds,
    members: [{ model: 'seasonal_naive', weight: 1, json: naive.toJSON() }],
    calibration: { horizon: HORIZON, halfWidths: { '0.8': new Array<number>(HORIZON).fill(halfWidth / 2), '0.95': new Array<number>(HORIZON).fill(halfWidth) } },
    scores: {},
  };
  return forecastCleanSeries(id, model, series, new Date(T0 + series.values.length * STEP_MS));
}

describe('forecasts respect their domain', () => {
  it('a rate and its intervals are never negative', () => {
    const rows = forecastAround('table:orders:inserts', 4, 40);
    expect(rows).toHaveLength(HORIZON);
    for (const r of rows) {
      expect(Math.min(r.yhat, r.lo80, r.lo95)).toBeGreaterThanOrEqual(0);
      expect(r.lo95).toBe(0); // the band reaches below zero, cut at zero
      expect(r.hi95).toBeGreaterThan(r.yhat);
    }
  });

  it('a CPU percentage and its intervals stay within 0–100', () => {
    const rows = forecastAround('node:node-1:cpu', 90, 40);
    for (const r of rows) {
      expect(Math.max(r.yhat, r.hi80, r.hi95)).toBeLessThanOrEqual(100);
      expect(r.hi95).toBe(100);
      expect(r.lo95).toBeGreaterThanOrEqual(0);
    }
  });

  it('names the domain of every kind of series', () => {
    expect(seriesDomain('node:n1:cpu')).toEqual({ min: 0, max: 100 });
    for (const id of ['node:n1:io', 'node:n1:load', 'shard:3:load', 'table:t:reads', 'index:t.i:scans']) expect(seriesDomain(id)).toEqual({ min: 0, max: Number.POSITIVE_INFINITY });
  });
});
