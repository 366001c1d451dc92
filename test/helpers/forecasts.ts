import type pg from 'pg';
import { storeForecasts, storeModel } from '../../src/forecasting/store.js';
import { FORECAST_STEPS } from '../../src/forecasting/training.js';

/**
 * Trusted forecasts for shards, written into the catalog as the forecasting engine would (a trained
 * model that beats seasonal naive, issued now): two hours of 5-minute steps (FORECAST_STEPS), `load(index,
 * step)` each for the first hour and the last of those held for the second, with 80/95% bounds a few
 * percent around it. Tests of what the planner does with forecasts use it.
 */
export async function writeShardForecasts(pool: pg.Pool, shardIds: readonly number[], load: (index: number, step: number) => number): Promise<void> {
  const issuedAt = new Date(Math.floor(Date.now() / 1000) * 1000);
  for (const [k, id] of shardIds.entries()) {
    const series = `shard:${id}:load`;
    await storeModel(pool, { series, trainedAt: new Date(issuedAt.getTime() - 3_600_000), status: 'trained', members: [{ model: 'ets', weight: 1, json: {} }], scores: { ensemble: { mase: 0.6 }, models: { seasonal_naive: { mase: 1 } } } });
    await storeForecasts(
      pool,
      Array.from({ length: FORECAST_STEPS }, (_, i) => {
        const y = load(k, Math.min(i, 11));
        return { series, issuedAt, step: i + 1, ts: new Date(issuedAt.getTime() + (i + 1) * 300_000), yhat: y, lo80: y * 0.95, hi80: y * 1.03, lo95: y * 0.9, hi95: y * 1.05, model: 'ets' };
      }),
    );
  }
}
