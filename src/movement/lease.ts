import type pg from 'pg';
import { InvalidInputError, ShardcastError } from '../errors.js';
import { movementNames } from './replication.js';

export type MovementOperation = 'move' | 'split' | 'merge';
export type MovementState = 'running' | 'done' | 'failed' | 'cancelled';

export interface MovementLease {
  id: string;
  operation: MovementOperation;
  shardId: number;
  sourceNodeId: number;
  targetNodeIds: number[];
  /** A merge's second shard, and its node. */
  otherShardIds?: number[];
  otherSourceNodeIds?: number[];
  workflowId?: string;
  /** A move back within the grace period: the movement it reverses (whose fenced copy it needs). */
  reverseOf?: string;
}

/** A movement's lease as the catalog keeps it (a row of shardcast.movements), ids as numbers. */
export interface MovementLeaseRow {
  id: string;
  operation: MovementOperation;
  shard_id: number;
  source_node_id: number;
  target_node_ids: number[];
  other_shard_ids: number[];
  other_source_node_ids: number[];
  state: MovementState;
  workflow_id: string | null;
  reverse_of: string | null;
  started_at: Date;
}

const LEASE_ROW_COLUMNS = `id, operation, shard_id::int, source_node_id::int, target_node_ids::int[], other_shard_ids::int[], other_source_node_ids::int[],
       state, workflow_id, reverse_of, started_at`;

/** Every movement's lease (running or ended), oldest first. */
export async function movementLeaseRows(db: Pick<pg.Pool, 'query'>): Promise<MovementLeaseRow[]> {
  const { rows } = await db.query<MovementLeaseRow>(`select ${LEASE_ROW_COLUMNS} from shardcast.movements order by started_at`);
  return rows;
}

/** One movement's lease; undefined when the catalog has no such movement. */
export async function movementLeaseRow(db: Pick<pg.Pool, 'query'>, id: string): Promise<MovementLeaseRow | undefined> {
  const { rows } = await db.query<MovementLeaseRow>(`select ${LEASE_ROW_COLUMNS} from shardcast.movements where id = $1`, [id]);
  return rows[0];
}

/** Another movement holds the shard: not retried, the operator is told which one. */
export class MovementInProgressError extends ShardcastError {
  readonly movementId: string;
  constructor(shardId: number, movementId: string) {
    super('MOVEMENT_IN_PROGRESS', `shard ${shardId} is already being moved by movement ${movementId}; wait for it, or cancel it`);
    this.movementId = movementId;
  }
}

/** A node already runs as many movements as allowed: the movement queues (phase 'queued') and asks again. */
export class NodeBusyError extends ShardcastError {
  constructor(
    readonly node: string,
    readonly running: number,
    readonly limit: number,
  ) {
    super('NODE_BUSY', `node ${node} already takes part in ${running} running movement(s) (limit ${limit})`);
  }
}

/**
 * Takes the shard's movement lease in the catalog: refused while another movement of the shard runs,
 * or while a node involved already has `maxPerNode` running movements. Taking it again with the same
 * id returns quietly, so a retried activity can call it.
 */
export async function acquireMovementLease(pool: pg.Pool, lease: MovementLease, maxPerNode: number): Promise<void> {
  movementNames(lease.id); // validates the id
  const client = await pool.connect();
  try {
    await client.query('begin');
    const shardIds = [lease.shardId, ...(lease.otherShardIds ?? [])];
    const nodeIds = [...new Set([lease.sourceNodeId, ...(lease.otherSourceNodeIds ?? []), ...lease.targetNodeIds])];
    // Locking the nodes' rows serialises leases that share a node, so the counts below hold.
    const nodes = await client.query<{ id: number; name: string }>(
      'select id::int as id, name from shardcast.nodes where id = any($1::bigint[]) order by id for update',
      [nodeIds],
    );
    const same = await client.query<{ id: string }>("select id from shardcast.movements where id = $1 and state = 'running'", [lease.id]);
    if (same.rowCount) {
      await client.query('commit');
      return;
    }
    // The group's row lock serialises this lease with a table drop (src/catalog/drop-table.ts): a group being dropped is not moved.
    await client.query('select id from shardcast.colocation_groups where id in (select group_id from shardcast.shards where id = any($1::bigint[])) order by id for update', [shardIds]);
    const dropping = await client.query<{ name: string }>(
      `select t.name from shardcast.distributed_tables t where t.state = 'dropping' and t.group_id in (select group_id from shardcast.shards where id = any($1::bigint[]))`,
      [shardIds],
    );
    if (dropping.rows[0]) throw new InvalidInputError(`table "${dropping.rows[0].name}" is being dropped: its shards are not moved`);
    // Every shard's node row is locked above, so no other lease of these shards can slip in meanwhile.
    const holder = await client.query<{ id: string; shard_id: number }>(
      `select id, s::int as shard_id from shardcast.movements m, unnest(array_prepend(m.shard_id, m.other_shard_ids)) s
        where m.state = 'running' and s = any($1::bigint[]) limit 1`,
      [shardIds],
    );
    if (holder.rows[0]) throw new MovementInProgressError(holder.rows[0].shard_id, holder.rows[0].id);
    const busy = await client.query<{ node_id: number; running: number }>(
      `select n.node_id::int, count(*)::int as running
         from shardcast.movements m, lateral unnest(array(select distinct x from unnest(m.target_node_ids || m.other_source_node_ids || m.source_node_id) x)) as n(node_id)
        where m.state = 'running' and n.node_id = any($1::bigint[])
        group by n.node_id`,
      [nodeIds],
    );
    for (const row of busy.rows) {
      if (row.running >= maxPerNode) {
        throw new NodeBusyError(nodes.rows.find((n) => n.id === row.node_id)?.name ?? `#${row.node_id}`, row.running, maxPerNode);
      }
    }
    // The reversed movement's row serialises this lease with the drop of its fenced copy (dropFencedCopyUnlessReversing).
    if (lease.reverseOf) await client.query('select 1 from shardcast.movements where id = $1 for update', [lease.reverseOf]);
    try {
      await client.query(
        `insert into shardcast.movements (id, operation, shard_id, source_node_id, target_node_ids, other_shard_ids, other_source_node_ids, workflow_id, reverse_of)
         values ($1, $2, $3, $4, $5::bigint[], $6::bigint[], $7::bigint[], $8, $9)`,
        [lease.id, lease.operation, lease.shardId, lease.sourceNodeId, lease.targetNodeIds, lease.otherShardIds ?? [], lease.otherSourceNodeIds ?? [], lease.workflowId ?? null, lease.reverseOf ?? null],
      );
    } catch (err) {
      // Two leases for one shard raced past the check: the unique index decides.
      if ((err as { code?: string }).code === '23505') {
        await client.query('rollback');
        const winner = await pool.query<{ id: string }>("select id from shardcast.movements where shard_id = $1 and state = 'running'", [lease.shardId]);
        throw new MovementInProgressError(lease.shardId, winner.rows[0]?.id ?? '?');
      }
      throw err;
    }
    await client.query('commit');
  } catch (err) {
    await client.query('rollback').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

/** Ends the lease with the movement's outcome; a second call changes nothing. */
export async function finishMovement(pool: pg.Pool, id: string, state: Exclude<MovementState, 'running'>): Promise<void> {
  await pool.query("update shardcast.movements set state = $2, finished_at = now() where id = $1 and state = 'running'", [id, state]);
}

/** A cutover attempt that a newer attempt has replaced: it changed nothing and must not go on. */
export class StaleCutoverAttemptError extends ShardcastError {
  constructor(movementId: string, attempt: number, current: number | null) {
    super(
      'STALE_CUTOVER_ATTEMPT',
      current === null
        ? `movement ${movementId} is no longer running: cutover attempt ${attempt} stops`
        : `cutover attempt ${attempt} of movement ${movementId} was replaced by attempt ${current}: it stops without switching anything`,
    );
  }
}

/**
 * Takes the next cutover attempt number (the fencing token) on the movement's lease row, inside the
 * caller's transaction: the row stays locked until it ends. Returns null when the row is locked by
 * someone else for longer than the transaction's lock_timeout (a switch prepared, or in flight).
 */
export async function takeCutoverAttempt(client: pg.ClientBase, movementId: string): Promise<number | null> {
  try {
    const { rows } = await client.query<{ attempt: string }>(
      "update shardcast.movements set cutover_attempt = cutover_attempt + 1 where id = $1 and state = 'running' returning cutover_attempt::text as attempt",
      [movementId],
    );
    if (!rows[0]) throw new StaleCutoverAttemptError(movementId, 0, null);
    return Number(rows[0].attempt);
  } catch (err) {
    if ((err as { code?: string }).code === LOCK_NOT_AVAILABLE) return null;
    throw err;
  }
}

/**
 * Inside the caller's transaction: locks the movement's lease row and checks that `attempt` is still
 * its current cutover attempt. Throws StaleCutoverAttemptError when it is not; returns false when the
 * row could not be locked within the transaction's lock_timeout.
 */
export async function holdCutoverAttempt(client: pg.ClientBase, movementId: string, attempt: number): Promise<boolean> {
  try {
    const { rows } = await client.query<{ attempt: string; state: string }>(
      'select cutover_attempt::text as attempt, state from shardcast.movements where id = $1 for no key update',
      [movementId],
    );
    const row = rows[0];
    if (!row || row.state !== 'running') throw new StaleCutoverAttemptError(movementId, attempt, null);
    if (Number(row.attempt) !== attempt) throw new StaleCutoverAttemptError(movementId, attempt, Number(row.attempt));
    return true;
  } catch (err) {
    if ((err as { code?: string }).code === LOCK_NOT_AVAILABLE) return false;
    throw err;
  }
}

const LOCK_NOT_AVAILABLE = '55P03';

/** When the movement took its lease (its copy began soon after); now when there is no such movement. */
export async function movementStart(pool: Pick<pg.Pool, 'query'>, id: string): Promise<Date> {
  const { rows } = await pool.query<{ started_at: Date }>('select started_at from shardcast.movements where id = $1', [id]);
  return rows[0]?.started_at ?? new Date();
}

/**
 * No part of a movement's switch prepared or committed yet: the catalog holds no prepared transaction
 * `gid` and still places the shard on its source node.
 */
export async function catalogSwitchUntouched(catalog: Pick<pg.Pool, 'query'>, gid: string, shardId: number, sourceNodeId: number): Promise<boolean> {
  const { rows } = await catalog.query<{ untouched: boolean }>(
    `select not exists (select 1 from pg_prepared_xacts where gid = $1 and database = current_database())
        and exists (select 1 from shardcast.placements where shard_id = $2 and node_id = $3) as untouched`,
    [gid, shardId, sourceNodeId],
  );
  return rows[0]!.untouched;
}
