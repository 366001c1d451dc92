import { isGrpcServiceError, ScheduleAlreadyRunning, ScheduleNotFoundError, ScheduleOverlapPolicy, ServiceError, type ScheduleOptions, type WorkflowHandle } from '@temporalio/client';
import { movementSettings, plannerSettings, retentionArchiveDir, type Config } from '../src/config.js';
import { SA_OPERATION } from '../src/search-attributes.js';
import { CONTROL_TASK_QUEUE } from '../src/task-queues.js';
import type { JanitorInput } from '../workflows/janitor.js';
import type { RetentionInput, RetentionResult } from '../workflows/retention.js';
import type { ForecastRunInput, RebalanceInput, RetrainInput } from '../workflows/messages.js';
import type { ShardcastClientOptions } from './index.js';
import { assertValidInput, forecastRunInputSchema, janitorInputSchema, rebalanceInputSchema, retentionInputSchema, retrainInputSchema } from '../src/inputs.js';

export type ForecastingRun = 'retrain' | 'forecast';

/** Schedule ids (with the options' prefix): pause, unpause and trigger them like any Schedule. */
export function scheduleId(run: ForecastingRun, prefix = ''): string {
  return `${prefix}${run === 'retrain' ? 'shardcast-retrain-daily' : 'shardcast-forecast-hourly'}`;
}

/** The workflow each run starts, and its input from the configuration. */
function runAction(options: ShardcastClientOptions, config: Config, run: ForecastingRun) {
  const { trainingDays, budgetSeconds, searchSeconds, batchSize, parallelBatches } = config.forecast;
  const common = {
    taskQueue: options.taskQueue ?? CONTROL_TASK_QUEUE,
    typedSearchAttributes: [{ key: SA_OPERATION, value: run }],
  };
  if (run === 'retrain') {
    const input: RetrainInput = { trainingDays, budgetSeconds, searchSeconds, batchSize, parallelBatches };
    return { ...common, workflowType: 'retrainModels', args: [assertValidInput(retrainInputSchema, input)], staticSummary: `retrain every series on ${trainingDays} days` };
  }
  const prefix = options.workflowIdPrefix;
  // With replanning on, the replanning schedule is the one planner: the forecast does not hand over too.
  const mode = replanning(config) ? 'off' : config.planning.mode;
  const input: ForecastRunInput = {
    batchSize,
    parallelBatches,
    rebalance: {
      mode,
      // An hour's receding horizon: the run starts what is due before the next forecast's hand-over, which plans
      // the rest again, and leaves a movement still running then (one waiting for approval) to finish on its own,
      // so that it does not keep the next hour's hand-over from planning.
      ...(mode === 'on' ? { startWithinSeconds: 3600 / config.clock.compression } : {}),
      movement: movementSettings(config),
      settings: plannerSettings(config),
      ...(prefix ? { workflowIdPrefix: prefix } : {}),
    },
  };
  return { ...common, workflowType: 'forecastLoad', args: [assertValidInput(forecastRunInputSchema, input)], staticSummary: 'forecast the next hour of every series' };
}

/** A schedule that starts a workflow, with what it was made from in its memo (compared on the next start to see whether it changed). */
function startWorkflowSchedule(scheduleId: string, workflowId: string, spec: ScheduleOptions['spec'], policies: ScheduleOptions['policies'], action: Record<string, unknown> & { workflowType: string; taskQueue: string }): ScheduleOptions {
  const definition = JSON.stringify({ spec, policies, action });
  return { scheduleId, spec, policies, action: { type: 'startWorkflow' as const, workflowId, ...action, memo: { shardcastDefinition: definition } } } as ScheduleOptions;
}

/**
 * The two schedules: retraining daily at forecast.retrainAt (UTC), forecasting every hour on the
 * hour. A run still going when the next is due makes that one skip; a run missed while Temporal
 * or the workers were down starts late if within forecast.catchupWindowMinutes. On a compressed load
 * clock (clock.compression N > 1) the day and the hour are N times shorter: the retraining runs every
 * 86400/N s (at retrainAt's offset into that day), the forecast every 3600/N s.
 */
export function scheduleDefinitions(options: ShardcastClientOptions, config: Config): ScheduleOptions[] {
  const prefix = options.workflowIdPrefix ?? '';
  const [hour, minute] = config.forecast.retrainAt.split(':').map(Number) as [number, number];
  const policies = { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: `${config.forecast.catchupWindowMinutes} minutes` } as const;
  const n = config.clock.compression;
  const daily =
    n === 1
      ? { calendars: [{ hour, minute, comment: `daily at ${config.forecast.retrainAt} UTC` }] }
      : { intervals: [{ every: `${86_400 / n} seconds`, offset: `${(hour * 3600 + minute * 60) / n} seconds` }] };
  const hourly = { intervals: [{ every: n === 1 ? '1 hour' : `${3600 / n} seconds` }] };
  return (['retrain', 'forecast'] as const).map((run) => {
    const spec = run === 'retrain' ? daily : hourly;
    return startWorkflowSchedule(scheduleId(run, prefix), `${prefix}shardcast-${run}`, spec, policies, runAction(options, config, run));
  });
}

/** Whether the rebalancer plans on its own schedule (planning.mode 'on' and planning.replanMinutes > 0). */
function replanning(config: Config): boolean {
  return config.planning.mode === 'on' && config.planning.replanMinutes > 0;
}

/** The replanning schedule's id (with the options' prefix). */
export function replanScheduleId(prefix = ''): string {
  return `${prefix}shardcast-replan`;
}

/**
 * The rebalancer's receding horizon: every planning.replanMinutes, workflow `rebalance` plans on the
 * latest forecast from now and starts only what is due before the next round (the rest is planned
 * again then, on what has happened since). A round still carrying out its movements makes the next
 * ones skip. Absent unless planning.mode is 'on' and planning.replanMinutes > 0 (then the hourly
 * forecast hands over instead, as before).
 */
export function replanScheduleDefinition(options: ShardcastClientOptions, config: Config): ScheduleOptions | undefined {
  if (!replanning(config)) return undefined;
  const prefix = options.workflowIdPrefix ?? '';
  const minutes = config.planning.replanMinutes;
  const seconds = Math.max(1, Math.round((minutes * 60) / config.clock.compression)); // a load-clock period (src/clock.ts)
  const spec = { intervals: [{ every: config.clock.compression === 1 ? `${minutes} minutes` : `${seconds} seconds` }] };
  const policies = { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1 minute' } as const;
  const input: RebalanceInput = {
    dryRun: false,
    trigger: 'replan',
    startWithinSeconds: seconds,
    ...(config.planning.isolateTenantShare > 0 ? { isolateTenantShare: config.planning.isolateTenantShare } : {}),
    movement: movementSettings(config),
    settings: plannerSettings(config),
    ...(prefix ? { workflowIdPrefix: prefix } : {}),
  };
  const action = {
    taskQueue: options.taskQueue ?? CONTROL_TASK_QUEUE,
    workflowType: 'rebalance',
    args: [assertValidInput(rebalanceInputSchema, input)],
    typedSearchAttributes: [{ key: SA_OPERATION, value: 'rebalance' }],
    staticSummary: `plan on the latest forecast (every ${minutes} minutes) and start what is due before the next round`,
  };
  return startWorkflowSchedule(replanScheduleId(prefix), `${prefix}shardcast-replan`, spec, policies, action);
}

/** The janitor's schedule id (with the options' prefix). */
export function janitorScheduleId(prefix = ''): string {
  return `${prefix}shardcast-janitor`;
}

/**
 * The janitor: every janitor.intervalMinutes, `shardcast doctor` (with --fix unless janitor.fix is
 * false) as workflow `janitor`. Absent when the interval is 0.
 */
export function janitorScheduleDefinition(options: ShardcastClientOptions, config: Config): ScheduleOptions | undefined {
  if (config.janitor.intervalMinutes === 0) return undefined;
  const prefix = options.workflowIdPrefix ?? '';
  const spec = { intervals: [{ every: `${config.janitor.intervalMinutes} minutes` }] };
  const policies = { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1 minute' } as const;
  const input: JanitorInput = { fix: config.janitor.fix };
  const action = {
    taskQueue: options.taskQueue ?? CONTROL_TASK_QUEUE,
    workflowType: 'janitor',
    args: [assertValidInput(janitorInputSchema, input)],
    staticSummary: input.fix ? 'clean what closed movements left behind' : 'count what closed movements left behind',
  };
  return startWorkflowSchedule(janitorScheduleId(prefix), `${prefix}shardcast-janitor`, spec, policies, action);
}

/** The retention schedule's id (with the options' prefix). */
export function retentionScheduleId(prefix = ''): string {
  return `${prefix}shardcast-retention`;
}

/** The retention workflow's input from the configuration (table, dryRun: a run by hand). */
export function retentionInput(options: ShardcastClientOptions, config: Config, run: { table?: string; dryRun?: boolean } = {}): RetentionInput {
  const input: RetentionInput = {
    archiveDir: retentionArchiveDir(config),
    dryRun: run.dryRun ?? false,
    rebalanceCheck: config.retention.rebalanceCheck,
    minShardBytes: config.retention.minShardBytes,
    movement: movementSettings(config),
    ...(run.table !== undefined ? { table: run.table } : {}),
    ...(options.workflowIdPrefix ? { workflowIdPrefix: options.workflowIdPrefix } : {}),
  };
  return assertValidInput(retentionInputSchema, input);
}

/**
 * Retention of restored tables (workflow `retention`): daily at retention.at UTC, or every
 * retention.intervalHours; expired rows archived and deleted, then the rebalance-threshold check.
 * Absent when retention.enabled is false.
 */
export function retentionScheduleDefinition(options: ShardcastClientOptions, config: Config): ScheduleOptions | undefined {
  if (!config.retention.enabled) return undefined;
  const prefix = options.workflowIdPrefix ?? '';
  const [hour, minute] = config.retention.at.split(':').map(Number) as [number, number];
  const spec =
    config.retention.intervalHours > 0
      ? { intervals: [{ every: `${config.retention.intervalHours} hours` }] }
      : { calendars: [{ hour, minute, comment: `daily at ${config.retention.at} UTC` }] };
  const policies = { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: `${config.forecast.catchupWindowMinutes} minutes` } as const;
  const action = {
    taskQueue: options.taskQueue ?? CONTROL_TASK_QUEUE,
    workflowType: 'retention',
    args: [retentionInput(options, config)],
    staticSummary: 'archive and drop the rows of restored tables past their retention; check their balance',
  };
  return startWorkflowSchedule(retentionScheduleId(prefix), `${prefix}shardcast-retention`, spec, policies, action);
}

/** Runs retention now (workflow `retention`, an id of its own; the schedule's runs are not touched) and waits for its result. */
export async function runRetentionNow(options: ShardcastClientOptions, config: Config, run: { table?: string; dryRun?: boolean }): Promise<RetentionResult> {
  const input = retentionInput(options, config, run);
  const handle = await options.client.workflow.start('retention', {
    taskQueue: options.taskQueue ?? CONTROL_TASK_QUEUE,
    workflowId: `${options.workflowIdPrefix ?? ''}shardcast-retention-manual-${Date.now()}`,
    args: [input],
    staticSummary: `retention${run.table ? ` of ${run.table}` : ''}${run.dryRun ? ' (dry run)' : ''}, by hand`,
  });
  return (await handle.result()) as RetentionResult;
}

export interface EnsuredSchedule {
  scheduleId: string;
  outcome: 'created' | 'updated' | 'unchanged';
}

/**
 * gRPC status codes (the protocol's numbers) a server that has just (re)started answers with while it
 * loads a schedule's workflow: UNKNOWN 2, DEADLINE_EXCEEDED 4, RESOURCE_EXHAUSTED 8,
 * FAILED_PRECONDITION 9, ABORTED 10, INTERNAL 13, UNAVAILABLE 14.
 */
const TRANSIENT_GRPC_CODES = new Set([2, 4, 8, 9, 10, 13, 14]);

function transientGrpc(err: unknown): boolean {
  const cause = err instanceof ServiceError ? err.cause : err;
  return isGrpcServiceError(cause) && TRANSIENT_GRPC_CODES.has(cause.code);
}

/**
 * Runs a schedule call, again while the server answers with a transient error, for at most
 * `withinMs`. Describing a schedule queries its workflow: just after the Temporal server restarts
 * (`shardcast up` after a crash) that query waits for the workflow to load, and on a loaded machine
 * times out. Any other error, and a transient one past the time, is thrown as it came.
 */
export async function retryTransient<T>(call: () => Promise<T>, withinMs = 60_000): Promise<T> {
  const deadline = Date.now() + withinMs;
  for (let delay = 250; ; delay = Math.min(delay * 2, 5_000)) {
    try {
      return await call();
    } catch (err) {
      if (!transientGrpc(err) || Date.now() + delay > deadline) throw err;
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

/** Creates the retraining and forecasting schedules where missing and updates those whose definition changed, keeping their paused state. */
export async function ensureSchedules(options: ShardcastClientOptions, config: Config): Promise<EnsuredSchedule[]> {
  const out: EnsuredSchedule[] = [];
  const janitor = janitorScheduleDefinition(options, config);
  if (!janitor) await deleteScheduleIfAny(options, janitorScheduleId(options.workflowIdPrefix));
  const retention = retentionScheduleDefinition(options, config);
  if (!retention) await deleteScheduleIfAny(options, retentionScheduleId(options.workflowIdPrefix));
  const replan = replanScheduleDefinition(options, config);
  if (!replan) await deleteScheduleIfAny(options, replanScheduleId(options.workflowIdPrefix));
  for (const definition of [...scheduleDefinitions(options, config), ...(janitor ? [janitor] : []), ...(retention ? [retention] : []), ...(replan ? [replan] : [])]) {
    const handle = options.client.schedule.getHandle(definition.scheduleId);
    let current;
    try {
      current = await retryTransient(() => handle.describe());
    } catch (err) {
      if (!(err instanceof ScheduleNotFoundError)) throw err;
      // Two workers starting at once both find it missing: the second one's create finds it there.
      const created = await options.client.schedule.create(definition).then(
        () => true,
        (createErr: unknown) => {
          if (createErr instanceof ScheduleAlreadyRunning) return false;
          throw createErr;
        },
      );
      if (created) {
        out.push({ scheduleId: definition.scheduleId, outcome: 'created' });
        continue;
      }
      current = await retryTransient(() => handle.describe());
    }
    const wanted = definition.action.memo?.shardcastDefinition;
    if (current.action.type === 'startWorkflow' && current.action.memo?.shardcastDefinition === wanted) {
      out.push({ scheduleId: definition.scheduleId, outcome: 'unchanged' });
      continue;
    }
    await retryTransient(() => handle.update((previous) => ({ spec: definition.spec, action: definition.action, policies: definition.policies, state: previous.state })));
    out.push({ scheduleId: definition.scheduleId, outcome: 'updated' });
  }
  return out;
}

async function deleteScheduleIfAny(options: ShardcastClientOptions, id: string): Promise<void> {
  try {
    await options.client.schedule.getHandle(id).delete();
  } catch (err) {
    if (!(err instanceof ScheduleNotFoundError)) throw err;
  }
}

/**
 * Runs retraining or forecasting now: through its schedule when there is one (`temporal schedule
 * trigger` does the same; overlap skip: when a run is going, that run is returned), otherwise by
 * starting the workflow directly. Returns the run's handle.
 */
export async function runForecastingNow(options: ShardcastClientOptions, config: Config, run: ForecastingRun): Promise<{ handle: WorkflowHandle; via: 'schedule' | 'workflow' | 'running' }> {
  const schedule = options.client.schedule.getHandle(scheduleId(run, options.workflowIdPrefix));
  let before;
  try {
    before = await retryTransient(() => schedule.describe());
  } catch (err) {
    if (!(err instanceof ScheduleNotFoundError)) throw err;
    const action = runAction(options, config, run);
    const { workflowType, ...start } = action;
    const handle = await options.client.workflow.start(workflowType, { ...start, workflowId: `${options.workflowIdPrefix ?? ''}shardcast-${run}-manual-${Date.now()}` });
    return { handle, via: 'workflow' };
  }
  const running = before.info.runningActions[0];
  if (running) return { handle: options.client.workflow.getHandle(running.workflow.workflowId), via: 'running' };
  const known = new Set(before.info.recentActions.map((a) => a.action.workflow.workflowId));
  await schedule.trigger(ScheduleOverlapPolicy.SKIP);
  const deadline = Date.now() + 15_000;
  for (;;) {
    const now = await schedule.describe();
    const started = [...now.info.runningActions, ...now.info.recentActions.map((a) => a.action)].find((a) => !known.has(a.workflow.workflowId));
    if (started) return { handle: options.client.workflow.getHandle(started.workflow.workflowId), via: 'schedule' };
    if (Date.now() > deadline) throw new Error(`schedule ${schedule.scheduleId} was triggered but started no run within 15 s`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
