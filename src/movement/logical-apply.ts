import { reportingSlotWait } from './slot-wait.js';
import { ownReads, type OwnReadCount } from './own-reads.js';
import { dropSchemaGuarded } from './drop-guard.js';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import type { NodePools } from '../catalog/node-pools.js';
import { NotFoundError, ShardcastError } from '../errors.js';
import { quoteIdent, quoteLiteral } from '../sql/ident.js';
import { inTransaction } from '../sql/transaction.js';
import { abandonIfRunning } from '../catalog/abandon.js';
import { failpoint } from '../failpoints.js';
import { ensureMovementTable } from './movement-tables.js';
import { AS_REPLICA } from './fence.js';
import type { Governor } from './governor.js';
import { decodeMessage, UNCHANGED, type Relation, type TupleValue } from './pgoutput.js';
import { rangePredicate, targetIndexFor, type ReshardPlan, type ReshardSource } from './reshard-plan.js';

/**
 * Copy and change streaming for splits and merges. A slot (pgoutput) and a publication on each
 * source; the initial copy is COPY out of the source and COPY into the new shard's schema (only the
 * target's range of rows for a split); then the slot's changes are read with
 * pg_logical_slot_peek_binary_changes, applied to the right target, and only then confirmed with
 * pg_replication_slot_advance. Applying is idempotent (an insert or update writes the whole row by
 * primary key, a delete removes by primary key), so changes that were applied but not yet confirmed
 * when a worker died are simply applied again, and a copy taken after the slot was created converges.
 */

/** Step 2 for a split or merge: publication, then the slot, on every source. Idempotent. */
export async function startChangeCapture(pools: NodePools, plan: ReshardPlan, report: (waitingFor: string) => void = () => undefined): Promise<void> {
  for (const s of plan.sources) {
    const db = pools.get(s.node.dsn);
    const pub = await db.query('select 1 from pg_publication where pubname = $1', [s.publication]);
    if (!pub.rowCount) {
      const tables = plan.tables.map((t) => `${quoteIdent(s.schema)}.${quoteIdent(t.name)}`).join(', ');
      await db.query(`create publication ${quoteIdent(s.publication)} for table ${tables}`);
    }
    const slot = await db.query('select 1 from pg_replication_slots where slot_name = $1', [s.slot]);
    if (!slot.rowCount) await reportingSlotWait(db.query(`select pg_create_logical_replication_slot($1, 'pgoutput')`, [s.slot]), db, (w) => report(`${s.node.name}: ${w}`));
  }
}

export interface CopyProgress {
  rows: number;
  bytes: number;
  /** Time the governor held the copy back, in ms. */
  throttledMs?: number;
  /** The governor's idle baseline per probed node, in ms (passed on to the apply's governor). */
  baselinesMs?: number[];
}

/** Quoted primary-key columns of a table, in key order (none: the table is copied in one chunk). */
export async function primaryKeyColumns(db: Pick<pg.ClientBase, 'query'>, schema: string, table: string): Promise<string[]> {
  const { rows } = await db.query<{ name: string }>(
    `select a.attname::text as name from pg_index i
       join lateral unnest(i.indkey) with ordinality k(attnum, n) on true
       join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
      where i.indrelid = to_regclass($1) and i.indisprimary order by k.n`,
    [`${quoteIdent(schema)}.${quoteIdent(table)}`],
  );
  return rows.map((r) => quoteIdent(r.name));
}

export interface ChunkedCopy {
  /** Reads the source (for a move: inside the transaction of the slot's exported snapshot). */
  out: pg.ClientBase;
  /** Writes the target; each chunk is its own transaction there. */
  into: pg.ClientBase;
  from: string;
  to: string;
  /** Row filter on the source (a split's range), SQL. */
  where?: string;
  keyColumns: string[];
  chunkRows: number;
  /** Before each chunk: the governor's pause and hold. */
  beforeChunk?: () => Promise<void>;
  /**
   * Within a chunk, after every PACE_BYTES that passed: the governor's short pause. A chunk at full
   * speed between long pauses slows every foreground statement that meets it (the p99 is set by the
   * copy's intensity, not its share of the time); paced in small pieces, the copy never holds the
   * nodes' CPU and disk for more than a moment.
   */
  pace?: () => Promise<void>;
  /** Inside each chunk's target transaction, after its rows: bookkeeping that must commit with them. */
  inChunk?: (into: pg.ClientBase, chunk: CopyProgress) => Promise<void>;
  onBytes?: (bytes: number) => void;
}

/**
 * Planner settings for the reading side of a chunked copy (SET LOCAL, inside its transaction): every
 * chunk's bound and rows come by the primary key's index, not a scan and sort of the whole table
 * (which a table without statistics yet would otherwise get).
 */
export const KEY_ORDER_SETTINGS = ['set local enable_seqscan = off', 'set local enable_bitmapscan = off', 'set local max_parallel_workers_per_gather = 0'];

/** Chunks whose bounds are read in one pass: a pass is short work between two pauses, not a scan of the whole table at once. */
const CHUNKS_PER_PASS = 10;

/**
 * The upper key bounds of the next chunks of `chunkRows` rows after `after`, in one pass over the
 * primary key's index (not a round trip per chunk). Fewer than asked: the rest is the last chunk.
 */
async function nextBounds(c: ChunkedCopy, after: string[] | null): Promise<string[][]> {
  const keys = c.keyColumns.join(', ');
  const conditions = c.where ? [`(${c.where})`] : [];
  if (after) conditions.push(`(${keys}) > (${after.map(quoteLiteral).join(', ')})`);
  const { rows } = await c.out.query<string[]>({
    text: `select ${c.keyColumns.map((_, i) => `k${i}`).join(', ')} from (
             select ${c.keyColumns.map((k, i) => `${k}::text as k${i}`).join(', ')}, row_number() over (order by ${keys}) as rn
               from (select ${keys} from ${c.from}${conditions.length ? ` where ${conditions.join(' and ')}` : ''} order by ${keys} limit ${Math.trunc(c.chunkRows) * CHUNKS_PER_PASS}) page
           ) s where rn % ${Math.trunc(c.chunkRows)} = 0 order by rn`,
    rowMode: 'array',
  });
  return rows;
}

/** Bytes of a copy between two of the governor's pauses within a chunk. */
export const PACE_BYTES = 32 * 1024;

/** Passes the copy's data on, calling `pace` (and waiting for it) after every PACE_BYTES. */
function pacer(pace: () => Promise<void>): Transform {
  let since = 0;
  return new Transform({
    transform(data: Buffer, _encoding, done) {
      since += data.length;
      if (since < PACE_BYTES) return done(null, data);
      since = 0;
      this.push(data);
      pace().then(() => done(), done);
    },
  });
}

/**
 * Copies a table in primary-key order, one chunk of `chunkRows` rows at a time (binary COPY out of
 * the source and into the target), so that the copy can be paced between chunks. COPY takes no
 * parameters: key bounds are literals, coerced to the key columns' types by PostgreSQL. Rows that
 * come after the bounds were read (a copy outside a snapshot) fall into the last, open-ended chunk.
 */
export async function copyChunked(c: ChunkedCopy): Promise<CopyProgress> {
  const total: CopyProgress = { rows: 0, bytes: 0 };
  const keys = c.keyColumns.join(', ');
  let bounds: string[][] = [];
  let last: string[] | null = null;
  for (;;) {
    await c.beforeChunk?.();
    if (bounds.length === 0 && c.keyColumns.length > 0) bounds = await nextBounds(c, last);
    const conditions = c.where ? [`(${c.where})`] : [];
    if (last) conditions.push(`(${keys}) > (${last.map(quoteLiteral).join(', ')})`);
    const upper = bounds.shift() ?? null;
    if (upper) conditions.push(`(${keys}) <= (${upper.map(quoteLiteral).join(', ')})`);
    const chunk: CopyProgress = { rows: 0, bytes: 0 };
    // One round trip: the chunk's transaction, past the target's fence (until its cutover) for it only.
    // Every chunk but the last commits without waiting for its WAL flush: the last one's (synchronous)
    // flushes them all, WAL being flushed in order, before the copy counts as done.
    await c.into.query(`begin; ${AS_REPLICA}${upper ? '; set local synchronous_commit = off' : ''}`);
    let sent: unknown;
    try {
      const reader = c.out.query(copyTo(`copy (select * from ${c.from}${conditions.length ? ` where ${conditions.join(' and ')}` : ''}) to stdout (format binary)`));
      sent = reader;
      const writer = c.into.query(copyFrom(`copy ${c.to} from stdin (format binary)`));
      reader.on('data', (data: Buffer) => {
        chunk.bytes += data.length;
        c.onBytes?.(data.length);
      });
      if (c.pace) await pipeline(reader, pacer(c.pace), writer);
      else await pipeline(reader, writer);
      chunk.rows = Number(writer.rowCount ?? 0);
      await c.inChunk?.(c.into, chunk);
      // Its inserts reach the statistics as it commits (one round trip with the commit), counted before the new shard is placed.
      await c.into.query('select pg_stat_force_next_flush(); commit');
    } catch (err) {
      // The target failed (it went down, a statement was cancelled) while the source was still sending:
      // the COPY's stream was destroyed with the source's connection in the middle of it, paused, so any
      // later statement there (the caller's rollback) would wait forever, and the activity with it.
      // (An error from the source itself has ended its COPY: that connection is fine.)
      abandonIfRunning(c.out, sent);
      await c.into.query('rollback').catch(() => undefined);
      throw err;
    }
    total.rows += chunk.rows;
    total.bytes += chunk.bytes;
    if (!upper) return total;
    last = upper;
  }
}

/**
 * The initial copy into the targets' (empty) tables, chunk by chunk, paced by the governor when one
 * is given. A retry starts over: targets are truncated first, which is right because no change has
 * been applied before the copy finished (and changes are applied idempotently, so a copy without a
 * common snapshot converges). What each source session read is told to `onOwnReads` (not workload:
 * see ownReads).
 */
export async function copyInitial(
  pools: NodePools,
  plan: ReshardPlan,
  onProgress: (p: CopyProgress) => void = () => undefined,
  options: { governor?: Governor; chunkRows?: number; beforeChunk?: () => Promise<void>; onOwnReads?: (reads: OwnReadCount[]) => Promise<void> } = {},
): Promise<CopyProgress> {
  for (const t of plan.targets) {
    const names = plan.tables.map((tb) => `${quoteIdent(t.schema)}.${quoteIdent(tb.name)}`).join(', ');
    await inTransaction(pools.get(t.node.dsn), async (client) => {
      await client.query(AS_REPLICA); // the targets are fenced against ordinary writers until their cutover
      await client.query(`truncate ${names}`);
    });
  }
  const progress: CopyProgress = { rows: 0, bytes: 0, throttledMs: 0 };
  for (const s of plan.sources) {
    for (const table of plan.tables) {
      for (const t of plan.targets) {
        const where = plan.operation === 'split' ? rangePredicate(plan.keyType, table.keyColumn, t.range) : undefined;
        const out = await pools.get(s.node.dsn).connect();
        const into = await pools.get(t.node.dsn).connect();
        let broken: Error | undefined;
        try {
          // In a transaction of its own, so that what it read can be told apart from the workload (ownReads).
          const startedAt = new Date();
          await out.query('begin');
          for (const setting of KEY_ORDER_SETTINGS) await out.query(setting);
          const copied = await copyChunked({
            out,
            into,
            from: `${quoteIdent(s.schema)}.${quoteIdent(table.name)}`,
            to: `${quoteIdent(t.schema)}.${quoteIdent(table.name)}`,
            where,
            keyColumns: await primaryKeyColumns(out, s.schema, table.name),
            chunkRows: options.chunkRows ?? options.governor?.settings.chunkRows ?? 50_000,
            ...(options.governor ? { pace: () => options.governor!.piece() } : {}),
            beforeChunk: async () => {
              await options.governor?.wait();
              await options.beforeChunk?.();
              progress.throttledMs = options.governor?.stats.throttledMs ?? 0;
              onProgress(progress);
            },
            onBytes: (n) => {
              progress.bytes += n;
              onProgress(progress);
            },
          });
          const read = await ownReads(out, s.node, [s.schema], startedAt);
          await out.query('commit');
          await options.onOwnReads?.(read).catch(() => undefined);
          progress.rows += copied.rows;
        } catch (err) {
          broken = err as Error; // a connection broken off mid-COPY does not go back to the pool
          throw err;
        } finally {
          if (broken) await out.query('rollback').catch(() => undefined);
          out.release(broken);
          into.release(broken);
        }
      }
    }
  }
  progress.throttledMs = options.governor?.stats.throttledMs ?? 0;
  return progress;
}

export interface ApplyResult {
  /** Changes read from the slots and applied. */
  changes: number;
  /** True when every slot was read to its end. */
  drained: boolean;
}

const PEEK_CHANGES = 20_000;

/**
 * Applies the sources' pending changes to the targets until every slot is drained or the deadline
 * passes. Each round: peek a batch, apply it in one transaction per target, then advance the slot.
 */
export async function applyChanges(
  pools: NodePools,
  plan: ReshardPlan,
  options: { deadline?: number; onBatch?: (applied: number) => void; governor?: Governor } = {},
): Promise<ApplyResult> {
  const applier = new Applier(pools, plan);
  let changes = 0;
  let drained = true;
  for (const source of plan.sources) {
    for (;;) {
      await options.governor?.wait({ lag: () => sourceLag(pools, source) });
      const n = await applier.round(source);
      changes += n;
      options.onBatch?.(changes);
      if (n === 0) break;
      if (options.deadline !== undefined && Date.now() > options.deadline) {
        drained = false;
        break;
      }
    }
  }
  return { changes, drained };
}

/** WAL of a source not yet applied and confirmed through its slot, in bytes (undefined: no such slot). */
async function sourceLag(pools: NodePools, source: ReshardSource): Promise<number | null | undefined> {
  const { rows } = await pools
    .get(source.node.dsn)
    .query<{ lag: string | null }>(
      'select pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint::text as lag from pg_replication_slots where slot_name = $1',
      [source.slot],
    );
  if (!rows[0]) return undefined;
  return rows[0].lag !== null ? Number(rows[0].lag) : null;
}

/** The node's flushed WAL position, read just before a peek (for `confirmRound`). */
export async function flushedLsn(db: Pick<pg.ClientBase, 'query'>): Promise<string> {
  const { rows } = await db.query<{ lsn: string }>('select pg_current_wal_flush_lsn()::text as lsn');
  return rows[0]!.lsn;
}

/**
 * Confirms a slot once a peek's changes are applied. A peek that hit its limit stopped after its
 * last row: the slot advances to that row. A peek under its limit decoded every WAL record that
 * began before the flushed position read just before it (`flushedBefore`: the peek reads to the
 * flush position at its own start, and waits for a record that straddles it), so every
 * transaction that committed before that position was in it; the slot advances there (or to its
 * last row, if later). Without that, a quiet shard's slot would never move past the WAL of the
 * node's other tables and databases: its lag would only grow, and a catch-up waiting for it would
 * never end.
 *
 * With rows, a slot another apply has confirmed further (a retry beside a stale attempt) makes
 * PostgreSQL refuse the advance, and this apply stops with that error, as it always did. A round
 * that read nothing applied nothing: it only advances a slot that is behind its position.
 */
export async function confirmRound(db: Pick<pg.ClientBase, 'query'>, slot: string, rows: ReadonlyArray<{ lsn: string }>, limit: number, flushedBefore: string): Promise<void> {
  const position = roundPosition(rows, limit, flushedBefore);
  if (position !== null) {
    await db.query('select pg_replication_slot_advance($1, $2::pg_lsn)', [slot, position]);
    return;
  }
  await db.query('select pg_replication_slot_advance(slot_name, $2::pg_lsn) from pg_replication_slots where slot_name = $1 and confirmed_flush_lsn < $2::pg_lsn', [slot, flushedBefore]);
}

/**
 * How far a round with rows has read its slot (see confirmRound): its last row when the peek hit
 * its limit, else the later of that row and the flushed position read before the peek. A later
 * round of any attempt reads at least as far. Null: the round read nothing.
 */
export function roundPosition(rows: ReadonlyArray<{ lsn: string }>, limit: number, flushedBefore: string): string | null {
  if (rows.length === 0) return null;
  const last = rows[rows.length - 1]!.lsn;
  if (rows.length >= limit) return last;
  return lsnValue(flushedBefore) > lsnValue(last) ? flushedBefore : last;
}

/** A pg_lsn's text (`16/B374D848`) as a number, for comparing. */
export function lsnValue(text: string): bigint {
  const m = /^([0-9A-F]{1,8})\/([0-9A-F]{1,8})$/i.exec(text);
  if (!m) throw new ShardcastError('PGOUTPUT', `not a WAL position: ${JSON.stringify(text)}`);
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

/** Per target schema and source slot: how far the slot's changes written there were read (applyFence). */
const APPLY_POSITIONS = 'sc_movement.apply_positions';

async function ensureApplyPositions(db: Pick<pg.Pool, 'query'>): Promise<void> {
  await ensureMovementTable(db, APPLY_POSITIONS, [`create table if not exists ${APPLY_POSITIONS} (slot text, schema_name text, lsn pg_lsn not null, primary key (slot, schema_name))`]);
}

/**
 * In a target's write transaction, before the round's writes: records how far the round read its
 * source's slot, and refuses the round when a write of the same slot's changes there read further.
 * That is a stale attempt (a worker that stalled between its peek and its writes, beside the retry
 * that has gone on): its older row versions would overwrite newer ones, and the slot, confirmed past
 * them by the retry, would never send the newer ones again. The row lock orders two writers.
 */
async function applyFence(client: pg.ClientBase, slot: string, schema: string, position: string): Promise<void> {
  const { rowCount } = await client.query(
    `insert into ${APPLY_POSITIONS} as p (slot, schema_name, lsn) values ($1, $2, $3::pg_lsn)
       on conflict (slot, schema_name) do update set lsn = excluded.lsn where p.lsn <= excluded.lsn`,
    [slot, schema, position],
  );
  if (!rowCount) {
    throw new ShardcastError('APPLY_SUPERSEDED', `changes of ${slot} up to ${position} not written into ${schema}: another apply has written it from further on (this attempt is stale)`);
  }
}

/** The apply positions of a split's or merge's slots on its targets (cleanup and compensation). Safe to repeat. */
async function forgetApplyPositions(pools: NodePools, plan: ReshardPlan): Promise<void> {
  const slots = plan.sources.map((s) => s.slot);
  for (const dsn of new Set(plan.targets.map((t) => t.node.dsn))) {
    const db = pools.get(dsn);
    const exists = await db.query(`select to_regclass('${APPLY_POSITIONS}') is not null as ok`);
    if (exists.rows[0]?.ok) await db.query(`delete from ${APPLY_POSITIONS} where slot = any($1::text[])`, [slots]);
  }
}

export type Op = { kind: 'row'; values: TupleValue[] } | { kind: 'delete'; key: TupleValue[] };

export interface TableShape {
  table: ReshardPlan['tables'][number];
  relation: Relation;
  keyIndex: number;
  pkIndexes: number[];
}

/** Per target, per table shape: the last operation per primary key (earlier ones are superseded). */
type Pending = Array<Map<TableShape, Map<string, Op>>>;

/** The slot a round read and how far (roundPosition), checked in every write it makes (applyFence). */
interface Fence {
  slot: string;
  position: string;
}

class Applier {
  /**
   * Table shapes by source slot, then by relation id: ids are OIDs of the source's cluster, so two
   * sources on different nodes may use the same id for different tables.
   */
  private readonly shapesBySource = new Map<string, Map<number, TableShape>>();
  private readonly fenced = new Set<string>();
  constructor(
    private readonly pools: NodePools,
    private readonly plan: ReshardPlan,
  ) {}

  /** One peek–apply–advance round on one source; returns how many messages it read. */
  async round(source: ReshardSource): Promise<number> {
    const db = this.pools.get(source.node.dsn);
    const flushed = await flushedLsn(db);
    const { rows } = await db.query<{ lsn: string; data: Buffer }>(
      `select lsn::text, data from pg_logical_slot_peek_binary_changes($1, null, $2, 'proto_version', '1', 'publication_names', $3)`,
      [source.slot, PEEK_CHANGES, source.publication],
    );
    if (rows.length === 0) {
      await confirmRound(db, source.slot, rows, PEEK_CHANGES, flushed);
      return 0;
    }
    let shapes = this.shapesBySource.get(source.slot);
    if (!shapes) this.shapesBySource.set(source.slot, (shapes = new Map()));
    const fence = { slot: source.slot, position: roundPosition(rows, PEEK_CHANGES, flushed)! };
    const pending: Pending = this.plan.targets.map(() => new Map());
    for (const row of rows) {
      const change = decodeMessage(row.data);
      switch (change.kind) {
        case 'relation':
          this.learn(shapes, change.relation);
          break;
        case 'insert':
          this.put(pending, shapeOf(shapes, change.relation), change.tuple, null);
          break;
        case 'update':
          this.put(pending, shapeOf(shapes, change.relation), change.tuple, change.oldKey);
          break;
        case 'delete': {
          const of = shapeOf(shapes, change.relation);
          for (const i of this.targetsOf(of, change.oldKey)) opsOf(pending[i]!, of).set(pkText(of, change.oldKey), { kind: 'delete', key: change.oldKey });
          break;
        }
        case 'truncate':
          // Earlier operations of this batch are written first, then the tables are emptied.
          await this.flush(pending, fence);
          for (const m of pending) m.clear();
          for (const id of change.relations) await this.truncate(shapeOf(shapes, id), fence);
          break;
        default:
          break;
      }
    }
    await failpoint('reshard.apply.before-write');
    await this.flush(pending, fence);
    await confirmRound(db, source.slot, rows, PEEK_CHANGES, flushed);
    return rows.length;
  }

  /** The apply positions' table on a target node, made once per applier. */
  private async ensureFence(dsn: string): Promise<void> {
    if (this.fenced.has(dsn)) return;
    await ensureApplyPositions(this.pools.get(dsn));
    this.fenced.add(dsn);
  }

  private learn(shapes: Map<number, TableShape>, relation: Relation): void {
    const table = this.plan.tables.find((t) => t.name === relation.name);
    if (!table) return;
    const keyIndex = relation.columns.findIndex((c) => c.name === table.keyColumn);
    const pkIndexes = relation.columns.flatMap((c, i) => (c.key ? [i] : []));
    if (keyIndex < 0 || pkIndexes.length === 0) {
      throw new ShardcastError('NOT_MOVABLE', `table ${relation.name}: changes cannot be applied without its shard key and primary key columns`);
    }
    shapes.set(relation.id, { table, relation, keyIndex, pkIndexes });
  }

  /** Targets that may hold a row with this tuple (all of them when the shard key was not sent). */
  private targetsOf(shape: TableShape, tuple: TupleValue[]): number[] {
    const key = tuple[shape.keyIndex];
    if (typeof key !== 'string') return this.plan.targets.map((_, i) => i);
    return [targetIndexFor(this.plan, key)];
  }

  private put(pending: Pending, shape: TableShape, tuple: TupleValue[], oldKey: TupleValue[] | null): void {
    const key = tuple[shape.keyIndex];
    if (typeof key !== 'string') throw new ShardcastError('PGOUTPUT', `table ${shape.table.name}: a row arrived without its shard key`);
    const into = targetIndexFor(this.plan, key);
    const pk = pkText(shape, tuple);
    if (oldKey) {
      // The primary key or the shard key changed: the old row goes wherever it was.
      const oldPk = pkText(shape, oldKey);
      for (const i of this.targetsOf(shape, oldKey)) if (i !== into || oldPk !== pk) opsOf(pending[i]!, shape).set(oldPk, { kind: 'delete', key: oldKey });
    }
    const ops = opsOf(pending[into]!, shape);
    let values = tuple;
    if (tuple.includes(UNCHANGED)) {
      // Unchanged TOASTed columns were not sent: take them from an earlier full row of this batch, if any.
      const before = ops.get(pk);
      if (before?.kind === 'row') values = tuple.map((v, i) => (v === UNCHANGED ? before.values[i]! : v));
      else if (oldKey) throw new ShardcastError('NOT_MOVABLE', `table ${shape.table.name}: a key change with unchanged TOASTed columns cannot be applied`);
    }
    ops.set(pk, { kind: 'row', values });
  }

  private async flush(pending: Pending, fence: Fence): Promise<void> {
    for (let i = 0; i < pending.length; i++) {
      const byTable = pending[i]!;
      if (byTable.size === 0) continue;
      const target = this.plan.targets[i]!;
      await this.ensureFence(target.node.dsn);
      await inTransaction(this.pools.get(target.node.dsn), async (client) => {
        await applyFence(client, fence.slot, target.schema, fence.position);
        await client.query(AS_REPLICA);
        // Each with the shape its tuples were described with (a relation described anew mid-batch gets its own entry).
        for (const [of, ops] of byTable) await writeOps(client, target.schema, of, [...ops.values()]);
      });
    }
  }

  private async truncate(shape: TableShape, fence: Fence): Promise<void> {
    for (const t of this.plan.targets) {
      await this.ensureFence(t.node.dsn);
      await inTransaction(this.pools.get(t.node.dsn), async (client) => {
        await applyFence(client, fence.slot, t.schema, fence.position);
        await client.query(AS_REPLICA);
        await client.query(`truncate ${quoteIdent(t.schema)}.${quoteIdent(shape.table.name)}`);
      });
    }
  }
}

function shapeOf(shapes: Map<number, TableShape>, id: number): TableShape {
  const found = shapes.get(id);
  if (!found) throw new ShardcastError('PGOUTPUT', `change for relation ${id} arrived before its description`);
  return found;
}

function opsOf(target: Map<TableShape, Map<string, Op>>, shape: TableShape): Map<string, Op> {
  let m = target.get(shape);
  if (!m) target.set(shape, (m = new Map()));
  return m;
}

export function pkText(shape: TableShape, tuple: TupleValue[]): string {
  return JSON.stringify(shape.pkIndexes.map((i) => tuple[i] as string | null));
}

/** A row as a composite literal of the table's row type: every column goes through its type's input function. */
function compositeLiteral(values: TupleValue[]): string {
  return `(${values.map((v) => (v === null || v === UNCHANGED ? '' : `"${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`)).join(',')})`;
}

export async function writeOps(client: pg.ClientBase, schema: string, shape: TableShape, ops: Op[]): Promise<void> {
  const table = `${quoteIdent(schema)}.${quoteIdent(shape.table.name)}`;
  const cols = shape.relation.columns.map((c) => quoteIdent(c.name));
  const pkCols = shape.pkIndexes.map((i) => cols[i]!);
  const pkMatch = pkCols.map((c) => `t.${c} = (r).${c}`).join(' and ');
  const deletes: string[] = [];
  const rows: string[] = [];
  const partial: TupleValue[][] = [];
  for (const op of ops) {
    if (op.kind === 'delete') deletes.push(compositeLiteral(op.key));
    else if (op.values.includes(UNCHANGED)) partial.push(op.values);
    else rows.push(compositeLiteral(op.values));
  }
  if (deletes.length) await client.query(`delete from ${table} t using unnest($1::${table}[]) r where ${pkMatch}`, [deletes]);
  if (rows.length) {
    const nonKey = cols.filter((c) => !pkCols.includes(c));
    const onConflict = nonKey.length ? `do update set ${nonKey.map((c) => `${c} = excluded.${c}`).join(', ')}` : 'do nothing';
    await client.query(`insert into ${table} select (r).* from unnest($1::${table}[]) r on conflict (${pkCols.join(', ')}) ${onConflict}`, [rows]);
  }
  for (const values of partial) {
    // Only the columns that were sent; a row the target does not have yet will be deleted later in the stream.
    const sent = cols.filter((_, i) => values[i] !== UNCHANGED && !shape.pkIndexes.includes(i));
    if (!sent.length) continue;
    await client.query(`update ${table} t set ${sent.map((c) => `${c} = (r).${c}`).join(', ')} from (select $1::${table} as r) x where ${pkMatch.replaceAll('(r)', '(x.r)')}`, [
      compositeLiteral(values),
    ]);
  }
}

export interface CaptureProgress {
  /** Largest amount of source WAL not yet applied and confirmed, over the sources, in bytes. */
  lagBytes: number | null;
  rowsCopied: number;
  bytesCopied: number;
}

export async function captureProgress(pools: NodePools, plan: ReshardPlan): Promise<CaptureProgress> {
  let lag: number | null = null;
  for (const s of plan.sources) {
    const slotLag = await sourceLag(pools, s);
    if (slotLag === undefined) throw new NotFoundError(`replication slot ${s.slot} is missing on ${s.node.name}`);
    if (slotLag !== null) lag = Math.max(lag ?? 0, slotLag);
  }
  let rowsCopied = 0;
  let bytesCopied = 0;
  for (const t of plan.targets) {
    const { rows } = await pools
      .get(t.node.dsn)
      .query<{ rows: string; bytes: string }>(
        `select coalesce(sum(n_live_tup), 0)::bigint::text as rows, coalesce(sum(pg_total_relation_size(relid)), 0)::bigint::text as bytes
           from pg_stat_user_tables where schemaname = $1`,
        [t.schema],
      );
    rowsCopied += Number(rows[0]!.rows);
    bytesCopied += Number(rows[0]!.bytes);
  }
  return { lagBytes: lag, rowsCopied, bytesCopied };
}

/** Cleanup and compensation: slots and publications go from every source that answers. Idempotent. */
export async function stopChangeCapture(pools: NodePools, plan: ReshardPlan): Promise<void> {
  for (const s of plan.sources) {
    const db = pools.get(s.node.dsn);
    // A slot still being read (an apply round of a cancelled or timed-out attempt) is ended first:
    // skipping it, as before, left the slot holding WAL after an undone split or merge.
    await dropSlotEndingReader(db, s.slot, { bestEffort: true });
    await db.query(`drop publication if exists ${quoteIdent(s.publication)}`);
  }
  await forgetApplyPositions(pools, plan);
}

/**
 * Drops a logical slot, ending the session that reads it first (a peek of an attempt that outlived
 * its activity); idempotent. True when the slot was there. With `bestEffort`, a slot that stays
 * active through the attempts (its reader keeps coming back) is left, as the janitor's to clean,
 * instead of failing the caller.
 */
export async function dropSlotEndingReader(db: Pick<pg.Pool, 'query'>, slot: string, options: { bestEffort?: boolean } = {}): Promise<boolean> {
  for (let attempt = 0; ; attempt++) {
    const { rows } = await db.query<{ active_pid: number | null }>('select active_pid from pg_replication_slots where slot_name = $1', [slot]);
    if (!rows[0]) return attempt > 0;
    if (rows[0].active_pid !== null) await db.query('select pg_terminate_backend($1)', [rows[0].active_pid]);
    try {
      await db.query('select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = $1', [slot]);
      return true;
    } catch (err) {
      if (attempt >= (options.bestEffort ? 5 : 20)) {
        if (options.bestEffort) return true;
        throw err;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Compensation before the cutover: the new shards' schemas go, unless the catalog already places them. */
export async function dropNewShards(catalog: Pick<pg.Pool, 'query'>, pools: NodePools, plan: ReshardPlan): Promise<void> {
  const ids = plan.targets.map((t) => t.shardId);
  const placed = await catalog.query('select 1 from shardcast.shards where id = any($1::bigint[])', [ids]);
  if (placed.rowCount) throw new ShardcastError('SHARD_PLACED', `shards ${ids.join(', ')} are in the catalog: their schemas are not dropped`);
  for (const t of plan.targets) await dropSchemaGuarded(catalog, pools, t.node, t.schema, [t.shardId]);
  await forgetApplyPositions(pools, plan);
}
