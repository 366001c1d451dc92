import { ApplicationFailure, proxyActivities, setCurrentDetails } from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { createPlanningActivities } from '../activities/planning.js';
import { isolateKeyInputSchema } from '../src/inputs.js';
import { describeMovement, moveWorkflowId, type MovementOperationInput } from './describe.js';
import { failureMessage, startMovementChild } from './movement-child.js';
import type { IsolateKeyInput, IsolateKeyResult, MoveShardResult } from './messages.js';
import { validInput } from './validate.js';

type Activities = ReturnType<typeof createPlanningActivities>;

const { planKeyIsolation } = proxyActivities<Activities>({
  startToCloseTimeout: '1 minute',
  retry: { initialInterval: '1 second', maximumInterval: '30 seconds', maximumAttempts: 10 },
});

/**
 * Tenant isolation (src/profiling/tenants.ts): the key's shard is split once or twice by movement
 * workflows (children that outlive this run, with the movement approval policy), so that the key's
 * hash (or integer key) gets a shard of its own on the target node and the rest of the old shard
 * stays where it was. The plan is made once, at the start; a split that fails stops the isolation
 * (the movement workflow has undone its own part, and the shards are whole again either way).
 */
export async function isolateKey(input: IsolateKeyInput): Promise<IsolateKeyResult> {
  validInput(isolateKeyInputSchema, input);
  const plan = await planKeyIsolation({ table: input.table, key: input.key, ...(input.targetNode ? { targetNode: input.targetNode } : {}) });
  setCurrentDetails(`key ${plan.key} of ${plan.table}: ${plan.piece} out of shard ${plan.shardId} on ${plan.sourceNode}, onto ${plan.targetNode} (${plan.steps.length} split(s))`);
  const splits: string[] = [];
  let halves: number[] = [];
  for (const step of plan.steps) {
    const shardId = step.shard === 'upper' ? halves[1]! : step.shard;
    const op: MovementOperationInput = { operation: 'split', shardId, splitTargets: step.targets, splitAt: step.at };
    const workflowId = moveWorkflowId(shardId, input.workflowIdPrefix);
    let child;
    try {
      ({ child } = await startMovementChild(op, input.movement, input.workflowIdPrefix, `isolating key ${plan.key} of ${plan.table}`));
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) {
        throw ApplicationFailure.create({ type: 'AlreadyExistsError', nonRetryable: true, message: `shard ${shardId} is already being moved, split or merged (workflow ${workflowId}): isolate key ${plan.key} once it is done` });
      }
      throw err;
    }
    let r: MoveShardResult;
    try {
      r = (await child.result()) as MoveShardResult;
    } catch (err) {
      throw ApplicationFailure.create({
        type: 'IsolationFailed',
        nonRetryable: true,
        message: `isolating key ${plan.key} of ${plan.table}: ${describeMovement(op)} failed${splits.length > 0 ? ` after ${splits.join('; ')}` : ''}: ${failureMessage(err)}`,
      });
    }
    halves = r.shards ?? [];
    splits.push(`${describeMovement(op)}: shards ${halves.join(' and ')}, writes blocked ${r.cutoverBlockedMs} ms`);
  }
  const shardId = halves[plan.keyHalf]!;
  const node = plan.steps.at(-1)!.targets[plan.keyHalf];
  return { table: plan.table, key: plan.key, shardId, node, piece: plan.piece, splits };
}
