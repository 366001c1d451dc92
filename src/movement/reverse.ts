import { reportingSlotWait } from './slot-wait.js';
import type pg from 'pg';
import type { NodePools } from '../catalog/node-pools.js';
import type { NodeRecord } from '../catalog/nodes.js';
import { ShardcastError } from '../errors.js';
import { dropSchemaGuarded } from './drop-guard.js';
import { quoteIdent } from '../sql/ident.js';
import { inTransaction } from '../sql/transaction.js';
import { AS_REPLICA } from './fence.js';
import { confirmRound, dropSlotEndingReader, flushedLsn, pkText, writeOps, type Op, type TableShape } from './logical-apply.js';
import { decodeMessage, UNCHANGED, type Relation, type TupleValue } from './pgoutput.js';
import { cutover, lockForCutover, VerificationError, type CutoverDeps, type CutoverOptions, type CutoverResult, type CutoverTarget } from './cutover.js';
import type { ShardTables } from './replication.js';
import { beginReadSnapshot } from './verify.js';

/**
 * Reverse replication (issue 9 §4): after a move's cutover, its fenced copy on the old source is kept
 * in sync from the new placement for the grace period, so that moving back within it is a cutover
 * only. Before the cutover a publication and a logical slot (`sc_mv_<id>_r`) are created on the
 * target for the shard's tables; after it the changes are read from the slot and applied into the
 * fenced schema, as splits and merges apply theirs (peek, write whole rows by primary key as
 * replication's role, then advance).
 *
 * Nothing is applied twice: the slot is read with `origin = none`, so the writes the forward
 * subscription applied on the target (they carry its replication origin; they came from the source,
 * which has them) are skipped, and before the cutover nothing else writes there (the target is
 * fenced). What remains are the writes made at the new placement after the switch. Applying by
 * primary key is idempotent, so changes applied but not yet confirmed when a worker died are
 * applied again harmlessly. One applier at a time per stream: an advisory lock on the placement.
 */

export interface ReverseNames {
  slot: string;
  publication: string;
}

/** The reverse stream's slot and publication on the new placement: `sc_mv_<movement>_r`, so the doctor attributes them. */
export function reverseNames(movementId: string): ReverseNames {
  const base = `sc_mv_${movementId}_r`;
  return { slot: base, publication: base };
}

/** A reverse stream: from the shard's placement (the move's target) into the fenced copy on the move's source. */
export interface ReverseStream {
  movementId: string;
  placement: NodeRecord;
  fenced: NodeRecord;
  fencedSchema: string;
}

/** Before the cutover (a slot's creation waits for running transactions; the cutover holds prepared ones): publication, then slot. Idempotent. */
export async function startReverseCapture(pools: NodePools, target: NodeRecord, shard: ShardTables, movementId: string, report: (waitingFor: string) => void = () => undefined): Promise<void> {
  const names = reverseNames(movementId);
  const db = pools.get(target.dsn);
  const pub = await db.query('select 1 from pg_publication where pubname = $1', [names.publication]);
  if (!pub.rowCount) {
    const tables = shard.tables.map((t) => `${quoteIdent(shard.schema)}.${quoteIdent(t.name)}`).join(', ');
    await db.query(`create publication ${quoteIdent(names.publication)} for table ${tables}`);
  }
  const slot = await db.query('select 1 from pg_replication_slots where slot_name = $1', [names.slot]);
  if (!slot.rowCount) await reportingSlotWait(db.query(`select pg_create_logical_replication_slot($1, 'pgoutput')`, [names.slot]), db, (w) => report(`${target.name}: ${w}`));
}

/** The stream's slot and publication go (an applier still reading is ended first). Idempotent; true when anything was there. */
export async function stopReverseCapture(pools: NodePools, node: NodeRecord, movementId: string): Promise<boolean> {
  const names = reverseNames(movementId);
  const db = pools.get(node.dsn);
  const found = await dropSlotEndingReader(db, names.slot);
  const pub = await db.query(`drop publication if exists ${quoteIdent(names.publication)}`);
  return found || pub.command === 'DROP';
}

export type ReverseState = 'following' | 'missing' | 'lost';

/** Whether a reverse move can be a cutover only: slot and publication there, and the slot not invalidated (WAL removed). */
export async function reverseCaptureState(pools: NodePools, node: NodeRecord, movementId: string): Promise<ReverseState> {
  const names = reverseNames(movementId);
  const { rows } = await pools.get(node.dsn).query<{ slot: boolean; lost: boolean; pub: boolean }>(
    `select exists (select 1 from pg_replication_slots where slot_name = $1) as slot,
            exists (select 1 from pg_replication_slots where slot_name = $1 and (wal_status = 'lost' or invalidation_reason is not null)) as lost,
            exists (select 1 from pg_publication where pubname = $2) as pub`,
    [names.slot, names.publication],
  );
  const r = rows[0]!;
  if (!r.slot || !r.pub) return 'missing';
  return r.lost ? 'lost' : 'following';
}

export interface ReverseApplied {
  /** Changes read from the slot and applied. */
  changes: number;
  /** The slot was read to its end. */
  drained: boolean;
  /** WAL of the placement not yet applied and confirmed, in bytes (after this call). */
  lagBytes: number | null;
  /** Primary keys written, per table (for the cutover's check of the changed rows). */
  keys: Map<string, { shape: TableShape; tuples: Map<string, TupleValue[]> }>;
}

const PEEK_CHANGES = 20_000;

/**
 * Applies the stream's pending changes to the fenced copy until the slot is drained (or a round
 * reads fewer than `closeTo` changes), or the deadline passes. Each round holds the stream's
 * advisory lock on the placement (so a cutover waits for one round at most); `locked` passes a
 * connection that holds it throughout (the cutover's).
 */
export async function applyReverse(
  pools: NodePools,
  stream: ReverseStream,
  options: { deadline?: number; closeTo?: number; onBatch?: (applied: number) => void; locked?: pg.ClientBase } = {},
): Promise<ReverseApplied> {
  const applier = new ReverseApplier(pools, stream);
  const run = async (placement: pg.ClientBase): Promise<ReverseApplied> => {
    let changes = 0;
    let drained = false;
    for (;;) {
      if (!options.locked) await lockStream(placement, stream.movementId);
      let n: number;
      try {
        n = await applier.round(placement);
      } finally {
        if (!options.locked) await unlockStream(placement, stream.movementId);
      }
      changes += n;
      options.onBatch?.(changes);
      if (n === 0 || n < (options.closeTo ?? 0)) {
        drained = true;
        break;
      }
      if (options.deadline !== undefined && Date.now() > options.deadline) break;
    }
    const { rows } = await placement.query<{ lag: string | null }>(
      'select pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint::text as lag from pg_replication_slots where slot_name = $1',
      [reverseNames(stream.movementId).slot],
    );
    return { changes, drained, lagBytes: rows[0]?.lag != null ? Number(rows[0].lag) : null, keys: applier.keys };
  };
  if (options.locked) return run(options.locked);
  const client = await pools.get(stream.placement.dsn).connect();
  let broken: Error | undefined;
  try {
    return await run(client);
  } catch (err) {
    broken = err as Error;
    throw err;
  } finally {
    client.release(broken);
  }
}

/** Takes the stream's advisory lock (session level) on the placement: one applier at a time. */
export async function lockStream(client: pg.ClientBase, movementId: string): Promise<void> {
  await client.query('select pg_advisory_lock(hashtextextended($1, 0))', [reverseNames(movementId).slot]);
}

export async function unlockStream(client: pg.ClientBase, movementId: string): Promise<void> {
  await client.query('select pg_advisory_unlock(hashtextextended($1, 0))', [reverseNames(movementId).slot]);
}

class ReverseApplier {
  private readonly shapes = new Map<number, TableShape>();
  readonly keys: ReverseApplied['keys'] = new Map();
  constructor(
    private readonly pools: NodePools,
    private readonly stream: ReverseStream,
  ) {}

  /** One peek–apply–advance round; returns how many messages it read. */
  async round(placement: pg.ClientBase): Promise<number> {
    const names = reverseNames(this.stream.movementId);
    const flushed = await flushedLsn(placement);
    const { rows } = await placement.query<{ lsn: string; data: Buffer }>(
      `select lsn::text, data from pg_logical_slot_peek_binary_changes($1, null, $2, 'proto_version', '1', 'publication_names', $3, 'origin', 'none')`,
      [names.slot, PEEK_CHANGES, names.publication],
    );
    if (rows.length === 0) {
      await confirmRound(placement, names.slot, rows, PEEK_CHANGES, flushed);
      return 0;
    }
    let pending = new Map<TableShape, Map<string, Op>>();
    for (const row of rows) {
      const change = decodeMessage(row.data);
      switch (change.kind) {
        case 'relation':
          this.learn(change.relation);
          break;
        case 'insert':
          this.put(pending, this.shapeOf(change.relation), change.tuple, null);
          break;
        case 'update':
          this.put(pending, this.shapeOf(change.relation), change.tuple, change.oldKey);
          break;
        case 'delete': {
          const shape = this.shapeOf(change.relation);
          opsOf(pending, shape).set(pkText(shape, change.oldKey), { kind: 'delete', key: change.oldKey });
          this.remember(shape, change.oldKey);
          break;
        }
        case 'truncate':
          await this.flush(pending);
          pending = new Map();
          await inTransaction(this.pools.get(this.stream.fenced.dsn), async (client) => {
            await client.query(AS_REPLICA);
            const tables = change.relations.map((id) => `${quoteIdent(this.stream.fencedSchema)}.${quoteIdent(this.shapeOf(id).table.name)}`);
            await client.query(`truncate ${tables.join(', ')}`);
          });
          break;
        default:
          break;
      }
    }
    await this.flush(pending);
    await confirmRound(placement, names.slot, rows, PEEK_CHANGES, flushed);
    return rows.length;
  }

  private learn(relation: Relation): void {
    const pkIndexes = relation.columns.flatMap((c, i) => (c.key ? [i] : []));
    if (pkIndexes.length === 0) throw new ShardcastError('NOT_MOVABLE', `table ${relation.name}: changes cannot be applied without its primary key columns`);
    this.shapes.set(relation.id, { table: { name: relation.name, columns: '', keyColumn: '' }, relation, keyIndex: -1, pkIndexes });
  }

  private shapeOf(id: number): TableShape {
    const found = this.shapes.get(id);
    if (!found) throw new ShardcastError('PGOUTPUT', `change for relation ${id} arrived before its description`);
    return found;
  }

  private remember(shape: TableShape, tuple: TupleValue[]): void {
    let of = this.keys.get(shape.table.name);
    if (!of) this.keys.set(shape.table.name, (of = { shape, tuples: new Map() }));
    of.tuples.set(pkText(shape, tuple), tuple);
  }

  private put(pending: Map<TableShape, Map<string, Op>>, shape: TableShape, tuple: TupleValue[], oldKey: TupleValue[] | null): void {
    const ops = opsOf(pending, shape);
    const pk = pkText(shape, tuple);
    if (oldKey && pkText(shape, oldKey) !== pk) {
      ops.set(pkText(shape, oldKey), { kind: 'delete', key: oldKey });
      this.remember(shape, oldKey);
    }
    let values = tuple;
    if (tuple.includes(UNCHANGED)) {
      // Unchanged TOASTed columns were not sent: from an earlier full row of this batch, else only the sent columns are written.
      const before = ops.get(pk);
      if (before?.kind === 'row') values = tuple.map((v, i) => (v === UNCHANGED ? before.values[i]! : v));
    }
    ops.set(pk, { kind: 'row', values });
    this.remember(shape, tuple);
  }

  private async flush(pending: Map<TableShape, Map<string, Op>>): Promise<void> {
    if (pending.size === 0) return;
    await inTransaction(this.pools.get(this.stream.fenced.dsn), async (client) => {
      await client.query(AS_REPLICA); // past the fenced copy's fence
      for (const [shape, ops] of pending) await writeOps(client, this.stream.fencedSchema, shape, [...ops.values()]);
    });
  }
}

function opsOf(pending: Map<TableShape, Map<string, Op>>, shape: TableShape): Map<string, Op> {
  let m = pending.get(shape);
  if (!m) pending.set(shape, (m = new Map()));
  return m;
}

/**
 * The reverse check, in two parts so that writes wait only for the second. `counts`: every table's
 * row count, placement against fenced copy, read in snapshots taken at one moment (see
 * countsAtSnapshot). Then the rows the stream wrote (`changed`), compared in full: those written
 * before the snapshot in the same snapshots, those written after it under the cutover's lock.
 */
export async function verifyReverse(
  placement: Pick<pg.ClientBase, 'query'>,
  fenced: Pick<pg.ClientBase, 'query'>,
  stream: ReverseStream,
  shard: ShardTables,
  changed: ReverseApplied['keys'],
  options: { counts: boolean },
): Promise<{ rows: number }> {
  if (options.counts) {
    const counts = (schema: string) =>
      shard.tables.map((t) => `(select count(*) from ${quoteIdent(schema)}.${quoteIdent(t.name)})`).join(' || \',\' || ');
    const [here, there] = await Promise.all([
      placement.query<{ n: string }>(`select ${counts(shard.schema)} as n`),
      fenced.query<{ n: string }>(`select ${counts(stream.fencedSchema)} as n`),
    ]);
    if (here.rows[0]!.n !== there.rows[0]!.n) {
      throw new VerificationError(
        `shard ${shard.shardId}: row counts differ between ${stream.placement.name} (${here.rows[0]!.n}) and the fenced copy on ${stream.fenced.name} (${there.rows[0]!.n}); reverse cutover aborted`,
      );
    }
  }
  let rows = 0;
  for (const [table, { shape, tuples }] of changed) {
    const literal = [...tuples.values()].map((values) => keyLiteral(shape, values));
    const read = (client: Pick<pg.ClientBase, 'query'>, schema: string) => {
      const name = `${quoteIdent(schema)}.${quoteIdent(table)}`;
      const match = shape.pkIndexes.map((i) => `t.${quoteIdent(shape.relation.columns[i]!.name)} = (r).${quoteIdent(shape.relation.columns[i]!.name)}`).join(' and ');
      return client.query<{ row: string }>(`select row(t.*)::text as row from ${name} t join unnest($1::${name}[]) r on ${match} order by 1`, [literal]);
    };
    const [a, b] = await Promise.all([read(placement, shard.schema), read(fenced, stream.fencedSchema)]);
    const left = a.rows.map((r) => r.row).join('\n');
    const right = b.rows.map((r) => r.row).join('\n');
    if (left !== right) {
      throw new VerificationError(`shard ${shard.shardId}: ${table}: rows changed during the grace period differ between ${stream.placement.name} and the fenced copy on ${stream.fenced.name}; reverse cutover aborted`);
    }
    rows += literal.length;
  }
  return { rows };
}

/**
 * The counts and the rows changed so far, compared without holding writes: the placement's tables
 * are locked only while the stream is drained and a REPEATABLE READ snapshot is opened on both sides
 * (then both show one logical state); the counting runs in the snapshots after the lock is gone.
 * Returns how long writes waited.
 */
async function countsAtSnapshot(
  pools: NodePools,
  stream: ReverseStream,
  shard: ShardTables,
  drain: () => Promise<void>,
  changed: ReverseApplied['keys'],
  lockTimeoutMs?: number,
): Promise<number> {
  const lock = await pools.get(stream.placement.dsn).connect();
  const here = await pools.get(stream.placement.dsn).connect();
  const there = await pools.get(stream.fenced.dsn).connect();
  let broken: Error | undefined;
  try {
    const lockedAt = await lockForCutover([{ client: lock, tables: shard.tables.map((t) => `${quoteIdent(shard.schema)}.${quoteIdent(t.name)}`) }], lockTimeoutMs);
    let blocked: number;
    try {
      await drain();
      for (const c of [here, there]) await beginReadSnapshot(c);
    } finally {
      await lock.query('rollback').catch(() => undefined);
      blocked = Date.now() - lockedAt;
    }
    await verifyReverse(here, there, stream, shard, changed, { counts: true });
    return blocked;
  } catch (err) {
    broken = err as Error;
    throw err;
  } finally {
    for (const c of [here, there]) await c.query('rollback').catch(() => undefined);
    for (const c of [lock, here, there]) c.release(broken);
  }
}

/** A row literal with only the primary key's columns set (the rest null), for a join on the key. */
function keyLiteral(shape: TableShape, values: TupleValue[]): string {
  const quote = (v: TupleValue) => (v === null || v === UNCHANGED ? '' : `"${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`);
  return `(${values.map((v, i) => (shape.pkIndexes.includes(i) ? quote(v) : '')).join(',')})`;
}

/**
 * The move back within the grace period: a cutover only. The stream's lock is taken and its backlog
 * applied before writes are locked out; under the cutover's lock the rest is applied, counts and the
 * changed rows compared, and the fenced copy unfenced and renamed back in the transaction prepared
 * beside the placement's fence and the catalog switch (cutover.ts: same 2PC, fencing token and recovery).
 */
export async function reverseCutover(
  deps: CutoverDeps,
  move: CutoverTarget,
  stream: ReverseStream,
  options: CutoverOptions = {},
): Promise<CutoverResult & { applied: number; snapshotBlockedMs: number }> {
  const client = await deps.pools.get(stream.placement.dsn).connect();
  let broken: Error | undefined;
  let applied = 0;
  try {
    await lockStream(client, stream.movementId);
    try {
      const changed: ReverseApplied['keys'] = new Map();
      const drain = async (before?: { deadline: number; closeTo: number }) => {
        const r = await applyReverse(deps.pools, stream, { locked: client, onBatch: options.onWait, ...before });
        applied += r.changes;
        for (const [table, keys] of r.keys) {
          const into = changed.get(table);
          if (into) for (const [k, v] of keys.tuples) into.tuples.set(k, v);
          else changed.set(table, keys);
        }
      };
      // The backlog, before writes wait; then the counts and the rows changed so far, in snapshots
      // (writes wait only while those are taken). A retry after the switch finds the stream gone and
      // goes straight to recovery.
      let snapshotBlockedMs = 0;
      let snapshotted = false;
      if ((await reverseCaptureState(deps.pools, stream.placement, stream.movementId)) === 'following' && !(await anyPrepared(deps, move))) {
        await drain({ deadline: Date.now() + 5000, closeTo: 100 }).catch(() => undefined);
        try {
          snapshotBlockedMs = await countsAtSnapshot(deps.pools, stream, move.shard, () => drain(), changed, Math.min(options.lockTimeoutMs ?? 5000, 1000));
          changed.clear(); // compared; under the cutover's lock only what changes from here on
          snapshotted = true;
        } catch (err) {
          if (err instanceof VerificationError) throw err;
          // Not had (e.g. the lock): the cutover counts under its lock instead, as it decides everything else.
        }
      }
      const result = await cutover(deps, move, {
        ...options,
        reverse: {
          targetSchema: stream.fencedSchema,
          catchUp: () => drain(),
          verify: async (placement) => void (await verifyReverse(placement, deps.pools.get(stream.fenced.dsn), stream, move.shard, changed, { counts: !snapshotted })),
        },
      });
      return { ...result, applied, snapshotBlockedMs };
    } finally {
      await unlockStream(client, stream.movementId).catch(() => undefined);
    }
  } catch (err) {
    broken = err as Error;
    throw err;
  } finally {
    client.release(broken);
  }
}

/** An earlier attempt left part of this cutover prepared: recovery decides, nothing is taken before it. */
async function anyPrepared(deps: CutoverDeps, move: CutoverTarget): Promise<boolean> {
  const gids = [move.names.gid, `${move.names.gid}_t`];
  for (const dsn of [deps.catalogUrl, move.source.dsn, move.target.dsn]) {
    const { rows } = await deps.pools.get(dsn).query('select 1 from pg_prepared_xacts where gid = any($1::text[]) and database = current_database()', [gids]);
    if (rows.length > 0) return true;
  }
  return false;
}

/**
 * The end of the grace period: the fenced copy and the reverse stream go, unless a move back of this
 * movement runs ('busy': it needs them; asked again later). Decided holding the movement's row, which
 * a move back's lease also takes: either the lease sees the copy gone (and copies in full), or the drop
 * sees the move back.
 */
export async function dropFencedCopyUnlessReversing(
  catalog: pg.Pool,
  pools: NodePools,
  movementId: string,
  placement: NodeRecord,
  fenced: NodeRecord,
  copy: { schema: string; shardId: number },
): Promise<'dropped' | 'busy'> {
  const client = await catalog.connect();
  try {
    await client.query('begin');
    await client.query('select 1 from shardcast.movements where id = $1 for update', [movementId]);
    const reversing = await client.query("select 1 from shardcast.movements where reverse_of = $1 and state = 'running'", [movementId]);
    if (reversing.rowCount) {
      await client.query('rollback');
      return 'busy';
    }
    await stopReverseCapture(pools, placement, movementId);
    // Moved back: the copy was renamed back and serves the shard; there is nothing to drop.
    const exists = await pools.get(fenced.dsn).query('select 1 from pg_namespace where nspname = $1', [copy.schema]);
    if (exists.rowCount) await dropSchemaGuarded(client, pools, fenced, copy.schema, [copy.shardId]);
    await client.query('commit');
    return 'dropped';
  } catch (err) {
    await client.query('rollback').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}
