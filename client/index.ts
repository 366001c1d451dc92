import { Client, Connection, WorkflowFailedError, WorkflowExecutionAlreadyStartedError } from '@temporalio/client';
import { ApplicationFailure, ActivityFailure } from '@temporalio/common';
import type { Config } from '../src/config.js';
import { AlreadyExistsError, InvalidInputError, NotFoundError, ShardcastError } from '../src/errors.js';
import { validateTableSpec, type TableSpec } from '../src/catalog/tables.js';
import { checkColumnDefinitions } from '../src/catalog/columns.js';
import { SA_GROUP, SA_OPERATION, SA_PHASE, SA_SHARD, SA_TABLE, SA_TARGET_NODE } from '../src/search-attributes.js';
import { movementProgressQuery, type CollectStatsInput, type CreateTableResult, type DropTableInput, type DropTableResult, type MoveShardInput, type MoveShardResult, type RestoreInput, type RestoreResult, type RetrySettings } from '../workflows/messages.js';
import { randomBytes } from 'node:crypto';
import type { WorkflowHandle, WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import { CONTROL_TASK_QUEUE } from '../src/task-queues.js';
import { describeMovement, moveShardInput, moveWorkflowId, type MovementSettings } from '../workflows/describe.js';
import { connectTemporalClient } from './connection.js';
import { assertValidInput, collectStatsInputSchema, createTableInputSchema, dropTableInputSchema, moveShardInputSchema, restoreInputSchema } from '../src/inputs.js';

export interface ShardcastClientOptions {
  client: Client;
  taskQueue?: string;
  /** Prepended to workflow ids (tests use it to keep runs apart). */
  workflowIdPrefix?: string;
  nodeRetry?: RetrySettings;
}

/** A client of `address`; with `config`, also its namespace's payload encryption and, where configured, TLS. */
export async function connectTemporal(address: string, namespace: string, config?: Config): Promise<Client> {
  if (config) return connectTemporalClient({ ...config, temporal: { ...config.temporal, namespace } }, address);
  const connection = await Connection.connect({ address, connectTimeout: 5000 }).catch((err: unknown) => {
    throw new ShardcastError('TEMPORAL_UNAVAILABLE', `cannot reach Temporal at ${address}: ${(err as Error).message}`, { cause: err });
  });
  return new Client({ connection, namespace });
}

export function clientOptionsFromConfig(client: Client, config: Config): ShardcastClientOptions {
  return {
    client,
    taskQueue: config.temporal.taskQueue,
    nodeRetry: { maximumAttempts: config.tableCreation.maximumAttempts, initialIntervalMs: config.tableCreation.initialRetryIntervalMs },
  };
}

export function createTableWorkflowId(table: string, prefix = ''): string {
  return `${prefix}create-table-${table}`;
}

/** Starts the table-creation workflow and waits for it; failures come back as one clear error. */
export async function createDistributedTable(options: ShardcastClientOptions, spec: TableSpec): Promise<CreateTableResult> {
  validateTableSpec(spec);
  await checkColumnDefinitions(spec.name, spec.columns);
  const input = assertValidInput(createTableInputSchema, { spec, nodeRetry: options.nodeRetry ?? { maximumAttempts: 5, initialIntervalMs: 1000 } });
  const workflowId = createTableWorkflowId(spec.name, options.workflowIdPrefix);
  const what = spec.colocateWith
    ? `colocated with ${spec.colocateWith}`
    : spec.method === 'range'
      ? `range, ${(spec.rangeBounds?.length ?? 1) - 1} shard(s)`
      : `hash, ${spec.shardCount ?? 8} shard(s)`;
  let handle;
  try {
    handle = await options.client.workflow.start('createDistributedTable', {
      taskQueue: options.taskQueue ?? CONTROL_TASK_QUEUE,
      workflowId,
      args: [input],
      typedSearchAttributes: [
        { key: SA_TABLE, value: spec.name },
        { key: SA_GROUP, value: spec.colocateWith ?? spec.name },
        { key: SA_OPERATION, value: 'create-table' },
        { key: SA_PHASE, value: 'register' },
      ],
      staticSummary: `create table ${spec.name} (${what}, key ${spec.shardKey})`,
      staticDetails: `columns: ${spec.columns}`,
    });
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) {
      throw new AlreadyExistsError(`table "${spec.name}" is already being created (workflow ${workflowId})`);
    }
    throw err;
  }
  try {
    return await handle.result();
  } catch (err) {
    throw toShardcastError(err);
  }
}

export function dropTableWorkflowId(table: string, prefix = ''): string {
  return `${prefix}drop-table-${table}`;
}

/** The movements' approval policy, as a table drop takes it (the configuration's `movement` section). */
export type DropTablePolicy = Omit<DropTableInput, 'table'>;

/**
 * Starts dropping a distributed table (workflow dropDistributedTable): it waits at the movements'
 * approval gate when the policy says so (`approve`/`reject` signals to its workflow id). Returns the
 * handle; `dropTableResult` waits for it.
 */
export async function startDropTable(options: ShardcastClientOptions, table: string, policy: DropTablePolicy): Promise<WorkflowHandle> {
  const input = assertValidInput(dropTableInputSchema, { table, ...policy });
  const workflowId = dropTableWorkflowId(table, options.workflowIdPrefix);
  try {
    return await options.client.workflow.start('dropDistributedTable', {
      taskQueue: options.taskQueue ?? CONTROL_TASK_QUEUE,
      workflowId,
      args: [input],
      typedSearchAttributes: [
        { key: SA_TABLE, value: table },
        { key: SA_OPERATION, value: 'drop-table' },
        { key: SA_PHASE, value: 'check' },
      ],
      staticSummary: `drop table ${table}`,
    });
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) throw new AlreadyExistsError(`table "${table}" is already being dropped (workflow ${workflowId})`);
    throw err;
  }
}

/** A new restore's id (its workflow id and its catalog row): the table and the start time. */
export function newRestoreId(table: string, prefix = '', now = new Date()): string {
  return `${prefix}restore-${table.replaceAll('_', '-')}-${now.getTime().toString(36)}`;
}

/**
 * Starts a restore (workflow restoreTable): it checks the backup, waits for `approve` when the input
 * says so, creates the shards, imports, verifies, publishes. `restoreResult` waits for it.
 */
export async function startRestore(options: ShardcastClientOptions, input: RestoreInput): Promise<WorkflowHandle> {
  const checked = assertValidInput(restoreInputSchema, input);
  return options.client.workflow.start('restoreTable', {
    taskQueue: options.taskQueue ?? CONTROL_TASK_QUEUE,
    workflowId: checked.restoreId,
    args: [checked],
    typedSearchAttributes: [
      { key: SA_TABLE, value: checked.targetTable },
      { key: SA_OPERATION, value: 'restore' },
      { key: SA_PHASE, value: 'check' },
    ],
    staticSummary: `restore ${checked.targetTable} from ${checked.backup}`,
  });
}

export async function restoreResult(handle: WorkflowHandle): Promise<RestoreResult> {
  try {
    return (await handle.result()) as RestoreResult;
  } catch (err) {
    throw toShardcastError(err);
  }
}

export async function dropTableResult(handle: WorkflowHandle): Promise<DropTableResult> {
  try {
    return (await handle.result()) as DropTableResult;
  } catch (err) {
    throw toShardcastError(err);
  }
}

/**
 * Unwraps WorkflowFailedError → ActivityFailure → ApplicationFailure into the domain error it
 * carries, with the outermost message that says something: a movement's one line ("move shard 17
 * of orders: node-1 → node-3 failed in copy: …; undone"), or an activity's own words.
 */
export function toShardcastError(err: unknown): Error {
  if (!(err instanceof WorkflowFailedError)) return err as Error;
  const messages: string[] = [];
  for (let cause: unknown = err.cause; cause; cause = (cause as { cause?: unknown }).cause) {
    if (cause instanceof Error && !(cause instanceof ActivityFailure)) messages.push(cause.message);
    if (cause instanceof ApplicationFailure && cause.type && BUSINESS_ERRORS.has(cause.type)) {
      const make = BUSINESS_ERRORS.get(cause.type)!;
      return make(messages[0]!, err);
    }
  }
  return new ShardcastError('WORKFLOW_FAILED', messages[0] ?? err.message, { cause: err });
}

const BUSINESS_ERRORS = new Map<string, (message: string, cause: unknown) => Error>([
  ['InvalidInputError', (m, cause) => new InvalidInputError(m, { cause })],
  ['AlreadyExistsError', (m) => new AlreadyExistsError(m)],
  ['NotFoundError', (m) => new NotFoundError(m)],
]);

export { moveWorkflowId, rebalanceWorkflowId } from '../workflows/describe.js';

export interface MovementOptions extends MovementSettings {
  /** The run's static summary in the Temporal UI (default from the request, e.g. "move shard 17 → node-2"). */
  summary?: string;
}

export interface MoveRequest extends MovementOptions {
  shardId: number;
  targetNode: string;
  /**
   * A move back: the id of the move it reverses (a finished move of this shard to where it is now;
   * `targetNode` is that move's source). Within that move's grace period it is a cutover only.
   */
  reverseOf?: string;
  /** After the grace period (or with the reverse stream broken): copy in full (default), or refuse and change nothing. */
  reverseFallback?: boolean;
}

export interface SplitRequest extends MovementOptions {
  shardId: number;
  /** The nodes of the lower and the upper half (the source's own node is allowed). */
  targetNodes: [string, string];
  /** Hash tables: the last hash value of the lower half (default: the middle). Range tables: the first key of the upper half. */
  at?: string;
}

export interface MergeRequest extends MovementOptions {
  /** Two adjacent shards of one colocation group. */
  shardIds: [number, number];
  /** The merged shard's node (default: the lower shard's node). */
  targetNode?: string;
}

const NODE_NAME = /^[a-z][a-z0-9_-]{0,62}$/;

function checkShardId(id: unknown): number {
  if (!Number.isInteger(id) || (id as number) < 1) throw new InvalidInputError(`shard id must be a positive integer, got ${String(id)}`);
  return id as number;
}

function checkNodeName(name: unknown, what: string): string {
  if (typeof name !== 'string' || !NODE_NAME.test(name)) throw new InvalidInputError(`${what} ${JSON.stringify(name)} is not a node name`);
  return name;
}

/**
 * Starts moving a shard; the workflow id comes from the shard, so a second movement of the same
 * shard is refused while one runs. Returns the handle: signal it, query it, await its result.
 */
export async function startMove(options: ShardcastClientOptions, request: MoveRequest): Promise<WorkflowHandleWithFirstExecutionRunId> {
  checkShardId(request.shardId);
  checkNodeName(request.targetNode, 'target node');
  if (request.reverseOf !== undefined && (typeof request.reverseOf !== 'string' || !/^[a-z0-9_]{1,40}$/.test(request.reverseOf))) {
    throw new InvalidInputError(`${JSON.stringify(request.reverseOf)} is not a movement id`);
  }
  const back = request.reverseOf ? { reverseOf: request.reverseOf, ...(request.reverseFallback === false ? { reverseFallback: false } : {}) } : {};
  return startMovement(options, request, { operation: 'move', shardId: request.shardId, targetNode: request.targetNode, ...back });
}

/** Starts splitting a shard in two, each half to a node of choice (DESIGN §3). */
export async function startSplit(options: ShardcastClientOptions, request: SplitRequest): Promise<WorkflowHandleWithFirstExecutionRunId> {
  checkShardId(request.shardId);
  if (!Array.isArray(request.targetNodes) || request.targetNodes.length !== 2) {
    throw new InvalidInputError('a split needs two target nodes, one per half (the same node twice is allowed)');
  }
  const targets = request.targetNodes.map((n) => checkNodeName(n, 'target node')) as [string, string];
  if (request.at !== undefined && (typeof request.at !== 'string' || request.at.trim() === '')) throw new InvalidInputError('the split point must not be empty');
  return startMovement(options, request, { operation: 'split', shardId: request.shardId, splitTargets: targets, splitAt: request.at });
}

/** Starts merging two adjacent shards into one. */
export async function startMerge(options: ShardcastClientOptions, request: MergeRequest): Promise<WorkflowHandleWithFirstExecutionRunId> {
  if (!Array.isArray(request.shardIds) || request.shardIds.length !== 2) throw new InvalidInputError('a merge needs exactly two shard ids');
  const [a, b] = request.shardIds.map(checkShardId) as [number, number];
  if (a === b) throw new InvalidInputError(`cannot merge shard ${a} with itself`);
  if (request.targetNode !== undefined) checkNodeName(request.targetNode, 'target node');
  return startMovement(options, request, { operation: 'merge', shardId: Math.min(a, b), mergeWith: Math.max(a, b), targetNode: request.targetNode });
}

type Operation = Pick<MoveShardInput, 'operation' | 'shardId' | 'targetNode' | 'splitTargets' | 'splitAt' | 'mergeWith' | 'reverseOf' | 'reverseFallback'>;

async function startMovement(options: ShardcastClientOptions, request: MovementOptions, op: Operation): Promise<WorkflowHandleWithFirstExecutionRunId> {
  const workflowId = moveWorkflowId(op.shardId, options.workflowIdPrefix);
  const input = assertValidInput(moveShardInputSchema, moveShardInput(op, { movementId: `s${op.shardId}_${randomBytes(5).toString('hex')}`, workflowId }, request));
  const targets = op.operation === 'split' ? op.splitTargets!.join(',') : op.targetNode;
  try {
    return await options.client.workflow.start('moveShard', {
      taskQueue: options.taskQueue ?? CONTROL_TASK_QUEUE,
      workflowId,
      args: [input],
      typedSearchAttributes: [
        { key: SA_SHARD, value: op.shardId },
        { key: SA_OPERATION, value: op.operation! },
        { key: SA_PHASE, value: 'prepare' },
        ...(targets ? [{ key: SA_TARGET_NODE, value: targets }] : []),
      ],
      staticSummary: request.summary ?? describeMovement(op),
    });
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) {
      throw new AlreadyExistsError(`shard ${op.shardId} is already being moved, split or merged (workflow ${workflowId}); wait for it, or cancel it`);
    }
    throw err;
  }
}

export async function moveResult(handle: WorkflowHandle): Promise<MoveShardResult> {
  try {
    return (await handle.result()) as MoveShardResult;
  } catch (err) {
    throw toShardcastError(err);
  }
}

/** A movement waiting for a node's movement slot (phase 'queued'), and why. */
export interface QueuedMovement {
  workflowId: string;
  shardId: number;
  operation: string;
  /** Target node(s), as the movement was started with. */
  targets: string;
  node: string;
  running: number;
  limit: number;
  since: string;
}

/**
 * Movements queued for a slot: running moveShard workflows in phase 'queued' (Temporal's
 * visibility), each asked why. They hold no lease yet, so the catalog does not list them.
 */
export async function listQueuedMovements(options: ShardcastClientOptions): Promise<QueuedMovement[]> {
  const query = `WorkflowType = 'moveShard' AND ExecutionStatus = 'Running' AND ShardcastPhase = 'queued' AND TaskQueue = '${options.taskQueue ?? CONTROL_TASK_QUEUE}'`;
  const queued: QueuedMovement[] = [];
  for await (const w of options.client.workflow.list({ query })) {
    const progress = await options.client.workflow
      .getHandle(w.workflowId)
      .query(movementProgressQuery)
      .catch(() => undefined);
    if (progress?.phase !== 'queued' || !progress.queued) continue; // started meanwhile
    queued.push({
      workflowId: w.workflowId,
      shardId: Number(w.typedSearchAttributes.get(SA_SHARD) ?? 0),
      operation: String(w.typedSearchAttributes.get(SA_OPERATION) ?? 'move'),
      targets: String(w.typedSearchAttributes.get(SA_TARGET_NODE) ?? ''),
      ...progress.queued,
    });
  }
  return queued;
}

export function collectorWorkflowId(prefix = ''): string {
  return `${prefix}shardcast-collect-stats`;
}

/**
 * Starts the statistics collector unless it already runs (one per Temporal namespace and prefix).
 * Returns its handle either way.
 */
export async function ensureCollector(options: ShardcastClientOptions, input: CollectStatsInput): Promise<WorkflowHandle> {
  assertValidInput(collectStatsInputSchema, input);
  const handle = await options.client.workflow.start('collectStats', {
    taskQueue: options.taskQueue ?? CONTROL_TASK_QUEUE,
    workflowId: collectorWorkflowId(options.workflowIdPrefix),
    args: [input],
    workflowIdConflictPolicy: 'USE_EXISTING',
    // Its workflow tasks are small (the history ends in continue-as-new): one a stopping worker took
    // and never finished is handed to another after 3 s, not the default 10 s of missed samples.
    workflowTaskTimeout: '3 seconds',
    typedSearchAttributes: [{ key: SA_OPERATION, value: 'collect-stats' }],
    staticSummary: `collect workload statistics every ${input.intervalSeconds} s`,
  });
  return handle;
}

export { ensureSchedules, janitorScheduleId, replanScheduleId, retentionScheduleId, runForecastingNow, runRetentionNow, scheduleId, type EnsuredSchedule, type ForecastingRun } from './schedules.js';
