import { proxyActivities, setCurrentDetails } from '@temporalio/workflow';
import type { createForecastingActivities } from '../activities/forecasting.js';
import { batches, describeSummary, runBounded, summarise } from '../src/forecasting/runs.js';
import type { ForecastingSummary, ForecastRunInput } from './messages.js';

type Activities = ReturnType<typeof createForecastingActivities>;

const LIST = { startToCloseTimeout: '1 minute', retry: { initialInterval: '2 seconds', maximumAttempts: 5 } } as const;
const FORECAST = { startToCloseTimeout: '10 minutes', heartbeatTimeout: '1 minute', retry: { initialInterval: '2 seconds', maximumAttempts: 3 } } as const;

const { listForecastSeries, forecastBatch } = proxyActivities<Activities>(LIST);

/**
 * Hourly forecasting (DESIGN §4), started by the schedule `shardcast-forecast-hourly`: the next
 * hour of every series with a model, in twelve 5-minute steps with 80% and 95% intervals, stored
 * with the run's time as `issued_at`. Planning takes over from here once it exists; until then
 * the run ends with its summary.
 */
export async function forecastLoad(input: ForecastRunInput): Promise<ForecastingSummary> {
  const issuedAt = new Date().toISOString(); // workflow time: a retried batch writes the same rows
  const series = await listForecastSeries.executeWithOptions({ ...LIST, summary: 'list series with a model' }, []);
  setCurrentDetails(`forecasting ${series.length} series in batches of ${input.batchSize}`);
  const outcomes = await runBounded(
    batches(series, input.batchSize),
    input.parallelBatches,
    (batch) => forecastBatch.executeWithOptions({ ...FORECAST, summary: `forecast ${batch.length} series: ${batch[0]}${batch.length > 1 ? ' …' : ''}` }, [{ series: batch, issuedAt }]),
    (done) => setCurrentDetails(describeSummary(summarise('forecast', issuedAt, series.length, done), done.length)),
  );
  const summary = summarise('forecast', issuedAt, series.length, outcomes);
  setCurrentDetails(describeSummary(summary));
  return summary;
}
