import { isCancellation, ParentClosePolicy, proxyActivities, setCurrentDetails, startChild, uuid4, workflowInfo } from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { createRetentionActivities } from '../activities/retention.js';
import type { BalanceDecision } from '../src/restore/balance-check.js';
import type { ArchiveShardResult } from '../src/restore/retention.js';
import { SA_OPERATION, SA_PHASE, SA_SHARD, SA_TARGET_NODE } from '../src/search-attributes.js';
import { retentionInputSchema } from '../src/inputs.js';
import { describeMovement, moveShardInput, moveWorkflowId, type MovementOperationInput, type MovementSettings } from './describe.js';
import { validInput } from './validate.js';

type Activities = ReturnType<typeof createRetentionActivities>;

const CATALOG = { startToCloseTimeout: '5 minutes', retry: { initialInterval: '2 seconds', maximumInterval: '1 minute', maximumAttempts: 5 } } as const;
// A shard's archive streams its expired rows: heartbeats per batch and at least every 10 s; a lost worker is noticed within 30 s and the shard retried (its ledger makes that safe).
const SHARD = { startToCloseTimeout: '6 hours', heartbeatTimeout: '30 seconds', retry: { initialInterval: '2 seconds', maximumInterval: '1 minute', maximumAttempts: 10 } } as const;

const { listRetentionTargets, countExpiredRows, beginRetentionRun, finishRetentionRun, checkTableBalance } = proxyActivities<Activities>(CATALOG);
const { archiveExpiredRows } = proxyActivities<Activities>(SHARD);

export interface RetentionInput {
  archiveDir: string;
  table?: string;
  dryRun: boolean;
  rebalanceCheck: boolean;
  /** A shard under this many bytes is not split, whatever its skew. */
  minShardBytes: number;
  movement: MovementSettings;
  workflowIdPrefix?: string;
}

export interface RetentionTableResult {
  table: string;
  column: string | null;
  retentionDays: number | null;
  /** Rows before it were expired (ISO time). */
  cutoff?: string;
  runId?: string;
  /** Why its retention did not run (e.g. a bad retention column). */
  problem?: string;
  /** Per shard: what was archived (or, dry run, how many rows would be). */
  shards: Array<ArchiveShardResult | { shardId: number; node: string; rows: number; state: 'would-archive' }>;
  /** Rows archived and deleted (dry run: that would be). */
  rows: number;
  /** The run's backup directory (manifest.json + Arrow files); null when nothing was archived. */
  dir: string | null;
  failures: string[];
  balance?: BalanceDecision & { started?: string; outcome?: string };
}

export interface RetentionResult {
  dryRun: boolean;
  tables: RetentionTableResult[];
}

/** Runs `tasks` two at a time. */
async function twoAtATime<T>(tasks: Array<() => Promise<T>>): Promise<T[]> {
  const out: T[] = new Array<T>(tasks.length);
  let next = 0;
  const lane = async () => {
    while (next < tasks.length) {
      const i = next++;
      out[i] = await tasks[i]!();
    }
  };
  await Promise.all([lane(), lane()]);
  return out;
}

const message = (err: unknown) => {
  let e: unknown = err;
  while (e instanceof Error && (e as { cause?: unknown }).cause instanceof Error) e = (e as { cause?: unknown }).cause;
  return e instanceof Error ? e.message : String(e);
};

/**
 * Retention of restored tables (schedule shardcast-retention): every table whose finished restore set
 * a data_retention_policy has its expired rows archived (a backup directory per run) and deleted,
 * shard by shard; then, for tables with a rebalance_threshold, the balance check, which may start one split.
 */
export async function retention(input: RetentionInput): Promise<RetentionResult> {
  validInput(retentionInputSchema, input);
  const targets = await listRetentionTargets({ table: input.table });
  const results: RetentionTableResult[] = [];
  const stamp = new Date(Date.now()).toISOString().replace(/[-:]/g, '').replace(/\..*$/, '').toLowerCase();
  for (const t of targets) {
    const r: RetentionTableResult = { table: t.table, column: t.column, retentionDays: t.retentionDays, shards: [], rows: 0, dir: null, failures: [] };
    results.push(r);
    if (t.problem) r.problem = t.problem;
    else if (t.column !== null && t.retentionDays !== null) {
      const cutoff = new Date(Date.now() - t.retentionDays * 86_400_000).toISOString();
      r.cutoff = cutoff;
      if (input.dryRun) {
        setCurrentDetails(`${t.table}: counting rows before ${cutoff}`);
        const counts = await countExpiredRows({ table: t.table, groupId: t.groupId, column: t.column, cutoff });
        r.shards = counts.map((c) => ({ ...c, state: 'would-archive' as const }));
        r.rows = counts.reduce((a, c) => a + c.rows, 0);
      } else {
        const runId = `${stamp}-${uuid4().slice(0, 8)}`;
        const dir = `${input.archiveDir.replace(/\/+$/, '')}/${t.table}/${runId}`;
        r.runId = runId;
        await beginRetentionRun({ runId, table: t.table, dir, cutoff });
        setCurrentDetails(`${t.table}: archiving rows before ${cutoff} from ${t.shardIds.length} shard(s)`);
        const column = t.column;
        const outcomes = await twoAtATime(
          t.shardIds.map((shardId) => async (): Promise<ArchiveShardResult | null> => {
            try {
              return await archiveExpiredRows.executeWithOptions({ ...SHARD, summary: `${t.table}: shard ${shardId}` }, [
                { runId, table: t.table, groupId: t.groupId, shardId, column, cutoff, dir },
              ]);
            } catch (err) {
              if (isCancellation(err)) throw err;
              r.failures.push(`shard ${shardId}: ${message(err)}`);
              return null;
            }
          }),
        );
        r.shards = outcomes.filter((o): o is ArchiveShardResult => o !== null);
        // Also after a shard failed: what the others committed is archived, and must be in the manifest.
        const finished = await finishRetentionRun({ runId, table: t.table, groupId: t.groupId, dir });
        r.rows = finished.rows;
        r.dir = finished.dir;
      }
    }
    if (input.rebalanceCheck && t.rebalanceThreshold !== null) {
      const decision = await checkTableBalance({ table: t, now: new Date(Date.now()).toISOString(), minShardBytes: input.minShardBytes });
      r.balance = decision;
      if (decision.action === 'split' && decision.split && !input.dryRun) Object.assign(r.balance, await startSplitOf(input, decision.split));
    }
  }
  const archived = results.reduce((a, r) => a + r.rows, 0);
  setCurrentDetails(`${input.dryRun ? 'would archive' : 'archived'} ${archived} row(s) of ${results.length} table(s)`);
  return { dryRun: input.dryRun, tables: results };
}

/** Starts the split (a movement workflow of its own, left running when this run ends). */
async function startSplitOf(input: RetentionInput, split: NonNullable<BalanceDecision['split']>): Promise<{ started?: string; outcome: string }> {
  const op: MovementOperationInput = { operation: 'split', shardId: split.shardId, splitTargets: split.targetNodes, ...(split.at !== undefined ? { splitAt: split.at } : {}) };
  const workflowId = moveWorkflowId(split.shardId, input.workflowIdPrefix);
  const movementId = `s${split.shardId}_${uuid4().replace(/-/g, '').slice(0, 10)}`;
  try {
    await startChild('moveShard', {
      workflowId,
      args: [moveShardInput(op, { movementId, workflowId }, input.movement)],
      parentClosePolicy: ParentClosePolicy.ABANDON,
      typedSearchAttributes: [
        { key: SA_SHARD, value: split.shardId },
        { key: SA_OPERATION, value: 'split' },
        { key: SA_PHASE, value: 'prepare' },
        { key: SA_TARGET_NODE, value: split.targetNodes.join(',') },
      ],
      staticSummary: `${describeMovement(op)} (rebalance threshold, ${workflowInfo().workflowId})`,
    });
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) return { outcome: `not started: shard ${split.shardId} is already being moved, split or merged (workflow ${workflowId})` };
    throw err;
  }
  return { started: workflowId, outcome: `started ${describeMovement(op)} as workflow ${workflowId}` };
}
