import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { registerForecastCommands } from '../../../cli/forecast.js';
import { arimaFactory } from '../../../src/forecasting/arima.js';
import { backtest, backtestPlan, backtestSummary, type BacktestReport } from '../../../src/forecasting/backtest.js';
import { etsFactory } from '../../../src/forecasting/ets.js';
import { cleanSeries, type Observation } from '../../../src/forecasting/series.js';
import type { FittedModel, ModelFactory } from '../../../src/forecasting/types.js';
import { T0, csvOf, dailySine, normals, rowsOf } from './synthetic.js';

const models = [etsFactory, arimaFactory];

function run(rows: Observation[], options: Parameters<typeof backtest>[1] = {}): Promise<BacktestReport> {
  return backtest(cleanSeries(rows, 'test'), { budgetSeconds: 1, models, ...options });
}

/** Everything a report says is finite, and so are the forecasts and intervals from the end. */
function expectFinite(report: BacktestReport): void {
  const scores = [...Object.values(report.models), report.ensemble];
  expect(scores.flatMap((s) => [s.mase, s.smape, s.coverage80, s.coverage95]).every(Number.isFinite)).toBe(true);
  for (const f of Object.values(report.next)) {
    expect(f.point).toHaveLength(report.horizon);
    expect([...f.point, ...f.intervals.flatMap((i) => [...i.lower, ...i.upper])].every(Number.isFinite)).toBe(true);
  }
}

/** Half-width of the 95% interval at each step of a forecast from the end. */
function widths95(report: BacktestReport, model: string): number[] {
  const f = report.next[model]!;
  const iv = f.intervals.find((i) => i.level === 0.95)!;
  return iv.upper.map((u, i) => (u - iv.lower[i]!) / 2);
}

describe('backtestPlan', () => {
  const hourly = (days: number) => ({ values: new Array<number>(days * 24).fill(0), stepSeconds: 3600, dailyPeriod: 24 });

  it('evaluates hourly origins over the last 7 days, after a warm-up day', () => {
    const plan = backtestPlan(hourly(14));
    expect(plan).toMatchObject({ horizon: 1, evaluationStart: 168, stride: 1, day: 24, trainingSteps: 720 });
    expect(plan.origins[0]).toBe(144);
    expect(plan.origins.at(-1)).toBe(335);
    const fiveMinutes = backtestPlan({ values: new Array<number>(4032).fill(0), stepSeconds: 300, dailyPeriod: 288 });
    expect(fiveMinutes).toMatchObject({ horizon: 12, stride: 12, evaluationStart: 2016 });
    expect(fiveMinutes.origins.filter((o) => o >= 2016)).toHaveLength(168);
  });

  it('evaluates the last 20% of a series shorter than two weeks', () => {
    const plan = backtestPlan(hourly(5), { horizon: 3 });
    expect(plan.evaluationStart).toBe(96);
    expect(plan.origins[0]).toBe(84);
    expect(plan.origins.at(-1)).toBe(117);
  });

  it('refuses a series too short to test', () => {
    expect(() => backtestPlan(hourly(1), { horizon: 12 })).toThrow(/needs more data: the series has 24 points of 3600 s/);
  });
});

describe('backtest', () => {
  it('forecasts a pure sine almost exactly, with narrow intervals', async () => {
    const values = dailySine(15);
    const report = await run(rowsOf(values.slice(0, 14 * 24)), { horizon: 6 });
    expectFinite(report);
    const future = values.slice(14 * 24, 14 * 24 + 6);
    for (const model of ['seasonal_naive', 'ets', 'arima', 'ensemble']) {
      report.next[model]!.point.forEach((f, i) => expect(Math.abs(f - future[i]!), model).toBeLessThan(0.05));
      expect(Math.max(...widths95(report, model)), model).toBeLessThan(0.2);
    }
    expect(report.ensemble.mase).toBeLessThan(0.01);
    expect(report.models.ets!.fits).toBe(8);
  });

  it('widens the intervals of a random walk with the horizon', async () => {
    const z = normals(3);
    let level = 100;
    const values = Array.from({ length: 14 * 24 }, () => (level += z()));
    const report = await run(rowsOf(values), { horizon: 6, models: [etsFactory] });
    expectFinite(report);
    for (const model of ['ets', 'ensemble']) {
      const w = widths95(report, model);
      expect(w[5]! / w[0]!, model).toBeGreaterThan(1.5);
    }
    expect(report.ensemble.coverage95).toBeGreaterThan(0.85);
  });

  it('forecasts and calibrates past the scored horizon (reach) without changing what is scored', async () => {
    const z = normals(5);
    let level = 100;
    const rows = rowsOf(Array.from({ length: 14 * 24 }, () => (level += z())));
    // The last value as the forecast: deterministic, so the two runs must score exactly alike; on a random walk its error grows with the step.
    const last: ModelFactory = { model: 'last', fit: async (y) => lastValueModel(y) };
    const scored = await run(rows, { horizon: 3, models: [last] });
    const reaching = await run(rows, { horizon: 3, reach: 6, models: [last] });
    expect(reaching.horizon).toBe(3);
    expect(reaching.ensemble).toEqual(scored.ensemble);
    // Everything but the time the fits took.
    const untimed = (r: typeof scored) => Object.fromEntries(Object.entries(r.models).map(([k, { trainSeconds: _t, ...m }]) => [k, m]));
    expect(untimed(reaching)).toEqual(untimed(scored));
    expect(reaching.scored).toBe(scored.scored);
    for (const model of ['last', 'ensemble']) {
      const [short, long] = [scored.next[model]!, reaching.next[model]!];
      expect(short.point).toHaveLength(3);
      expect(long.point).toHaveLength(6);
      expect(long.point.slice(0, 3)).toEqual(short.point);
      // Steps past the scored horizon get intervals from their own residuals: for a random walk they keep widening.
      const w = widths95(reaching, model);
      expect(w.slice(0, 3)).toEqual(widths95(scored, model));
      expect(w.every(Number.isFinite)).toBe(true);
      expect(w[5]!, model).toBeGreaterThan(w[2]! * 1.15);
    }
  });

  it('covers i.i.d. noise at close to the nominal levels', async () => {
    const z = normals(11);
    const report = await run(rowsOf(Array.from({ length: 14 * 24 }, () => 50 + z())), { models: [] });
    expect(report.ensemble.coverage80).toBeGreaterThan(0.7);
    expect(report.ensemble.coverage80).toBeLessThan(0.9);
    expect(report.ensemble.coverage95).toBeGreaterThan(0.88);
  });

  describe('hostile series: finite forecasts and documented fallbacks', () => {
    const z = normals(5);
    const base = dailySine(5).map((v) => v + z());
    const cases: Record<string, { rows: Observation[]; check?: (r: BacktestReport) => void }> = {
      'shorter than one season': {
        rows: rowsOf(base.slice(0, 20)),
        check: (r) => expect(r.models.seasonal_naive!.description).toBe('naive (fallback: shorter than one season of 24)'),
      },
      'shorter than two seasons': { rows: rowsOf(base.slice(0, 40)) },
      constant: {
        rows: rowsOf(new Array<number>(120).fill(7)),
        check: (r) => {
          expect(r.ensemble.mase).toBe(0);
          expect(r.next.ensemble!.point.every((v) => Math.abs(v - 7) < 1e-9)).toBe(true);
        },
      },
      'all zeros': { rows: rowsOf(new Array<number>(120).fill(0)), check: (r) => expect(r.ensemble.smape).toBe(0) },
      'with gaps': {
        rows: rowsOf(base).filter((_, i) => i % 7 !== 3 && (i < 50 || i > 60)),
        check: (r) => expect(r.notes.join()).toMatch(/linear interpolation.*values of the day before/),
      },
      'with NaN': { rows: rowsOf(base.map((v, i) => (i % 11 === 0 ? NaN : v))), check: (r) => expect(r.notes.join()).toMatch(/non-finite/) },
      negative: { rows: rowsOf(base.map((v) => v - 150)) },
      'out of order with duplicates': {
        rows: [...rowsOf(base)].reverse().concat(rowsOf(base).slice(30, 40)),
        check: (r) => expect(r.notes.join()).toMatch(/out of order.*duplicate/),
      },
      'a sudden level shift': { rows: rowsOf(base.map((v, i) => (i >= 100 ? v + 500 : v))) },
      'huge values': { rows: rowsOf(base.map((v) => v * 1e300)) },
    };
    for (const [name, { rows, check }] of Object.entries(cases)) {
      it(name, async () => {
        const report = await run(rows);
        expectFinite(report);
        check?.(report);
      });
    }
  });

  it('stands the seasonal naive in for a model that throws or forecasts NaN, and says so', async () => {
    const throwing: ModelFactory = {
      model: 'throwing',
      fit: () => {
        throw new Error('boom');
      },
    };
    const nan: ModelFactory = { model: 'nan', fit: async (y) => constantModel('nan', y, NaN) };
    const report = await run(rowsOf(dailySine(5)), { models: [throwing, nan] });
    expectFinite(report);
    expect(report.models.throwing!.fallbacks[0]).toMatch(/fit failed: boom; seasonal naive used$/);
    expect(report.models.throwing!.description).toContain('(stand-in)');
    expect(report.models.nan!.fallbacks[0]).toMatch(/no finite forecast; seasonal naive used$/);
    expect(report.models.throwing!.mase).toBe(report.models.seasonal_naive!.mase);
  });

  it('fits once a day on data before the origin only, and updates in between', async () => {
    const values = dailySine(14);
    const fits: number[] = [];
    const updates: number[] = [];
    const spy: ModelFactory = {
      model: 'spy',
      fit: (y) => {
        expect(y).toEqual(values.slice(Math.max(0, y.length - 720), y.length));
        fits.push(y.length);
        const model = (series: readonly number[]): FittedModel => ({
          ...constantModel('spy', series, series[series.length - 1]!),
          update: (longer) => {
            expect(longer.slice(0, series.length)).toEqual(series);
            updates.push(longer.length);
            return model(longer);
          },
        });
        return model(y);
      },
    };
    await run(rowsOf(values), { models: [spy] });
    expect(fits).toEqual([144, 168, 192, 216, 240, 264, 288, 312]);
    // Every hourly origin but the fit days, and the end of the series.
    expect(updates).toHaveLength(192 - 8 + 1);
    expect(updates.at(-1)).toBe(336);
  });

  it('tunes a model once, on the first training window only, then fits with what it found; a failed search keeps the defaults', async () => {
    const values = dailySine(14);
    const tuned: number[] = [];
    const fitParams: unknown[] = [];
    const tunable = (fail: boolean): ModelFactory => ({
      model: fail ? 'broken' : 'tunable',
      fit: (y, ctx) => {
        fitParams.push(ctx.params);
        return constantModel('tunable', y, y[y.length - 1]! + ((ctx.params?.offset as number | undefined) ?? 0));
      },
      tune: (y, ctx, options) => {
        if (fail) return Promise.reject(new Error('search exploded'));
        tuned.push(y.length);
        expect(ctx.budgetMs).toBe(2000);
        expect(options?.initial).toEqual([{ offset: 3 }]);
        return Promise.resolve({ params: { offset: 1 }, score: 0.5, defaultScore: 0.7, objective: 'test', method: 'test', trials: 2, failedTrials: 0, seconds: 0.01 });
      },
    });
    const report = await run(rowsOf(values), { models: [tunable(false), tunable(true)], searchSeconds: 2, initialParams: { tunable: [{ offset: 3 }] } });
    // Before the first origin: the 144 hours of the first fit's window, never an evaluated target.
    expect(tuned).toEqual([144]);
    expect(report.models.tunable!.tuning).toMatchObject({ params: { offset: 1 }, trials: 2 });
    expect(report.models.broken!.tuning).toBeUndefined();
    expect(report.notes).toContain('broken: hyperparameter search failed, defaults used: search exploded');
    expect(fitParams.filter((p) => p !== undefined)).toEqual(new Array(8).fill({ offset: 1 }));
    expect(backtestSummary(report).tuning).toEqual({ tunable: { method: 'test', trials: 2, seconds: 0.01, score: 0.5, default_score: 0.7, params: { offset: 1 } } });
    // Without a search budget nothing is tuned.
    tuned.length = 0;
    expect((await run(rowsOf(values), { models: [tunable(false)] })).models.tunable!.tuning).toBeUndefined();
    expect(tuned).toEqual([]);
  });

  it('summarises as the JSON of the CLI', async () => {
    const report = await run(rowsOf(dailySine(5)));
    const summary = backtestSummary(report);
    expect(Object.keys(summary)).toEqual(['series', 'points', 'step_seconds', 'horizon', 'models', 'train_seconds', 'tuning']);
    expect(summary.tuning).toEqual({});
    expect(Object.keys(summary.models as object)).toEqual(['seasonal_naive', 'ets', 'arima', 'ensemble']);
    expect(Object.keys((summary.models as Record<string, object>).ets!)).toEqual(['mase', 'smape', 'coverage80', 'coverage95']);
    expect(Object.keys(summary.train_seconds as object)).toEqual(['seasonal_naive', 'ets', 'arima']);
  });
});

function lastValueModel(y: readonly number[]): FittedModel {
  return { ...constantModel('last', y, y[y.length - 1]!), update: (longer) => lastValueModel(longer) };
}

function constantModel(name: string, y: readonly number[], value: number): FittedModel {
  return {
    model: name,
    description: name,
    forecast: (h) => new Array<number>(h).fill(value),
    update: (longer) => constantModel(name, longer, value),
    toJSON: () => ({}),
  };
}

describe('shardcast forecast backtest', () => {
  afterEach(() => vi.restoreAllMocks());
  const dir = mkdtempSync(join(tmpdir(), 'shardcast-cli-'));

  async function cli(...args: string[]): Promise<string[]> {
    const lines: string[] = [];
    vi.spyOn(console, 'log').mockImplementation((line: string) => void lines.push(line));
    vi.spyOn(console, 'error').mockImplementation(() => undefined);
    const program = new Command('shardcast').exitOverride();
    registerForecastCommands(program);
    await program.parseAsync(['node', 'shardcast', 'forecast', 'backtest', ...args]);
    return lines;
  }

  it('prints a table and, last, the JSON summary', async () => {
    const file = join(dir, 'sine.csv');
    writeFileSync(file, csvOf(rowsOf(dailySine(5, 1800).map((v, t) => v + Math.sin(t)), 1800).slice(0, 200)));
    const lines = await cli('--csv', file, '--budget', '1', '--search', '1');
    expect(lines.join('\n')).toMatch(/MODEL\s+MASE/);
    const json = JSON.parse(lines.at(-1)!) as Record<string, unknown>;
    expect(json).toMatchObject({ series: 'sine.csv', points: 200, step_seconds: 1800, horizon: 2 });
    expect(lines.some((l) => /^tuning: lstm: tpe, \d+ trials in [\d.]+ s( \(\d+ failed\))?: validation MAE .* \(defaults [\d.e-]+\); units \d+, patch \d, window \d+, learningRate [\d.e-]+, dailyLag (true|false), loss (mse|mae|huber)$/.test(l))).toBe(true);
    expect(json.tuning).toMatchObject({ lstm: { method: 'tpe' } });
    const quiet = await cli('--csv', file, '--budget', '1', '--horizon', '3', '--search', '0', '--json');
    expect(quiet).toHaveLength(1);
    expect(JSON.parse(quiet[0]!)).toMatchObject({ horizon: 3, tuning: {} });
    await expect(cli('--csv', file, '--search', '-1')).rejects.toThrow(/expected a decimal number of seconds from 0 up to 600/);
  });

  it('fails with the line of a bad row', async () => {
    const file = join(dir, 'bad.csv');
    writeFileSync(file, `timestamp,value\n${new Date(T0).toISOString()},1\nnot-a-time,2\n`);
    await expect(cli('--csv', file)).rejects.toThrow(/bad\.csv: line 3: timestamp "not-a-time" is not ISO-8601/);
  });
});
