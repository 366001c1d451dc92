import { fileURLToPath } from 'node:url';
import type { GovernorSettings } from '../src/movement/governor.js';
import { ApplicationFailure } from '@temporalio/common';
import { format } from 'node:util';
import { NativeConnection, Runtime, Worker, type ActivityInterceptors, type LogEntry, type WorkerOptions } from '@temporalio/worker';
import type { Context as ActivityContext } from '@temporalio/activity';
import { createActivities } from '../activities/index.js';
import { newPgPool } from '../src/catalog/pg-tls.js';
import { guardPool, NodePools, type SessionLimits } from '../src/catalog/node-pools.js';
import { BUSINESS_ERROR_TYPES } from '../src/errors.js';
import { CONTROL_TASK_QUEUE } from '../src/task-queues.js';
import { TrainingThreads } from '../src/forecasting/thread-pool.js';
import type { BackendChoice } from '../src/forecasting/tf-backend.js';
import type { ProvisionerConfig } from '../src/planning/provisioner.js';
import type { PlannerWeights } from '../src/planning/types.js';

export { CONTROL_TASK_QUEUE };

/** The configuration's defaults (movement.statementTimeoutSeconds, idleInTransactionTimeoutSeconds, keepAliveSeconds). */
export const DEFAULT_SESSION_LIMITS: SessionLimits = { statementTimeoutMs: 60_000, idleInTransactionTimeoutMs: 30_000, keepAliveMs: 10_000 };

/** The workflows' entry beside this module: TypeScript from source (tsx, vitest), JavaScript from the built dist/. */
export const WORKFLOWS_PATH = fileURLToPath(new URL(`../workflows/index.${import.meta.url.endsWith('.ts') ? 'ts' : 'js'}`, import.meta.url));

export interface ControlWorkerOptions {
  connection: NativeConnection;
  namespace: string;
  taskQueue?: string;
  catalogUrl: string;
  /** A prebuilt bundle (tests bundle once per run); otherwise the workflows are bundled at start. */
  workflowBundle?: WorkerOptions['workflowBundle'];
  /** Limits of the worker's node connections (movement.* in the configuration); default 60 s / 30 s / 10 s. */
  sessionLimits?: SessionLimits;
  /** Threads that train series (forecast.threads, default 1) and their TensorFlow.js backend (forecast.backend). */
  training?: { threads?: number; backend?: BackendChoice };
  /** The copy governor's settings for every movement, under each movement's own (movement.governor in the configuration). */
  governor?: GovernorSettings;
  /** Payload codecs (temporal.encryption): the same data converter as the clients'. */
  dataConverter?: WorkerOptions['dataConverter'];
  /** Where scale-out's new nodes come from (planning.provisioner). */
  provisioner?: ProvisionerConfig;
  /** The planner's weights and target utilisation (planning.*), for choices made outside a plan (an isolated key's node). */
  planner?: { weights: PlannerWeights; targetUtilisation: number };
  /** Where business errors are logged, one line each (default: the Temporal runtime's logger, at WARN). */
  logBusinessError?: (line: string) => void;
}

const BUSINESS = new Set<string>(BUSINESS_ERROR_TYPES);

/**
 * "beginMove (move-shard-17): InvalidInputError: shard 17 is already on node-2": a refused request
 * is an outcome, not a fault, so it gets one line and no stack (the SDK logs these BENIGN failures
 * at DEBUG only). Undefined for any other error, which the SDK logs in full.
 */
export function businessErrorLine(activityType: string, workflowId: string | undefined, err: unknown): string | undefined {
  if (!(err instanceof ApplicationFailure) || !err.type || !BUSINESS.has(err.type)) return undefined;
  return `${activityType}${workflowId ? ` (${workflowId})` : ''}: ${err.type}: ${err.message.replace(/\s*\n\s*/g, ' ')}`;
}

/**
 * The worker's log lines (the Temporal runtime's logger): as the SDK's default, except that a failed
 * workflow is one line with its message. A movement's failure message already says what failed,
 * where and that it was undone; the stack of a workflow's own ApplicationFailure only shows SDK
 * internals (the activity's error, when it is not a business error, is logged in full on its own).
 */
export function workerLogLine(entry: LogEntry): string {
  const at = new Date(Number(entry.timestampNanos / 1_000_000n)).toISOString();
  const meta = entry.meta as { error?: unknown; workflowType?: string; workflowId?: string } | undefined;
  if (entry.message === 'Workflow failed' && meta?.error instanceof Error) {
    return `${at} [${entry.level}] workflow ${meta.workflowType ?? '?'} ${meta.workflowId ?? '?'} failed: ${meta.error.message.replace(/\s*\n\s*/g, ' ')}`;
  }
  return `${at} [${entry.level}] ${entry.message}${entry.meta === undefined ? '' : ` ${format(entry.meta)}`}`;
}

function businessErrorLogger(log: (line: string) => void) {
  return (ctx: ActivityContext): ActivityInterceptors => ({
    inbound: {
      async execute(input, next) {
        try {
          return await next(input);
        } catch (err) {
          const line = businessErrorLine(ctx.info.activityType, ctx.info.workflowExecution?.workflowId, err);
          if (line) log(line);
          throw err;
        }
      },
    },
  });
}

export interface RunningWorker {
  worker: Worker;
  /** Stops polling, lets running activities finish, closes the worker's pools. */
  shutdown(): Promise<void>;
  done: Promise<void>;
}

/** The worker of the control task queue: catalog and DDL workflows (table creation). */
export async function startControlWorker(options: ControlWorkerOptions): Promise<RunningWorker> {
  const catalog = guardPool(newPgPool(options.catalogUrl, { max: 5, application_name: 'shardcast-worker' }));
  const limits = { ...DEFAULT_SESSION_LIMITS, ...options.sessionLimits };
  // A COPY may run for hours: statement_timeout only on the cutover's connections, whose statements are short.
  const nodePools = new NodePools({ max: 4, applicationName: 'shardcast-worker', limits: { ...limits, statementTimeoutMs: undefined } });
  const cutoverPools = new NodePools({ max: 4, applicationName: 'shardcast-cutover', limits });
  const trainingThreads = new TrainingThreads({ size: options.training?.threads ?? 1, backend: options.training?.backend ?? 'auto' });
  let worker: Worker;
  try {
    worker = await Worker.create({
      connection: options.connection,
      namespace: options.namespace,
      taskQueue: options.taskQueue ?? CONTROL_TASK_QUEUE,
      activities: createActivities({ catalog, catalogUrl: options.catalogUrl, nodePools, cutoverPools, trainingThreads, governor: options.governor, provisioner: options.provisioner, ...(options.planner ? { planner: options.planner } : {}), sessionLimits: limits }),
      ...(options.workflowBundle ? { workflowBundle: options.workflowBundle } : { workflowsPath: WORKFLOWS_PATH }),
      shutdownGraceTime: '10 seconds',
      ...(options.dataConverter ? { dataConverter: options.dataConverter } : {}),
      interceptors: { activity: [businessErrorLogger(options.logBusinessError ?? ((line) => Runtime.instance().logger.warn(line)))] },
      // When a worker goes away, its cached workflows move to another worker after this long (default
      // 10 s): the collector would otherwise miss ten seconds of samples at every restart.
      stickyQueueScheduleToStartTimeout: '2 seconds',
    });
  } catch (err) {
    await Promise.all([catalog.end(), nodePools.end(), cutoverPools.end(), trainingThreads.close()]);
    throw err;
  }
  const done = worker.run().finally(async () => {
    await Promise.all([catalog.end().catch(() => undefined), nodePools.end(), cutoverPools.end(), trainingThreads.close()]);
  });
  return {
    worker,
    done,
    async shutdown() {
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await done;
    },
  };
}
