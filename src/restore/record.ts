/**
 * A restore's row in the catalog (`shardcast.restores`, migration 0017): the proposal it was planned
 * from, its state and rows, and the policies of its workload file that outlive the workflow.
 */
import type { Queryable } from '../catalog/nodes.js';

export interface RestoreRecordInput {
  restoreId: string;
  /** A directory or an http(s) URL (never with credentials: the workflow input refuses them). */
  backup: string;
  sourceKind: 'shardcast' | 'pg_dump';
  /** The table's name in the backup … */
  sourceTable: string;
  /** … and in the cluster. */
  targetTable: string;
  /** The layout, as printed (key, method, shards, bounds, placement, reasons). */
  proposal: unknown;
  retentionDays?: number | null;
  retentionColumn?: string | null;
  rebalanceThreshold?: number | null;
}

/** Records a proposed restore; repeating it (a retried activity) changes nothing. */
export async function recordRestore(db: Queryable, input: RestoreRecordInput, rowsExpected: number): Promise<void> {
  await db.query(
    `insert into shardcast.restores (id, table_name, backup, proposal, rows_expected, retention_days, retention_column, rebalance_threshold)
     values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict (id) do nothing`,
    [
      input.restoreId,
      input.targetTable,
      input.backup,
      JSON.stringify(input.proposal),
      rowsExpected,
      input.retentionDays ?? null,
      input.retentionColumn ?? null,
      input.rebalanceThreshold ?? null,
    ],
  );
}

export async function finishRestoreRecord(
  db: Queryable,
  input: { restoreId: string; state: 'importing' | 'verifying' | 'done' | 'failed' | 'rejected'; rows?: number; error?: string },
): Promise<void> {
  const final = ['done', 'failed', 'rejected'].includes(input.state);
  await db.query(
    `update shardcast.restores set state = $2, rows_imported = coalesce($3, rows_imported), error = coalesce($4, error),
            finished_at = case when $5 then now() else finished_at end
      where id = $1`,
    [input.restoreId, input.state, input.rows ?? null, input.error ?? null, final],
  );
}

export interface RestoreRow {
  id: string;
  table: string;
  backup: string;
  state: string;
  rowsExpected: number;
  rowsImported: number;
  error: string | null;
  createdAt: Date;
  finishedAt: Date | null;
}

export async function listRestores(db: Queryable): Promise<RestoreRow[]> {
  const { rows } = await db.query<{ id: string; table_name: string; backup: string; state: string; rows_expected: string; rows_imported: string; error: string | null; created_at: Date; finished_at: Date | null }>(
    'select id, table_name, backup, state, rows_expected::text, rows_imported::text, error, created_at, finished_at from shardcast.restores order by created_at desc',
  );
  return rows.map((r) => ({
    id: r.id,
    table: r.table_name,
    backup: r.backup,
    state: r.state,
    rowsExpected: Number(r.rows_expected),
    rowsImported: Number(r.rows_imported),
    error: r.error,
    createdAt: r.created_at,
    finishedAt: r.finished_at,
  }));
}
