import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { WorkflowState } from '../src/movement/doctor.js';

/** A movement workflow's state as the doctor needs it: running, closed (any way), or no longer known to Temporal. */
export function workflowStateOf(client: Client): (workflowId: string) => Promise<Exclude<WorkflowState, 'unknown'>> {
  return async (workflowId) => {
    try {
      const description = await client.workflow.getHandle(workflowId).describe();
      return description.status.name === 'RUNNING' ? 'running' : 'closed';
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return 'not-found';
      throw err;
    }
  };
}
