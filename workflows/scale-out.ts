import { ActivityFailure, ApplicationFailure, CancellationScope, isCancellation, proxyActivities, setCurrentDetails } from '@temporalio/workflow';
import type { createPlanningActivities } from '../activities/planning.js';
import { scaleOutInputSchema } from '../src/inputs.js';
import type { ScaleOutInput, ScaleOutResult } from './messages.js';
import { validInput } from './validate.js';

type Activities = ReturnType<typeof createPlanningActivities>;

const { releaseProvisionedNode } = proxyActivities<Activities>({
  startToCloseTimeout: '11 minutes',
  retry: { initialInterval: '2 seconds', maximumInterval: '1 minute', maximumAttempts: 20 },
});

/**
 * Scale-out through the provisioner (planning.provisioner: a command or a webhook): the provisioner
 * makes a node, which is registered standby, checked (it answers and can host shards) and activated.
 * A saga: whatever fails after the provisioner was asked — its error or time-out, a node that does
 * not answer — removes the registered node (nothing is left half active) and asks the provisioner
 * to release what it made for this request. Returns the new node's name.
 */
export async function scaleOut(input: ScaleOutInput): Promise<ScaleOutResult> {
  validInput(scaleOutInputSchema, input);
  const { provisionNode } = proxyActivities<Activities>({
    startToCloseTimeout: `${input.provisionTimeoutSeconds + 60} seconds`,
    retry: { initialInterval: '2 seconds', maximumInterval: '30 seconds', maximumAttempts: 3 },
  });
  const { setNodeLifecycle } = proxyActivities<Activities>({
    startToCloseTimeout: '1 minute',
    retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '10 seconds', maximumAttempts: input.activationAttempts ?? 5 },
  });
  let node: string | undefined;
  try {
    setCurrentDetails(`asking the provisioner for a node (request ${input.request.requestId})`);
    node = (await provisionNode(input.request)).node;
    setCurrentDetails(`activating ${node}`);
    await setNodeLifecycle({ node, to: 'active' });
    return { node, outcome: `${node} provisioned and active` };
  } catch (err) {
    const why = failureMessage(err);
    const undone = await CancellationScope.nonCancellable(() => releaseProvisionedNode({ request: input.request, ...(node ? { node } : {}) }));
    if (isCancellation(err)) throw err;
    throw ApplicationFailure.create({ type: 'ScaleOutFailed', nonRetryable: true, message: `scale-out failed: ${why}; ${undone || 'nothing was registered'}` });
  }
}

/** The activity's own error message (its ApplicationFailure), not the wrapper's nor the low-level cause's. */
function failureMessage(err: unknown): string {
  let e: unknown = err;
  while (e instanceof ActivityFailure && e.cause) e = e.cause;
  return e instanceof Error ? e.message : String(e);
}
