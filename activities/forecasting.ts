import { activityInfo, heartbeat } from '@temporalio/activity';
import type pg from 'pg';
import { errorMessage } from '../src/errors.js';
import { type SeriesOutcome } from '../src/forecasting/runs.js';
import { forecastableSeries, storeForecasts, storeModel } from '../src/forecasting/store.js';
import { forecastSeries, trainSeries } from '../src/forecasting/training.js';
import { listSeries } from '../src/profiling/series.js';
import { BUCKET_MS } from '../src/profiling/rates.js';
import { run } from './failures.js';

export interface ForecastingDeps {
  catalog: pg.Pool;
}

export interface TrainBatchInput {
  series: string[];
  /** ISO time of the run: the training window ends there and it keys the stored rows. */
  asOf: string;
  trainingDays: number;
  budgetSeconds: number;
}

/**
 * Works through a batch one series at a time, heartbeating the outcomes so far: a retried attempt
 * resumes after the last series done. A series that throws is an outcome ('failed'), not an error.
 */
async function eachSeries(series: string[], one: (id: string) => Promise<SeriesOutcome>): Promise<SeriesOutcome[]> {
  const done = (activityInfo().heartbeatDetails as SeriesOutcome[] | undefined) ?? [];
  for (const id of series.slice(done.length)) {
    done.push(await one(id).catch((err: unknown) => ({ series: id, status: 'failed' as const, error: errorMessage(err) })));
    heartbeat(done);
  }
  return done;
}

export function createForecastingActivities(deps: ForecastingDeps) {
  return {
    /** Every series with samples in the training window. */
    async listTrainingSeries(input: { asOf: string; trainingDays: number }): Promise<string[]> {
      // Only series sampled before the last complete bucket: a series seen for the first time in the
      // last few minutes has no two complete buckets to train on yet, and is not a failure.
      const asOf = Date.parse(input.asOf);
      const until = new Date(Math.floor(asOf / BUCKET_MS) * BUCKET_MS - BUCKET_MS);
      return run(() => listSeries(deps.catalog, new Date(asOf - input.trainingDays * 86_400_000), until));
    },

    /** Trains and stores each series of the batch; a failure is stored as a 'failed' model. */
    async trainBatch(input: TrainBatchInput): Promise<SeriesOutcome[]> {
      const asOf = new Date(input.asOf);
      return eachSeries(input.series, async (id) => {
        try {
          const model = await trainSeries(deps.catalog, id, { asOf, trainingDays: input.trainingDays, budgetSeconds: input.budgetSeconds });
          await storeModel(deps.catalog, model);
          return { series: id, status: model.status };
        } catch (err) {
          await storeModel(deps.catalog, { series: id, trainedAt: asOf, status: 'failed', error: errorMessage(err), members: [] });
          throw err;
        }
      });
    },

    /** Series with a usable model. */
    async listForecastSeries(): Promise<string[]> {
      return run(() => forecastableSeries(deps.catalog));
    },

    /** Forecasts and stores the next hour of each series of the batch. */
    async forecastBatch(input: { series: string[]; issuedAt: string }): Promise<SeriesOutcome[]> {
      const issuedAt = new Date(input.issuedAt);
      return eachSeries(input.series, async (id) => {
        await storeForecasts(deps.catalog, await forecastSeries(deps.catalog, id, issuedAt));
        return { series: id, status: 'forecast' };
      });
    },
  };
}
