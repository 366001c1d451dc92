import { ActivityFailure, ApplicationFailure, condition, proxyActivities, setCurrentDetails, setHandler, upsertSearchAttributes } from '@temporalio/workflow';
import type { createTableDropActivities } from '../activities/drop-table.js';
import { BUSINESS_ERROR_TYPES } from '../src/errors.js';
import { dropTableInputSchema } from '../src/inputs.js';
import { approvalReason } from '../src/movement/approval.js';
import { SA_PHASE } from '../src/search-attributes.js';
import { approveSignal, dropTableProgressQuery, rejectSignal, type DropTableInput, type DropTablePhase, type DropTableProgress, type DropTableResult } from './messages.js';
import { validInput } from './validate.js';

type Activities = ReturnType<typeof createTableDropActivities>;

const NON_RETRYABLE = [...BUSINESS_ERROR_TYPES];

const CATALOG = {
  startToCloseTimeout: '1 minute',
  retry: { initialInterval: '500 ms', maximumInterval: '10 seconds', maximumAttempts: 10, nonRetryableErrorTypes: NON_RETRYABLE },
};
// Past the point of no return a node is waited for: the drop finishes rather than stop half-way.
const ON_NODE = {
  startToCloseTimeout: '5 minutes',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute', maximumAttempts: 30, nonRetryableErrorTypes: NON_RETRYABLE },
};

const catalog = proxyActivities<Activities>(CATALOG);
const onNode = proxyActivities<Activities>(ON_NODE);

/**
 * Drops a distributed table (`shardcast tables drop`; src/catalog/drop-table.ts): checks it (exists,
 * no movement of its group runs), waits at the movements' approval gate (`shardcast approve` /
 * `reject` with this workflow's id), then makes it 'dropping' (invisible to routers; no movement of
 * its group starts), drops it on every node that holds a shard of its group, and removes its catalog
 * rows. One table of a colocation group goes alone; the group's last takes the shards and the group.
 * Before 'dropping' a refusal changes nothing; after it, the drop only goes forward (a failed run is
 * finished by running the drop again).
 */
export async function dropDistributedTable(input: DropTableInput): Promise<DropTableResult> {
  validInput(dropTableInputSchema, input);
  const progress: DropTableProgress = { phase: 'check', approved: false, approvalReason: null, nodesDone: [] };
  let rejected = false;
  setHandler(dropTableProgressQuery, () => progress);
  setHandler(approveSignal, () => void (progress.approved = true));
  setHandler(rejectSignal, () => void (rejected = true));
  const enter = (phase: DropTablePhase, details: string): void => {
    progress.phase = phase;
    upsertSearchAttributes([{ key: SA_PHASE, value: phase }]);
    setCurrentDetails(details);
  };

  enter('check', `checking table ${input.table}`);
  const plan = await oneLine(() => catalog.planTableDrop.executeWithOptions({ ...CATALOG, summary: `check ${input.table}` }, [input.table]));
  const what = `drop table ${input.table}${plan.otherTables.length ? ` (group ${plan.group} keeps ${plan.otherTables.join(', ')})` : ` and its group ${plan.group} (${plan.shards} shard(s))`}`;

  progress.approvalReason = approvalReason(input, plan.bytes, new Date())?.replace('every movement', 'every movement and table drop') ?? null;
  if (progress.approvalReason) {
    enter('approval', `waiting for approve or reject (${what}): ${progress.approvalReason}`);
    const decided = await condition(() => progress.approved || rejected, input.approvalTimeoutSeconds ? input.approvalTimeoutSeconds * 1000 : undefined);
    if (!decided && input.approvalTimeoutAction === 'approve') progress.approved = true;
    if (rejected || !progress.approved) {
      enter('rejected', `${what}: ${rejected ? 'rejected' : 'not approved in time'}; nothing was changed`);
      throw ApplicationFailure.create({ type: 'MovementRejected', nonRetryable: true, message: `${what}: ${rejected ? 'rejected' : 'not approved in time'}; nothing was changed` });
    }
  }

  enter('drop-on-nodes', `${what}: hiding it from routers`);
  await oneLine(() => catalog.beginTableDrop.executeWithOptions({ ...CATALOG, summary: `mark ${input.table} as dropping` }, [plan.tableId]));
  setCurrentDetails(`${what}: on ${plan.nodes.length} node(s)`);
  const left = await Promise.all(
    plan.nodes.map(async (node) => {
      const r = await onNode.dropTableOnShardNode.executeWithOptions({ ...ON_NODE, summary: `drop ${input.table} on ${node.name}` }, [{ tableId: plan.tableId, nodeId: node.id }]);
      progress.nodesDone.push(node.name);
      return r.schemasLeft;
    }),
  ).catch((err: unknown) => {
    const message = `${what}: failed on a node (${causeMessage(err)}); the table is hidden and stays 'dropping': run the drop again to finish it`;
    enter('failed', message);
    throw ApplicationFailure.create({ type: 'TableDropFailed', nonRetryable: true, message, cause: err instanceof Error ? err : undefined });
  });

  enter('unregister', `${what}: removing its catalog rows`);
  const done = await catalog.unregisterDroppedTable.executeWithOptions({ ...CATALOG, summary: `remove ${input.table} from the catalog` }, [plan.tableId]);
  const schemasLeft = left.flat();
  enter('done', `${what}: done${schemasLeft.length ? `; schemas left because they hold other objects: ${schemasLeft.join(', ')}` : ''}`);
  return {
    table: input.table,
    group: plan.group,
    groupDropped: plan.otherTables.length === 0,
    shards: plan.shards,
    nodes: plan.nodes.map((n) => n.name).sort(),
    bytes: plan.bytes,
    schemasLeft,
    mapVersion: done.mapVersion,
  };
}

/** A refused step (unknown table, a movement running) fails the run with the refusal's own words and type. */
async function oneLine<T>(step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (err) {
    let type: string | undefined;
    for (let e: unknown = err; e instanceof Error; e = (e as { cause?: unknown }).cause) if (e instanceof ApplicationFailure && e.type) type ??= e.type;
    throw ApplicationFailure.create({ type: type ?? 'TableDropFailed', nonRetryable: true, message: causeMessage(err), cause: err instanceof Error ? err : undefined });
  }
}

function causeMessage(err: unknown): string {
  for (let e: unknown = err; e instanceof Error; e = (e as { cause?: unknown }).cause) if (!(e instanceof ActivityFailure)) return e.message;
  return String(err);
}
