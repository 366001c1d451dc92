import { cleanSeries, type CleanSeries, type Observation } from '../forecasting/series.js';
import type { ForecastRow, StoredModel } from '../forecasting/store.js';
import { forecastCleanSeries, previousParams, trainCleanSeries } from '../forecasting/training.js';
import type { StepForecast } from '../planning/types.js';
import { SIM_STEP_SECONDS } from './trace.js';

/**
 * The forecasting engine inside the simulation, as production runs it (training.ts) minus the
 * catalog: every shard's load is a series `shard:<id>:load` of 5-minute buckets. `retrain` is the
 * daily run: `trainCleanSeries` on the last `trainingDays` of complete buckets, at the production
 * budgets, starting each model's search from the previous run's choice. `forecast` is the hourly
 * run: `forecastCleanSeries` of the newest model on the series since the model's start, twelve
 * steps from the bucket in progress. The epoch is a fixed date, so that models see real timestamps.
 */
export const EPOCH_MS = Date.UTC(2026, 0, 5);

export interface ForecasterOptions {
  trainingDays: number;
  budgetSeconds: number;
  searchSeconds: number;
}

export interface ShardOutlook {
  steps: StepForecast[];
  trustworthy: boolean;
  untrustedBecause?: string;
}

export class ShardForecaster {
  private readonly models = new Map<number, StoredModel>();
  /** Issue time (seconds) and outlook of the latest hourly forecast, by shard. */
  private readonly latest = new Map<number, { issued: number; outlook: ShardOutlook }>();
  trainSeconds = 0;
  trainings = 0;
  forecasts = 0;

  constructor(
    private readonly loads: ReadonlyMap<number, readonly number[]>,
    private readonly options: ForecasterOptions,
  ) {}

  private series(shardId: number, fromBucket: number, toBucket: number): CleanSeries {
    const values = this.loads.get(shardId)!;
    const rows: Observation[] = [];
    for (let k = Math.max(0, fromBucket); k < toBucket; k++) rows.push({ time: EPOCH_MS + k * SIM_STEP_SECONDS * 1000, value: values[k]! });
    return cleanSeries(rows, `shard:${shardId}:load`);
  }

  /** The daily retrain at `now` (seconds from the epoch, a bucket boundary). */
  async retrain(now: number): Promise<void> {
    const started = performance.now();
    const nowBucket = Math.floor(now / SIM_STEP_SECONDS);
    const from = nowBucket - Math.round((this.options.trainingDays * 86_400) / SIM_STEP_SECONDS);
    for (const shardId of this.loads.keys()) {
      const id = `shard:${shardId}:load`;
      const model = await trainCleanSeries(id, this.series(shardId, from, nowBucket), {
        asOf: new Date(EPOCH_MS + now * 1000),
        trainingDays: this.options.trainingDays,
        budgetSeconds: this.options.budgetSeconds,
        searchSeconds: this.options.searchSeconds,
        initialParams: previousParams(this.models.get(shardId)),
      });
      this.models.set(shardId, model);
      this.trainings++;
    }
    this.trainSeconds += (performance.now() - started) / 1000;
  }

  /** The hourly forecast at `now`: FORECAST_STEPS (two hours) from the bucket starting at `now`. */
  forecast(now: number): void {
    const nowBucket = Math.floor(now / SIM_STEP_SECONDS);
    for (const [shardId, model] of this.models) {
      const start = Math.round((model.seriesStart!.getTime() - EPOCH_MS) / (SIM_STEP_SECONDS * 1000));
      const rows: ForecastRow[] = forecastCleanSeries(`shard:${shardId}:load`, model, this.series(shardId, start, nowBucket), new Date(EPOCH_MS + now * 1000));
      const trustworthy = model.status === 'trained' && ensembleBeatsNaive(model);
      this.latest.set(shardId, {
        issued: now,
        outlook: {
          steps: rows.map((r) => ({ point: r.yhat, lo80: r.lo80, hi80: r.hi80, lo95: r.lo95, hi95: r.hi95 })),
          trustworthy,
          ...(trustworthy ? {} : { untrustedBecause: model.status === 'trained' ? 'back-tests no better than seasonal naive' : String(model.scores?.reason ?? model.status) }),
        },
      });
      this.forecasts++;
    }
  }

  /** The latest forecast's steps from `now` on (fewer later in the hour), or undefined before any. */
  outlook(shardId: number, now: number): ShardOutlook | undefined {
    const f = this.latest.get(shardId);
    if (!f) return undefined;
    const skip = Math.round((now - f.issued) / SIM_STEP_SECONDS);
    if (skip >= f.outlook.steps.length) return undefined;
    return { ...f.outlook, steps: f.outlook.steps.slice(skip) };
  }
}

/** "Back-tests better than seasonal naive" (types.ts `trustworthy`): the ensemble's MASE under the baseline's. */
function ensembleBeatsNaive(model: StoredModel): boolean {
  const scores = model.scores as { models?: Record<string, { mase?: number }>; ensemble?: { mase?: number } } | undefined;
  const naive = scores?.models?.seasonal_naive?.mase;
  const ensemble = scores?.ensemble?.mase;
  if (naive === undefined || ensemble === undefined || !Number.isFinite(naive) || !Number.isFinite(ensemble)) return true;
  return ensemble < naive;
}
