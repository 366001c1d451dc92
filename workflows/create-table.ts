import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  log,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
} from '@temporalio/workflow';
import type { createActivities } from '../activities/index.js';
import { BUSINESS_ERROR_TYPES } from '../src/errors.js';
import { SA_PHASE } from '../src/search-attributes.js';
import {
  createTableProgressQuery,
  type CreateTableInput,
  type CreateTablePhase,
  type CreateTableProgress,
  type CreateTableResult,
} from './messages.js';
import { validInput } from './validate.js';
import { createTableInputSchema } from '../src/inputs.js';

type Activities = ReturnType<typeof createActivities>;

const NON_RETRYABLE_ERRORS = [...BUSINESS_ERROR_TYPES];

const CATALOG_ACTIVITY = {
  startToCloseTimeout: '1 minute',
  retry: { maximumAttempts: 10, initialInterval: '500 ms', maximumInterval: '10 seconds', nonRetryableErrorTypes: NON_RETRYABLE_ERRORS },
} as const;

const COMPENSATION_ACTIVITY = {
  startToCloseTimeout: '1 minute',
  retry: { maximumAttempts: 20, initialInterval: '500 ms', maximumInterval: '10 seconds', nonRetryableErrorTypes: NON_RETRYABLE_ERRORS },
} as const;

const catalog = proxyActivities<Activities>(CATALOG_ACTIVITY);
const compensation = proxyActivities<Activities>(COMPENSATION_ACTIVITY);

/**
 * Creates a distributed table: registers it in the catalog (invisible to routers), creates its shard
 * schemas and tables on every node that holds a shard (one retried activity per node), then makes it
 * visible. If any node fails for good, what was created on the others and the catalog rows are removed.
 */
export async function createDistributedTable(input: CreateTableInput): Promise<CreateTableResult> {
  validInput(createTableInputSchema, input);
  const progress: CreateTableProgress = { phase: 'register', nodesDone: [], nodesFailed: [] };
  setHandler(createTableProgressQuery, () => progress);
  const enter = (phase: CreateTablePhase, details: string): void => {
    progress.phase = phase;
    upsertSearchAttributes([{ key: SA_PHASE, value: phase }]);
    setCurrentDetails(details);
  };

  const perNodeOptions = {
    startToCloseTimeout: '5 minutes',
    retry: {
      maximumAttempts: input.nodeRetry.maximumAttempts,
      initialInterval: input.nodeRetry.initialIntervalMs,
      backoffCoefficient: 2,
      maximumInterval: '30 seconds',
      nonRetryableErrorTypes: NON_RETRYABLE_ERRORS,
    },
  } as const;
  const perNode = proxyActivities<Activities>(perNodeOptions);

  const compensations: Array<{ what: string; run: () => Promise<void> }> = [];
  const { spec } = input;
  try {
    enter('register', `registering table ${spec.name} in the catalog`);
    const table = await catalog.registerTable.executeWithOptions({ ...CATALOG_ACTIVITY, summary: `register ${spec.name} in the catalog` }, [spec]);
    compensations.unshift({
      what: 'catalog rows',
      run: () => compensation.unregisterTable.executeWithOptions({ ...COMPENSATION_ACTIVITY, summary: `undo: remove ${spec.name} from the catalog` }, [table.tableId]),
    });

    const nodeNames = new Map(table.shards.map((s) => [s.nodeId, s.nodeName]));
    enter('create-on-nodes', `creating ${table.shards.length} shard(s) of ${spec.name} on ${table.nodeIds.length} node(s)`);
    const outcomes = await Promise.allSettled(
      table.nodeIds.map(async (nodeId) => {
        const name = nodeNames.get(nodeId) ?? String(nodeId);
        const count = table.shards.filter((s) => s.nodeId === nodeId).length;
        await perNode.createTableOnNode.executeWithOptions({ ...perNodeOptions, summary: `create ${spec.name} in ${count} shard(s) on ${name}` }, [
          { tableId: table.tableId, nodeId },
        ]);
        progress.nodesDone.push(name);
        compensations.unshift({
          what: `shards on ${name}`,
          run: () =>
            compensation.dropTableOnNode.executeWithOptions({ ...COMPENSATION_ACTIVITY, summary: `undo: drop ${spec.name} on ${name}` }, [
              { tableId: table.tableId, nodeId, dropSchemas: table.newGroup },
            ]),
        });
        setCurrentDetails(`created on ${progress.nodesDone.length}/${table.nodeIds.length} node(s)`);
      }),
    );
    const failures = outcomes.flatMap((o, i) => (o.status === 'rejected' ? [{ node: nodeNames.get(table.nodeIds[i]!) ?? '?', error: o.reason as Error }] : []));
    if (failures.length > 0) {
      progress.nodesFailed = failures.map((f) => f.node);
      const first = failures[0]!;
      throw ApplicationFailure.create({
        type: 'NodeFailed',
        nonRetryable: true,
        message: `node ${failures.map((f) => f.node).join(', ')} failed for good: ${rootMessage(first.error)}`,
        cause: first.error,
      });
    }

    enter('activate', `making ${spec.name} visible to routers`);
    const { mapVersion } = await catalog.activateTable.executeWithOptions({ ...CATALOG_ACTIVITY, summary: `make ${spec.name} visible to routers` }, [table.tableId]);
    enter('done', `${spec.name}: ${table.shards.length} shard(s) on ${table.nodeIds.length} node(s), map version ${mapVersion}`);
    return {
      table: spec.name,
      tableId: table.tableId,
      group: table.groupName,
      newGroup: table.newGroup,
      shards: table.shards.length,
      nodes: [...new Set(table.shards.map((s) => s.nodeName))].sort(),
      mapVersion,
    };
  } catch (err) {
    enter('compensate', `undoing: ${compensations.map((c) => c.what).join(', ') || 'nothing was created'}`);
    await CancellationScope.nonCancellable(async () => {
      for (const step of compensations) {
        try {
          await step.run();
        } catch (compErr) {
          log.error('compensation failed', { step: step.what, error: rootMessage(compErr) });
        }
      }
    });
    enter('failed', `create table ${spec.name} failed; compensated`);
    throw ApplicationFailure.create({
      type: 'TableCreationFailed',
      nonRetryable: true,
      message: `create table ${spec.name} failed and was undone: ${rootMessage(err)}`,
      cause: err as Error,
    });
  }
}

/** The words of the failure that started it all: the innermost typed failure below our own wrappers. */
function rootMessage(err: unknown): string {
  let message = err instanceof Error ? err.message : String(err);
  for (let cause: unknown = err; cause; cause = (cause as { cause?: unknown }).cause) {
    if (cause instanceof ActivityFailure) continue;
    if (cause instanceof ApplicationFailure && !OWN_FAILURES.has(cause.type ?? '')) return cause.message;
    if (cause instanceof Error) message = cause.message;
  }
  return message;
}

const OWN_FAILURES = new Set(['NodeFailed', 'TableCreationFailed']);
