import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { InvalidInputError } from '../../../src/errors.js';
import { arimaFactory, fitArima, regressorNames, restoreArima, type ArimaModel, type ArimaSpec } from '../../../src/forecasting/arima.js';
import { normals } from './synthetic.js';

/** Fits of statsmodels' ARIMA on the same series and Fourier terms (scripts/reference/arima.py). */
interface ReferenceCase {
  name: string;
  order: [number, 0 | 1, number];
  trend: 'c' | 't' | 'n';
  period: number;
  k: number;
  y: number[];
  params: Record<string, number>;
  ar: number[];
  ma: number[];
  exog: Record<string, number>;
  sigma2: number;
  llf: number;
  forecast: number[];
}

const reference = JSON.parse(readFileSync(new URL('../../fixtures/forecasting/arima-reference.json', import.meta.url), 'utf8')) as {
  horizon: number;
  cases: ReferenceCase[];
};

function ar1(n: number, phi: number, seed: number, mean = 0): number[] {
  const z = normals(seed);
  let x = 0;
  for (let t = 0; t < 100; t++) x = phi * x + z();
  return Array.from({ length: n }, () => (x = phi * x + z()) + mean);
}

function randomWalk(n: number, seed: number): number[] {
  const z = normals(seed);
  let x = 50;
  return Array.from({ length: n }, () => (x += z()));
}

const sine = (t: number) => 10 + 3 * Math.sin((2 * Math.PI * t) / 48 + 0.5);

function expectFinite(model: ArimaModel, horizon = 24): void {
  const f = model.forecast(horizon);
  expect(f).toHaveLength(horizon);
  for (const v of f) expect(Number.isFinite(v)).toBe(true);
}

describe('ARIMA against statsmodels', () => {
  for (const ref of reference.cases) {
    it(`${ref.name}: ARIMA(${ref.order.join(',')}) trend ${ref.trend}${ref.k ? `, K=${ref.k} period ${ref.period}` : ''}`, () => {
      const [p, d, q] = ref.order;
      const spec: ArimaSpec = { p, d, q, drift: ref.trend === 't', seasons: ref.k ? [{ period: ref.period, harmonics: ref.k }] : [] };
      const model = fitArima(ref.y, spec);
      expect(model.params.spec).toEqual(spec);

      model.params.ar.forEach((v, i) => expect(Math.abs(v - ref.ar[i]!)).toBeLessThan(0.02));
      model.params.ma.forEach((v, i) => expect(Math.abs(v - ref.ma[i]!)).toBeLessThan(0.02));
      // statsmodels names the intercept "const" and a trend "t" with d = 1 "x1".
      const refBeta: Record<string, number> = { ...ref.exog, const: ref.params.const!, drift: ref.params.x1! };
      regressorNames(spec).forEach((name, i) => {
        expect(Math.abs(model.params.beta[i]! - refBeta[name]!)).toBeLessThan(0.02 * (1 + Math.abs(refBeta[name]!)));
      });
      expect(Math.abs(model.params.sigma2 / ref.sigma2 - 1)).toBeLessThan(0.01);
      expect(Math.abs(model.logLik / ref.llf - 1)).toBeLessThan(0.005);
      model.forecast(reference.horizon).forEach((v, h) => expect(Math.abs(v / ref.forecast[h]! - 1)).toBeLessThan(0.02));
    });
  }
});

describe('ARIMA known answers', () => {
  it('forecasts a pure sine of period 48 almost exactly', () => {
    const y = Array.from({ length: 480 }, (_, t) => sine(t));
    const model = arimaFactory.fit(y, { dailyPeriod: 48 });
    expect(model.description).toContain('Fourier K=1 period 48');
    model.forecast(96).forEach((v, h) => expect(Math.abs(v - sine(480 + h))).toBeLessThan(1e-6));
  });

  it('recovers phi = 0.7 of an AR(1) on 2000 points', () => {
    const model = fitArima(ar1(2000, 0.7, 11, 5), { p: 1, d: 0, q: 0, drift: false, seasons: [] });
    expect(Math.abs(model.params.ar[0]! - 0.7)).toBeLessThan(0.05);
    expect(Math.abs(model.params.beta[0]! - 5)).toBeLessThan(0.3);
  });

  it('forecasts a random walk flat at its last value', () => {
    const y = randomWalk(1000, 5);
    const last = y.at(-1)!;
    const naive = fitArima(y, { p: 0, d: 1, q: 0, drift: false, seasons: [] });
    for (const v of naive.forecast(12)) expect(v).toBeCloseTo(last, 9);

    const auto = arimaFactory.fit(y, { dailyPeriod: 0 });
    expect(auto.params.spec.d).toBe(1);
    for (const v of auto.forecast(12)) expect(Math.abs(v - last)).toBeLessThan(0.5);
  });
});

describe('ARIMA selection', () => {
  it('fits 30 days of 5-minute load with daily and weekly seasons within the budget', () => {
    const z = normals(3);
    let e = 0;
    const angle = (t: number, period: number) => (2 * Math.PI * t) / period;
    const load = (t: number) => 100 + 30 * Math.sin(angle(t, 288)) + 10 * Math.cos(2 * angle(t, 288)) + 15 * Math.sin(angle(t, 2016));
    const y = Array.from({ length: 8640 }, (_, t) => load(t) + 3 * (e = 0.8 * e + z()));
    const started = performance.now();
    const model = arimaFactory.fit(y, { dailyPeriod: 288, weeklyPeriod: 2016 });
    expect(performance.now() - started).toBeLessThan(5000);

    expect(model.params.spec.seasons.map((s) => s.period)).toEqual([288, 2016]);
    expect(model.params.spec.seasons[0]!.harmonics).toBeGreaterThanOrEqual(2);
    // An hour ahead the noise (AR(1) of φ 0.8 and scale 3) is nearly forgotten: the seasons remain.
    const f = model.forecast(288);
    const rmse = Math.sqrt(f.slice(12).reduce((s, v, h) => s + (v - load(8652 + h)) ** 2, 0) / (f.length - 12));
    expect(rmse).toBeLessThan(2);
  });

  it('drops Fourier terms when the series is shorter than two seasons', () => {
    const y = ar1(500, 0.5, 2, 20);
    const model = arimaFactory.fit(y, { dailyPeriod: 288 });
    expect(model.params.spec.seasons).toEqual([]);
    expect(model.description).not.toContain('Fourier');
    expectFinite(model);
  });

  it('keeps to a zero budget with a finite model', () => {
    const y = Array.from({ length: 2000 }, (_, t) => sine(t) + 0.1 * Math.sin(t));
    expectFinite(arimaFactory.fit(y, { dailyPeriod: 48, budgetMs: 0 }));
  });
});

describe('ARIMA update and restore', () => {
  const y = Array.from({ length: 600 }, (_, t) => sine(t) + 0.5 * ar1(600, 0.6, 9)[t]!);
  const spec: ArimaSpec = { p: 1, d: 0, q: 1, drift: false, seasons: [{ period: 48, harmonics: 2 }] };

  it('update keeps the parameters and filters the longer series, the Fourier phase continuing', () => {
    const model = fitArima(y.slice(0, 500), spec);
    const same = model.update(y.slice(0, 500));
    expect(same.forecast(12)).toEqual(model.forecast(12));

    const updated = model.update(y);
    expect(updated.params).toEqual(model.params);
    const { n } = updated.toJSON() as { n: number };
    expect(n).toBe(600);
    // Far ahead the ARMA part has died out: what is left is the season, in phase with step 600 + h.
    const far = updated.forecast(200).slice(150);
    far.forEach((v, i) => expect(Math.abs(v - sine(750 + i))).toBeLessThan(0.3));
    // One step ahead the filter has seen the last residual.
    const refit = fitArima(y, spec);
    expect(Math.abs(updated.forecast(1)[0]! - refit.forecast(1)[0]!)).toBeLessThan(0.2);
  });

  it('restores from JSON to the same forecasts and updates from there', () => {
    const model = fitArima(y.slice(0, 500), spec);
    const restored = restoreArima(JSON.parse(JSON.stringify(model.toJSON())) as Record<string, unknown>);
    expect(restored.description).toBe(model.description);
    expect(restored.forecast(24)).toEqual(model.forecast(24));
    expect(restored.update(y).forecast(24)).toEqual(model.update(y).forecast(24));
  });

  it('refuses JSON that is not an ARIMA state', () => {
    const json = fitArima(y, spec).toJSON();
    expect(() => restoreArima({ ...json, model: 'ets' })).toThrow(InvalidInputError);
    expect(() => restoreArima({ ...json, ar: [] })).toThrow(/ar\/ma/);
    expect(() => restoreArima({ ...json, beta: [1, 'x'] })).toThrow(/beta/);
  });
});

describe('ARIMA never returns NaN', () => {
  const cases: [string, number[]][] = [
    ['empty', []],
    ['one point', [3]],
    ['five points', [1, 2, 3, 2, 1]],
    ['constant', new Array<number>(600).fill(7)],
    ['zeros', new Array<number>(300).fill(0)],
    ['huge values', ar1(400, 0.5, 4).map((v) => 1e150 * (v + 10))],
    ['non-finite values', ar1(400, 0.5, 4).map((v, t) => (t % 50 === 7 ? NaN : t === 100 ? Infinity : v))],
    ['a step', Array.from({ length: 400 }, (_, t) => (t < 200 ? 0 : 100))],
  ];
  for (const [name, y] of cases) {
    it(`on ${name}`, () => {
      const model = arimaFactory.fit(y, { dailyPeriod: 48 });
      expectFinite(model);
      expectFinite(model.update([...y, ...y.slice(-5)]));
    });
  }

  it('falls back when the order asks more than the data hold', () => {
    const model = fitArima([1, 3, 2, 5, 4, 6, 5, 8], { p: 3, d: 0, q: 3, drift: true, seasons: [{ period: 2, harmonics: 1 }] });
    expect(model.description).not.toContain('ARIMA(3,0,3)');
    expectFinite(model);
  });
});
