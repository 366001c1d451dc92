import { proxyActivities, setCurrentDetails } from '@temporalio/workflow';
import type { createForecastingActivities } from '../activities/forecasting.js';
import { batches, describeSummary, runBounded, summarise } from '../src/forecasting/runs.js';
import type { ForecastingSummary, RetrainInput } from './messages.js';

type Activities = ReturnType<typeof createForecastingActivities>;

const LIST = { startToCloseTimeout: '2 minutes', retry: { initialInterval: '2 seconds', maximumAttempts: 5 } } as const;
// Fits are CPU-bound and can hold the event loop for a few seconds; a batch heartbeats after each
// series, so the heartbeat timeout covers the slowest series, the start-to-close a whole batch.
const TRAIN = { startToCloseTimeout: '1 hour', heartbeatTimeout: '3 minutes', retry: { initialInterval: '5 seconds', maximumAttempts: 3 } } as const;

const { listTrainingSeries, trainBatch } = proxyActivities<Activities>(LIST);

/**
 * Daily retraining (DESIGN §4), started by the schedule `shardcast-retrain-daily`: every series
 * with data in the training window, in batches spread over the workers of the queue, at most
 * `parallelBatches` at once. A series that fails is counted, never fails the run.
 */
export async function retrainModels(input: RetrainInput): Promise<ForecastingSummary> {
  const asOf = new Date().toISOString(); // workflow time: the same on replay and retries
  const series = await listTrainingSeries.executeWithOptions({ ...LIST, summary: `list series of the last ${input.trainingDays} days` }, [{ asOf, trainingDays: input.trainingDays }]);
  setCurrentDetails(`training ${series.length} series in batches of ${input.batchSize}`);
  const outcomes = await runBounded(
    batches(series, input.batchSize),
    input.parallelBatches,
    (batch) =>
      trainBatch.executeWithOptions({ ...TRAIN, summary: `train ${batch.length} series: ${batch[0]}${batch.length > 1 ? ' …' : ''}` }, [
        { series: batch, asOf, trainingDays: input.trainingDays, budgetSeconds: input.budgetSeconds },
      ]),
    (done) => setCurrentDetails(describeSummary(summarise('retrain', asOf, series.length, done), done.length)),
  );
  const summary = summarise('retrain', asOf, series.length, outcomes);
  setCurrentDetails(describeSummary(summary));
  return summary;
}
