import { ParentClosePolicy, proxyActivities, setCurrentDetails, startChild, WorkflowIdReusePolicy } from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import { rebalanceWorkflowId } from './describe.js';
import type { createForecastingActivities } from '../activities/forecasting.js';
import { batchSummary, runInBatches } from '../src/forecasting/runs.js';
import type { ForecastingSummary, ForecastRunInput } from './messages.js';
import { validInput } from './validate.js';
import { forecastRunInputSchema } from '../src/inputs.js';

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
 * with the run's time as `issued_at`. Then it hands over to the rebalancer (workflow `rebalance`,
 * per planning.mode: carry out the plan, or only store it), which plans on these forecasts; a
 * rebalance run still going (its plan's actions wait for their start times) is left to finish.
 */
export async function forecastLoad(input: ForecastRunInput): Promise<ForecastingSummary> {
  validInput(forecastRunInputSchema, input);
  const issuedAt = new Date().toISOString(); // workflow time: a retried batch writes the same rows
  const series = await listForecastSeries.executeWithOptions({ ...LIST, summary: 'list series with a model' }, []);
  setCurrentDetails(`forecasting ${series.length} series in batches of ${input.batchSize}`);
  const summary = await runInBatches('forecast', issuedAt, series, input, (batch) => forecastBatch.executeWithOptions({ ...FORECAST, summary: batchSummary('forecast', batch) }, [{ series: batch, issuedAt }]), setCurrentDetails);
  const handOver = input.rebalance;
  if (!handOver || handOver.mode === 'off') return summary;
  const { mode, ...rest } = handOver;
  const workflowId = rebalanceWorkflowId(handOver.workflowIdPrefix);
  try {
    await startChild('rebalance', {
      workflowId,
      args: [{ ...rest, dryRun: mode === 'dry-run', trigger: 'schedule' as const }],
      parentClosePolicy: ParentClosePolicy.ABANDON,
      workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE,
      staticSummary: mode === 'dry-run' ? 'plan on the hourly forecast (dry run)' : 'plan on the hourly forecast and carry it out',
    });
    return { ...summary, rebalance: `started ${workflowId}${mode === 'dry-run' ? ' (dry run)' : ''}` };
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) return { ...summary, rebalance: `${workflowId} is still carrying out its plan: left to finish` };
    throw err;
  }
}
