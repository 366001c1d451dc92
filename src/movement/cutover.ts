import pg from 'pg';
import type { NodePools } from '../catalog/node-pools.js';
import type { NodeRecord } from '../catalog/nodes.js';
import { ShardcastError, sqlState } from '../errors.js';
import { failpoint } from '../failpoints.js';
import { quoteIdent, quoteLiteral } from '../sql/ident.js';
import { createFence, dropFence } from './fence.js';
import { holdCutoverAttempt, takeCutoverAttempt } from './lease.js';
import { bumpWatermark, currentLsn, targetHasWatermark, type MovementNames, type ShardTables } from './replication.js';
import type { OwnReadCount } from './own-reads.js';
import { recheckChanges, verifyChunks, type VerifyOptions, type VerifyProgress } from './verify.js';

/**
 * The cutover (DESIGN §3, step 6): the one short step during which writes to the shard wait.
 *
 * On the source, in one transaction: lock the shard's tables against writes, read the WAL position,
 * bump the movement's watermark (in its own transaction) and wait until the target has applied it,
 * verify, copy sequence positions, fence the source (a trigger that
 * raises SCF01 on any write, and the schema renamed so that its names no longer resolve). On the
 * catalog, in another: switch the placement. Both are PREPAREd with the movement's gid and then
 * committed, catalog first, so that a router that meets the fence already finds the new placement.
 * A retry finds prepared transactions left by a crash and finishes (or rolls back) the cutover.
 */

export interface CutoverTarget {
  shard: ShardTables;
  source: NodeRecord;
  target: NodeRecord;
  names: MovementNames;
}

export interface CutoverOptions {
  /** How long the locked source waits for the target to apply its last WAL (default 10 s). */
  catchUpTimeoutMs?: number;
  /** How long to wait for the write lock on the source tables (default 5 s). */
  lockTimeoutMs?: number;
  /**
   * What is compared, source against target, at the cutover point (source locked, target caught
   * up): row counts, counts and a content digest of every row (default), or only the rows changed
   * since the verify phase began ('changes', read from its verify slot; see verify.ts). A mismatch
   * aborts the cutover.
   */
  verify?: 'counts' | 'checksums' | 'changes';
  /** Called while the cutover waits (activities heartbeat here). */
  onWait?: () => void;
  /** Told what the 'changes' re-check read of the source under the lock (no workload: see ownReads); recorded once the lock is gone. */
  onOwnReads?: (reads: OwnReadCount[]) => void;
  /** A move back within the grace period (see reverse.ts): the target is the fenced copy an earlier move left. */
  reverse?: ReverseCutover;
}

/** How a reverse cutover differs: the target's copy is a fenced schema kept in sync by the reverse stream, not a subscription. */
export interface ReverseCutover {
  /** The fenced schema on the target: unfenced and renamed back to the shard's schema by the switch. */
  targetSchema: string;
  /** Under the lock, instead of the watermark wait: apply the rest of the reverse stream. */
  catchUp(source: pg.ClientBase): Promise<void>;
  /** Under the lock, instead of the verify mode. */
  verify(source: pg.ClientBase): Promise<void>;
}

export class VerificationError extends ShardcastError {
  constructor(message: string) {
    super('VERIFICATION_FAILED', message);
  }
}

export interface CutoverResult {
  /** Writes to the shard were blocked this long (lock taken → fence committed); 0 when recovered. */
  blockedMs: number;
  /** The source WAL position the target had applied at the switch. */
  lsn: string | null;
  /** What a retry found and did, when an earlier attempt had been cut short. */
  recovered?: 'finished' | 'rolled-back-and-redone' | 'already-done';
  /** Where the blocked time went, in milliseconds from the lock (absent when recovered). */
  steps?: CutoverSteps;
}

export interface CutoverSteps {
  /** The target showed the watermark: caught up. */
  caughtUp: number;
  verified: number;
  /** Sequences copied, source fenced and prepared. */
  sourcePrepared: number;
  catalogPrepared: number;
  committed: number;
}

export interface CutoverDeps {
  catalogUrl: string;
  pools: NodePools;
}

/** Name the source schema takes once fenced; dropped by cleanup after the grace period. */
export function fencedSchemaName(schema: string, movementId: string): string {
  return `${schema}_moved_${movementId}`.slice(0, 63);
}

export async function cutover(deps: CutoverDeps, move: CutoverTarget, options: CutoverOptions = {}): Promise<CutoverResult> {
  // The catalog decides: a switch prepared or committed is finished (target first, so the shard takes writes, then the source).
  const state = await catalogState(deps, move);
  if (state.catalogPrepared || state.placedOn === move.target.id) {
    const committed = await finishCutover(deps, move, state.catalogPrepared);
    return { blockedMs: 0, lsn: null, recovered: state.catalogPrepared || committed ? 'finished' : 'already-done' };
  }
  if (state.placedOn !== move.source.id) {
    throw new ShardcastError('SHARD_ELSEWHERE', `shard ${move.shard.shardId} is no longer on ${move.source.name}: nothing to cut over`);
  }
  // Fences left prepared by an earlier attempt (its switch never prepared) are rolled back there, under the lease.
  const prepared = await prepareCutover(deps, move, options);
  await finishCutover(deps, move, true);
  const blockedMs = Date.now() - prepared.lockedAt;
  return { blockedMs, lsn: prepared.lsn, steps: { ...prepared.steps, committed: blockedMs }, ...(prepared.rolledBack ? { recovered: 'rolled-back-and-redone' as const } : {}) };
}

async function catalogState(deps: CutoverDeps, move: CutoverTarget): Promise<{ catalogPrepared: boolean; placedOn: number | undefined }> {
  const { rows } = await onServer(deps.pools, deps.catalogUrl, (c) =>
    c.query<{ prepared: boolean; node: number | null }>(
      `select exists (select 1 from pg_prepared_xacts where gid = $1 and database = current_database()) as prepared,
              (select node_id::int from shardcast.placements where shard_id = $2) as node`,
      [move.names.gid, move.shard.shardId],
    ),
  );
  return { catalogPrepared: rows[0]!.prepared, placedOn: rows[0]!.node ?? undefined };
}

/** Writers are locked out: a watermark committed now follows every write to the shard; wait until the target shows it. */
async function waitForTarget(deps: CutoverDeps, move: CutoverTarget, options: CutoverOptions): Promise<void> {
  const mark = await bumpWatermark(deps.pools, move.source, move.names);
  const deadline = Date.now() + (options.catchUpTimeoutMs ?? 10_000);
  while (!(await targetHasWatermark(deps.pools, move.target, move.names, mark))) {
    if (Date.now() > deadline) {
      throw new ShardcastError('CUTOVER_CATCHUP_TIMEOUT', `target ${move.target.name} did not catch up (watermark ${mark}) within the catch-up timeout`);
    }
    options.onWait?.();
    await sleep(2);
  }
}

/**
 * The verify phase: counts and digests compared chunk by chunk in a consistent pair of snapshots;
 * writes wait only while the snapshots are taken (see verify.ts). A mismatch throws VerificationError.
 */
export async function verifyMove(deps: CutoverDeps, move: CutoverTarget, options: VerifyOptions = {}): Promise<VerifyProgress> {
  return verifyChunks(deps.pools, move, options);
}

/** Phase one: both sides prepared. Exported for tests that cut a cutover short on purpose. */
export async function prepareCutover(
  deps: CutoverDeps,
  move: CutoverTarget,
  options: CutoverOptions = {},
): Promise<{ lockedAt: number; lsn: string; steps: Omit<CutoverSteps, 'committed'>; rolledBack: boolean }> {
  const { shard, source, target, names } = move;
  const movementId = movementIdOf(names);
  const fences = moveFences(move);
  // This attempt's fencing token; fences an earlier attempt left prepared are rolled back under it.
  const { attempt, rolledBack, switched: already } = await beginCutoverAttempt(deps, movementId, names.gid, fences, placedOnTarget(move));
  if (already) throw new CutoverInDoubtError(`movement ${movementId}: another attempt switched shard ${shard.shardId} meanwhile; a retry finishes it`);
  // Pooled connections throughout: a new connection costs several milliseconds of the blocked time.
  const sourceClient = await deps.pools.get(source.dsn).connect();
  let targetClient: pg.PoolClient | undefined;
  let catalogClient: pg.PoolClient | undefined;
  let broken: Error | undefined;
  let lockedAt = 0;
  let lsn = '';
  let sourcePrepared = false;
  let targetPrepared = false;
  const steps = { caughtUp: 0, verified: 0, sourcePrepared: 0, catalogPrepared: 0 };
  const mark = (step: keyof typeof steps) => (steps[step] = Date.now() - lockedAt);
  try {
    const tables = shard.tables.map((t) => `${quoteIdent(shard.schema)}.${quoteIdent(t.name)}`);
    lockedAt = await lockForCutover([{ client: sourceClient, tables }], options.lockTimeoutMs);
    lsn = await currentLsn(sourceClient);
    if (options.reverse) await options.reverse.catchUp(sourceClient);
    else await waitForTarget(deps, move, options);
    mark('caughtUp');
    if (options.reverse) await options.reverse.verify(sourceClient);
    else await verifyAtCutover(deps.pools, sourceClient, move, options.verify ?? 'checksums', options.onOwnReads);
    mark('verified');
    const targetSchema = options.reverse?.targetSchema ?? shard.schema;
    await copySequences(deps.pools, sourceClient, target, shard.schema, targetSchema);
    await fence(sourceClient, move);
    // The target's fence goes in a transaction prepared beside the source's: it is lifted only once the catalog has switched.
    targetClient = await deps.pools.get(target.dsn).connect();
    await targetClient.query('begin');
    await targetClient.query(`set local lock_timeout = ${options.lockTimeoutMs ?? 5000}`);
    await dropFence(targetClient, targetSchema, shard.tables.map((t) => t.name));
    if (targetSchema !== shard.schema) await targetClient.query(`alter schema ${quoteIdent(targetSchema)} rename to ${quoteIdent(shard.schema)}`);
    await failpoint('cutover.before-switch');
    // The switch's transaction holds the lease row from before the first PREPARE: a replaced attempt stops here.
    catalogClient = await beginSwitch(deps, movementId, attempt);
    await sourceClient.query(`prepare transaction ${quoteLiteral(names.gid)}`);
    sourcePrepared = true;
    await targetClient.query(`prepare transaction ${quoteLiteral(targetGid(names))}`);
    targetPrepared = true;
    mark('sourcePrepared');
    const switched = await catalogClient.query(
      'update shardcast.placements set node_id = $1, placed_at = now() where shard_id = $2 and node_id = $3',
      [target.id, shard.shardId, source.id],
    );
    if (switched.rowCount !== 1) throw new ShardcastError('SHARD_ELSEWHERE', `shard ${shard.shardId} is no longer placed on ${source.name}`);
    await catalogClient.query(`prepare transaction ${quoteLiteral(names.gid)}`);
    await failpoint('cutover.after-catalog-prepare', { connection: catalogClient });
    mark('catalogPrepared');
    await failpoint('cutover.after-prepare');
  } catch (err) {
    broken = err as Error;
    if (!sourcePrepared) await sourceClient.query('rollback').catch(() => undefined);
    if (!targetPrepared) await targetClient?.query('rollback').catch(() => undefined);
    await catalogClient?.query('rollback').catch(() => undefined);
    if (sourcePrepared) await settleFailedSwitch(deps, movementId, attempt, names.gid, fences, broken);
    throw err;
  } finally {
    sourceClient.release(broken);
    targetClient?.release(broken);
    catalogClient?.release(broken);
  }
  return { lockedAt, lsn, steps, rolledBack };
}

/** The gid of the target's prepared transaction (its fence lifted), beside the source's and the catalog's. */
export function targetGid(names: MovementNames): string {
  return `${names.gid}_t`;
}

/** What a move's cutover prepares on its nodes: the source's fence, the target's unfencing. */
function moveFences(move: CutoverTarget): PreparedFence[] {
  return [
    { dsn: move.source.dsn, gid: move.names.gid },
    { dsn: move.target.dsn, gid: targetGid(move.names) },
  ];
}

/** The movement id a move's names were made from. */
function movementIdOf(names: MovementNames): string {
  return names.gid.replace(/^sc_mv_/, '');
}

/** A fence prepared on a source node under the cutover's gid. */
export interface PreparedFence {
  dsn: string;
  gid: string;
}

/** The catalog switch may be prepared (or about to be): nothing was undone, a retry finishes or undoes the cutover. */
export class CutoverInDoubtError extends ShardcastError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('CUTOVER_IN_DOUBT', message, options);
  }
}

/** How long a cutover waits for the movement's lease row (held only for milliseconds, unless a switch is prepared). */
const LEASE_LOCK_TIMEOUT_MS = 2000;

/**
 * Starts a cutover attempt: takes the next fencing token on the movement's lease row, and while the
 * row is locked rolls back the fences an earlier attempt left prepared. That is safe there: a
 * prepared catalog switch would hold the row (so the token could not be taken), and no switch can
 * be prepared later under an older token (each checks the token under the same lock).
 */
export async function beginCutoverAttempt(
  deps: CutoverDeps,
  movementId: string,
  catalogGid: string,
  fences: PreparedFence[],
  switched?: (catalog: pg.ClientBase) => Promise<boolean>,
): Promise<{ attempt: number; rolledBack: boolean; switched: boolean }> {
  return onServer(deps.pools, deps.catalogUrl, async (c) => {
    await c.query('begin');
    try {
      await c.query(`set local lock_timeout = ${LEASE_LOCK_TIMEOUT_MS}`);
      const attempt = await takeCutoverAttempt(c, movementId);
      if (attempt === null || (await isPrepared(c, catalogGid))) {
        throw new CutoverInDoubtError(`movement ${movementId}: an earlier cutover attempt holds its lease row (its catalog switch prepared or in flight); a retry finishes it`);
      }
      // Committed already (by an attempt that lost its reply): its fences are committed or to be committed, never rolled back.
      if (switched && (await switched(c))) {
        await c.query('rollback');
        return { attempt, rolledBack: false, switched: true };
      }
      let rolledBack = false;
      for (const f of fences) if (await rollbackPreparedIfAny(deps.pools, f.dsn, f.gid)) rolledBack = true;
      await c.query('commit');
      return { attempt, rolledBack, switched: false };
    } catch (err) {
      await c.query('rollback').catch(() => undefined);
      throw err;
    }
  });
}

/**
 * After a cutover attempt failed (the workflow asks before it compensates): 'forward' when the
 * catalog switch has committed or is prepared — then the cutover can only be finished — and 'undo'
 * otherwise. 'undo' is decided holding the lease row with a new attempt number, so no earlier
 * attempt can switch afterwards, and the fences earlier attempts left prepared are rolled back.
 * Throws (retryable) when it cannot decide yet.
 */
export async function settleCutover(
  deps: CutoverDeps,
  movementId: string,
  catalogGid: string,
  fences: PreparedFence[],
  switched: (catalog: pg.ClientBase) => Promise<boolean>,
): Promise<'forward' | 'undo'> {
  const decided = await onServer(deps.pools, deps.catalogUrl, async (c) => (await isPrepared(c, catalogGid)) || (await switched(c)));
  if (decided) return 'forward';
  const begun = await beginCutoverAttempt(deps, movementId, catalogGid, fences, switched);
  return begun.switched ? 'forward' : 'undo';
}

/** settleCutover for a move: switched when the catalog places the shard on the target. */
export function settleMove(deps: CutoverDeps, move: CutoverTarget): Promise<'forward' | 'undo'> {
  return settleCutover(deps, movementIdOf(move.names), move.names.gid, moveFences(move), placedOnTarget(move));
}

function placedOnTarget(move: CutoverTarget): (catalog: pg.ClientBase) => Promise<boolean> {
  return async (c) => {
    const { rows } = await c.query('select 1 from shardcast.placements where shard_id = $1 and node_id = $2', [move.shard.shardId, move.target.id]);
    return rows.length > 0;
  };
}

/**
 * Opens the catalog transaction of the switch: it locks the movement's lease row and checks that
 * `attempt` is still the current one (StaleCutoverAttemptError otherwise) before any PREPARE.
 */
export async function beginSwitch(deps: CutoverDeps, movementId: string, attempt: number): Promise<pg.PoolClient> {
  const client = await deps.pools.get(deps.catalogUrl).connect();
  try {
    await client.query('begin');
    await client.query(`set local shardcast.in_2pc = 'on'`);
    await client.query(`set local lock_timeout = ${LEASE_LOCK_TIMEOUT_MS}`);
    if (!(await holdCutoverAttempt(client, movementId, attempt))) {
      throw new CutoverInDoubtError(`movement ${movementId}: another cutover attempt holds its lease row; this attempt stops before fencing`);
    }
    return client;
  } catch (err) {
    await client.query('rollback').catch(() => undefined);
    client.release(err as Error);
    throw err;
  }
}

/**
 * After the catalog step failed with fences already prepared: they are rolled back only when it is
 * known that the catalog switch is not prepared and cannot become so — on a fresh connection, holding
 * the lease row (which a prepared switch, or one still in flight on a connection whose reply was
 * lost, would hold), with this attempt still the current one. Otherwise nothing is undone and a
 * CutoverInDoubtError says so: the retry finds the switch prepared and finishes it, or rolls back.
 */
export async function settleFailedSwitch(deps: CutoverDeps, movementId: string, attempt: number, catalogGid: string, fences: PreparedFence[], cause: Error): Promise<never> {
  let settled = false;
  try {
    settled = await onServer(deps.pools, deps.catalogUrl, async (c) => {
      await c.query('begin');
      try {
        await c.query(`set local lock_timeout = ${LEASE_LOCK_TIMEOUT_MS}`);
        if (!(await holdCutoverAttempt(c, movementId, attempt)) || (await isPrepared(c, catalogGid))) return false;
        for (const f of fences) await rollbackPreparedIfAny(deps.pools, f.dsn, f.gid);
        return true;
      } finally {
        await c.query('rollback');
      }
    });
  } catch {
    settled = false; // the catalog cannot be asked, or a newer attempt owns the fences now
  }
  if (settled) throw cause;
  throw new CutoverInDoubtError(`movement ${movementId}: the catalog switch may have been prepared (${cause.message}); the fences stay, a retry finishes or undoes the cutover`, {
    cause,
  });
}

async function isPrepared(client: pg.ClientBase, gid: string): Promise<boolean> {
  const { rows } = await client.query('select 1 from pg_prepared_xacts where gid = $1 and database = current_database()', [gid]);
  return rows.length > 0;
}

/** Rolls back a prepared transaction on a node if it is there; true when it was. */
async function rollbackPreparedIfAny(pools: NodePools, dsn: string, gid: string): Promise<boolean> {
  return onServer(pools, dsn, async (c) => {
    if (!(await isPrepared(c, gid))) return false;
    await c.query(`rollback prepared ${quoteLiteral(gid)}`);
    return true;
  });
}

/**
 * Opens a transaction on every client and locks its tables against writes (EXCLUSIVE: reads go on).
 * Each attempt waits at most `attemptMs` per lock; when one cannot be had, everything is released
 * and tried again shortly after, until `timeoutMs`. An application transaction that holds one of the
 * tables and then wants another is therefore never chosen as a deadlock victim: the cutover yields
 * first (deadlock_timeout is 1 s). Returns when the successful attempt began.
 */
export async function lockForCutover(
  locks: Array<{ client: pg.ClientBase; tables: string[] }>,
  timeoutMs = 5000,
  attemptMs = 100,
): Promise<number> {
  const deadline = Date.now() + Math.max(1, timeoutMs);
  for (;;) {
    const started = Date.now();
    const begun: pg.ClientBase[] = [];
    try {
      for (const { client, tables } of locks) {
        await client.query('begin');
        begun.push(client);
        await client.query(`set local lock_timeout = ${attemptMs}`);
        await client.query(`lock table ${tables.join(', ')} in exclusive mode`);
      }
      for (const { client } of locks) await client.query('set local lock_timeout = 5000');
      return started;
    } catch (err) {
      for (const client of begun) await client.query('rollback').catch(() => undefined);
      if (sqlState(err) !== LOCK_NOT_AVAILABLE || Date.now() > deadline) throw err;
      await sleep(5 + Math.floor(Math.random() * 20));
    }
  }
}

const LOCK_NOT_AVAILABLE = '55P03';

/**
 * Phase two: commit the catalog (and tell routers), then the target (its fence goes: the shard takes
 * writes at its new home), then the source. Each step skips what is done; true when anything was.
 */
async function finishCutover(deps: CutoverDeps, move: CutoverTarget, catalogPrepared: boolean): Promise<boolean> {
  if (catalogPrepared) await commitCatalogSwitch(deps, move.names.gid);
  await failpoint('cutover.after-catalog-commit');
  const target = await commitPreparedIfAny(deps.pools, move.target.dsn, targetGid(move.names));
  const source = await commitPreparedIfAny(deps.pools, move.source.dsn, move.names.gid);
  return target || source;
}

/** Phase two on the catalog: commit the prepared placement switch (unless another attempt just did), then tell routers. */
export async function commitCatalogSwitch(deps: CutoverDeps, gid: string): Promise<void> {
  await onServer(deps.pools, deps.catalogUrl, async (c) => {
    if (await isPrepared(c, gid)) await c.query(`commit prepared ${quoteLiteral(gid)}`);
    await c.query(`select pg_notify('shardcast_map', version::text) from shardcast.map_version`);
  });
}

/** Phase two on a node: commit its prepared part, unless an earlier attempt already did; true when it was there. */
export async function commitPreparedIfAny(pools: NodePools, dsn: string, gid: string): Promise<boolean> {
  return onServer(pools, dsn, async (c) => {
    if (!(await isPrepared(c, gid))) return false;
    await c.query(`commit prepared ${quoteLiteral(gid)}`);
    return true;
  });
}

/**
 * Source (inside the locking transaction, so it sees exactly what the target has applied) against
 * target: row counts; with 'checksums' also an order-independent digest of every row (a sum of row
 * hashes, whatever the table's size); with 'changes' only the rows changed since verification.
 */
async function verifyAtCutover(
  pools: NodePools,
  source: pg.ClientBase,
  move: CutoverTarget,
  mode: 'counts' | 'checksums' | 'changes',
  onOwnReads?: (reads: OwnReadCount[]) => void,
): Promise<void> {
  if (mode === 'changes') {
    await recheckChanges(pools, move, new Map([[move.names.slot, source]]), onOwnReads);
    return;
  }
  const measure = mode === 'checksums' ? `count(*)::bigint::text as n, coalesce(sum(hashtextextended(row(t.*)::text, 0)), 0)::text as digest` : `count(*)::bigint::text as n, '' as digest`;
  for (const table of move.shard.tables) {
    const sql = `select ${measure} from ${quoteIdent(move.shard.schema)}.${quoteIdent(table.name)} t`;
    const [onSource, onTarget] = await Promise.all([
      source.query<{ n: string; digest: string | null }>(sql),
      pools.get(move.target.dsn).query<{ n: string; digest: string | null }>(sql),
    ]);
    const a = onSource.rows[0]!;
    const b = onTarget.rows[0]!;
    if (a.n !== b.n || a.digest !== b.digest) {
      throw new VerificationError(
        `shard ${move.shard.shardId}: ${table.name} differs between ${move.source.name} (${a.n} rows) and ${move.target.name} (${b.n} rows)${a.n === b.n ? ', same count, different content' : ''}; cutover aborted`,
      );
    }
  }
}

/** Sequences owned by the shard's tables continue on the target where the source left them. */
async function copySequences(pools: NodePools, source: pg.ClientBase, target: NodeRecord, schema: string, targetSchema = schema): Promise<void> {
  const { rows } = await source.query<{ name: string; last_value: string | null }>(
    'select sequencename as name, last_value::text from pg_sequences where schemaname = $1',
    [schema],
  );
  for (const seq of rows) {
    if (seq.last_value === null) continue;
    await pools.get(target.dsn).query('select setval($1::regclass, $2::bigint, true)', [`${quoteIdent(targetSchema)}.${quoteIdent(seq.name)}`, seq.last_value]);
  }
}

async function fence(source: pg.ClientBase, move: CutoverTarget): Promise<void> {
  await fenceShard(source, {
    schema: move.shard.schema,
    tables: move.shard.tables.map((t) => t.name),
    message: `shard ${move.shard.shardId} has moved to node ${move.target.name}`,
    fencedName: fencedSchemaName(move.shard.schema, move.names.gid.replace(/^sc_mv_/, '')),
  });
}

/**
 * Fences a shard's schema on its node, inside the caller's transaction: a statement trigger on every
 * table raises SCF01 with `message` on any write, and the schema is renamed so its names no longer resolve.
 */
export async function fenceShard(client: pg.ClientBase, shard: { schema: string; tables: string[]; message: string; fencedName: string }): Promise<void> {
  await createFence(client, shard.schema, shard.tables, shard.message);
  await client.query(`alter schema ${quoteIdent(shard.schema)} rename to ${quoteIdent(shard.fencedName)}`);
}

/** Runs `work` on a pooled connection to `url`; a connection that saw an error is discarded, not reused. */
export async function onServer<T>(pools: NodePools, url: string, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pools.get(url).connect();
  try {
    const result = await work(client);
    client.release();
    return result;
  } catch (err) {
    client.release(err as Error);
    throw err;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
