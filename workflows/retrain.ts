import { proxyActivities, setCurrentDetails } from '@temporalio/workflow';
import type { createForecastingActivities } from '../activities/forecasting.js';
import { batchSummary, runInBatches } from '../src/forecasting/runs.js';
import type { ForecastingSummary, RetrainInput } from './messages.js';
import { validInput } from './validate.js';
import { retrainInputSchema } from '../src/inputs.js';

type Activities = ReturnType<typeof createForecastingActivities>;

const LIST = { startToCloseTimeout: '2 minutes', retry: { initialInterval: '2 seconds', maximumAttempts: 5 } } as const;
// Fits run in training threads and a batch heartbeats every few seconds, so a minute without one is
// a lost worker. A series' own failure is an outcome, so a failed attempt is the catalog's or the
// worker's: retried for several minutes of outage, resuming after the last series done.
const TRAIN = {
  startToCloseTimeout: '1 hour',
  heartbeatTimeout: '1 minute',
  retry: { initialInterval: '5 seconds', backoffCoefficient: 2, maximumInterval: '1 minute', maximumAttempts: 10 },
} as const;

const { listTrainingSeries, trainBatch } = proxyActivities<Activities>(LIST);

/**
 * Daily retraining (DESIGN §4), started by the schedule `shardcast-retrain-daily`: every series
 * with data in the training window, in batches spread over the workers of the queue, at most
 * `parallelBatches` at once. A series that fails is counted, never fails the run.
 */
export async function retrainModels(input: RetrainInput): Promise<ForecastingSummary> {
  validInput(retrainInputSchema, input);
  const asOf = new Date().toISOString(); // workflow time: the same on replay and retries
  const series = await listTrainingSeries.executeWithOptions({ ...LIST, summary: `list series of the last ${input.trainingDays} days` }, [{ asOf, trainingDays: input.trainingDays }]);
  setCurrentDetails(`training ${series.length} series in batches of ${input.batchSize}`);
  return runInBatches(
    'retrain',
    asOf,
    series,
    input,
    (batch) =>
      trainBatch.executeWithOptions({ ...TRAIN, summary: batchSummary('train', batch) }, [
        { series: batch, asOf, trainingDays: input.trainingDays, budgetSeconds: input.budgetSeconds, searchSeconds: input.searchSeconds },
      ]),
    setCurrentDetails,
  );
}
