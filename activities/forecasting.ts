import { activityInfo, cancellationSignal, heartbeat } from '@temporalio/activity';
import type pg from 'pg';
import type { Queryable } from '../src/catalog/nodes.js';
import { CatalogError, errorMessage } from '../src/errors.js';
import { type SeriesOutcome } from '../src/forecasting/runs.js';
import { forecastableSeries, storeForecasts, storeModel } from '../src/forecasting/store.js';
import { TrainingThreadError, TrainingThreads } from '../src/forecasting/thread-pool.js';
import { forecastSeries } from '../src/forecasting/training.js';
import { listSeries } from '../src/profiling/series.js';
import { dayMs, stepMs, stepStart } from '../src/clock.js';
import { run } from './failures.js';

export interface ForecastingDeps {
  catalog: pg.Pool;
  /** Where series are fitted, off the event loop; default: one thread of these activities' own, started on first use. */
  trainingThreads?: TrainingThreads;
}

export interface TrainBatchInput {
  series: string[];
  /** ISO time of the run: the training window ends there and it keys the stored rows. */
  asOf: string;
  trainingDays: number;
  budgetSeconds: number;
  /** Hyperparameter search seconds per series (absent: none). */
  searchSeconds?: number;
}

/** The catalog as the batches use it: whatever it throws is a CatalogError. */
function catalogOf(pool: pg.Pool): Queryable {
  const query = (text: string, values?: unknown[]) =>
    pool.query(text, values).catch((err: unknown) => {
      throw new CatalogError(err);
    });
  return { query } as unknown as Queryable;
}

/** Errors that end the attempt instead of being the series' outcome: the catalog's, the threads', a cancellation. */
function endsAttempt(err: unknown): boolean {
  return err instanceof CatalogError || err instanceof TrainingThreadError || cancellationSignal().aborted;
}

/** While a series is worked on, off the event loop: the server keeps seeing the worker alive and can deliver a cancellation. */
const HEARTBEAT_MS = 5_000;

/**
 * Works through a batch one series at a time, heartbeating the outcomes so far: a retried attempt
 * resumes after the last series done. A series that throws is an outcome ('failed'), not an error,
 * unless `endsAttempt`: then the attempt fails (retryable) and the series is worked on again.
 */
async function eachSeries(series: string[], one: (id: string) => Promise<SeriesOutcome>): Promise<SeriesOutcome[]> {
  const done = (activityInfo().heartbeatDetails as SeriesOutcome[] | undefined) ?? [];
  for (const id of series.slice(done.length)) {
    const beat = setInterval(() => heartbeat(done), HEARTBEAT_MS);
    try {
      done.push(
        await one(id).catch((err: unknown) => {
          if (endsAttempt(err)) throw err;
          return { series: id, status: 'failed' as const, error: errorMessage(err) };
        }),
      );
    } finally {
      clearInterval(beat);
    }
    heartbeat(done);
  }
  return done;
}

export function createForecastingActivities(deps: ForecastingDeps) {
  const catalog = catalogOf(deps.catalog);
  const threads = deps.trainingThreads ?? new TrainingThreads();
  return {
    /** Every series with samples in the training window. */
    async listTrainingSeries(input: { asOf: string; trainingDays: number }): Promise<string[]> {
      // Only series sampled before the last complete bucket: a series seen for the first time in the
      // last few minutes has no two complete buckets to train on yet, and is not a failure.
      const asOf = Date.parse(input.asOf);
      const until = new Date(stepStart(asOf) - stepMs());
      return run(() => listSeries(deps.catalog, new Date(asOf - input.trainingDays * dayMs()), until));
    },

    /** Trains (in a training thread) and stores each series of the batch; a series' failure is stored as a 'failed' model. */
    async trainBatch(input: TrainBatchInput): Promise<SeriesOutcome[]> {
      const asOf = new Date(input.asOf);
      const options = { asOf, trainingDays: input.trainingDays, budgetSeconds: input.budgetSeconds, searchSeconds: input.searchSeconds };
      return run(() =>
        eachSeries(input.series, async (id) => {
          try {
            const model = await threads.train(catalog, id, options, cancellationSignal());
            await storeModel(catalog, model);
            return { series: id, status: model.status };
          } catch (err) {
            if (!endsAttempt(err)) await storeModel(catalog, { series: id, trainedAt: asOf, status: 'failed', error: errorMessage(err), members: [] });
            throw err;
          }
        }),
      );
    },

    /** Series with a usable model. */
    async listForecastSeries(): Promise<string[]> {
      return run(() => forecastableSeries(deps.catalog));
    },

    /** Forecasts and stores the next hour of each series of the batch. */
    async forecastBatch(input: { series: string[]; issuedAt: string }): Promise<SeriesOutcome[]> {
      const issuedAt = new Date(input.issuedAt);
      return run(() =>
        eachSeries(input.series, async (id) => {
          await storeForecasts(catalog, await forecastSeries(catalog, id, issuedAt));
          return { series: id, status: 'forecast' };
        }),
      );
    },
  };
}
