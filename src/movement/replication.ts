import { grantShardSchemas } from '../catalog/app-role.js';
import { resolveDsn } from '../catalog/dsn-password.js';
import { libpqConninfo } from '../catalog/pg-tls.js';
import { dropSchemaGuarded } from './drop-guard.js';
import type pg from 'pg';
import type { NodePools } from '../catalog/node-pools.js';
import type { NodeRecord, Queryable } from '../catalog/nodes.js';
import { InvalidInputError, NotFoundError } from '../errors.js';
import { shardTableDdl } from '../catalog/tables.js';
import { quoteIdent, quoteLiteral, singleStatement } from '../sql/ident.js';
import { inTransaction } from '../sql/transaction.js';
import { createFence } from './fence.js';

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
}

/** pg_subscription is shared by every database of a server: look only at this database's. */
const CURRENT_DB_SUBSCRIPTION = 'select 1 from pg_subscription where subname = $1 and subdbid = (select oid from pg_database where datname = current_database())';

/** Step 2: publication on the source, binary subscription on the target (which copies, then streams). */
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
  const hasSubscription = await target.query(CURRENT_DB_SUBSCRIPTION, [names.subscription]);
  if (hasSubscription.rowCount === 0) {
    // CREATE SUBSCRIPTION creates the slot on the source; it cannot run inside a transaction block.
    await target.query(
      `create subscription ${quoteIdent(names.subscription)} connection ${quoteLiteral(libpqConninfo(resolveDsn(endpoints.source.dsn)))}
       publication ${quoteIdent(names.publication)} with (binary = true, slot_name = ${quoteLiteral(names.slot)})`,
    );
  }
}

/**
 * Pause and resume. Disabling a subscription stops its apply worker, but a table-sync worker in the
 * middle of a table's initial COPY only notices at the end of it: it is stopped here, so a pause
 * really stops consuming the source. That table's copy starts over on resume.
 */
export async function setSubscriptionEnabled(pools: NodePools, target: NodeRecord, names: MovementNames, enabled: boolean): Promise<void> {
  const db = pools.get(target.dsn);
  await db.query(`alter subscription ${quoteIdent(names.subscription)} ${enabled ? 'enable' : 'disable'}`);
  if (enabled) return;
  await db.query(
    `select pg_terminate_backend(w.pid) from pg_stat_subscription w join pg_subscription s on s.oid = w.subid
      where s.subname = $1 and s.subdbid = (select oid from pg_database where datname = current_database()) and w.pid is not null`,
    [names.subscription],
  );
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
  const exists = await db.query("select to_regclass('sc_movement.watermarks') is not null as ok");
  if (exists.rows[0]?.ok) return;
  try {
    await db.query('create schema if not exists sc_movement');
    await db.query(`create table if not exists ${WATERMARKS} (movement_id text primary key, n bigint not null)`);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code !== '23505' && code !== '42P06' && code !== '42P07') throw err; // created meanwhile
  }
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
  const exists = await db.query("select to_regclass('sc_movement.watermarks') is not null as ok");
  if (exists.rows[0]?.ok) await db.query(`delete from ${WATERMARKS} where movement_id = $1`, [names.slot]);
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
