import { Context } from '@temporalio/activity';
import type pg from 'pg';
import type { NodePools } from '../src/catalog/node-pools.js';
import { retentionRowsArchived } from '../src/metrics/metrics.js';
import { checkBalance, type BalanceDecision } from '../src/restore/balance-check.js';
import {
  archiveShard,
  beginRetentionRun,
  checkRetentionColumn,
  countExpired,
  finishRetentionRun,
  restoredTables,
  shardsOfGroup,
  type ArchiveShardInput,
  type ArchiveShardResult,
  type FinishedRun,
  type RetentionTable,
} from '../src/restore/retention.js';
import { errorMessage } from '../src/errors.js';
import { run } from './failures.js';

export interface RetentionDeps {
  catalog: pg.Pool;
  nodePools: NodePools;
}

/** A restored table as the retention workflow sees it: its shards now, and what is wrong with its policy. */
export interface RetentionTarget extends RetentionTable {
  shardIds: number[];
  /** Why its retention cannot run (a bad retention column): reported, the other tables go on. */
  problem?: string;
}

export function createRetentionActivities(deps: RetentionDeps) {
  return {
    /** The restored tables with a policy (or `table` alone), their shards, and the retention column checked on one shard. */
    async listRetentionTargets(input: { table?: string }): Promise<RetentionTarget[]> {
      return run(async () => {
        const out: RetentionTarget[] = [];
        for (const t of await restoredTables(deps.catalog, input.table)) {
          const shards = await shardsOfGroup(deps.catalog, t.groupId);
          let problem: string | undefined;
          if (t.column !== null && shards[0]) {
            try {
              await checkRetentionColumn(deps.nodePools.get(shards[0].dsn), shards[0].schema, t.table, t.column);
            } catch (err) {
              problem = errorMessage(err);
            }
          }
          out.push({ ...t, shardIds: shards.map((s) => s.shardId), ...(problem ? { problem } : {}) });
        }
        return out;
      });
    },

    async countExpiredRows(input: { table: string; groupId: number; column: string; cutoff: string }): Promise<Array<{ shardId: number; node: string; rows: number }>> {
      return run(() => countExpired(deps.catalog, deps.nodePools, input, input.cutoff));
    },

    async beginRetentionRun(input: { runId: string; table: string; dir: string; cutoff: string }): Promise<void> {
      return run(() => beginRetentionRun(deps.catalog, input));
    },

    /** One shard's expired rows archived and deleted; heartbeats with the rows streamed so far. */
    async archiveExpiredRows(input: ArchiveShardInput): Promise<ArchiveShardResult> {
      return run(async () => {
        const context = Context.current();
        let rows = 0;
        context.heartbeat({ rows });
        // Also while PostgreSQL works before the first row comes back (the digest scan, the delete itself).
        const timer = setInterval(() => context.heartbeat({ rows }), 10_000);
        try {
          return await archiveShard(deps.catalog, deps.nodePools, input, {
            heartbeat: (n) => {
              rows = n;
              context.heartbeat({ rows });
            },
            onArchived: (n) => retentionRowsArchived.inc({ table: input.table }, n),
          });
        } finally {
          clearInterval(timer);
        }
      });
    },

    async finishRetentionRun(input: { runId: string; table: string; groupId: number; dir: string }): Promise<FinishedRun> {
      return run(() => finishRetentionRun(deps.catalog, deps.nodePools, input));
    },

    async checkTableBalance(input: { table: RetentionTable; now: string; minShardBytes: number }): Promise<BalanceDecision> {
      return run(() => checkBalance(deps.catalog, deps.nodePools, input.table, { now: new Date(input.now), minShardBytes: input.minShardBytes }));
    },
  };
}
