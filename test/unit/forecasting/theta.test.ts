import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { InvalidInputError } from '../../../src/errors.js';
import { cleanSeries } from '../../../src/forecasting/series.js';
import { deseasonalisation, fitTheta, restoreTheta, seasonalityTest, THETA_VARIANTS, thetaFactory, thetaFilter, ThetaModel, type ThetaVariant } from '../../../src/forecasting/theta.js';
import { forecastCleanSeries, trainCleanSeries } from '../../../src/forecasting/training.js';
import { normals, rowsOf, T0 } from './synthetic.js';

const reference = JSON.parse(readFileSync(new URL('../../fixtures/forecasting/theta-reference.json', import.meta.url), 'utf8')) as {
  horizon: number;
  cases: Array<{ name: string; period: number; variant: ThetaVariant; alpha: number; theta: number; level0: number; decomposed: boolean; y: number[]; forecast: number[] }>;
};

describe('Theta member', () => {
  it.each(reference.cases.map((c) => [c.name, c]))('%s: the same forecasts as statsforecast at the same parameters', (_name, c) => {
    const season = deseasonalisation(c.y, c.period);
    expect(season.kind !== 'none').toBe(c.decomposed);
    const model = ThetaModel.over(c.y, c.variant, { alpha: c.alpha, theta: c.theta, level0: c.level0 }, season);
    const forecast = model.forecast(reference.horizon);
    // statsforecast keeps its states in float32.
    forecast.forEach((v, i) => expect(Math.abs(v - c.forecast[i]!) / Math.abs(c.forecast[i]!)).toBeLessThan(1e-5));
  });

  it('the dynamic models carry the least-squares line through the series seen so far', () => {
    const noise = normals(3);
    const y = Array.from({ length: 500 }, (_, t) => 20 + 0.05 * t + noise());
    const n = y.length;
    const meanT = (n + 1) / 2;
    const meanY = y.reduce((a, b) => a + b, 0) / n;
    let sty = 0;
    let stt = 0;
    y.forEach((v, i) => ((sty += (i + 1 - meanT) * (v - meanY)), (stt += (i + 1 - meanT) ** 2)));
    const slope = sty / stt;
    const state = thetaFilter(y, 'DOTM', { alpha: 0.3, theta: 2, level0: y[0]! });
    expect(state.b).toBeCloseTo(slope, 9);
    expect(state.a).toBeCloseTo(meanY - meanT * slope, 6);
    // The static models use the same line, over all of it.
    const fixed = thetaFilter(y, 'OTM', { alpha: 0.3, theta: 2, level0: y[0]! });
    expect(fixed.b).toBeCloseTo(slope, 9);
  });

  it('finds a daily season only where there is one, and forecasts it back', () => {
    const noise = normals(5);
    const seasonal = Array.from({ length: 24 * 14 }, (_, t) => 100 + 40 * Math.sin((2 * Math.PI * t) / 24) + 2 * noise());
    const flat = Array.from({ length: 24 * 14 }, () => 100 + 2 * noise());
    expect(seasonalityTest(seasonal, 24)).toBe(true);
    expect(seasonalityTest(flat, 24)).toBe(false);
    const model = fitTheta(seasonal, { dailyPeriod: 24, budgetMs: 500 });
    expect(model.description).toMatch(/multiplicative season 24/);
    const next = model.forecast(24);
    const truth = Array.from({ length: 24 }, (_, i) => 100 + 40 * Math.sin((2 * Math.PI * (seasonal.length + i)) / 24));
    const mae = next.reduce((a, v, i) => a + Math.abs(v - truth[i]!), 0) / 24;
    expect(mae).toBeLessThan(5);
    // With a value at or below zero the season is taken off additively instead.
    expect(deseasonalisation(seasonal.map((v, t) => (t === 5 ? 0 : v)), 24).kind).toBe('additive');
  });

  it('keeps the variant that forecasts the horizon best, and α within [0.1, 0.99]', () => {
    const noise = normals(11);
    const trending = Array.from({ length: 400 }, (_, t) => 10 + 0.5 * t + noise());
    const model = fitTheta(trending, { dailyPeriod: 1, budgetMs: 1000 });
    expect(THETA_VARIANTS).toContain(model.variant);
    expect(model.params.alpha).toBeGreaterThanOrEqual(0.1);
    expect(model.params.alpha).toBeLessThanOrEqual(0.99);
    const next = model.forecast(12);
    // The drift carries on: about 0.5 a step.
    expect(next[11]! - next[0]!).toBeGreaterThan(0.5 * 11 * 0.7);
    expect(next[11]! - next[0]!).toBeLessThan(0.5 * 11 * 1.3);
  });

  it('round-trips through JSON, updates on a longer series, refuses bad input', () => {
    const noise = normals(13);
    const y = Array.from({ length: 24 * 10 }, (_, t) => 50 + 20 * Math.sin((2 * Math.PI * t) / 24) + noise());
    const model = fitTheta(y, { dailyPeriod: 24, budgetMs: 300 });
    const restored = restoreTheta(JSON.parse(JSON.stringify(model.toJSON())) as Record<string, unknown>);
    expect(restored.forecast(12)).toEqual(model.forecast(12));
    const longer = [...y, ...Array.from({ length: 24 }, (_, t) => 80 + 20 * Math.sin((2 * Math.PI * (y.length + t)) / 24))];
    const updated = model.update(longer);
    expect(updated.params).toEqual(model.params);
    // The level moved up with the new day.
    expect(updated.forecast(24).reduce((a, b) => a + b, 0) / 24).toBeGreaterThan(model.forecast(24).reduce((a, b) => a + b, 0) / 24 + 10);
    expect(() => restoreTheta({ ...model.toJSON(), variant: 'XTM' })).toThrow(InvalidInputError);
    expect(() => restoreTheta({ ...model.toJSON(), params: { alpha: 1.5, theta: 2, level0: 0 } })).toThrow(/alpha/);
    expect(() => fitTheta([1, 2, 3], { dailyPeriod: 1 })).toThrow(/at least 4 points/);
  });

  it('is a member of a trained series, stored and forecast from the catalog form', async () => {
    const noise = normals(17);
    const values = Array.from({ length: 24 * 12 }, (_, t) => 100 + 30 * Math.sin((2 * Math.PI * t) / 24) + 5 * noise());
    const series = cleanSeries(rowsOf(values), 'theta-member');
    const stored = await trainCleanSeries('theta-member', series, { asOf: new Date(T0 + 12 * 86_400_000), budgetSeconds: 0.3, models: [thetaFactory] });
    const member = stored.members.find((m) => m.model === 'theta');
    expect(member).toBeDefined();
    const rows = forecastCleanSeries('theta-member', stored, series, new Date(T0 + 12 * 86_400_000));
    expect(rows.length).toBe(stored.calibration!.horizon);
    for (const r of rows) expect(Number.isFinite(r.yhat)).toBe(true);
    expect(rows[0]!.model).toMatch(/theta/);
  });
});
