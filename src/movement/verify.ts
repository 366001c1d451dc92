import { ownReads, type OwnReadCount } from './own-reads.js';
import type pg from 'pg';
import type { NodePools } from '../catalog/node-pools.js';
import type { NodeRecord } from '../catalog/nodes.js';
import { ShardcastError, sqlState } from '../errors.js';
import { failpoint } from '../failpoints.js';
import { quoteIdent } from '../sql/ident.js';
import { lockForCutover, sleep, VerificationError, type CutoverTarget } from './cutover.js';
import { applyChanges } from './logical-apply.js';
import { decodeMessage, UNCHANGED, type TupleValue } from './pgoutput.js';
import { bumpWatermark, targetHasWatermark, WATERMARKS } from './replication.js';
import { rangePredicate, type ReshardPlan } from './reshard-plan.js';

/**
 * The verify phase of a move, split or merge (DESIGN §3, step 5), without holding writes.
 *
 * 1. A *verify slot* per source: a copy of the movement's replication slot, made before anything is
 *    compared. From then on it holds every change the source commits, so the cutover can re-check,
 *    by primary key, exactly the rows that changed since (deletes included): see `recheckChanges`.
 * 2. A consistent pair of snapshots: the sources are locked against writes only for this moment
 *    (the target catches up, REPEATABLE READ transactions open on every side), then released.
 * 3. Lock-free, inside those snapshots: per table, chunks of `chunkRows` rows in primary-key order
 *    (keyset pagination on the target), each compared by count and an order-independent digest
 *    (the sum of the rows' 64-bit hashes: no string grows with the table). A split or merge compares
 *    each target with the sum of its sources' rows in the target's range, so a target row outside its
 *    range, a missing row or a changed row all show. A chunk that differs is fetched row by row on
 *    both sides and the error names the table, the key range and the first differing keys.
 * 4. Progress (the last verified key per table, rows verified, an estimate of the total) is handed to
 *    `onProgress` after every chunk; a later call with it as `resume` continues after the last chunk
 *    (in new snapshots: the ranges already verified agreed at theirs, and what changed there since is
 *    in the verify slot, which is never newer than the first snapshot).
 */

/** One comparison: a target table against the sources' rows that belong to it. */
interface Comparison {
  key: string;
  table: string;
  label: string;
  target: Side;
  sources: Array<Side & { filter: string | null }>;
}

interface Side {
  node: NodeRecord;
  schema: string;
}

export interface VerifyCursor {
  /** The last primary key verified (text of each key column); null before the first chunk. */
  after: string[] | null;
  done: boolean;
}

export interface VerifyProgress {
  /** Per comparison ("<target shard>.<table>"): how far it got. */
  cursors: Record<string, VerifyCursor>;
  rowsVerified: number;
  /** Estimate of the rows to verify (from the targets' statistics). */
  rowsTotal: number;
  chunks: number;
  /** Snapshot moments taken (one per call) and the longest and total time writes waited for one. */
  snapshots: number;
  blockedMs: number;
  blockedTotalMs: number;
  /** Snapshot moments given up because the targets had not caught up within the block budget (each retried). */
  snapshotsGivenUp?: number;
  etaSeconds: number | null;
  done: boolean;
}

export type VerifySubject = CutoverTarget | ReshardPlan;

export interface VerifyOptions {
  /** Continue from an earlier call's (or attempt's) progress. */
  resume?: VerifyProgress;
  /** Return (not done) after about this long, so that the caller can report progress (default: no limit). */
  sliceMs?: number;
  chunkRows?: number;
  lockTimeoutMs?: number;
  /** A move's: longest a snapshot moment may hold writes before it is given up and retried (default 60 ms, so that the moment with its release stays within 100 ms; the lock's wait counts). */
  maxBlockMs?: number;
  catchUpTimeoutMs?: number;
  onProgress?: (p: VerifyProgress) => void;
  onWait?: () => void;
  /** Aborting cancels the running chunk queries and throws. */
  signal?: AbortSignal;
  /** Told, at the end of a call, what its sessions read from the sources' shard tables (not workload: see ownReads). */
  onOwnReads?: (reads: OwnReadCount[]) => Promise<void>;
}


export const DEFAULT_CHUNK_ROWS = 20_000;

const isReshard = (s: VerifySubject): s is ReshardPlan => 'sources' in s;

/** Name of the verify slot copied from a movement slot. */
export function verifySlotName(slot: string): string {
  return `${slot}_v`;
}

/** The sources with their movement slot, publication and verify slot. */
export function sourceSlots(subject: VerifySubject): Array<{ node: NodeRecord; schema: string; slot: string; publication: string; verifySlot: string }> {
  if (isReshard(subject)) return subject.sources.map((s) => ({ node: s.node, schema: s.schema, slot: s.slot, publication: s.publication, verifySlot: verifySlotName(s.slot) }));
  const { source, shard, names } = subject;
  return [{ node: source, schema: shard.schema, slot: names.slot, publication: names.publication, verifySlot: verifySlotName(names.slot) }];
}

function comparisons(subject: VerifySubject): Comparison[] {
  if (!isReshard(subject)) {
    return subject.shard.tables.map((t) => ({
      key: `${subject.shard.shardId}.${t.name}`,
      table: t.name,
      label: `shard ${subject.shard.shardId}`,
      target: { node: subject.target, schema: subject.shard.schema },
      sources: [{ node: subject.source, schema: subject.shard.schema, filter: null }],
    }));
  }
  const plan = subject;
  return plan.targets.flatMap((t) =>
    plan.tables.map((table) => ({
      key: `${t.shardId}.${table.name}`,
      table: table.name,
      label: `${plan.operation} of shard ${plan.sources.map((s) => s.shardId).join(' and ')} into new shard ${t.shardId}`,
      target: { node: t.node, schema: t.schema },
      // A merge's sources lie inside the target's range: no filter. A split's source keeps the target's part.
      sources: plan.sources.map((s) => ({ node: s.node, schema: s.schema, filter: plan.operation === 'merge' ? null : rangePredicate(plan.keyType, table.keyColumn, t.range) })),
    })),
  );
}

export function emptyProgress(): VerifyProgress {
  return { cursors: {}, rowsVerified: 0, rowsTotal: 0, chunks: 0, snapshots: 0, blockedMs: 0, blockedTotalMs: 0, etaSeconds: null, done: false };
}

/** Of two progress records of the same verification, the one further along (a heartbeat can be newer than the workflow's). */
export function furthest(a: VerifyProgress | undefined, b: VerifyProgress | undefined): VerifyProgress | undefined {
  if (!a) return b;
  if (!b) return a;
  return b.rowsVerified > a.rowsVerified || (b.done && !a.done) ? b : a;
}

/** Creates the verify slots that do not exist yet (a retry keeps the older one: it holds more). */
export async function createVerifySlots(pools: NodePools, subject: VerifySubject): Promise<void> {
  for (const s of sourceSlots(subject)) {
    const db = pools.get(s.node.dsn);
    const { rowCount } = await db.query('select 1 from pg_replication_slots where slot_name = $1', [s.verifySlot]);
    if (rowCount) continue;
    try {
      await db.query('select pg_copy_logical_replication_slot($1, $2)', [s.slot, s.verifySlot]);
    } catch (err) {
      if (sqlState(err) !== '42710') throw err; // created meanwhile by another attempt
    }
  }
}

/** Drops the verify slots (after the cutover, or when the movement is undone). */
export async function dropVerifySlots(pools: NodePools, subject: VerifySubject): Promise<void> {
  for (const s of sourceSlots(subject)) {
    await pools
      .get(s.node.dsn)
      .query('select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = $1 and not active', [s.verifySlot]);
  }
}

/** A REPEATABLE READ transaction on one side, and the backend's pid (to cancel its query on abort). */
interface Snapshot {
  client: pg.PoolClient;
  pid: number;
  dsn: string;
}

async function openSnapshot(pools: NodePools, node: NodeRecord): Promise<Snapshot> {
  const client = await pools.get(node.dsn).connect();
  try {
    const { rows } = await client.query<{ pid: number }>('select pg_backend_pid() as pid');
    return { client, pid: rows[0]!.pid, dsn: node.dsn };
  } catch (err) {
    client.release(err as Error);
    throw err;
  }
}

async function beginSnapshot(s: Snapshot): Promise<void> {
  await beginReadSnapshot(s.client);
}

/** Opens a REPEATABLE READ, read-only transaction on the client and takes its snapshot now. */
export async function beginReadSnapshot(client: Pick<pg.ClientBase, 'query'>): Promise<void> {
  await client.query('begin isolation level repeatable read read only');
  await client.query('select 1'); // the snapshot is taken by the first statement
}

/** How long one snapshot moment may hold writes before it is given up and tried again (ms). */
export const DEFAULT_MAX_BLOCK_MS = 60;
/** Snapshot moments given up for the block budget before one waits as long as the target needs. */
const BUDGETED_ATTEMPTS = 10;

/**
 * The snapshot moment: sources locked against writes, every side's REPEATABLE READ transaction
 * opened so that all show the same logical state, locks released. For a move, when the target has
 * not caught up within the block budget, the moment is given up (locks released, snapshots rolled
 * back) and taken again after another catch-up without the lock. Returns the longest and total time
 * writes waited.
 */
async function takeSnapshots(
  pools: NodePools,
  subject: VerifySubject,
  snapshots: Map<string, Snapshot>,
  options: VerifyOptions,
): Promise<{ longestMs: number; totalMs: number; givenUp: number }> {
  const sources = sourceSlots(subject).sort((a, b) => a.node.id - b.node.id);
  const budget = Math.max(10, options.maxBlockMs ?? DEFAULT_MAX_BLOCK_MS);
  const lockClients: pg.PoolClient[] = [];
  let broken: Error | undefined;
  let longestMs = 0;
  let totalMs = 0;
  let givenUp = 0;
  try {
    for (const s of sources) lockClients.push(await pools.get(s.node.dsn).connect());
    const tables = isReshard(subject) ? subject.tables.map((t) => t.name) : subject.shard.tables.map((t) => t.name);
    const locks = sources.map((s, i) => ({ client: lockClients[i]!, tables: tables.map((t) => `${quoteIdent(s.schema)}.${quoteIdent(t)}`) }));
    const targetDsns = new Set(isReshard(subject) ? subject.targets.map((t) => t.node.dsn) : [subject.target.dsn]);
    for (let attempt = 1; ; attempt++) {
      // A split's or merge's targets are caught up by Shardcast itself (a peek and an apply per round, two rounds at
      // least under the lock): its moment is not budgeted, as a move's (a subscription's apply, a watermark) is.
      const bounded = !isReshard(subject) && attempt <= BUDGETED_ATTEMPTS;
      // Catch up first without the lock, so that under it the target has only the last moments to apply.
      if (!isReshard(subject)) await waitForWatermark(pools, subject, await bumpWatermark(pools, subject.source, subject.names), options);
      else await applyChanges(pools, subject, { deadline: Date.now() + (options.catchUpTimeoutMs ?? 10_000), onBatch: () => options.onWait?.() });
      // Writers queue behind a lock request too: its wait is part of the budget.
      const lockedAt = await lockForCutover(locks, options.lockTimeoutMs, bounded ? Math.floor(budget / 2) : 100);
      const budgetAt = bounded ? lockedAt + budget : Infinity;
      let taken = false;
      try {
        // Writers are locked out: a snapshot of each source taken now is final until the locks go.
        // A node holding a target as well gets its one snapshot once the target has caught up (its sources are locked till then).
        for (const dsn of new Set(sources.map((s) => s.node.dsn))) if (!targetDsns.has(dsn)) await beginSnapshot(snapshots.get(dsn)!);
        if (isReshard(subject)) {
          const drained = await applyChanges(pools, subject, { onBatch: () => options.onWait?.() });
          if (!drained.drained) throw new ShardcastError('CUTOVER_CATCHUP_TIMEOUT', 'the new shards did not catch up with the locked sources');
          for (const dsn of targetDsns) await beginSnapshot(snapshots.get(dsn)!);
          taken = true;
        } else {
          taken = await targetSnapshotAtWatermark(pools, subject, snapshots.get(subject.target.dsn)!, options, budgetAt);
        }
        if (!taken) for (const s of snapshots.values()) await s.client.query('rollback');
      } finally {
        for (const c of lockClients) await c.query('rollback').catch(() => undefined);
      }
      const blocked = Date.now() - lockedAt;
      longestMs = Math.max(longestMs, blocked);
      totalMs += blocked;
      if (taken) return { longestMs, totalMs, givenUp };
      givenUp++;
      options.onWait?.();
    }
  } catch (err) {
    broken = err as Error;
    throw err;
  } finally {
    for (const c of lockClients) c.release(broken);
  }
}

async function waitForWatermark(pools: NodePools, move: CutoverTarget, mark: number, options: VerifyOptions): Promise<void> {
  const deadline = Date.now() + (options.catchUpTimeoutMs ?? 10_000);
  while (!(await targetHasWatermark(pools, move.target, move.names, mark))) {
    if (Date.now() > deadline) throw new ShardcastError('CUTOVER_CATCHUP_TIMEOUT', `target ${move.target.name} did not catch up (watermark ${mark}) within the catch-up timeout`);
    options.onWait?.();
    await sleep(5);
  }
}

/**
 * A watermark committed now follows every write to the shard: the target's snapshot is taken once it
 * shows it. False (nothing open) when the target has not shown it by `budgetAt`.
 */
async function targetSnapshotAtWatermark(pools: NodePools, move: CutoverTarget, snap: Snapshot, options: VerifyOptions, budgetAt = Infinity): Promise<boolean> {
  const mark = await bumpWatermark(pools, move.source, move.names);
  const deadline = Date.now() + (options.catchUpTimeoutMs ?? 10_000);
  for (;;) {
    await snap.client.query('begin isolation level repeatable read read only');
    const { rows } = await snap.client.query<{ ok: boolean }>(`select coalesce(max(n) >= $2, false) as ok from ${WATERMARKS} where movement_id = $1`, [
      move.names.slot,
      mark,
    ]);
    if (rows[0]?.ok) return true;
    await snap.client.query('rollback');
    if (Date.now() >= budgetAt) return false;
    if (Date.now() > deadline) {
      throw new ShardcastError('CUTOVER_CATCHUP_TIMEOUT', `target ${move.target.name} did not catch up (watermark ${mark}) within the catch-up timeout`);
    }
    options.onWait?.();
    await sleep(2);
  }
}

const sideKey = (s: Side) => `${s.node.id}:${s.schema}`;
/** One snapshot (and connection) per database: a split in place reads its source and targets in the same one. */
const snapKey = (s: Side) => s.node.dsn;

export interface PkColumn {
  name: string;
  type: string;
}

/** The table's primary key columns, in key order (empty when it has none). */
export async function primaryKey(db: Pick<pg.ClientBase, 'query'>, schema: string, table: string): Promise<PkColumn[]> {
  const { rows } = await db.query<PkColumn>(
    `select a.attname as name, format_type(a.atttypid, a.atttypmod) as type
       from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
      where i.indrelid = $1::regclass and i.indisprimary
      order by array_position(i.indkey::int2[], a.attnum)`,
    [`${quoteIdent(schema)}.${quoteIdent(table)}`],
  );
  return rows;
}

/** SQL (and parameters from `$first`) for rows with key > after and key <= upto, either bound optional. */
export function keyRange(pk: PkColumn[], after: string[] | null, upto: string[] | null, first = 1): { sql: string; params: string[] } {
  const tuple = `(${pk.map((c) => `t.${quoteIdent(c.name)}`).join(', ')})`;
  const params: string[] = [];
  const bound = (values: string[]) => `(${values.map((v, i) => (params.push(v), `$${first + params.length - 1}::${pk[i]!.type}`)).join(', ')})`;
  const parts: string[] = [];
  if (after) parts.push(`${tuple} > ${bound(after)}`);
  if (upto) parts.push(`${tuple} <= ${bound(upto)}`);
  return { sql: parts.length ? parts.join(' and ') : 'true', params };
}

/** Human form of a key range: "id in (10, 20]", "id > 10", "id <= 20", "all of id". */
export function describeRange(pk: PkColumn[], after: string[] | null, upto: string[] | null): string {
  const names = pk.length === 1 ? pk[0]!.name : `(${pk.map((c) => c.name).join(', ')})`;
  const value = (v: string[]) => (v.length === 1 ? v[0]! : `(${v.join(', ')})`);
  if (after && upto) return `${names} in (${value(after)}, ${value(upto)}]`;
  if (after) return `${names} > ${value(after)}`;
  if (upto) return `${names} <= ${value(upto)}`;
  return `all of ${names}`;
}

/** Seconds left at the rate seen so far; null until there is a rate. */
export function etaSeconds(rowsTotal: number, rowsVerified: number, rowsThisRun: number, elapsedMs: number): number | null {
  if (rowsThisRun <= 0 || elapsedMs <= 0) return null;
  return Math.max(0, Math.round(((Math.max(rowsTotal, rowsVerified) - rowsVerified) / rowsThisRun) * (elapsedMs / 1000)));
}

const ROW_HASH = 'hashtextextended(row(t.*)::text, 0)'; // row(t.*), not t: a column named t would be taken for the row
const DIGEST = `count(*)::int as n, coalesce(sum(${ROW_HASH}), 0)::text as s`;

interface TargetChunk {
  n: number;
  s: string;
  last: string[] | null;
}

function targetChunk(db: pg.ClientBase, side: Side, table: string, pk: PkColumn[], after: string[] | null, limit: number): Promise<TargetChunk> {
  const range = keyRange(pk, after, null);
  const cols = pk.map((c) => `t.${quoteIdent(c.name)}`).join(', ');
  const last = `array[${pk.map((_, i) => `c.k${i}::text`).join(', ')}]`;
  const order = pk.map((_, i) => `c.k${i} desc`).join(', ');
  return db
    .query<TargetChunk>(
      `with c as materialized (
         select ${pk.map((c, i) => `t.${quoteIdent(c.name)} as k${i}`).join(', ')}, ${ROW_HASH} as h
           from ${quoteIdent(side.schema)}.${quoteIdent(table)} t where ${range.sql} order by ${cols} limit ${limit})
       select count(*)::int as n, coalesce(sum(h), 0)::text as s, (select ${last} from c order by ${order} limit 1) as last from c`,
      range.params,
    )
    .then((r) => r.rows[0]!);
}

async function sourceChunk(db: pg.ClientBase, side: Side & { filter: string | null }, table: string, pk: PkColumn[], after: string[] | null, upto: string[] | null) {
  const range = keyRange(pk, after, upto);
  const { rows } = await db.query<{ n: number; s: string }>(
    `select ${DIGEST} from ${quoteIdent(side.schema)}.${quoteIdent(table)} t where ${range.sql}${side.filter ? ` and ${side.filter}` : ''}`,
    range.params,
  );
  return rows[0]!;
}

/** Rows of a chunk, key → hash, in key order (at most `limit`). */
async function chunkRows(db: pg.ClientBase, side: Side, table: string, pk: PkColumn[], after: string[] | null, upto: string[] | null, filter: string | null, limit: number) {
  const range = keyRange(pk, after, upto);
  const { rows } = await db.query<{ k: string[]; h: string }>(
    `select array[${pk.map((c) => `t.${quoteIdent(c.name)}::text`).join(', ')}] as k, ${ROW_HASH}::text as h
       from ${quoteIdent(side.schema)}.${quoteIdent(table)} t where ${range.sql}${filter ? ` and ${filter}` : ''}
      order by ${pk.map((c) => `t.${quoteIdent(c.name)}`).join(', ')} limit ${limit}`,
    range.params,
  );
  return rows;
}

/** Keys that differ between two row lists (key → hash): changed, missing on the target, extra on the target. */
export function differingKeys(source: Array<{ k: string[]; h: string }>, target: Array<{ k: string[]; h: string }>, max = 3): string[] {
  const want = new Map(source.map((r) => [JSON.stringify(r.k), r.h]));
  const have = new Map(target.map((r) => [JSON.stringify(r.k), r.h]));
  const out: string[] = [];
  const show = (k: string) => (JSON.parse(k) as string[]).join(', ');
  for (const [k, h] of want) if (have.has(k) && have.get(k) !== h) out.push(`${show(k)} (changed)`);
  for (const k of want.keys()) if (!have.has(k)) out.push(`${show(k)} (missing on the target)`);
  for (const k of have.keys()) if (!want.has(k)) out.push(`${show(k)} (only on the target)`);
  return out.slice(0, max);
}

async function chunkMismatch(
  cmp: Comparison,
  pk: PkColumn[],
  conns: { target: pg.ClientBase; sources: pg.ClientBase[] },
  after: string[] | null,
  upto: string[] | null,
  counts: { source: number; target: number },
  limit: number,
): Promise<VerificationError> {
  const [targetRows, ...sourceRows] = await Promise.all([
    chunkRows(conns.target, cmp.target, cmp.table, pk, after, upto, null, limit * 2),
    ...cmp.sources.map((s, i) => chunkRows(conns.sources[i]!, s, cmp.table, pk, after, upto, s.filter, limit * 2)),
  ]);
  const keys = differingKeys(sourceRows.flat(), targetRows);
  const from = cmp.sources.map((s) => s.node.name).join(' + ');
  const same = counts.source === counts.target ? ', same count, different content' : '';
  return new VerificationError(
    `${cmp.label}: ${cmp.table} differs between ${from} (${counts.source} rows) and ${cmp.target.node.name} (${counts.target} rows) in ${describeRange(pk, after, upto)}${same}` +
      `${keys.length ? `; differing keys: ${keys.join('; ')}` : ''}; cutover aborted`,
  );
}

/**
 * Compares sources and targets chunk by chunk in consistent snapshots taken now (writes wait only for
 * that moment). Returns the progress; `done` once every table is verified. Throws VerificationError
 * naming the table and key range of the first chunk that differs.
 */
export async function verifyChunks(pools: NodePools, subject: VerifySubject, options: VerifyOptions = {}): Promise<VerifyProgress> {
  const progress: VerifyProgress = structuredClone(options.resume ?? emptyProgress());
  if (progress.done) return progress;
  const limit = options.chunkRows ?? DEFAULT_CHUNK_ROWS;
  const all = comparisons(subject);
  await createVerifySlots(pools, subject);

  const sides = new Map<string, Side>();
  for (const c of all) for (const s of [c.target, ...c.sources]) sides.set(snapKey(s), s);
  const snapshots = new Map<string, Snapshot>();
  let broken: Error | undefined;
  const abort = () => {
    for (const s of snapshots.values()) void pools.get(s.dsn).query('select pg_cancel_backend($1)', [s.pid]).catch(() => undefined);
  };
  options.signal?.addEventListener('abort', abort);
  const startedAt = new Date();
  try {
    for (const [key, side] of sides) snapshots.set(key, await openSnapshot(pools, side.node));
    const blocked = await takeSnapshots(pools, subject, snapshots, options);
    progress.snapshots += 1;
    progress.blockedMs = Math.max(progress.blockedMs, blocked.longestMs);
    progress.blockedTotalMs += blocked.totalMs;
    progress.snapshotsGivenUp = (progress.snapshotsGivenUp ?? 0) + blocked.givenUp;
    if (progress.rowsTotal === 0) progress.rowsTotal = await estimateRows(snapshots, all);
    options.onProgress?.(progress);

    const started = Date.now();
    const startRows = progress.rowsVerified;
    const deadline = options.sliceMs !== undefined ? started + options.sliceMs : Infinity;
    for (const cmp of all) {
      const cursor = (progress.cursors[cmp.key] ??= { after: null, done: false });
      if (cursor.done) continue;
      const target = snapshots.get(snapKey(cmp.target))!.client;
      const sources = cmp.sources.map((s) => snapshots.get(snapKey(s))!.client);
      const pk = await primaryKey(target, cmp.target.schema, cmp.table);
      if (pk.length === 0) {
        await compareWhole(cmp, { target, sources });
        cursor.done = true;
        continue;
      }
      // The target's next chunk is read while the sources digest this one.
      let next = targetChunk(target, cmp.target, cmp.table, pk, cursor.after, limit);
      next.catch(() => undefined);
      for (;;) {
        const chunk = await next;
        const upto = chunk.n >= limit ? chunk.last : null;
        if (upto) {
          next = targetChunk(target, cmp.target, cmp.table, pk, upto, limit);
          next.catch(() => undefined);
        }
        try {
          const parts = await Promise.all(cmp.sources.map((s, i) => sourceChunk(sources[i]!, s, cmp.table, pk, cursor.after, upto)));
          const n = parts.reduce((a, p) => a + p.n, 0);
          const s = parts.reduce((a, p) => a + BigInt(p.s), 0n);
          if (n !== chunk.n || s !== BigInt(chunk.s)) {
            if (upto) await next.catch(() => undefined);
            throw await chunkMismatch(cmp, pk, { target, sources }, cursor.after, upto, { source: n, target: chunk.n }, limit);
          }
        } catch (err) {
          if (upto) await next.catch(() => undefined);
          throw options.signal?.aborted ? new ShardcastError('VERIFY_ABORTED', 'verification was cancelled') : err;
        }
        cursor.after = upto;
        progress.rowsVerified += chunk.n;
        progress.chunks += 1;
        progress.etaSeconds = etaSeconds(progress.rowsTotal, progress.rowsVerified, progress.rowsVerified - startRows, Date.now() - started);
        if (!upto) cursor.done = true;
        options.onProgress?.(progress);
        await failpoint('verify.after-chunk');
        if (!upto) break;
        if (Date.now() > deadline || options.signal?.aborted) {
          await next.catch(() => undefined);
          if (options.signal?.aborted) throw new ShardcastError('VERIFY_ABORTED', 'verification was cancelled');
          return progress;
        }
      }
    }
    progress.done = true;
    progress.etaSeconds = 0;
    options.onProgress?.(progress);
    return progress;
  } catch (err) {
    broken = err as Error;
    throw err;
  } finally {
    options.signal?.removeEventListener('abort', abort);
    // Statistics only: never a reason to fail the verify, nor to keep its snapshots open.
    if (options.onOwnReads && !broken) await sourceReads(all, snapshots, startedAt).then(options.onOwnReads).catch(() => undefined);
    for (const s of snapshots.values()) {
      // Its reads reach the statistics now, not when the pooled session next goes idle: a target's
      // would otherwise be counted as its workload once it is placed.
      await s.client.query('select pg_stat_force_next_flush()').catch(() => undefined);
      await s.client.query('rollback').catch(() => undefined);
      s.client.release(broken);
    }
  }
}

/** What the snapshots' transactions read from the source schemas (see ownReads). */
async function sourceReads(all: Comparison[], snapshots: Map<string, Snapshot>, startedAt: Date): Promise<OwnReadCount[]> {
  const byNode = new Map<string, { node: NodeRecord; schemas: Set<string> }>();
  for (const cmp of all) {
    for (const side of cmp.sources) {
      const entry = byNode.get(snapKey(side)) ?? { node: side.node, schemas: new Set<string>() };
      entry.schemas.add(side.schema);
      byNode.set(snapKey(side), entry);
    }
  }
  const out: OwnReadCount[] = [];
  for (const [key, { node, schemas }] of byNode) {
    const snap = snapshots.get(key);
    if (snap) out.push(...(await ownReads(snap.client, node, [...schemas], startedAt)));
  }
  return out;
}

/** A table without a primary key (a move allows replica identity full): one digest of all its rows. */
async function compareWhole(cmp: Comparison, conns: { target: Queryable; sources: Queryable[] }): Promise<void> {
  const sql = (side: Side, filter: string | null) => `select ${DIGEST} from ${quoteIdent(side.schema)}.${quoteIdent(cmp.table)} t${filter ? ` where ${filter}` : ''}`;
  const [t, ...s] = await Promise.all([
    conns.target.query<{ n: number; s: string }>(sql(cmp.target, null)),
    ...cmp.sources.map((src, i) => conns.sources[i]!.query<{ n: number; s: string }>(sql(src, src.filter))),
  ]);
  const n = s.reduce((a, r) => a + r.rows[0]!.n, 0);
  const sum = s.reduce((a, r) => a + BigInt(r.rows[0]!.s), 0n);
  if (n !== t.rows[0]!.n || sum !== BigInt(t.rows[0]!.s)) {
    throw new VerificationError(
      `${cmp.label}: ${cmp.table} differs between ${cmp.sources.map((x) => x.node.name).join(' + ')} (${n} rows) and ${cmp.target.node.name} (${t.rows[0]!.n} rows)${n === t.rows[0]!.n ? ', same count, different content' : ''}; cutover aborted`,
    );
  }
}

async function estimateRows(snapshots: Map<string, Snapshot>, all: Comparison[]): Promise<number> {
  let total = 0;
  for (const cmp of all) {
    const { rows } = await snapshots
      .get(snapKey(cmp.target))!
      .client.query<{ n: string }>(
        `select greatest(c.reltuples, coalesce(s.n_live_tup, 0), 0)::bigint::text as n from pg_class c left join pg_stat_user_tables s on s.relid = c.oid where c.oid = $1::regclass`,
        [`${quoteIdent(cmp.target.schema)}.${quoteIdent(cmp.table)}`],
      );
    total += Number(rows[0]?.n ?? 0);
  }
  return total;
}

/** Per source and table: the primary keys of rows changed since the verify slot began (null: re-check the whole table). */
type ChangedKeys = Map<string, Map<string, string[]> | null>;

const PEEK = `select data from pg_logical_slot_peek_binary_changes($1, $2::pg_lsn, null, 'proto_version', '1', 'publication_names', $3)`;

/** Reads a source's verify slot up to `upto`: which keys of which tables changed. */
async function changedKeys(pools: NodePools, source: ReturnType<typeof sourceSlots>[number], tables: string[], pks: Map<string, PkColumn[]>, upto: string): Promise<ChangedKeys | 'no-slot'> {
  const db = pools.get(source.node.dsn);
  // A slot that lost WAL it needed (max_slot_wal_keep_size) no longer knows every change: whole tables then.
  const exists = await db.query("select 1 from pg_replication_slots where slot_name = $1 and wal_status is distinct from 'lost'", [source.verifySlot]);
  if (!exists.rowCount) return 'no-slot';
  const { rows } = await db.query<{ data: Buffer }>(PEEK, [source.verifySlot, upto, source.publication]);
  const out: ChangedKeys = new Map();
  const relations = new Map<number, { table: string; index: number[] } | null>();
  const add = (id: number, tuple: TupleValue[] | null) => {
    const rel = relations.get(id);
    if (!rel || !tuple) return;
    let keys = out.get(rel.table);
    if (keys === null) return;
    const key = rel.index.map((i) => tuple[i]);
    if (rel.index.length === 0 || key.some((v) => v === UNCHANGED || v === null || v === undefined)) {
      out.set(rel.table, null);
      return;
    }
    if (!keys) out.set(rel.table, (keys = new Map()));
    keys.set(JSON.stringify(key), key as string[]);
  };
  for (const row of rows) {
    const change = decodeMessage(row.data);
    if (change.kind === 'relation') {
      const r = change.relation;
      const pk = pks.get(r.name);
      if (r.schema !== source.schema || !tables.includes(r.name) || !pk) {
        relations.set(r.id, null);
        continue;
      }
      relations.set(r.id, { table: r.name, index: pk.length ? pk.map((c) => r.columns.findIndex((col) => col.name === c.name)) : [] });
      if (pk.some((c) => !r.columns.some((col) => col.name === c.name))) relations.set(r.id, { table: r.name, index: [] });
    } else if (change.kind === 'insert') add(change.relation, change.tuple);
    else if (change.kind === 'update') {
      add(change.relation, change.oldKey);
      add(change.relation, change.tuple);
    } else if (change.kind === 'delete') add(change.relation, change.oldKey);
    else if (change.kind === 'truncate') {
      for (const id of change.relations) {
        const rel = relations.get(id);
        if (rel) out.set(rel.table, null);
      }
    }
  }
  return out;
}

const KEY_BATCH = 10_000;

function keyFilter(pk: PkColumn[], first: number): string {
  const cols = pk.map((c) => `t.${quoteIdent(c.name)}`).join(', ');
  const arrays = pk.map((_, i) => `$${first + i}::text[]`).join(', ');
  const names = pk.map((_, i) => `k${i}`).join(', ');
  return `(${cols}) in (select ${pk.map((c, i) => `k.k${i}::${c.type}`).join(', ')} from unnest(${arrays}) as k(${names}))`;
}

type Queryable = Pick<pg.ClientBase, 'query'>;

/**
 * The cutover's re-check, under its lock (sources locked, targets caught up): only the rows changed
 * since verification began, by primary key, read from the verify slots (inserts, updates and deletes
 * alike), each compared source against target. Work is proportional to the changes, not the table.
 * A table the slots cannot key (no primary key, a TRUNCATE, an unsent TOASTed key) and a missing
 * verify slot (verify never ran) fall back to comparing the whole table, as before.
 *
 * `sources` are the locking transactions, by source slot name; targets are read through the pools.
 */
export async function recheckChanges(
  pools: NodePools,
  subject: VerifySubject,
  sources: Map<string, pg.ClientBase>,
  onOwnReads?: (reads: OwnReadCount[]) => void,
): Promise<{ keys: number; wholeTables: number }> {
  const slots = sourceSlots(subject);
  const upto = new Map<string, string>();
  const startedAt = new Date();
  for (const s of slots) {
    const { rows } = await sources.get(s.slot)!.query<{ lsn: string }>('select pg_current_wal_lsn()::text as lsn');
    upto.set(s.slot, rows[0]!.lsn);
  }
  const bySide = new Map(slots.map((s) => [sideKey(s), sources.get(s.slot)!]));
  // The targets are read in sessions of their own, whose reads reach the statistics before the new
  // placement is sampled (a pooled session's would come up to a second later, counted as workload).
  const targets = new Map<string, pg.PoolClient>();
  let broken: Error | undefined;
  try {
    for (const c of comparisons(subject)) {
      if (!targets.has(c.target.node.dsn)) targets.set(c.target.node.dsn, await pools.get(c.target.node.dsn).connect());
    }
    const result = await compareChanged(pools, subject, upto, (side, role) => (role === 'source' ? bySide.get(sideKey(side))! : targets.get(side.node.dsn)!));
    // What the locking transactions read of the sources is no workload either (see ownReads).
    if (onOwnReads) {
      const reads: OwnReadCount[] = [];
      for (const s of slots) reads.push(...(await ownReads(sources.get(s.slot)!, s.node, [s.schema], startedAt)));
      onOwnReads(reads);
    }
    return result;
  } catch (err) {
    broken = err as Error;
    throw err;
  } finally {
    for (const t of targets.values()) {
      if (!broken) await t.query('select pg_stat_force_next_flush()').catch(() => undefined);
      t.release(broken);
    }
  }
}

/**
 * Before the cutover, without its lock: the rows changed since verification began (up to now) are
 * compared in a new consistent pair of snapshots (writes wait only for that moment), and the verify
 * slots move past them. The cutover then re-checks only what changed after this.
 */
export async function refreshVerification(pools: NodePools, subject: VerifySubject, options: VerifyOptions = {}): Promise<{ keys: number; blockedMs: number }> {
  const slots = sourceSlots(subject);
  const upto = new Map<string, string>();
  for (const s of slots) {
    const exists = await pools.get(s.node.dsn).query("select 1 from pg_replication_slots where slot_name = $1 and wal_status is distinct from 'lost'", [s.verifySlot]);
    if (!exists.rowCount) return { keys: 0, blockedMs: 0 };
    const { rows } = await pools.get(s.node.dsn).query<{ lsn: string }>('select pg_current_wal_lsn()::text as lsn');
    upto.set(s.slot, rows[0]!.lsn);
  }
  const sides = new Map<string, Side>();
  for (const c of comparisons(subject)) for (const s of [c.target, ...c.sources]) sides.set(snapKey(s), s);
  const snapshots = new Map<string, Snapshot>();
  let broken: Error | undefined;
  const startedAt = new Date();
  try {
    for (const [key, side] of sides) snapshots.set(key, await openSnapshot(pools, side.node));
    // Taken after `upto`: every change up to it is in these snapshots.
    const { longestMs: blockedMs } = await takeSnapshots(pools, subject, snapshots, options);
    const { keys } = await compareChanged(pools, subject, upto, (side) => snapshots.get(snapKey(side))!.client);
    for (const s of slots) await pools.get(s.node.dsn).query('select pg_replication_slot_advance($1, $2::pg_lsn)', [s.verifySlot, upto.get(s.slot)]);
    return { keys, blockedMs };
  } catch (err) {
    broken = err as Error;
    throw err;
  } finally {
    // As in verifyChunks: the sources' reads told, every snapshot's reads in the statistics now.
    if (options.onOwnReads && !broken) await sourceReads(comparisons(subject), snapshots, startedAt).then(options.onOwnReads).catch(() => undefined);
    for (const s of snapshots.values()) {
      await s.client.query('select pg_stat_force_next_flush()').catch(() => undefined);
      await s.client.query('rollback').catch(() => undefined);
      s.client.release(broken);
    }
  }
}

/** Compares, side against side (through `conn`), the rows whose keys changed in the verify slots up to `upto`. */
async function compareChanged(
  pools: NodePools,
  subject: VerifySubject,
  upto: Map<string, string>,
  conn: (side: Side, role: 'source' | 'target') => Queryable,
): Promise<{ keys: number; wholeTables: number }> {
  const all = comparisons(subject);
  const slots = sourceSlots(subject);
  const tables = [...new Set(all.map((c) => c.table))];
  const pks = new Map<string, PkColumn[]>();
  for (const t of tables) pks.set(t, await primaryKey(conn(slots[0]!, 'source'), slots[0]!.schema, t));
  const changes = new Map<string, ChangedKeys | 'no-slot'>();
  for (const s of slots) changes.set(sideKey(s), await changedKeys(pools, s, tables, pks, upto.get(s.slot)!));
  let keys = 0;
  let wholeTables = 0;
  for (const cmp of all) {
    const pk = pks.get(cmp.table)!;
    const target = conn(cmp.target, 'target');
    const sourceConns = cmp.sources.map((s) => conn(s, 'source'));
    const perSource = cmp.sources.map((s) => changes.get(sideKey(s)));
    const whole = pk.length === 0 || perSource.some((c) => c === 'no-slot' || c === undefined || c.get(cmp.table) === null);
    if (whole) {
      wholeTables++;
      await compareWhole(cmp, { target, sources: sourceConns });
      continue;
    }
    const union = new Map<string, string[]>();
    for (const c of perSource) for (const [k, v] of (c as ChangedKeys).get(cmp.table) ?? []) union.set(k, v);
    const list = [...union.values()];
    keys += list.length;
    for (let i = 0; i < list.length; i += KEY_BATCH) {
      const batch = list.slice(i, i + KEY_BATCH);
      const params = pk.map((_, j) => batch.map((k) => k[j]!));
      const from = (side: Side, filter: string | null) =>
        `from ${quoteIdent(side.schema)}.${quoteIdent(cmp.table)} t where ${keyFilter(pk, 1)}${filter ? ` and ${filter}` : ''}`;
      const [t, ...s] = await Promise.all([
        target.query<{ n: number; s: string }>(`select ${DIGEST} ${from(cmp.target, null)}`, params),
        ...cmp.sources.map((src, j) => sourceConns[j]!.query<{ n: number; s: string }>(`select ${DIGEST} ${from(src, src.filter)}`, params)),
      ]);
      const n = s.reduce((a, r) => a + r.rows[0]!.n, 0);
      const sum = s.reduce((a, r) => a + BigInt(r.rows[0]!.s), 0n);
      if (n === t.rows[0]!.n && sum === BigInt(t.rows[0]!.s)) continue;
      const rowsSql = (side: Side, filter: string | null) =>
        `select array[${pk.map((c) => `t.${quoteIdent(c.name)}::text`).join(', ')}] as k, ${ROW_HASH}::text as h ${from(side, filter)}`;
      const [tr, ...sr] = await Promise.all([
        target.query<{ k: string[]; h: string }>(rowsSql(cmp.target, null), params),
        ...cmp.sources.map((src, j) => sourceConns[j]!.query<{ k: string[]; h: string }>(rowsSql(src, src.filter), params)),
      ]);
      const differing = differingKeys(
        sr.flatMap((r) => r.rows),
        tr.rows,
      );
      throw new VerificationError(
        `${cmp.label}: ${cmp.table} differs between ${cmp.sources.map((x) => x.node.name).join(' + ')} and ${cmp.target.node.name} in rows changed since verification` +
          `${differing.length ? ` (${pk.map((c) => c.name).join(', ')}: ${differing.join('; ')})` : ''}; cutover aborted`,
      );
    }
  }
  return { keys, wholeTables };
}
