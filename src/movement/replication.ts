import { reportingSlotWait } from './slot-wait.js';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { grantShardSchemas } from '../catalog/app-role.js';
import { resolveDsn } from '../catalog/dsn-password.js';
import { libpqConninfo, newPgClient } from '../catalog/pg-tls.js';
import { dropSchemaGuarded } from './drop-guard.js';
import { ensureMovementTable } from './movement-tables.js';
import type { NodePools } from '../catalog/node-pools.js';
import type { NodeRecord, Queryable } from '../catalog/nodes.js';
import { InvalidInputError, NotFoundError, ShardcastError, sqlState } from '../errors.js';
import { shardTableDdl } from '../catalog/tables.js';
import { quoteIdent, quoteLiteral, singleStatement } from '../sql/ident.js';
import { inTransaction } from '../sql/transaction.js';
import { AS_REPLICA, createFence } from './fence.js';
import { ownReads, type OwnReadCount } from './own-reads.js';
import { paceApply, type Governor } from './governor.js';
import { copyChunked, KEY_ORDER_SETTINGS, primaryKeyColumns, type CopyProgress } from './logical-apply.js';

/**
 * The copy-and-stream part of the movement protocol (DESIGN §3, steps 1, 2, 3 and 7): target tables
 * prepared from the catalog, a publication on the source and a binary subscription on the target,
 * progress and lag, and the teardown that leaves no slot, publication or subscription behind. Every
 * step checks what exists first, so a retried activity can run it again.
 */

const MOVEMENT_ID = /^[a-z0-9_]{1,40}$/;

export interface MovementNames {
  publication: string;
  subscription: string;
  slot: string;
  /** Global transaction id of the cutover's two-phase commit. */
  gid: string;
}

/** Names of one movement's replication objects; all start with `sc_mv_`, so leftovers are findable. */
export function movementNames(movementId: string): MovementNames {
  if (!MOVEMENT_ID.test(movementId)) {
    throw new InvalidInputError(`movement id ${JSON.stringify(movementId)} must be 1–40 lower-case letters, digits or underscores`);
  }
  const base = `sc_mv_${movementId}`;
  return { publication: base, subscription: base, slot: base, gid: base };
}

export interface ShardTables {
  shardId: number;
  schema: string;
  /** The colocation group's name (for search attributes and messages). */
  group?: string;
  /** The colocation group's tables, as created in every shard. */
  tables: Array<{ name: string; columns: string }>;
}

/** What a shard holds, from the catalog: its schema and its group's active tables. */
export async function shardTables(catalog: Queryable, shardId: number): Promise<ShardTables> {
  const { rows } = await catalog.query<{ schema_name: string; group_name: string; name: string | null; columns_ddl: string | null }>(
    `select s.schema_name, g.name as group_name, t.name, t.columns_ddl
       from shardcast.shards s
       join shardcast.colocation_groups g on g.id = s.group_id
       left join shardcast.distributed_tables t on t.group_id = s.group_id and t.state = 'active'
      where s.id = $1 order by t.id`,
    [shardId],
  );
  if (rows.length === 0) throw new NotFoundError(`shard ${shardId} does not exist`);
  return {
    shardId,
    schema: rows[0]!.schema_name,
    group: rows[0]!.group_name,
    tables: rows.filter((r) => r.name !== null).map((r) => ({ name: r.name!, columns: r.columns_ddl! })),
  };
}

/**
 * Logical replication can update and delete only rows it can identify: every table needs a primary
 * key (or a replica identity). Checked on the source before anything is created.
 */
export async function assertMovable(pools: NodePools, source: NodeRecord, shard: ShardTables, options: { primaryKey?: boolean } = {}): Promise<void> {
  const { rows } = await pools.get(source.dsn).query<{ relname: string; identity: string; has_pk: boolean }>(
    `select c.relname, c.relreplident as identity,
            exists (select 1 from pg_index i where i.indrelid = c.oid and i.indisprimary) as has_pk
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = $1 and c.relkind in ('r', 'p') order by c.relname`,
    [shard.schema],
  );
  const found = new Map(rows.map((r) => [r.relname, r]));
  for (const table of shard.tables) {
    const row = found.get(table.name);
    if (!row) throw new NotFoundError(`shard ${shard.shardId}: table ${table.name} is missing from ${shard.schema} on ${source.name}`);
    if (options.primaryKey && !row.has_pk) {
      throw new InvalidInputError(
        `shard ${shard.shardId}: table ${table.name} has no primary key; a split or merge writes rows into new shards by primary key, so add one first`,
      );
    }
    const identified = row.has_pk || row.identity === 'f' || row.identity === 'i';
    if (!identified) {
      throw new InvalidInputError(
        `shard ${shard.shardId}: table ${table.name} has no primary key (nor a replica identity), so its updates and deletes cannot be streamed; add a primary key first`,
      );
    }
  }
}

/**
 * Step 1: the shard's schema and tables on the target, in one transaction, fenced: until its cutover
 * only replication (session_replication_role = replica) writes there, and a router whose map places
 * the shard on this node (from an earlier stay) is sent back to the source.
 */
export async function prepareTarget(pools: NodePools, target: NodeRecord, shard: ShardTables): Promise<void> {
  await inTransaction(pools.get(target.dsn), async (client) => {
    await client.query(`create schema if not exists ${quoteIdent(shard.schema)}`);
    for (const table of shard.tables) {
      await client.query(singleStatement(shardTableDdl(shard.schema, table.name, table.columns)));
      // No autovacuum until the cutover: one running on the freshly copied table holds a lock that
      // the cutover's lifting of this fence (DROP TRIGGER) waits for while writes are blocked, up to
      // deadlock_timeout (1 s) before PostgreSQL cancels it. Measured: a 10M-row cutover held 1085 ms.
      await client.query(`alter table ${quoteIdent(shard.schema)}.${quoteIdent(table.name)} set (autovacuum_enabled = false)`);
    }
    // The application role's rights travel with the schema (the fence keeps it out until the cutover).
    await grantShardSchemas(client, [shard.schema]);
    const message = `shard ${shard.shardId} is being moved to ${target.name} and is not served here until its cutover`;
    await createFence(client, shard.schema, shard.tables.map((t) => t.name), message);
  });
}

/** After the cutover: the new placement's tables are autovacuumed again (prepareTarget turned it off). */
export async function resumeAutovacuum(pools: NodePools, node: NodeRecord, schema: string, tables: readonly string[]): Promise<void> {
  const db = pools.get(node.dsn);
  const { rows } = await db.query<{ name: string }>('select tablename as name from pg_tables where schemaname = $1 and tablename = any($2::text[])', [schema, tables]);
  for (const { name } of rows) await db.query(`alter table ${quoteIdent(schema)}.${quoteIdent(name)} reset (autovacuum_enabled)`);
}

export interface StreamOptions {
  /** Row filter of the publication, e.g. a hash range for a split: SQL over the table's columns. */
  rowFilter?: (table: string) => string | undefined;
  /**
   * 'subscription' (default): the subscription copies by itself (table sync, which cannot be paced).
   * 'own': only the publication here; `copyMove` then copies, paced, and creates the subscription.
   */
  copy?: 'subscription' | 'own';
}

/** pg_subscription is shared by every database of a server: look only at this database's. */
const CURRENT_DB_SUBSCRIPTION = 'select 1 from pg_subscription where subname = $1 and subdbid = (select oid from pg_database where datname = current_database())';

/** Step 2: publication on the source, binary subscription on the target (which copies, then streams, unless the copy is our own). */
export async function startStreaming(
  pools: NodePools,
  endpoints: { source: NodeRecord; target: NodeRecord },
  shard: ShardTables,
  names: MovementNames,
  options: StreamOptions = {},
): Promise<void> {
  const source = pools.get(endpoints.source.dsn);
  await ensureWatermarkTable(source);
  await ensureWatermarkTable(pools.get(endpoints.target.dsn));
  await source.query(`insert into ${WATERMARKS} (movement_id, n) values ($1, 0) on conflict (movement_id) do nothing`, [names.slot]);
  const hasPublication = await source.query('select 1 from pg_publication where pubname = $1', [names.publication]);
  if (hasPublication.rowCount === 0) {
    const tables = shard.tables
      .map((t) => {
        const filter = options.rowFilter?.(t.name);
        return `${quoteIdent(shard.schema)}.${quoteIdent(t.name)}${filter ? ` where (${filter})` : ''}`;
      })
      .join(', ');
    // The movement's own watermark row travels with the shard's rows: see waitForWatermark.
    const watermark = `${WATERMARKS} where (movement_id = ${quoteLiteral(names.slot)})`;
    await source.query(`create publication ${quoteIdent(names.publication)} for table ${tables}, ${watermark}`);
  }
  const target = pools.get(endpoints.target.dsn);
  if (options.copy === 'own') {
    await ensureCopyTables(target);
    await target.query(`insert into ${COPY_CONTROL} (movement_id) values ($1) on conflict (movement_id) do nothing`, [names.slot]);
    return;
  }
  const hasSubscription = await target.query(CURRENT_DB_SUBSCRIPTION, [names.subscription]);
  if (hasSubscription.rowCount === 0) {
    // CREATE SUBSCRIPTION creates the slot on the source; it cannot run inside a transaction block.
    await target.query(
      `create subscription ${quoteIdent(names.subscription)} connection ${quoteLiteral(libpqConninfo(resolveDsn(endpoints.source.dsn)))}
       publication ${quoteIdent(names.publication)} with (binary = true, slot_name = ${quoteLiteral(names.slot)})`,
    );
  }
}

/** A move's own copy on the target: per table, rows and bytes copied and whether it is done. */
const COPIES = 'sc_movement.copies';
/**
 * Per move with an own copy: the attempt that may write (`token`: a retried copy fences out the
 * attempt before it), pause, time throttled, and whether every table is copied.
 */
const COPY_CONTROL = 'sc_movement.copy_control';

async function ensureCopyTables(db: Pick<pg.Pool, 'query'>): Promise<void> {
  await ensureMovementTable(db, COPY_CONTROL, [
    `create table if not exists ${COPIES} (movement_id text, table_name text, rows bigint not null, bytes bigint not null, done boolean not null, primary key (movement_id, table_name))`,
    `create table if not exists ${COPY_CONTROL} (movement_id text primary key, token text, paused boolean not null default false,
       throttled_ms bigint not null default 0, done boolean not null default false)`,
  ]);
}

/** Drops a slot left by an earlier attempt, ending the connection that still holds it (a stale copy's). */
async function dropSlot(source: pg.Pool, slot: string): Promise<void> {
  for (let i = 0; ; i++) {
    const { rows } = await source.query<{ active_pid: number | null }>('select active_pid from pg_replication_slots where slot_name = $1', [slot]);
    if (!rows[0]) return;
    if (rows[0].active_pid === null) {
      await source.query('select pg_drop_replication_slot($1)', [slot]);
      return;
    }
    if (i >= 50) throw new ShardcastError('SLOT_BUSY', `replication slot ${slot} stays in use by process ${rows[0].active_pid}`);
    await source.query('select pg_terminate_backend($1)', [rows[0].active_pid]);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export class StaleCopyError extends ShardcastError {
  constructor(movement: string) {
    super('STALE_COPY', `the copy of ${movement} was taken over by a newer attempt`);
  }
}

export interface MoveCopyHooks {
  governor: Governor;
  /** Called about once a second with the progress so far (heartbeat). */
  beat?: (p: CopyProgress) => void;
  cancelled?: () => boolean;
  /** While the slot's creation waits, every few seconds: what it waits for (see slotBlockers). */
  waiting?: (waitingFor: string) => void;
  /** Told, once the copy is done, what its source session read from the shard's tables (not workload: see ownReads). */
  onOwnReads?: (reads: OwnReadCount[]) => Promise<void>;
}

/**
 * A move's paced copy (step 2 with `copy: 'own'`): the slot is created with an exported snapshot,
 * every table is copied in primary-key chunks inside that snapshot (the governor pacing them), and
 * the subscription (copy_data = false, on that slot) streams everything after it once the copy is
 * done. A retry starts over: the attempt before is fenced out by a new token, the subscription and
 * slot are recreated and the target tables emptied (nothing has been applied to them yet).
 */
export async function copyMove(
  pools: NodePools,
  endpoints: { source: NodeRecord; target: NodeRecord },
  shard: ShardTables,
  names: MovementNames,
  hooks: MoveCopyHooks,
): Promise<CopyProgress> {
  const source = pools.get(endpoints.source.dsn);
  const target = pools.get(endpoints.target.dsn);
  await ensureCopyTables(target);
  const token = randomUUID();
  // Taking the control row waits for an older attempt's chunk in flight; its next chunk then finds the new token and stops.
  const { rows: control } = await target.query<{ throttled_ms: string }>(
    `insert into ${COPY_CONTROL} (movement_id, token) values ($1, $2)
       on conflict (movement_id) do update set token = excluded.token, done = false returning throttled_ms::text`,
    [names.slot, token],
  );
  const throttledBefore = Number(control[0]!.throttled_ms);
  await dropSubscription(target, names.subscription);
  await dropSlot(source, names.slot);
  const tableNames = shard.tables.map((t) => `${quoteIdent(shard.schema)}.${quoteIdent(t.name)}`);
  if (tableNames.length) {
    await inTransaction(target, async (client) => {
      await client.query(AS_REPLICA); // the target is fenced against ordinary writers until its cutover
      await client.query(`truncate ${tableNames.join(', ')}`);
    });
  }
  await target.query(`delete from ${COPIES} where movement_id = $1`, [names.slot]);

  const out = await source.connect();
  const into = await target.connect();
  let open = false;
  let startedAt = new Date();
  try {
    // The snapshot can be imported only while the replication connection that exported it stays idle; once imported it is ours.
    const repl = newPgClient(resolveDsn(endpoints.source.dsn), { replication: 'database' } as pg.ClientConfig);
    repl.on('error', () => undefined);
    await repl.connect();
    try {
      const created = await reportingSlotWait(
        repl.query<{ snapshot_name: string }>(`CREATE_REPLICATION_SLOT ${quoteIdent(names.slot)} LOGICAL pgoutput (SNAPSHOT 'export')`),
        source,
        (waitingFor) => hooks.waiting?.(waitingFor),
      );
      startedAt = new Date();
      await out.query('begin isolation level repeatable read read only');
      open = true;
      await out.query(`set transaction snapshot ${quoteLiteral(created.rows[0]!.snapshot_name)}`);
      for (const setting of KEY_ORDER_SETTINGS) await out.query(setting);
    } finally {
      await repl.end().catch(() => undefined);
    }
    await target.query(
      `create subscription ${quoteIdent(names.subscription)} connection ${quoteLiteral(libpqConninfo(resolveDsn(endpoints.source.dsn)))}
       publication ${quoteIdent(names.publication)}
       with (binary = true, copy_data = false, create_slot = false, enabled = false, slot_name = ${quoteLiteral(names.slot)})`,
    );
    // The movement's watermark row as of the snapshot, like a table sync would copy it: later bumps update it.
    const { rows: mark } = await out.query<{ n: string }>(`select n::text from ${WATERMARKS} where movement_id = $1`, [names.slot]);
    if (mark[0]) {
      await target.query(`insert into ${WATERMARKS} (movement_id, n) values ($1, $2) on conflict (movement_id) do update set n = excluded.n`, [names.slot, mark[0].n]);
    }
    await hooks.governor.start();
    const progress: CopyProgress = { rows: 0, bytes: 0, throttledMs: throttledBefore };
    let lastBeat = 0;
    const beat = (): void => {
      progress.throttledMs = throttledBefore + hooks.governor.stats.throttledMs;
      if (Date.now() - lastBeat < 1000) return;
      lastBeat = Date.now();
      hooks.beat?.(progress);
    };
    // The pause flag (and the token) read at most once a second, not a round trip per chunk; while paused, every time asked.
    let checkedAt = 0;
    const held = async (): Promise<boolean> => {
      if (Date.now() - checkedAt < 1000) return false;
      const { rows } = await target.query<{ token: string | null; paused: boolean }>(`select token, paused from ${COPY_CONTROL} where movement_id = $1`, [names.slot]);
      if (rows[0]?.token !== token) throw new StaleCopyError(names.slot);
      if (!rows[0].paused) checkedAt = Date.now();
      return rows[0].paused;
    };
    for (const table of shard.tables) {
      const from = `${quoteIdent(shard.schema)}.${quoteIdent(table.name)}`;
      await into.query(`insert into ${COPIES} values ($1, $2, 0, 0, false)`, [names.slot, table.name]);
      await copyChunked({
        out,
        into,
        from,
        to: from,
        keyColumns: await primaryKeyColumns(out, shard.schema, table.name),
        chunkRows: hooks.governor.settings.chunkRows,
        pace: () => hooks.governor.piece(),
        beforeChunk: async () => {
          if (hooks.cancelled?.()) throw new ShardcastError('CANCELLED', `the copy of ${names.slot} was cancelled`);
          await hooks.governor.wait({ held, beat, cancelled: hooks.cancelled });
          if (hooks.cancelled?.()) throw new ShardcastError('CANCELLED', `the copy of ${names.slot} was cancelled`);
        },
        inChunk: async (client, chunk) => {
          progress.rows += chunk.rows;
          progress.throttledMs = throttledBefore + hooks.governor.stats.throttledMs;
          // One round trip: the token check (a newer attempt fences this one out) and the chunk's count, committed with its rows.
          const counted = await client.query(
            `with fence as (update ${COPY_CONTROL} set throttled_ms = $3 where movement_id = $1 and token = $2 returning 1)
             update ${COPIES} set rows = rows + $5, bytes = bytes + $6 where movement_id = $1 and table_name = $4 and exists (select 1 from fence)`,
            [names.slot, token, Math.round(progress.throttledMs), table.name, chunk.rows, chunk.bytes],
          );
          if (!counted.rowCount) throw new StaleCopyError(names.slot);
        },
        onBytes: (n) => {
          progress.bytes += n;
          beat();
        },
      });
      await into.query(`update ${COPIES} set done = true where movement_id = $1 and table_name = $2`, [names.slot, table.name]);
    }
    // What the copy read, from its one transaction's own statistics, before that transaction ends.
    const read = await ownReads(out, endpoints.source, [shard.schema], startedAt);
    await out.query('commit');
    open = false;
    await hooks.onOwnReads?.(read).catch(() => undefined);
    const { rows: finished } = await target.query<{ paused: boolean }>(
      `update ${COPY_CONTROL} set done = true, throttled_ms = $3 where movement_id = $1 and token = $2 returning paused`,
      [names.slot, token, Math.round(throttledBefore + hooks.governor.stats.throttledMs)],
    );
    if (!finished[0]) throw new StaleCopyError(names.slot);
    // A pause that came meanwhile keeps it disabled; resume enables it (see setSubscriptionEnabled).
    if (!finished[0].paused) await target.query(`alter subscription ${quoteIdent(names.subscription)} enable`);
    progress.throttledMs = throttledBefore + hooks.governor.stats.throttledMs;
    progress.baselinesMs = hooks.governor.baselines();
    return progress;
  } finally {
    if (open) await out.query('rollback').catch(() => undefined);
    out.release();
    into.release();
    await hooks.governor.stop();
  }
}

/**
 * Pause and resume. Disabling a subscription stops its apply worker, but a table-sync worker in the
 * middle of a table's initial COPY only notices at the end of it: it is stopped here, so a pause
 * really stops consuming the source. That table's copy starts over on resume. A move with its own
 * copy holds that copy between chunks while paused; its subscription is enabled only once the copy
 * is done (streaming into a half-copied table would lose changes).
 */
export async function setSubscriptionEnabled(pools: NodePools, target: NodeRecord, names: MovementNames, enabled: boolean): Promise<void> {
  const db = pools.get(target.dsn);
  const own = await ownCopyState(db, names);
  if (own) await db.query(`update ${COPY_CONTROL} set paused = $2 where movement_id = $1`, [names.slot, !enabled]);
  const exists = await db.query(CURRENT_DB_SUBSCRIPTION, [names.subscription]);
  if (!exists.rowCount) return;
  if (enabled && own && !(await ownCopyState(db, names))?.done) return;
  await db.query(`alter subscription ${quoteIdent(names.subscription)} ${enabled ? 'enable' : 'disable'}`);
  if (enabled) return;
  await db.query(
    `select pg_terminate_backend(w.pid) from pg_stat_subscription w join pg_subscription s on s.oid = w.subid
      where s.subname = $1 and s.subdbid = (select oid from pg_database where datname = current_database()) and w.pid is not null`,
    [names.subscription],
  );
}

/** Bytes of WAL the move's slot has not yet confirmed (null: no slot). */
async function slotLag(source: Pick<pg.Pool, 'query'>, names: MovementNames): Promise<number | null> {
  const { rows } = await source.query<{ lag: string | null }>(
    'select pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint::text as lag from pg_replication_slots where slot_name = $1',
    [names.slot],
  );
  return rows[0]?.lag != null ? Number(rows[0].lag) : null;
}

/**
 * Paces a move's apply (the subscription's apply worker) until the deadline, as a duty cycle like the
 * copy's: the apply runs for a slice, then is held for the pause the governor decides (none while
 * within the limit at full share, or while the lag is beyond maxLagBytes), and so on. It is held by a
 * SHARE lock on the shard's tables on the target, which its writes wait for: the subscription is not
 * stopped, since restarting it would start its walsender decoding the slot again, on the very source
 * whose foreground the governor protects. Only once the own copy is done and the movement is not
 * paused. Returns the time held, in ms.
 */
export async function paceSubscription(
  pools: NodePools,
  endpoints: { source: NodeRecord; target: NodeRecord },
  shard: ShardTables,
  names: MovementNames,
  governor: Governor,
  deadline: number,
  onTick: () => void = () => undefined,
): Promise<number> {
  const source = pools.get(endpoints.source.dsn);
  const target = pools.get(endpoints.target.dsn);
  const own = await ownCopyState(target, names);
  if (own && !own.done) return 0;
  const { rows } = await target.query<{ paused: boolean }>(`select paused from ${COPY_CONTROL} where movement_id = $1`, [names.slot]);
  if (rows[0]?.paused) return 0;
  const tables = shard.tables.map((t) => `${quoteIdent(shard.schema)}.${quoteIdent(t.name)}`).join(', ');
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  const holder = await target.connect();
  let broken: Error | undefined;
  let held = 0;
  let lag: number | null = null;
  let lagAt = Number.NEGATIVE_INFINITY;
  try {
    while (Date.now() < deadline) {
      const slice = Math.max(1, Math.min(APPLY_SLICE_MS, deadline - Date.now()));
      await sleep(slice);
      onTick();
      if (Date.now() >= deadline) break;
      if (Date.now() - lagAt >= LAG_EVERY_MS) {
        lag = await slotLag(source, names);
        lagAt = Date.now();
      }
      const pause = Math.min(governor.decide(slice, paceApply(true, lag, governor.settings)), deadline - Date.now());
      if (pause < 1) continue;
      // A lock the apply holds (mid-transaction) is not waited for: no hold this time, and no deadlock with it.
      await holder.query(`begin; set local lock_timeout = ${HOLD_LOCK_WAIT_MS}`);
      try {
        await holder.query(`lock table ${tables} in share mode`);
      } catch (err) {
        await holder.query('rollback');
        if (sqlState(err) === '55P03') continue;
        throw err;
      }
      const t0 = performance.now();
      await sleep(pause);
      await holder.query('commit');
      const ms = performance.now() - t0;
      held += ms;
      governor.count(ms);
      onTick();
    }
  } catch (err) {
    broken = err as Error;
    throw err;
  } finally {
    holder.release(broken);
  }
  if (held > 0) await target.query(`update ${COPY_CONTROL} set throttled_ms = throttled_ms + $2 where movement_id = $1`, [names.slot, Math.round(held)]);
  return held;
}

/** How long a paced apply runs between two decisions: short, so that its holds are short too. */
const APPLY_SLICE_MS = 25;

/** How often a paced apply reads its slot's lag. */
const LAG_EVERY_MS = 250;

/** How long a hold waits for the apply's lock before it lets this slice go by. */
const HOLD_LOCK_WAIT_MS = 20;

/** A move's own-copy control row on the target, when it copies by itself. */
async function ownCopyState(db: Pick<pg.Pool, 'query'>, names: MovementNames): Promise<{ done: boolean; throttledMs: number; copied: number; rows: number } | undefined> {
  const exists = await db.query("select to_regclass('sc_movement.copy_control') is not null as ok");
  if (!exists.rows[0]?.ok) return undefined;
  const { rows } = await db.query<{ done: boolean; throttled_ms: string; copied: number; rows: string }>(
    `select c.done, c.throttled_ms::text, (select count(*)::int from ${COPIES} t where t.movement_id = c.movement_id and t.done) as copied,
            (select coalesce(sum(t.rows), 0)::bigint::text from ${COPIES} t where t.movement_id = c.movement_id) as rows
       from ${COPY_CONTROL} c where c.movement_id = $1`,
    [names.slot],
  );
  return rows[0] ? { done: rows[0].done, throttledMs: Number(rows[0].throttled_ms), copied: rows[0].copied, rows: Number(rows[0].rows) } : undefined;
}

export interface StreamProgress {
  tables: number;
  /** Tables whose initial copy is done and that now stream ('r' in pg_subscription_rel). */
  tablesReady: number;
  /** Tables whose rows are all copied, caught up or not ('f', 's' or 'r'). */
  tablesCopied?: number;
  /** WAL the source has written that the target has not yet confirmed, in bytes. */
  lagBytes: number | null;
  /** Rows now in the target's shard tables. */
  rowsCopied: number;
  /** Their size on the target, in bytes. */
  bytesCopied: number;
  /** Time the governor held the copy (and a move's apply) back, in ms (a move with its own copy). */
  throttledMs?: number;
  /** A move's apply was paced by the governor for this long in this call (the caller need not wait the poll interval too). */
  pacedMs?: number;
  /** A move copied by itself (copyMove), not by the subscription's table sync: its reads were recorded by the copy. */
  ownCopy?: boolean;
}

/** Step 3's measure: copy state, replication lag, rows and bytes on the target. */
export async function streamProgress(
  pools: NodePools,
  endpoints: { source: NodeRecord; target: NodeRecord },
  shard: ShardTables,
  names: MovementNames,
): Promise<StreamProgress> {
  const target = pools.get(endpoints.target.dsn);
  const [states, lag, size] = await Promise.all([
    target.query<{ total: number; ready: number; copied: number }>(
      `select count(*)::int as total, count(*) filter (where r.srsubstate = 'r')::int as ready,
              count(*) filter (where r.srsubstate in ('f', 's', 'r'))::int as copied
         from pg_subscription_rel r join pg_subscription s on s.oid = r.srsubid
        where s.subname = $1 and s.subdbid = (select oid from pg_database where datname = current_database())
          and r.srrelid <> to_regclass('sc_movement.watermarks')`,
      [names.subscription],
    ),
    pools
      .get(endpoints.source.dsn)
      .query<{ lag: string | null }>(
        `select pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint::text as lag from pg_replication_slots where slot_name = $1`,
        [names.slot],
      ),
    target.query<{ rows: string; bytes: string }>(
      `select coalesce(sum(s.n_live_tup), 0)::bigint::text as rows, coalesce(sum(pg_total_relation_size(s.relid)), 0)::bigint::text as bytes
         from pg_stat_user_tables s where s.schemaname = $1`,
      [shard.schema],
    ),
  ]);
  const own = await ownCopyState(target, names);
  if (own) {
    // Our own copy: the subscription's tables are 'ready' from the start, but only streaming once the copy is done.
    const tables = shard.tables.length;
    return {
      tables,
      tablesReady: own.done ? (states.rows[0]?.ready ?? 0) : Math.min(own.copied, tables - 1),
      tablesCopied: own.copied,
      lagBytes: lag.rows[0]?.lag != null ? Number(lag.rows[0].lag) : null,
      // The statistics lag behind the copy's own count of committed rows.
      rowsCopied: Math.max(Number(size.rows[0]?.rows ?? 0), own.rows),
      bytesCopied: Number(size.rows[0]?.bytes ?? 0),
      throttledMs: own.throttledMs,
      ownCopy: true,
    };
  }
  return {
    tables: states.rows[0]?.total ?? 0,
    tablesReady: states.rows[0]?.ready ?? 0,
    tablesCopied: states.rows[0]?.copied ?? 0,
    lagBytes: lag.rows[0]?.lag != null ? Number(lag.rows[0].lag) : null,
    rowsCopied: Number(size.rows[0]?.rows ?? 0),
    bytesCopied: Number(size.rows[0]?.bytes ?? 0),
  };
}

/** Per-node table of movement watermarks (one row per running movement, published with its shard). */
export const WATERMARKS = 'sc_movement.watermarks';

async function ensureWatermarkTable(db: Pick<pg.Pool, 'query'>): Promise<void> {
  await ensureMovementTable(db, WATERMARKS, [`create table if not exists ${WATERMARKS} (movement_id text primary key, n bigint not null)`]);
}

/**
 * Bumps the movement's watermark on the source (in its own transaction, after the shard's writers
 * are locked out) and returns the new value. Logical replication applies commits in commit order,
 * so once the target shows this value it has applied every write the source committed before it.
 * Unlike the source's WAL position, this needs no keepalive to become visible on the target.
 */
export async function bumpWatermark(pools: NodePools, source: NodeRecord, names: MovementNames): Promise<number> {
  const { rows } = await pools
    .get(source.dsn)
    .query<{ n: string }>(`update ${WATERMARKS} set n = n + 1 where movement_id = $1 returning n::text`, [names.slot]);
  if (!rows[0]) throw new NotFoundError(`movement ${names.slot} has no watermark on ${source.name}`);
  return Number(rows[0].n);
}

export async function targetHasWatermark(pools: NodePools, target: NodeRecord, names: MovementNames, n: number): Promise<boolean> {
  const { rows } = await pools.get(target.dsn).query<{ ok: boolean }>(`select coalesce(max(n) >= $2, false) as ok from ${WATERMARKS} where movement_id = $1`, [
    names.slot,
    n,
  ]);
  return rows[0]?.ok ?? false;
}

/** The source's current WAL position (read under the cutover lock). */
export async function currentLsn(client: Pick<pg.ClientBase, 'query'>): Promise<string> {
  const { rows } = await client.query<{ lsn: string }>('select pg_current_wal_lsn()::text as lsn');
  return rows[0]!.lsn;
}

/**
 * Step 7 (and the compensation of step 2): drops the subscription (and with it the slot on the
 * source), then the publication. When the source cannot be reached the subscription is detached
 * from its slot first, and the slot is dropped on the source whenever it answers again. When the
 * target cannot be reached, the source side is cleaned all the same and the target's error is
 * thrown afterwards, so that a retry finishes the target once it is back.
 */
export async function stopStreaming(
  pools: NodePools,
  endpoints: { source: NodeRecord; target: NodeRecord },
  names: MovementNames,
): Promise<void> {
  const target = pools.get(endpoints.target.dsn);
  let targetError: unknown;
  try {
    await dropSubscription(target, names.subscription);
  } catch (err) {
    targetError = err;
  }
  const source = pools.get(endpoints.source.dsn);
  await source.query(
    `select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = $1 and not active`,
    [names.slot],
  );
  await source.query(`drop publication if exists ${quoteIdent(names.publication)}`);
  await deleteWatermark(source, names);
  if (targetError !== undefined) throw targetError;
  await deleteWatermark(target, names);
}

/** Drops this database's subscription `name`; when its publisher or slot is gone, detaches the slot first (the slot is dropped on its own node). */
export async function dropSubscription(target: pg.Pool, name: string): Promise<void> {
  const sub = quoteIdent(name);
  const exists = await target.query(CURRENT_DB_SUBSCRIPTION, [name]);
  if (!exists.rowCount) return;
  try {
    await target.query(`drop subscription if exists ${sub}`);
  } catch {
    await target.query(`alter subscription ${sub} disable`);
    await target.query(`alter subscription ${sub} set (slot_name = none)`);
    await target.query(`drop subscription if exists ${sub}`);
  }
}

async function deleteWatermark(db: pg.Pool, names: MovementNames): Promise<void> {
  const exists = await db.query(
    "select to_regclass('sc_movement.watermarks') is not null as ok, to_regclass('sc_movement.copy_control') is not null as copies",
  );
  if (exists.rows[0]?.ok) await db.query(`delete from ${WATERMARKS} where movement_id = $1`, [names.slot]);
  if (exists.rows[0]?.copies) {
    await db.query(`delete from ${COPIES} where movement_id = $1`, [names.slot]);
    await db.query(`delete from ${COPY_CONTROL} where movement_id = $1`, [names.slot]);
  }
}

/** Compensation of step 1: the target's copy of the shard, unless the catalog places the shard there. */
export async function dropTargetShard(catalog: Queryable, pools: NodePools, target: NodeRecord, shard: ShardTables): Promise<void> {
  const placed = await catalog.query('select 1 from shardcast.placements where shard_id = $1 and node_id = $2', [shard.shardId, target.id]);
  if (placed.rowCount) throw new InvalidInputError(`shard ${shard.shardId} is placed on ${target.name}: its schema there is not dropped`);
  await dropSchemaGuarded(catalog, pools, target, shard.schema, [shard.shardId]);
}

export interface Leftovers {
  node: string;
  slots: string[];
  publications: string[];
  subscriptions: string[];
  preparedTransactions: string[];
  watermarks: string[];
}

/** Movement objects (named sc_mv_*) still in a node's database: after any movement, all lists must be empty. */
export async function movementLeftovers(pools: NodePools, node: NodeRecord): Promise<Leftovers> {
  const db = pools.get(node.dsn);
  const { rows } = await db.query<Omit<Leftovers, 'node' | 'watermarks'> & { has_watermarks: boolean }>(
    `select array(select slot_name::text from pg_replication_slots where slot_name like 'sc\\_mv\\_%' and database = current_database() order by 1) as slots,
            array(select pubname::text from pg_publication where pubname like 'sc\\_mv\\_%' order by 1) as publications,
            array(select subname::text from pg_subscription
                   where subname like 'sc\\_mv\\_%' and subdbid = (select oid from pg_database where datname = current_database()) order by 1) as subscriptions,
            array(select gid from pg_prepared_xacts where gid like 'sc\\_mv\\_%' and database = current_database() order by 1) as "preparedTransactions",
            to_regclass('sc_movement.watermarks') is not null as has_watermarks`,
  );
  const { has_watermarks: hasWatermarks, ...found } = rows[0]!;
  const watermarks = hasWatermarks
    ? (await db.query<{ id: string }>(`select movement_id as id from ${WATERMARKS} order by 1`)).rows.map((r) => r.id)
    : [];
  return { node: node.name, ...found, watermarks };
}
