/**
 * Retention of restored tables (a restore's `data_retention_policy`): rows whose retention column is
 * older than the cutoff are archived to Arrow and deleted, shard by shard, in one transaction per
 * shard on its node:
 *
 *   insert the shard's ledger row (sc_retention.archives: a retry of the same run and shard waits here
 *   for an attempt still going, and finds its row if it committed) → PostgreSQL's digest of the expired
 *   rows → COPY (DELETE … RETURNING …) TO STDOUT into an Arrow file, whose batches must give the same
 *   digest → the file fsynced under a name of this attempt → the ledger row names it → COMMIT.
 *
 * So the rows deleted are exactly the rows in the file (same snapshot, same digest), and a file is
 * named in a ledger only if it was complete on disk before the delete committed. The catalog keeps the
 * same record (shardcast.retention_archives) once the node committed; a retry after a lost reply
 * finds it there, or in a node's ledger (every node is asked: the shard may have moved since), and
 * archives nothing twice. While a shard is archived its colocation group's row is held (for share) in
 * the catalog, so no movement of it takes its lease meanwhile; a shard under a running movement is
 * skipped until the next run. At the end of a run the files it recorded become a backup directory
 * (manifest.json, src/backup/manifest.ts) that `openBackup`/`validate` read and a restore takes back.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import { abandonIfRunning } from '../catalog/abandon.js';
import { to as copyTo } from 'pg-copy-streams';
import { addBatchDigest, DIGEST_ALGORITHM, ROW_TEXT_SQL } from '../backup/checksum.js';
import { describeTable } from '../backup/export.js';
import { FORMAT, FORMAT_VERSION, MANIFEST_FILE, type Manifest } from '../backup/manifest.js';
import { CANONICAL_SETTINGS, canonicalSettingsSql } from '../backup/values.js';
import { ArrowFileSink, arrowSchema, BatchAssembler, CopyTextParser } from '../backup/writer.js';
import type { NodePools } from '../catalog/node-pools.js';
import type { Queryable } from '../catalog/nodes.js';
import { InvalidInputError, NotFoundError, ShardcastError, errorMessage, sqlState } from '../errors.js';
import { failpoint } from '../failpoints.js';
import { quoteIdent } from '../sql/ident.js';

export const RETENTION_COLUMN_TYPES = ['date', 'timestamp', 'timestamptz'];
const LEDGER = 'sc_retention.archives';
const DAY_MS = 86_400_000;

/** A restored table with its policies, from its latest finished restore. */
export interface RetentionTable {
  table: string;
  tableId: number;
  groupId: number;
  method: 'hash' | 'range';
  keyColumn: string;
  restoreId: string;
  retentionDays: number | null;
  column: string | null;
  rebalanceThreshold: number | null;
}

export interface ShardOfTable {
  shardId: number;
  schema: string;
  nodeId: number;
  node: string;
  dsn: string;
}

/** The restored tables (state 'done') with a retention policy or a rebalance threshold; `table`: that one only, or a clear error. */
export async function restoredTables(catalog: Queryable, table?: string): Promise<RetentionTable[]> {
  const { rows } = await catalog.query<{
    table_name: string;
    table_id: number;
    group_id: number;
    method: 'hash' | 'range';
    key_column: string;
    id: string;
    retention_days: number | null;
    retention_column: string | null;
    rebalance_threshold: number | null;
  }>(
    `select distinct on (r.table_name) r.table_name, t.id::int as table_id, t.group_id::int as group_id, g.method, t.key_column, r.id,
            r.retention_days, r.retention_column, r.rebalance_threshold
       from shardcast.restores r
       join shardcast.distributed_tables t on t.name = r.table_name and t.state = 'active'
       join shardcast.colocation_groups g on g.id = t.group_id
      where r.state = 'done' and ($1::text is null or r.table_name = $1)
      order by r.table_name, r.finished_at desc nulls last, r.created_at desc`,
    [table ?? null],
  );
  if (table !== undefined && rows.length === 0) throw new NotFoundError(`table "${table}" has no finished restore: retention and the rebalance threshold apply to restored tables`);
  return rows
    .filter((r) => (r.retention_days !== null && r.retention_column !== null) || r.rebalance_threshold !== null)
    .map((r) => ({
      table: r.table_name,
      tableId: r.table_id,
      groupId: r.group_id,
      method: r.method,
      keyColumn: r.key_column,
      restoreId: r.id,
      retentionDays: r.retention_days,
      column: r.retention_column,
      rebalanceThreshold: r.rebalance_threshold,
    }));
}

/** The shards of a colocation group with their placement, as the catalog has them now. */
export async function shardsOfGroup(catalog: Queryable, groupId: number): Promise<ShardOfTable[]> {
  const { rows } = await catalog.query<{ id: number; schema: string; node_id: number; node: string; dsn: string }>(
    `select s.id::int as id, s.schema_name as schema, n.id::int as node_id, n.name as node, n.dsn
       from shardcast.shards s join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id
      where s.group_id = $1 order by s.id`,
    [groupId],
  );
  return rows.map((r) => ({ shardId: r.id, schema: r.schema, nodeId: r.node_id, node: r.node, dsn: r.dsn }));
}

/** The retention column's type on a shard: it must exist and be a date, timestamp or timestamptz, else a one-line error naming it. */
export async function checkRetentionColumn(db: Queryable, schema: string, table: string, column: string): Promise<void> {
  const { rows } = await db.query<{ typname: string | null; type: string | null; found: boolean }>(
    `select t.typname::text as typname, format_type(a.atttypid, a.atttypmod) as type, true as found
       from pg_attribute a join pg_type t on t.oid = a.atttypid
      where a.attrelid = to_regclass($1) and a.attname = $2 and a.attnum > 0 and not a.attisdropped`,
    [`${quoteIdent(schema)}.${quoteIdent(table)}`, column],
  );
  const c = rows[0];
  if (!c) throw new InvalidInputError(`table ${table}: the retention column "${column}" does not exist (data_retention_policy of its restore)`);
  if (!RETENTION_COLUMN_TYPES.includes(c.typname ?? '')) {
    throw new InvalidInputError(`table ${table}: the retention column "${column}" is ${c.type}, not a date, timestamp or timestamptz (data_retention_policy of its restore)`);
  }
}

/** The cutoff of a run at `now`: rows whose column is before it are expired. */
export function retentionCutoff(now: number, retentionDays: number): string {
  return new Date(now - retentionDays * DAY_MS).toISOString();
}

const qualified = (schema: string, table: string) => `${quoteIdent(schema)}.${quoteIdent(table)}`;

/** How many rows of each shard are expired at `cutoff` (the dry run; nothing is changed). */
export async function countExpired(
  catalog: Queryable,
  pools: NodePools,
  t: Pick<RetentionTable, 'table' | 'groupId'> & { column: string },
  cutoff: string,
): Promise<Array<{ shardId: number; node: string; rows: number }>> {
  const shards = await shardsOfGroup(catalog, t.groupId);
  const out: Array<{ shardId: number; node: string; rows: number }> = [];
  for (const s of shards) {
    const pool = pools.get(s.dsn);
    await checkRetentionColumn(pool, s.schema, t.table, t.column);
    // Under the archive's settings: a timestamp (without time zone) or a date compares with the cutoff in UTC there too.
    const client = await pool.connect();
    try {
      await client.query('begin read only');
      for (const q of canonicalSettingsSql()) await client.query(q);
      const { rows } = await client.query<{ n: string }>(`select count(*)::bigint::text as n from ${qualified(s.schema, t.table)} where ${quoteIdent(t.column)} < $1::timestamptz`, [cutoff]);
      await client.query('commit');
      out.push({ shardId: s.shardId, node: s.node, rows: Number(rows[0]!.n) });
    } catch (err) {
      await client.query('rollback').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }
  return out;
}

/** Registers a run for a table (again: nothing changes). */
export async function beginRetentionRun(catalog: Queryable, input: { runId: string; table: string; dir: string; cutoff: string }): Promise<void> {
  await catalog.query(
    `insert into shardcast.retention_runs (id, table_name, dir, cutoff) values ($1, $2, $3, $4::timestamptz) on conflict (id, table_name) do nothing`,
    [input.runId, input.table, input.dir, input.cutoff],
  );
}

export interface ArchiveShardInput {
  runId: string;
  table: string;
  groupId: number;
  shardId: number;
  column: string;
  cutoff: string;
  /** The run's archive directory for the table. */
  dir: string;
}

export interface ArchiveShardResult {
  shardId: number;
  /** archived: rows deleted and in `file`; empty: nothing expired; skipped: not now (`reason`), the next run tries again. */
  state: 'archived' | 'empty' | 'skipped';
  rows: number;
  node?: string;
  file?: string;
  reason?: string;
  /** Found done by an earlier attempt (a lost reply): nothing was archived again. */
  replayed?: boolean;
}

interface LedgerRow {
  file: string;
  rows: string;
  bytes: string;
  sha256: string;
  batches: number;
  digest_sum: string;
}

async function ensureLedger(db: Queryable): Promise<void> {
  await db.query('create schema if not exists sc_retention').catch(ignoreRace);
  await db
    .query(
      `create table if not exists ${LEDGER} (run_id text, table_name text, shard_id bigint, file text, rows bigint, bytes bigint, sha256 text, batches int, digest_sum text,
         archived_at timestamptz not null default now(), primary key (run_id, table_name, shard_id))`,
    )
    .catch(ignoreRace);
}

/** Two sessions creating the schema or table at once: one of them gets a unique violation, and the object is there. */
function ignoreRace(err: unknown): void {
  if (sqlState(err) !== '23505' && sqlState(err) !== '42P07' && sqlState(err) !== '42P06') throw err;
}

async function recordArchive(catalog: Queryable, input: ArchiveShardInput, node: string, l: LedgerRow): Promise<void> {
  if (!l.file) throw new ShardcastError('RETENTION_FAILED', `table ${input.table}, shard ${input.shardId}: the ledger on ${node} holds run ${input.runId} without its file`);
  await catalog.query(
    `insert into shardcast.retention_archives (run_id, table_name, shard_id, node_name, file, rows, bytes, sha256, batches, digest_sum)
     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) on conflict (run_id, table_name, shard_id) do nothing`,
    [input.runId, input.table, input.shardId, node, l.file, l.rows, l.bytes, l.sha256, l.batches, l.digest_sum],
  );
}

/** The ledger row of (run, table, shard) on any node, or null when no node has it (every node must answer). */
async function findInLedgers(catalog: Queryable, pools: NodePools, input: ArchiveShardInput): Promise<{ node: string; row: LedgerRow } | null> {
  const nodes = await catalog.query<{ name: string; dsn: string }>(`select name, dsn from shardcast.nodes where state <> 'retired' order by id`);
  for (const n of nodes.rows) {
    let found;
    try {
      const pool = pools.get(n.dsn);
      const exists = await pool.query<{ t: string | null }>(`select to_regclass('${LEDGER}')::text as t`);
      if (!exists.rows[0]?.t) continue;
      found = await pool.query<LedgerRow>(
        `select file, rows::text, bytes::text, sha256, batches, digest_sum from ${LEDGER} where run_id = $1 and table_name = $2 and shard_id = $3`,
        [input.runId, input.table, input.shardId],
      );
    } catch (err) {
      throw new ShardcastError('RETENTION_FAILED', `table ${input.table}, shard ${input.shardId}: cannot read the retention ledger on node ${n.name}: ${errorMessage(err)}`, { cause: err });
    }
    if (found.rows[0]) return { node: n.name, row: found.rows[0] };
  }
  return null;
}

async function syncDir(dir: string): Promise<void> {
  const h = await open(dir, 'r');
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

/**
 * Archives and deletes one shard's expired rows (see the file's comment). `heartbeat` is called per
 * batch; `onArchived` once, when this call's transaction committed (the rows-archived metric).
 */
export async function archiveShard(
  catalog: pg.Pool,
  pools: NodePools,
  input: ArchiveShardInput,
  hooks: { heartbeat?: (rows: number) => void; onArchived?: (rows: number) => void } = {},
): Promise<ArchiveShardResult> {
  const done = await catalog.query<{ node_name: string; file: string; rows: string }>(
    'select node_name, file, rows::text from shardcast.retention_archives where run_id = $1 and table_name = $2 and shard_id = $3',
    [input.runId, input.table, input.shardId],
  );
  if (done.rows[0]) return { shardId: input.shardId, state: 'archived', rows: Number(done.rows[0].rows), node: done.rows[0].node_name, file: done.rows[0].file, replayed: true };
  const earlier = await findInLedgers(catalog, pools, input);
  if (earlier) {
    await recordArchive(catalog, input, earlier.node, earlier.row);
    return { shardId: input.shardId, state: 'archived', rows: Number(earlier.row.rows), node: earlier.node, file: earlier.row.file, replayed: true };
  }

  const held = await catalog.connect();
  let heldBroken = false;
  try {
    await held.query('begin');
    // The run's row (for share): its end (for update) waits for shards being archived, and none starts after it.
    const run = await held.query<{ state: string }>('select state from shardcast.retention_runs where id = $1 and table_name = $2 for share', [input.runId, input.table]);
    if (!run.rows[0]) throw new NotFoundError(`retention run ${input.runId} of table ${input.table} is not registered`);
    if (run.rows[0].state !== 'running') return await skip(held, input, `run ${input.runId} has ended`);
    // The group's row (for share): a movement of its shards takes its lease with the row for update, so none starts meanwhile.
    await held.query('select id from shardcast.colocation_groups where id = $1 for share', [input.groupId]);
    const moving = await held.query<{ id: string; operation: string }>(
      `select id, operation from shardcast.movements where state = 'running' and $1::bigint = any(array_prepend(shard_id, other_shard_ids)) limit 1`,
      [input.shardId],
    );
    if (moving.rows[0]) return await skip(held, input, `a ${moving.rows[0].operation} of shard ${input.shardId} is running (movement ${moving.rows[0].id}): the next run archives it`);
    const placed = await held.query<{ schema: string; node: string; dsn: string }>(
      `select s.schema_name as schema, n.name as node, n.dsn from shardcast.shards s join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id
        where s.id = $1 and s.group_id = $2`,
      [input.shardId, input.groupId],
    );
    const shard = placed.rows[0];
    if (!shard) return await skip(held, input, `shard ${input.shardId} is no longer in the table (split or merged): the next run takes its successors`);
    const result = await archiveOnNode(catalog, pools, input, shard, hooks);
    await held.query('commit');
    return result;
  } catch (err) {
    heldBroken = await held.query('rollback').then(
      () => false,
      () => true,
    );
    throw err;
  } finally {
    held.release(heldBroken);
  }
}

async function skip(held: pg.PoolClient, input: ArchiveShardInput, reason: string): Promise<ArchiveShardResult> {
  await held.query('rollback');
  return { shardId: input.shardId, state: 'skipped', rows: 0, reason };
}

async function archiveOnNode(
  catalog: pg.Pool,
  pools: NodePools,
  input: ArchiveShardInput,
  shard: { schema: string; node: string; dsn: string },
  hooks: { heartbeat?: (rows: number) => void; onArchived?: (rows: number) => void },
): Promise<ArchiveShardResult> {
  const pool = pools.get(shard.dsn);
  const where = `${input.table}, shard ${input.shardId} on ${shard.node}`;
  await checkRetentionColumn(pool, shard.schema, input.table, input.column);
  await ensureLedger(pool);
  const ddl = await describeTable(pool, { label: shard.node, pool, schema: shard.schema, table: input.table }, input.table);
  const kinds = ddl.columns.map((c) => c.arrow);
  const schema = arrowSchema(input.table, ddl.columns);
  const client = await pool.connect();
  let broken: Error | undefined;
  let sink: ArrowFileSink | undefined;
  let file: string | undefined;
  let committed = false;
  let stream: unknown;
  try {
    await client.query('begin isolation level repeatable read');
    for (const s of canonicalSettingsSql()) await client.query(s);
    try {
      // First: a retry of this (run, shard) beside an attempt still going waits here until that one ends.
      await client.query(`insert into ${LEDGER} (run_id, table_name, shard_id) values ($1, $2, $3)`, [input.runId, input.table, input.shardId]);
    } catch (err) {
      if (sqlState(err) !== '23505') throw err;
      await client.query('rollback');
      const other = await findInLedgers(catalog, pools, input);
      if (!other) throw new ShardcastError('RETENTION_FAILED', `${where}: another attempt holds the ledger row and left none`, { cause: err });
      await recordArchive(catalog, input, other.node, other.row);
      return { shardId: input.shardId, state: 'archived', rows: Number(other.row.rows), node: other.node, file: other.row.file, replayed: true };
    }
    const rel = qualified(shard.schema, input.table);
    const col = quoteIdent(input.column);
    const expected = await client.query<{ n: string; s: string }>(
      `select count(*)::bigint::text as n, coalesce(sum(hashtextextended(${ROW_TEXT_SQL}, 0)), 0)::text as s from ${rel} sc_row where sc_row.${col} < $1::timestamptz`,
      [input.cutoff],
    );
    const expectedRows = Number(expected.rows[0]!.n);
    if (expectedRows === 0) {
      await client.query('rollback');
      return { shardId: input.shardId, state: 'empty', rows: 0, node: shard.node };
    }
    await mkdir(input.dir, { recursive: true });
    file = `${input.table.replace(/[^A-Za-z0-9_.-]/g, '_')}.shard-${input.shardId}.${randomBytes(4).toString('hex')}.arrow`;
    sink = await ArrowFileSink.create(path.join(input.dir, file), schema);
    const digest = { rows: 0, sum: 0n };
    const assembler = new BatchAssembler(schema, kinds);
    const parser = new CopyTextParser();
    const emit = async () => {
      const batch = assembler.take();
      addBatchDigest(digest, batch, kinds);
      await failpoint('retention.batch'); // tests: the archive cannot be written in the middle of the COPY
      await sink!.write(batch);
      hooks.heartbeat?.(digest.rows);
    };
    const columns = ddl.columns.map((c) => quoteIdent(c.name)).join(', ');
    // The cutoff is a timestamptz literal checked by the caller's schema (ISO text); it goes in as a literal since COPY takes no parameters.
    const cutoffLiteral = `'${new Date(input.cutoff).toISOString()}'::timestamptz`;
    const copy = client.query(copyTo(`copy (delete from ${rel} where ${col} < ${cutoffLiteral} returning ${columns}) to stdout`));
    stream = copy;
    for await (const chunk of copy as AsyncIterable<Buffer>) {
      for (const row of parser.push(chunk)) if (assembler.add(row)) await emit();
    }
    parser.end();
    if (assembler.rows > 0) await emit();
    if (digest.rows !== expectedRows || digest.sum !== BigInt(expected.rows[0]!.s)) {
      throw new ShardcastError('RETENTION_FAILED', `${where}: the archived rows do not match the expired rows PostgreSQL has (${digest.rows} archived, ${expectedRows} expired)`);
    }
    const written = await sink.close();
    sink = undefined;
    await syncDir(input.dir);
    await client.query(`update ${LEDGER} set file = $4, rows = $5, bytes = $6, sha256 = $7, batches = $8, digest_sum = $9 where run_id = $1 and table_name = $2 and shard_id = $3`, [
      input.runId,
      input.table,
      input.shardId,
      file,
      written.rows,
      written.bytes,
      written.sha256,
      written.batches,
      digest.sum.toString(),
    ]);
    await failpoint('retention.beforeCommit', { connection: client });
    await client.query('commit');
    committed = true;
    hooks.onArchived?.(written.rows);
    // Tests: the reply lost after the node committed (the catalog's record is written by the retry).
    await failpoint('retention.committed');
    await recordArchive(catalog, input, shard.node, {
      file,
      rows: String(written.rows),
      bytes: String(written.bytes),
      sha256: written.sha256,
      batches: written.batches,
      digest_sum: digest.sum.toString(),
    });
    return { shardId: input.shardId, state: 'archived', rows: written.rows, node: shard.node, file };
  } catch (err) {
    if (!committed) {
      broken = err as Error;
      // Left mid-COPY (the archive could not be written): closing the session rolls the delete back; a rollback would wait forever.
      abandonIfRunning(client, stream);
      await client.query('rollback').catch(() => undefined);
      await sink?.abort();
      // Not committed: the file is no archive of anything (a committed one is never removed here).
      if (file) await rm(path.join(input.dir, file), { force: true });
    }
    if (err instanceof ShardcastError) throw err;
    throw new ShardcastError('RETENTION_FAILED', `${where}: ${errorMessage(err)}`, { cause: err });
  } finally {
    client.release(broken);
  }
}

export interface FinishedRun {
  table: string;
  runId: string;
  rows: number;
  files: number;
  /** The backup directory written (null: nothing was archived, no directory is left). */
  dir: string | null;
}

/**
 * Ends a run for a table: no shard starts archiving for it afterwards, and the files recorded become
 * a backup directory (manifest.json written last, by rename). Files of attempts that did not commit
 * are removed. Again: the same manifest.
 */
export async function finishRetentionRun(catalog: pg.Pool, pools: NodePools, input: { runId: string; table: string; groupId: number; dir: string }): Promise<FinishedRun> {
  const client = await catalog.connect();
  try {
    await client.query('begin');
    await client.query(`update shardcast.retention_runs set state = 'done', finished_at = coalesce(finished_at, now()) where id = $1 and table_name = $2`, [input.runId, input.table]);
    const { rows } = await client.query<{ shard_id: number; file: string; rows: string; bytes: string; sha256: string; batches: number; digest_sum: string }>(
      `select shard_id::int, file, rows::text, bytes::text, sha256, batches, digest_sum from shardcast.retention_archives where run_id = $1 and table_name = $2 order by shard_id`,
      [input.runId, input.table],
    );
    const total = rows.reduce((a, r) => a + Number(r.rows), 0);
    await client.query('update shardcast.retention_runs set rows = $3 where id = $1 and table_name = $2', [input.runId, input.table, total]);
    const keep = new Set(rows.map((r) => r.file));
    const present = await readdir(input.dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [] as string[];
      throw err;
    });
    for (const f of present) if (f.endsWith('.arrow') && !keep.has(f)) await rm(path.join(input.dir, f), { force: true });
    if (rows.length === 0) {
      await client.query('commit');
      if (present.length) await rm(input.dir, { recursive: true, force: true });
      return { table: input.table, runId: input.runId, rows: 0, files: 0, dir: null };
    }
    const shards = await shardsOfGroup(client, input.groupId);
    const any = shards[0];
    if (!any) throw new ShardcastError('RETENTION_FAILED', `table ${input.table}: no shard left to read its definition from`);
    const meta = await client.query<{ method: 'hash' | 'range'; key_column: string }>(
      'select g.method, t.key_column from shardcast.distributed_tables t join shardcast.colocation_groups g on g.id = t.group_id where t.name = $1',
      [input.table],
    );
    const pool = pools.get(any.dsn);
    const ddl = await describeTable(pool, { label: any.node, pool, schema: any.schema, table: input.table }, input.table);
    const sum = rows.reduce((a, r) => a + BigInt(r.digest_sum), 0n);
    const manifest: Manifest = {
      format: FORMAT,
      version: FORMAT_VERSION,
      createdAt: new Date().toISOString(),
      settings: CANONICAL_SETTINGS,
      tables: [
        {
          name: input.table,
          columns: ddl.columns.map(({ typname: _typname, ...c }) => c),
          primaryKey: ddl.primaryKey,
          indexes: ddl.indexes,
          source: { kind: 'shardcast', shards: rows.length, method: meta.rows[0]?.method ?? null, keyColumn: meta.rows[0]?.key_column ?? null },
          files: rows.map((r) => ({ path: r.file, bytes: Number(r.bytes), sha256: r.sha256, rows: Number(r.rows), batches: r.batches })),
          rows: total,
          checksum: { algorithm: DIGEST_ALGORITHM, rows: total, sum: sum.toString() },
          keyStats: [],
        },
      ],
    };
    const tmp = path.join(input.dir, `.${MANIFEST_FILE}.tmp`);
    await writeFile(tmp, `${JSON.stringify(manifest, null, 2)}\n`);
    await rename(tmp, path.join(input.dir, MANIFEST_FILE));
    await syncDir(input.dir);
    await client.query('commit');
    return { table: input.table, runId: input.runId, rows: total, files: rows.length, dir: input.dir };
  } catch (err) {
    await client.query('rollback').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}
