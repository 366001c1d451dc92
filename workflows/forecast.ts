import { isCancellation, log, ParentClosePolicy, patched, proxyActivities, setCurrentDetails, startChild, WorkflowIdReusePolicy } from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import { rebalanceWorkflowId } from './describe.js';
import type { createForecastingActivities } from '../activities/forecasting.js';
import type { createTemperatureActivities } from '../activities/temperature.js';
import { batchSummary, runInBatches } from '../src/forecasting/runs.js';
import type { ForecastingSummary, ForecastRunInput } from './messages.js';
import { validInput } from './validate.js';
import { forecastRunInputSchema } from '../src/inputs.js';

type Activities = ReturnType<typeof createForecastingActivities> & ReturnType<typeof createTemperatureActivities>;

const LIST = { startToCloseTimeout: '1 minute', retry: { initialInterval: '2 seconds', maximumAttempts: 5 } } as const;
// A series' own failure is an outcome; a failed attempt is the catalog's or the worker's, retried for about a minute.
const FORECAST = {
  startToCloseTimeout: '10 minutes',
  heartbeatTimeout: '1 minute',
  retry: { initialInterval: '2 seconds', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: 6 },
} as const;

// The classification reads a day of per-minute counts per table; a few tries, then the run goes on without it.
const TEMPERATURE = { startToCloseTimeout: '5 minutes', retry: { initialInterval: '2 seconds', maximumAttempts: 3 } } as const;

const { listForecastSeries, forecastBatch, refreshTemperatures } = proxyActivities<Activities>(LIST);

/**
 * Hourly forecasting (DESIGN §4), started by the schedule `shardcast-forecast-hourly`: the next
 * two hours of every series with a model, in 24 5-minute steps with 80% and 95% intervals, stored
 * with the run's time as `issued_at`; then the shards' temperature (hot, warm, cold) is classified
 * again from the workload profile and the new forecasts. Then it hands over to the rebalancer (workflow `rebalance`,
 * per planning.mode: carry out the plan, or only store it), which plans on these forecasts; a
 * rebalance run still going (its plan's actions wait for their start times) is left to finish.
 */
export async function forecastLoad(input: ForecastRunInput): Promise<ForecastingSummary> {
  validInput(forecastRunInputSchema, input);
  const issuedAt = new Date().toISOString(); // workflow time: a retried batch writes the same rows
  const series = await listForecastSeries.executeWithOptions({ ...LIST, summary: 'list series with a model' }, []);
  setCurrentDetails(`forecasting ${series.length} series in batches of ${input.batchSize}`);
  const summary = await runInBatches('forecast', issuedAt, series, input, (batch) => forecastBatch.executeWithOptions({ ...FORECAST, summary: batchSummary('forecast', batch) }, [{ series: batch, issuedAt }]), setCurrentDetails);
  // Histories recorded before the classification existed replay without it.
  if (patched('temperature-after-forecast')) {
    try {
      const tables = await refreshTemperatures.executeWithOptions({ ...TEMPERATURE, summary: 'classify shards hot / warm / cold' }, [{ asOf: issuedAt }]);
      summary.temperature = tables.length ? tables.map((t) => `${t.table}: ${t.hot} hot, ${t.warm} warm, ${t.cold} cold`).join('; ') : 'no table with accesses in the last 24 h';
    } catch (err) {
      if (isCancellation(err)) throw err;
      // A failed classification must not hold back the rebalancer: the key map stays as last refreshed.
      summary.temperature = `failed: ${err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err)}`;
      log.warn('temperature not refreshed', { error: summary.temperature });
    }
  }
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
