import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { benchOptions } from '../../../bench/forecast.js';
import { compareWithReference, readReference, type ReferenceFixture } from '../../../bench/statsforecast.js';
import { backtestBudgets, registerForecastCommands } from '../../../cli/forecast.js';
import { parseConfig } from '../../../src/config.js';
import type { BacktestReport } from '../../../src/forecasting/backtest.js';
import { csvOf, dailySine, rowsOf } from './synthetic.js';

const production = parseConfig({}).forecast;

describe('back-tests at production budgets', () => {
  afterEach(() => vi.restoreAllMocks());

  it('the bench and the CLI default to forecast.budgetSeconds and forecast.searchSeconds, and take overrides', () => {
    expect(production).toMatchObject({ budgetSeconds: 1.2, searchSeconds: 0.8 });
    expect(benchOptions([])).toMatchObject({ budgetSeconds: 1.2, searchSeconds: 0.8, atProduction: true });
    expect(benchOptions(['--budget', '30', '--search', '0'])).toMatchObject({ budgetSeconds: 30, searchSeconds: 0, atProduction: false });
    expect(() => benchOptions(['--budget', '0'])).toThrow(/--budget must be positive/);
    expect(backtestBudgets({}, parseConfig({}))).toEqual({ budgetSeconds: 1.2, searchSeconds: 0.8 });
    expect(backtestBudgets({}, parseConfig({ forecast: { budgetSeconds: 4, searchSeconds: 0 } }))).toEqual({ budgetSeconds: 4, searchSeconds: 0 });
    expect(backtestBudgets({ budget: 30, search: 10 }, parseConfig({}))).toEqual({ budgetSeconds: 30, searchSeconds: 10 });
  });

  it('`forecast backtest` without --budget and --search runs at the configured budgets', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'shardcast-budgets-')), 'sine.csv');
    writeFileSync(file, csvOf(rowsOf(dailySine(4).map((v, t) => v + Math.sin(t)))));
    vi.stubEnv('SHARDCAST_CONFIG', '');
    vi.stubEnv('SHARDCAST_FORECAST_BUDGET_SECONDS', '0.5');
    vi.stubEnv('SHARDCAST_FORECAST_SEARCH_SECONDS', '0');
    const lines: string[] = [];
    vi.spyOn(console, 'log').mockImplementation((line: string) => void lines.push(line));
    vi.spyOn(console, 'error').mockImplementation((line: string) => void lines.push(line));
    const program = new Command('shardcast').exitOverride();
    registerForecastCommands(program);
    await program.parseAsync(['node', 'shardcast', 'forecast', 'backtest', '--csv', file]);
    vi.unstubAllEnvs();
    expect(lines).toContain('budgets: 0.5 s per model, 0 s of search');
    expect(JSON.parse(lines.at(-1)!)).toMatchObject({ series: 'sine.csv', tuning: {} });
  });
});

describe('statsforecast reference', () => {
  const report = (series: string, naive: number, ensemble: number, horizon = 12, origins = 168) =>
    ({ series, horizon, origins, models: { seasonal_naive: { mase: naive } }, ensemble: { mase: ensemble } }) as unknown as BacktestReport;

  it('the committed fixture is read: versions and, per trace, the protocol and the statsforecast models', async () => {
    const fixture = await readReference();
    expect(fixture.versions.statsforecast).toMatch(/^\d+\.\d+/);
    const traces = Object.values(fixture.traces);
    expect(traces.length).toBeGreaterThan(0);
    for (const t of traces) {
      expect(['AutoARIMA', 'AutoETS', 'AutoTheta', 'MSTL']).toEqual(expect.arrayContaining(Object.keys(t.models)));
      expect(Object.keys(t.models).length).toBeGreaterThan(0);
      expect(t.origins).toBe(168);
    }
  });

  it('compares the ensemble with the best reference model on shared traces only, under the same protocol', () => {
    const fixture: ReferenceFixture = {
      versions: { statsforecast: '2.1.1' },
      traces: {
        a: { horizon: 12, origins: 168, models: { AutoETS: { mase: 0.5 }, MSTL: { mase: 0.4 } } },
        b: { horizon: 12, origins: 168, models: { AutoETS: { mase: 1.0 }, MSTL: { mase: 2.0 } } },
        c: { horizon: 2, origins: 168, models: { AutoETS: { mase: 1.0 } } },
      },
    };
    const comparison = compareWithReference([report('a.csv', 1, 0.42), report('b.csv', 2, 0.9), report('c.csv', 1, 0.5), report('d.csv', 1, 0.5)], fixture);
    expect(comparison.models).toEqual(['AutoETS', 'MSTL']);
    expect(comparison.shared).toBe(2);
    expect(comparison.rows[0]).toMatchObject({ trace: 'a', best: { model: 'MSTL', mase: 0.4 }, ensembleOverNaive: 0.42 });
    expect(comparison.rows[0]!.ensembleOverBest).toBeCloseTo(1.05);
    expect(comparison.rows[1]!.ensembleOverBest).toBeCloseTo(0.9);
    expect(comparison.ensembleOverBestWorst).toBeCloseTo(1.05);
    expect(comparison.worstTrace).toBe('a');
    expect(comparison.skipped).toEqual(['c: the reference has horizon 2 and 168 origins, the bench 12 and 168', 'd: not in the reference']);
    expect(comparison.ensembleOverNaiveGeomean).toBeCloseTo(Math.exp((Math.log(0.42) + Math.log(0.45) + 2 * Math.log(0.5)) / 4));
    expect(compareWithReference([report('a.csv', 1, 0.42)], undefined)).toMatchObject({ shared: 0, skipped: [] });
  });
});
