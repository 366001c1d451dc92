import { ActivityFailure, ApplicationFailure, CancellationScope, isCancellation, proxyActivities, setCurrentDetails, TimeoutFailure } from '@temporalio/workflow';
import type { createPlanningActivities } from '../activities/planning.js';
import { scaleOutInputSchema } from '../src/inputs.js';
import type { ScaleOutInput, ScaleOutResult } from './messages.js';
import { validInput } from './validate.js';

type Activities = ReturnType<typeof createPlanningActivities>;

/**
 * Every step heartbeats while it works (also while it waits for the provisioner): a step whose worker
 * died is retried once its heartbeat is this late, not after its start-to-close timeout (minutes).
 */
const HEARTBEAT_TIMEOUT = '10 seconds';

/** Rounds of a step whose attempts were all lost (see unlessLost) before the step counts as failed. */
const LOST_ROUNDS = 5;

const { releaseProvisionedNode } = proxyActivities<Activities>({
  startToCloseTimeout: '11 minutes',
  heartbeatTimeout: HEARTBEAT_TIMEOUT,
  retry: { initialInterval: '2 seconds', maximumInterval: '1 minute', maximumAttempts: 20 },
});

/**
 * Scale-out through the provisioner (planning.provisioner: a command or a webhook): the provisioner
 * makes a node, which is registered standby, checked (it answers and can host shards) and activated.
 * A saga: whatever fails after the provisioner was asked — its error or time-out, a node that does
 * not answer — removes the registered node (nothing is left half active) and asks the provisioner
 * to release what it made for this request. Returns the new node's name. A worker killed at any
 * step: another worker retries that step once its heartbeat is late (HEARTBEAT_TIMEOUT).
 */
export async function scaleOut(input: ScaleOutInput): Promise<ScaleOutResult> {
  validInput(scaleOutInputSchema, input);
  const { provisionNode } = proxyActivities<Activities>({
    startToCloseTimeout: `${input.provisionTimeoutSeconds + 60} seconds`,
    heartbeatTimeout: HEARTBEAT_TIMEOUT,
    retry: { initialInterval: '2 seconds', maximumInterval: '30 seconds', maximumAttempts: 3 },
  });
  const { setNodeLifecycle } = proxyActivities<Activities>({
    startToCloseTimeout: '1 minute',
    heartbeatTimeout: HEARTBEAT_TIMEOUT,
    retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '10 seconds', maximumAttempts: input.activationAttempts ?? 5 },
  });
  let node: string | undefined;
  try {
    setCurrentDetails(`asking the provisioner for a node (request ${input.request.requestId})`);
    node = (await unlessLost(() => provisionNode(input.request))).node;
    setCurrentDetails(`activating ${node}`);
    const activated = node;
    await unlessLost(() => setNodeLifecycle({ node: activated, to: 'active' }));
    return { node, outcome: `${node} provisioned and active` };
  } catch (err) {
    const why = failureMessage(err);
    const undone = await CancellationScope.nonCancellable(() => releaseProvisionedNode({ request: input.request, ...(node ? { node } : {}) }));
    if (isCancellation(err)) throw err;
    throw ApplicationFailure.create({ type: 'ScaleOutFailed', nonRetryable: true, message: `scale-out failed: ${why}; ${undone || 'nothing was registered'}` });
  }
}

/**
 * Runs a step again (up to LOST_ROUNDS times) when its last attempt was lost — timed out on its
 * heartbeat: its worker died, stalled or lost Temporal. That is no answer from the provisioner or
 * the node, so it does not spend the step's own attempts (the provisioner's failures, the
 * activation's checks): a stalled worker's open polls take retries too, each lost 10 s later.
 */
async function unlessLost<T>(step: () => Promise<T>): Promise<T> {
  for (let round = 1; ; round++) {
    try {
      return await step();
    } catch (err) {
      const lost = err instanceof ActivityFailure && err.cause instanceof TimeoutFailure && err.cause.timeoutType === 'HEARTBEAT';
      if (!lost || round >= LOST_ROUNDS) throw err;
    }
  }
}

/** The activity's own error message (its ApplicationFailure), not the wrapper's nor the low-level cause's. */
function failureMessage(err: unknown): string {
  let e: unknown = err;
  while (e instanceof ActivityFailure && e.cause) e = e.cause;
  return e instanceof Error ? e.message : String(e);
}
