import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  condition,
  isCancellation,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
} from '@temporalio/workflow';
import type { createActivities } from '../activities/index.js';
import { BUSINESS_ERROR_TYPES } from '../src/errors.js';
import { restoreInputSchema } from '../src/inputs.js';
import { restoreColumnsDdl } from '../src/restore/ddl.js';
import { SA_PHASE } from '../src/search-attributes.js';
import { approveSignal, rejectSignal, restoreProgressQuery, type RestoreInput, type RestorePhase, type RestoreProgress, type RestoreResult } from './messages.js';
import { validInput } from './validate.js';

type Activities = ReturnType<typeof createActivities>;

const NON_RETRYABLE = [...BUSINESS_ERROR_TYPES];

const CATALOG = {
  startToCloseTimeout: '1 minute',
  retry: { initialInterval: '500 ms', maximumInterval: '10 seconds', maximumAttempts: 10, nonRetryableErrorTypes: NON_RETRYABLE },
};
/** Reading the whole backup once (sha256 of every file; a pg_dump's rows for their digest). */
const CHECK = {
  startToCloseTimeout: '2 hours',
  heartbeatTimeout: '30 seconds',
  retry: { initialInterval: '1 second', maximumInterval: '30 seconds', maximumAttempts: 5, nonRetryableErrorTypes: NON_RETRYABLE },
};
const ON_NODE = {
  startToCloseTimeout: '10 minutes',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: 10, nonRetryableErrorTypes: NON_RETRYABLE },
};
/** An import unit or a node's index build: long, heartbeating; a retry repeats only what the ledger says is not committed. */
const LONG = {
  startToCloseTimeout: '2 hours',
  heartbeatTimeout: '30 seconds',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: 10, nonRetryableErrorTypes: NON_RETRYABLE },
};
const UNDO = {
  startToCloseTimeout: '5 minutes',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute', maximumAttempts: 30, nonRetryableErrorTypes: NON_RETRYABLE },
};

const catalog = proxyActivities<Activities>(CATALOG);
const check = proxyActivities<Activities>(CHECK);
const undo = proxyActivities<Activities>(UNDO);

/**
 * Restores a table from a backup into a layout designed for its workload (`shardcast restore`;
 * src/restore/*): checks the whole backup, stores the proposal and, by policy, waits for `approve`
 * (or `reject`: nothing is created); registers the table invisible to routers; creates the empty
 * shards on their nodes; imports the backup in parallel units (at most `parallelism` at once), each
 * exactly once by its ledger (parallelism 1: one COPY at a time, and the indexes and the verify one
 * node after the other); builds the primary key and indexes, then ANALYZE; verifies row counts
 * and checksums against the backup (in parallel, each node takes `parallelism / nodes` of its shards
 * at once in both, with PostgreSQL's parallel workers off in those sessions); only then publishes the table in the shard map. A failure or a
 * cancel before the publish drops the shards and the catalog rows: nothing half-restored stays.
 */
export async function restoreTable(input: RestoreInput): Promise<RestoreResult> {
  validInput(restoreInputSchema, input);
  const retry = input.nodeRetry ? { maximumAttempts: input.nodeRetry.maximumAttempts, initialInterval: input.nodeRetry.initialIntervalMs } : {};
  const ON_NODE_RUN = { ...ON_NODE, retry: { ...ON_NODE.retry, ...retry } };
  const LONG_RUN = { ...LONG, retry: { ...LONG.retry, ...retry } };
  const onNode = proxyActivities<Activities>(ON_NODE_RUN);
  const long = proxyActivities<Activities>(LONG_RUN);
  const UNDO_RUN = { ...UNDO, retry: { ...UNDO.retry, ...(input.nodeRetry ? { maximumAttempts: Math.max(input.nodeRetry.maximumAttempts, 3) } : {}) } };
  const leftBehind: string[] = [];
  const progress: RestoreProgress = {
    phase: 'check',
    approved: !input.requireApproval,
    layout: input.layout,
    rowsExpected: 0,
    rowsImported: 0,
    units: 0,
    unitsDone: 0,
    perShard: {},
    shardNodes: {},
    error: null,
    phaseStarts: [{ phase: 'check', at: Date.now() }],
  };
  let rejected = false;
  setHandler(restoreProgressQuery, () => progress);
  setHandler(approveSignal, () => void (progress.approved = true));
  setHandler(rejectSignal, () => void (rejected = true));
  const what = `restore of ${input.targetTable}`;
  const enter = (phase: RestorePhase, details: string): void => {
    if (phase !== progress.phase) progress.phaseStarts!.push({ phase, at: Date.now() });
    progress.phase = phase;
    upsertSearchAttributes([{ key: SA_PHASE, value: phase }]);
    setCurrentDetails(`${what}: ${details}`);
  };
  const { layout } = input;
  const record = {
    restoreId: input.restoreId,
    backup: input.backup,
    sourceKind: input.sourceKind,
    sourceTable: input.sourceTable,
    targetTable: input.targetTable,
    proposal: layout,
    retentionDays: input.retentionDays ?? null,
    retentionColumn: input.retentionColumn ?? null,
    rebalanceThreshold: input.rebalanceThreshold ?? null,
  };

  enter('check', `checking the backup ${input.backup}`);
  const checked = await oneLine(() => check.checkRestore.executeWithOptions({ ...CHECK, summary: `check ${input.backup}` }, [{ ...record, batchesPerUnit: input.batchesPerUnit }]));
  progress.rowsExpected = checked.rows;
  progress.units = checked.units.length;

  if (!progress.approved) {
    enter('approval', `${layout.method} on ${layout.keyColumn}, ${layout.nodes.length} shard(s): waiting for approve or reject`);
    const decided = await condition(() => progress.approved || rejected, input.approvalTimeoutSeconds ? input.approvalTimeoutSeconds * 1000 : undefined);
    if (!decided || rejected) {
      const why = rejected ? 'rejected' : 'not approved in time';
      enter('rejected', `${why}; nothing was created`);
      await catalog.finishRestore({ restoreId: input.restoreId, state: 'rejected', error: why });
      throw ApplicationFailure.create({ type: 'RestoreRejected', nonRetryable: true, message: `${what}: ${why}; nothing was created` });
    }
  }

  const compensations: Array<() => Promise<void>> = [];
  let tableId = 0;
  try {
    enter('create-shards', `registering ${input.targetTable} (invisible to routers)`);
    const columns = restoreColumnsDdl(checked.table);
    const table = await catalog.registerTable.executeWithOptions({ ...CATALOG, summary: `register ${input.targetTable}` }, [
      {
        name: input.targetTable,
        columns: columns.full,
        shardKey: layout.keyColumn,
        method: layout.method,
        ...(layout.method === 'hash' ? { shardCount: layout.shardCount } : { rangeBounds: layout.rangeBounds }),
        nodes: layout.nodes,
      },
    ]);
    tableId = table.tableId;
    compensations.unshift(() => undo.unregisterTable.executeWithOptions({ ...UNDO, summary: `undo: remove ${input.targetTable} from the catalog` }, [table.tableId]));
    for (const s of table.shards) progress.shardNodes[String(s.shardId)] = s.nodeName;
    const nodeName = (id: number) => table.shards.find((s) => s.nodeId === id)?.nodeName ?? String(id);

    enter('create-shards', `creating ${table.shards.length} empty shard(s) on ${table.nodeIds.length} node(s)`);
    compensations.unshift(async () => {
      await Promise.all(
        table.nodeIds.map(async (nodeId) => {
          try {
            await undo.dropTableOnNode.executeWithOptions({ ...UNDO_RUN, summary: `undo: drop ${input.targetTable} on ${nodeName(nodeId)}` }, [{ tableId: table.tableId, nodeId, dropSchemas: true }]);
          } catch (err) {
            // Reported, and the rest is undone: the table is unpublished whatever stays on a node that cannot be reached.
            leftBehind.push(`${nodeName(nodeId)} (${causeMessage(err)})`);
          }
        }),
      );
      await undo.clearRestoreLedger.executeWithOptions({ ...UNDO_RUN, summary: 'undo: clear the import ledger' }, [{ restoreId: input.restoreId, tableId: table.tableId }]).catch(() => undefined);
    });
    await Promise.all(
      table.nodeIds.map((nodeId) =>
        onNode.createRestoreShardsOnNode.executeWithOptions({ ...ON_NODE_RUN, summary: `create the shards on ${nodeName(nodeId)}` }, [{ tableId: table.tableId, nodeId, columns: columns.bare }]),
      ),
    );

    // parallelism 1: one COPY stream at a time, in the import and after it (pg_restore without -j).
    const oneStream = input.parallelism === 1 && patched('restore-one-stream');
    enter('import', `importing ${checked.rows} rows in ${checked.units.length} unit(s), ${oneStream ? 'through one stream' : `${input.parallelism} at once`}`);
    await catalog.finishRestore({ restoreId: input.restoreId, state: 'importing' });
    let next = 0;
    let failure: unknown = null;
    const stream = async (): Promise<void> => {
      while (failure === null && next < checked.units.length) {
        const unit = checked.units[next++]!;
        try {
          const r = await long.importRestoreUnit.executeWithOptions(
            { ...LONG_RUN, summary: `import unit ${unit.index + 1}/${checked.units.length}${unit.file >= 0 ? ` (file ${unit.file}, batches ${unit.from}–${unit.to - 1})` : ''}` },
            [{ restoreId: input.restoreId, backup: input.backup, sourceKind: input.sourceKind, sourceTable: input.sourceTable, tableId: table.tableId, unit, columns: checked.table.columns, ...(oneStream ? { oneStream } : {}) }],
          );
          for (const [shard, rows] of Object.entries(r.rows)) {
            progress.perShard[shard] = (progress.perShard[shard] ?? 0) + rows;
            progress.rowsImported += rows;
          }
          progress.unitsDone++;
          setCurrentDetails(`${what}: imported ${progress.rowsImported}/${progress.rowsExpected} rows (${progress.unitsDone}/${progress.units} units)`);
        } catch (err) {
          failure ??= err;
        }
      }
    };
    // Every stream ends (no new unit starts after a failure) before anything is undone.
    await Promise.all(Array.from({ length: Math.min(input.parallelism, checked.units.length) }, stream));
    if (failure !== null) throw failure;

    enter('index', `building the primary key and ${checked.table.indexes.length} index(es), then ANALYZE`);
    // In parallel, each node's share of the parallelism: that many of its shards at once, in the index build and the verify.
    const sessions = oneStream ? {} : { sessions: Math.max(1, Math.ceil(input.parallelism / table.nodeIds.length)) };
    const buildIndexes = (nodeId: number) =>
      long.buildRestoreIndexesOnNode.executeWithOptions({ ...LONG_RUN, summary: `indexes on ${nodeName(nodeId)}` }, [
        { tableId: table.tableId, nodeId, primaryKey: checked.table.primaryKey, indexes: checked.table.indexes, ...sessions },
      ]);
    if (oneStream) for (const nodeId of table.nodeIds) await buildIndexes(nodeId);
    else await Promise.all(table.nodeIds.map(buildIndexes));

    enter('verify', `checking ${checked.rows} rows against the backup's checksum`);
    await catalog.finishRestore({ restoreId: input.restoreId, state: 'verifying', rows: progress.rowsImported });
    const verified = await long.verifyRestore.executeWithOptions({ ...LONG_RUN, summary: 'verify rows and checksums' }, [
      { tableId: table.tableId, expected: checked.expected, ...(oneStream ? { oneStream } : {}), ...sessions, columns: checked.table.columns.map((c) => ({ name: c.name, pgType: c.pgType })) },
    ]);
    progress.perShard = verified.perShard;

    enter('publish', 'publishing the table in the shard map');
    const { mapVersion } = await catalog.activateTable.executeWithOptions({ ...CATALOG, summary: `publish ${input.targetTable}` }, [table.tableId]);
    compensations.length = 0; // published: nothing is undone any more
    await catalog.finishRestore({ restoreId: input.restoreId, state: 'done', rows: verified.rows });
    await catalog.clearRestoreLedger({ restoreId: input.restoreId, tableId: table.tableId }).catch(() => undefined);
    const nodes = [...new Set(table.shards.map((s) => s.nodeName))].sort();
    enter('done', `${verified.rows} rows in ${table.shards.length} shard(s) on ${nodes.join(', ')}, map version ${mapVersion}`);
    const starts = progress.phaseStarts!;
    const phases = starts.slice(0, -1).map((p, i) => ({ phase: p.phase, seconds: (starts[i + 1]!.at - p.at) / 1000 }));
    return { table: input.targetTable, tableId: table.tableId, rows: verified.rows, shards: table.shards.length, nodes, perShard: verified.perShard, checksum: verified.sum, mapVersion, phases };
  } catch (err) {
    const failedIn = progress.phase;
    const cause = causeMessage(err);
    progress.error = `${failedIn}: ${cause}`;
    enter('undo', `failed in ${failedIn} (${cause}); dropping what was created`);
    await CancellationScope.nonCancellable(async () => {
      for (const c of compensations) await c();
      await catalog.finishRestore({ restoreId: input.restoreId, state: 'failed', error: progress.error! });
    });
    const undone = tableId
      ? `its shards and catalog rows were dropped, nothing was published${leftBehind.length ? `; could not drop its shard schemas on ${leftBehind.join(', ')}: drop them there by hand` : ''}`
      : 'nothing had been created';
    const message = `${what} ${isCancellation(err) ? 'cancelled' : 'failed'} in ${failedIn}: ${cause}; undone: ${undone}`;
    enter('failed', message);
    if (isCancellation(err)) throw err;
    throw ApplicationFailure.create({ type: failureType(err) ?? 'RestoreFailed', nonRetryable: true, message, cause: err instanceof Error ? err : undefined });
  }
}

/** A refused check (bad backup, name taken) fails the run with its own words and type. */
async function oneLine<T>(step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (err) {
    throw ApplicationFailure.create({ type: failureType(err) ?? 'RestoreFailed', nonRetryable: true, message: causeMessage(err), cause: err instanceof Error ? err : undefined });
  }
}

function failureType(err: unknown): string | undefined {
  for (let e: unknown = err; e instanceof Error; e = (e as { cause?: unknown }).cause) if (e instanceof ApplicationFailure && e.type) return e.type;
  return undefined;
}

function causeMessage(err: unknown): string {
  for (let e: unknown = err; e instanceof Error; e = (e as { cause?: unknown }).cause) if (!(e instanceof ActivityFailure)) return e.message;
  return String(err);
}
