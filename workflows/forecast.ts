import { proxyActivities, setCurrentDetails } from '@temporalio/workflow';
import type { createForecastingActivities } from '../activities/forecasting.js';
import { batchSummary, runInBatches } from '../src/forecasting/runs.js';
import type { ForecastingSummary, ForecastRunInput } from './messages.js';

type Activities = ReturnType<typeof createForecastingActivities>;

const LIST = { startToCloseTimeout: '1 minute', retry: { initialInterval: '2 seconds', maximumAttempts: 5 } } as const;
// A series' own failure is an outcome; a failed attempt is the catalog's or the worker's, retried for about a minute.
const FORECAST = {
  startToCloseTimeout: '10 minutes',
  heartbeatTimeout: '1 minute',
  retry: { initialInterval: '2 seconds', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: 6 },
} as const;

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
  return runInBatches('forecast', issuedAt, series, input, (batch) => forecastBatch.executeWithOptions({ ...FORECAST, summary: batchSummary('forecast', batch) }, [{ series: batch, issuedAt }]), setCurrentDetails);
}
