import { Client, Connection, WorkflowFailedError, WorkflowExecutionAlreadyStartedError } from '@temporalio/client';
import { ApplicationFailure, ActivityFailure } from '@temporalio/common';
import type { Config } from '../src/config.js';
import { AlreadyExistsError, InvalidInputError, NotFoundError, ShardcastError } from '../src/errors.js';
import { validateTableSpec, type TableSpec } from '../src/catalog/tables.js';
import { SA_GROUP, SA_OPERATION, SA_PHASE, SA_SHARD, SA_TABLE, SA_TARGET_NODE } from '../src/search-attributes.js';
import type { CreateTableResult, MoveShardInput, MoveShardResult, RetrySettings } from '../workflows/messages.js';
import { randomBytes } from 'node:crypto';
import type { WorkflowHandle } from '@temporalio/client';
import { CONTROL_TASK_QUEUE } from '../workers/control.js';

export interface ShardcastClientOptions {
  client: Client;
  taskQueue?: string;
  /** Prepended to workflow ids (tests use it to keep runs apart). */
  workflowIdPrefix?: string;
  nodeRetry?: RetrySettings;
}

export async function connectTemporal(address: string, namespace: string): Promise<Client> {
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
      args: [{ spec, nodeRetry: options.nodeRetry ?? { maximumAttempts: 5, initialIntervalMs: 1000 } }],
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

/** Unwraps WorkflowFailedError → ActivityFailure → ApplicationFailure into the domain error it carries. */
export function toShardcastError(err: unknown): Error {
  if (!(err instanceof WorkflowFailedError)) return err as Error;
  const messages: string[] = [];
  for (let cause: unknown = err.cause; cause; cause = (cause as { cause?: unknown }).cause) {
    if (cause instanceof ApplicationFailure && cause.type && BUSINESS_ERRORS.has(cause.type)) {
      // The domain error an activity refused the input with: its own words are the clearest.
      const make = BUSINESS_ERRORS.get(cause.type)!;
      return make(cause.message, err);
    }
    if (cause instanceof Error && !(cause instanceof ActivityFailure)) messages.push(cause.message);
  }
  return new ShardcastError('WORKFLOW_FAILED', messages[0] ?? err.message, { cause: err });
}

const BUSINESS_ERRORS = new Map<string, (message: string, cause: unknown) => Error>([
  ['InvalidInputError', (m, cause) => new InvalidInputError(m, { cause })],
  ['AlreadyExistsError', (m) => new AlreadyExistsError(m)],
  ['NotFoundError', (m) => new NotFoundError(m)],
]);

export function moveWorkflowId(shardId: number, prefix = ''): string {
  return `${prefix}move-shard-${shardId}`;
}

export interface MoveRequest {
  shardId: number;
  targetNode: string;
  approvalRequired?: boolean;
  approvalOverBytes?: number;
  approvalHoursUtc?: [number, number];
  approvalTimeoutSeconds?: number;
  approvalTimeoutAction?: 'approve' | 'reject';
  graceSeconds?: number;
  catchUpLagBytes?: number;
  maxMovesPerNode?: number;
  pollSeconds?: number;
}

/**
 * Starts moving a shard; the workflow id comes from the shard, so a second movement of the same
 * shard is refused while one runs. Returns the handle: signal it, query it, await its result.
 */
export async function startMove(options: ShardcastClientOptions, request: MoveRequest): Promise<WorkflowHandle> {
  if (!Number.isInteger(request.shardId) || request.shardId < 1) throw new InvalidInputError(`shard id must be a positive integer, got ${request.shardId}`);
  if (typeof request.targetNode !== 'string' || !/^[a-z][a-z0-9_-]{0,62}$/.test(request.targetNode)) {
    throw new InvalidInputError(`target node ${JSON.stringify(request.targetNode)} is not a node name`);
  }
  const workflowId = moveWorkflowId(request.shardId, options.workflowIdPrefix);
  const input: MoveShardInput = {
    movementId: `s${request.shardId}_${randomBytes(5).toString('hex')}`,
    workflowId,
    shardId: request.shardId,
    targetNode: request.targetNode,
    maxMovesPerNode: request.maxMovesPerNode ?? 2,
    catchUpLagBytes: request.catchUpLagBytes ?? 1024 * 1024,
    pollSeconds: request.pollSeconds ?? 2,
    approvalRequired: request.approvalRequired ?? false,
    approvalOverBytes: request.approvalOverBytes,
    approvalHoursUtc: request.approvalHoursUtc,
    approvalTimeoutSeconds: request.approvalTimeoutSeconds,
    approvalTimeoutAction: request.approvalTimeoutAction,
    graceSeconds: request.graceSeconds ?? 300,
  };
  try {
    return await options.client.workflow.start('moveShard', {
      taskQueue: options.taskQueue ?? CONTROL_TASK_QUEUE,
      workflowId,
      args: [input],
      typedSearchAttributes: [
        { key: SA_SHARD, value: request.shardId },
        { key: SA_OPERATION, value: 'move' },
        { key: SA_PHASE, value: 'prepare' },
        { key: SA_TARGET_NODE, value: request.targetNode },
      ],
      staticSummary: `move shard ${request.shardId} → ${request.targetNode}`,
    });
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) {
      throw new AlreadyExistsError(`shard ${request.shardId} is already being moved (workflow ${workflowId}); wait for it, or cancel it`);
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
