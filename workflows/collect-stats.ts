import { allHandlersFinished, condition, continueAsNew, log, proxyActivities, setCurrentDetails, sleep, workflowInfo } from '@temporalio/workflow';
import type { createCollectionActivities } from '../activities/collection.js';
import type { CollectStatsInput } from './messages.js';
import { validInput } from './validate.js';
import { collectStatsInputSchema } from '../src/inputs.js';

type Activities = ReturnType<typeof createCollectionActivities>;

// A round must not outlive its interval by much: a hung node is given up on and sampled next time.
const { collectSamples, maintainPartitions } = proxyActivities<Activities>({
  startToCloseTimeout: '20 seconds',
  retry: { initialInterval: '1 second', maximumInterval: '10 seconds', maximumAttempts: 3 },
});

/**
 * The statistics collector (DESIGN §4): every `intervalSeconds`, one sample of every node, for as
 * long as Shardcast runs. Durable by construction: samples hold raw counters, so a new worker (or a
 * new run after continue-as-new) just takes the next sample. Partitions are kept once an hour.
 */
export async function collectStats(input: CollectStatsInput): Promise<void> {
  validInput(collectStatsInputSchema, input);
  const rounds = input.roundsPerRun ?? 500;
  const maintainEvery = Math.max(1, Math.round(3600 / input.intervalSeconds));
  for (let i = 0; i < rounds; i++) {
    if (i % maintainEvery === 0) await maintainPartitions(input.retentionDays);
    const started = Date.now(); // workflow time: deterministic
    const results = await collectSamples();
    const failed = results.filter((r) => !r.ok);
    for (const f of failed) log.warn('node not sampled', { node: f.node, error: f.error });
    setCurrentDetails(`round ${i + 1} of this run: ${results.length - failed.length} of ${results.length} nodes sampled${failed.length ? `; failed: ${failed.map((f) => f.node).join(', ')}` : ''}`);
    const wait = input.intervalSeconds * 1000 - (Date.now() - started);
    if (wait > 0) await sleep(wait);
    if (workflowInfo().continueAsNewSuggested) break;
  }
  await condition(allHandlersFinished);
  await continueAsNew<typeof collectStats>(input);
}
