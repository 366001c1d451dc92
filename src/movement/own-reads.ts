import type pg from 'pg';
import type { NodeRecord } from '../catalog/nodes.js';

/** Tuples a movement's own session read from one table of a placed shard, between two moments. */
export interface OwnReadCount {
  nodeId: number;
  schema: string;
  table: string;
  tuples: number;
  startedAt: Date;
  endedAt: Date;
}

/**
 * What this session's open transaction read from the given schemas' tables, as PostgreSQL's own
 * statistics count it (pg_stat_xact_user_tables: sequential and index tuples, the very counters the
 * collector samples once the transaction ends, committed or not).
 */
export async function ownReads(client: Pick<pg.ClientBase, 'query'>, node: NodeRecord, schemas: string[], startedAt: Date): Promise<OwnReadCount[]> {
  const { rows } = await client.query<{ schema: string; table: string; tuples: string }>(
    `select schemaname as schema, relname as "table", (seq_tup_read + coalesce(idx_tup_fetch, 0))::text as tuples
       from pg_stat_xact_user_tables where schemaname = any($1::text[])`,
    [schemas],
  );
  // The counts reach the shared statistics when the transaction ends, not up to 10 s later (an idle
  // pooled session's usual delay), so that the collector sees them at the time they are recorded.
  await client.query('select pg_stat_force_next_flush()');
  const endedAt = new Date();
  return rows.map((r) => ({ nodeId: node.id, schema: r.schema, table: r.table, tuples: Number(r.tuples), startedAt, endedAt })).filter((r) => r.tuples > 0);
}

/**
 * A move's initial copy is PostgreSQL's own table synchronisation: its COPY reads the source's tables
 * in a session Shardcast does not hold. Once the tables are synchronised, what it read is taken as the
 * rows the target's tables received (pg_stat_user_tables.n_tup_ins: the copy's rows, plus the few
 * inserts applied since — a slight over-count, never an under-count of the copy's reads).
 */
export async function tablesyncReads(target: Pick<pg.ClientBase, 'query'>, source: NodeRecord, schema: string, startedAt: Date): Promise<OwnReadCount[]> {
  const { rows } = await target.query<{ table: string; tuples: string }>(
    'select relname as "table", n_tup_ins::text as tuples from pg_stat_user_tables where schemaname = $1',
    [schema],
  );
  const endedAt = new Date();
  return rows.map((r) => ({ nodeId: source.id, schema, table: r.table, tuples: Number(r.tuples), startedAt, endedAt })).filter((r) => r.tuples > 0);
}
