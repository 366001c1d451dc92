import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lstmFactory } from '../../src/forecasting/lstm.js';
import { seasonalNaiveFactory } from '../../src/forecasting/naive.js';
import { cleanSeries, seasonLengths, type CleanSeries } from '../../src/forecasting/series.js';
import { latestUsableModel, storeModel, type StoredModel } from '../../src/forecasting/store.js';
import { initBackend } from '../../src/forecasting/tf-backend.js';
import { forecastCleanSeries, HORIZON, previousParams, trainCleanSeries } from '../../src/forecasting/training.js';
import type { FittedModel } from '../../src/forecasting/types.js';
import { normals } from '../unit/forecasting/synthetic.js';
import { createTestCatalog, type TestCatalog } from '../helpers/fleet.js';

const STEP_MS = 300_000;
const T0 = Date.UTC(2026, 0, 1);

/** Five-minute load with a daily cycle and noise: `days` days from T0, plus `extra` steps. */
function load(days: number, extra = 0): CleanSeries {
  const noise = normals(3);
  const n = days * 288 + extra;
  const rows = Array.from({ length: n }, (_, t) => ({ time: T0 + t * STEP_MS, value: 100 + 40 * Math.sin((2 * Math.PI * t) / 288) + 5 * noise() }));
  return cleanSeries(rows, 'shard:1:load');
}

let catalog: TestCatalog;

beforeAll(async () => {
  catalog = await createTestCatalog('models');
  await initBackend('wasm');
});

afterAll(async () => {
  await catalog?.close();
});

describe('models in the catalog', () => {
  it('an LSTM member comes back from the catalog with the same weights and forecasts the same', async () => {
    const series = load(4);
    const ctx = { ...seasonLengths(series.stepSeconds, series.values.length), budgetMs: 3000, seed: 1, params: { units: 12, patch: 3, window: 36, learningRate: 0.01, dailyLag: true } };
    const lstm = await lstmFactory.fit(series.values, ctx);
    expect(lstm.network).toBeDefined();
    const naive = seasonalNaiveFactory.fit(series.values, ctx) as FittedModel;
    const model: StoredModel = {
      series: 'shard:1:load',
      trainedAt: new Date(T0 + series.values.length * STEP_MS),
      status: 'trained',
      seriesStart: new Date(series.start),
      stepSeconds: series.stepSeconds,
      members: [
        { model: 'lstm', weight: 0.7, json: lstm.toJSON() },
        { model: 'seasonal_naive', weight: 0.3, json: naive.toJSON() },
      ],
      calibration: { horizon: HORIZON, halfWidths: { '0.8': new Array<number>(HORIZON).fill(3), '0.95': new Array<number>(HORIZON).fill(6) } },
      scores: {},
    };
    await storeModel(catalog.pool, model);
    const stored = await latestUsableModel(catalog.pool, 'shard:1:load');
    const json = stored!.members.find((m) => m.model === 'lstm')!.json as { network: { weights: { name: string; data: string }[] } };
    expect(json.network.weights.map((w) => w.data)).toEqual((lstm.toJSON() as typeof json).network.weights.map((w) => w.data));
    // An hour later: both restore the members, extend them with the new buckets and forecast.
    const later = load(4, 12);
    const issuedAt = new Date(T0 + later.values.length * STEP_MS);
    const fromCatalog = forecastCleanSeries('shard:1:load', stored!, later, issuedAt);
    const inMemory = forecastCleanSeries('shard:1:load', model, later, issuedAt);
    expect(fromCatalog).toEqual(inMemory);
    expect(fromCatalog[0]!.model).toBe('ensemble(lstm,seasonal_naive)');
    const lstmAlone = lstm.update(later.values).forecast(HORIZON);
    const naiveAlone = naive.update(later.values).forecast(HORIZON);
    fromCatalog.forEach((row, i) => expect(row.yhat).toBeCloseTo(0.7 * lstmAlone[i]! + 0.3 * naiveAlone[i]!, 9));
  });

  it('the hyperparameters a training run chose are stored with its model, and the next search starts from them', async () => {
    const series = load(5);
    const trained = await trainCleanSeries('shard:2:load', series, {
      asOf: new Date(T0 + series.values.length * STEP_MS),
      models: [lstmFactory],
      budgetSeconds: 1,
      searchSeconds: 2,
      evaluationDays: 1,
    });
    await storeModel(catalog.pool, { ...trained, series: 'shard:2:load' });
    const tuning = (trained.scores!.models as Record<string, { tuning?: { params: Record<string, unknown>; method: string; trials: number } }>).lstm!.tuning!;
    expect(tuning.method).toBe('tpe');
    expect(tuning.trials).toBeGreaterThanOrEqual(2);
    const stored = await latestUsableModel(catalog.pool, 'shard:2:load');
    expect(previousParams(stored)).toEqual({ lstm: [tuning.params] });
    // A stored LSTM member was fitted with them.
    const member = stored!.members.find((m) => m.model === 'lstm');
    if (member) expect((member.json as { network: { layout: { units: number } } | null }).network?.layout.units ?? tuning.params.units).toBe(tuning.params.units);
    expect(previousParams(undefined)).toEqual({});
    // Members weigh what the ensemble weighed at the end of the back-test (renormalised over those stored).
    const final = (trained.scores!.ensemble as { finalWeights: Record<string, number> }).finalWeights;
    const kept = trained.members.reduce((sum, m) => sum + final[m.model]!, 0);
    for (const m of trained.members) expect(m.weight).toBeCloseTo(final[m.model]! / kept, 9);
  });
});
