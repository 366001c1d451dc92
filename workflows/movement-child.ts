import { ApplicationFailure, ChildWorkflowFailure, ParentClosePolicy, startChild, uuid4 } from '@temporalio/workflow';
import { SA_OPERATION, SA_PHASE, SA_SHARD, SA_TARGET_NODE } from '../src/search-attributes.js';
import { describeMovement, moveShardInput, moveWorkflowId, type MovementOperationInput, type MovementSettings } from './describe.js';

/**
 * Starts a movement workflow as a child that outlives its parent (ParentClosePolicy.ABANDON), with
 * the movement's usual id (one per shard) and search attributes; `why` ends its summary in the UI.
 * Throws WorkflowExecutionAlreadyStartedError when the shard is already being moved.
 */
export async function startMovementChild(op: MovementOperationInput, movement: MovementSettings, workflowIdPrefix: string | undefined, why: string) {
  const workflowId = moveWorkflowId(op.shardId, workflowIdPrefix);
  const movementId = `s${op.shardId}_${uuid4().replace(/-/g, '').slice(0, 10)}`;
  const targets = op.operation === 'split' ? op.splitTargets!.join(',') : op.targetNode;
  const child = await startChild('moveShard', {
    workflowId,
    args: [moveShardInput(op, { movementId, workflowId }, movement)],
    parentClosePolicy: ParentClosePolicy.ABANDON,
    typedSearchAttributes: [
      { key: SA_SHARD, value: op.shardId },
      { key: SA_OPERATION, value: op.operation! },
      { key: SA_PHASE, value: 'prepare' },
      ...(targets ? [{ key: SA_TARGET_NODE, value: targets }] : []),
    ],
    staticSummary: `${describeMovement(op)} (${why})`,
  });
  return { child, workflowId };
}

/** The innermost cause's message (a child's failure wraps the movement's own error). */
export function failureMessage(err: unknown): string {
  let e: unknown = err;
  while ((e instanceof ChildWorkflowFailure || e instanceof ApplicationFailure) && e.cause) e = e.cause;
  return e instanceof Error ? e.message : String(e);
}
