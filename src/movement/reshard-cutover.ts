import pg from 'pg';
import type { NodePools } from '../catalog/node-pools.js';
import { ShardcastError } from '../errors.js';
import { failpoint } from '../failpoints.js';
import { quoteIdent, quoteLiteral } from '../sql/ident.js';
import { beginCutoverAttempt, beginSwitch, commitCatalogSwitch, commitPreparedIfAny, CutoverInDoubtError, settleCutover, settleFailedSwitch, type PreparedFence, fencedSchemaName, fenceShard, lockForCutover, onServer, VerificationError, type CutoverResult } from './cutover.js';
import { dropFence } from './fence.js';
import { applyChanges } from './logical-apply.js';
import { rangePredicate, type ReshardPlan, type ReshardSource } from './reshard-plan.js';
import type { OwnReadCount } from './own-reads.js';
import { recheckChanges, verifyChunks, type VerifyOptions, type VerifyProgress } from './verify.js';

/**
 * The cutover of a split or merge (DESIGN §3, step 6). Every source shard is locked against writes;
 * the slots are drained into the new shards (nothing new can arrive); the rows are verified pair by
 * pair (each source against each target, restricted to the range they share); sequences are carried
 * over; every source is fenced and PREPAREd; the catalog swaps the old shards for the new ones and is
 * PREPAREd; then the catalog commits (routers are told), then the sources. A retry finds what a crash
 * left and finishes the cutover, or rolls the sources back and does it again.
 */

export interface ReshardCutoverDeps {
  catalogUrl: string;
  pools: NodePools;
}

export interface ReshardCutoverOptions {
  lockTimeoutMs?: number;
  onWait?: () => void;
  /** What is compared under the lock: counts, counts and content digests (default), or only the rows changed since the verify phase. */
  verify?: 'counts' | 'checksums' | 'changes';
  /** Told what the 'changes' re-check read of the sources under the lock (see CutoverOptions). */
  onOwnReads?: (reads: OwnReadCount[]) => void;
}

/**
 * The verify phase of a split or merge: every target against its sources' rows, chunk by chunk, in
 * a consistent set of snapshots; writes wait only while they are taken (see verify.ts).
 */
export async function verifyReshard(deps: ReshardCutoverDeps, plan: ReshardPlan, options: VerifyOptions = {}): Promise<VerifyProgress> {
  return verifyChunks(deps.pools, plan, options);
}

/** Name a fenced source schema takes; dropped after the grace period. */
export function fencedSourceName(plan: ReshardPlan, source: ReshardSource): string {
  return fencedSchemaName(source.schema, plan.movementId);
}

export async function reshardCutover(deps: ReshardCutoverDeps, plan: ReshardPlan, options: ReshardCutoverOptions = {}): Promise<CutoverResult> {
  const state = await cutoverState(deps, plan);
  if (state.catalogPrepared || state.switched) {
    await finish(deps, plan, state.catalogPrepared);
    return { blockedMs: 0, lsn: null, recovered: state.catalogPrepared ? 'finished' : 'already-done' };
  }
  // Fences left prepared by an earlier attempt (its switch never prepared) are rolled back there, under the lease.
  const fences = reshardFences(plan);
  const { attempt, rolledBack, switched } = await beginCutoverAttempt(deps, plan.movementId, plan.catalogGid, fences, holdsNewShards(plan));
  if (switched) throw new CutoverInDoubtError(`movement ${plan.movementId}: another attempt switched the ${plan.operation} meanwhile; a retry finishes it`);
  const lockedAt = await prepare(deps, plan, options, attempt);
  await finish(deps, plan, true);
  return { blockedMs: Date.now() - lockedAt, lsn: null, ...(rolledBack ? { recovered: 'rolled-back-and-redone' as const } : {}) };
}

/** settleCutover for a split or merge: switched when the catalog holds the new shards. */
export function settleReshard(deps: ReshardCutoverDeps, plan: ReshardPlan): Promise<'forward' | 'undo'> {
  return settleCutover(deps, plan.movementId, plan.catalogGid, reshardFences(plan), holdsNewShards(plan));
}

/** The gid of a new shard's prepared transaction (its fence lifted), beside the sources' and the catalog's. */
export function targetGidOf(plan: ReshardPlan, index: number): string {
  return `${plan.catalogGid}_t${index}`;
}

/** What the cutover prepares on nodes: every source's fence, every target's unfencing. */
function reshardFences(plan: ReshardPlan): PreparedFence[] {
  return [...plan.sources.map((s) => ({ dsn: s.node.dsn, gid: s.gid })), ...plan.targets.map((t, i) => ({ dsn: t.node.dsn, gid: targetGidOf(plan, i) }))];
}

function holdsNewShards(plan: ReshardPlan): (catalog: pg.ClientBase) => Promise<boolean> {
  return async (c) => {
    const { rows } = await c.query('select 1 from shardcast.shards where id = any($1::bigint[])', [plan.targets.map((t) => t.shardId)]);
    return rows.length > 0;
  };
}

interface State {
  catalogPrepared: boolean;
  /** The catalog already holds the new shards (and no longer the old ones). */
  switched: boolean;
}

async function cutoverState(deps: ReshardCutoverDeps, plan: ReshardPlan): Promise<State> {
  const catalog = await onServer(deps.pools, deps.catalogUrl, (c) =>
    c.query<{ prepared: boolean; switched: boolean }>(
      `select exists (select 1 from pg_prepared_xacts where gid = $1 and database = current_database()) as prepared,
              exists (select 1 from shardcast.shards where id = any($2::bigint[])) as switched`,
      [plan.catalogGid, plan.targets.map((t) => t.shardId)],
    ),
  );
  return { catalogPrepared: catalog.rows[0]!.prepared, switched: catalog.rows[0]!.switched };
}

/** Phase one: every source locked, drained, verified, fenced and prepared; then the catalog prepared. Returns when the lock was taken. */
async function prepare(deps: ReshardCutoverDeps, plan: ReshardPlan, options: ReshardCutoverOptions, attempt: number): Promise<number> {
  // Sources in node order, so that two cutovers sharing nodes cannot deadlock on their locks.
  const sources = [...plan.sources].sort((a, b) => a.node.id - b.node.id || a.shardId - b.shardId);
  const clients = new Map<ReshardSource, pg.PoolClient>();
  const targetClients: pg.PoolClient[] = [];
  let targetsPrepared = 0;
  let catalogClient: pg.PoolClient | undefined;
  let broken: Error | undefined;
  const prepared: ReshardSource[] = [];
  let lockedAt = 0;
  try {
    for (const s of sources) {
      clients.set(s, await deps.pools.get(s.node.dsn).connect());
    }
    lockedAt = await lockForCutover(
      sources.map((s) => ({ client: clients.get(s)!, tables: plan.tables.map((t) => `${quoteIdent(s.schema)}.${quoteIdent(t.name)}`) })),
      options.lockTimeoutMs,
    );
    // Writers are locked out: what the slots hold now is everything, and it is finite.
    const drained = await applyChanges(deps.pools, plan, { onBatch: () => options.onWait?.() });
    if (!drained.drained) throw new ShardcastError('CUTOVER_CATCHUP_TIMEOUT', 'the new shards did not catch up with the locked sources');
    await verify(deps.pools, plan, clients, options.verify ?? 'checksums', options.onOwnReads);
    await copySequences(deps.pools, plan, clients);
    for (const s of sources) {
      const client = clients.get(s)!;
      const into = plan.targets.map((t) => `${t.shardId} on ${t.node.name}`).join(' and ');
      await fenceShard(client, {
        schema: s.schema,
        tables: plan.tables.map((t) => t.name),
        message: `shard ${s.shardId} has been ${plan.operation === 'split' ? 'split into shards' : 'merged into shard'} ${into}`,
        fencedName: fencedSourceName(plan, s),
      });
    }
    // The new shards' fences go in transactions prepared beside the sources': lifted only once the catalog has switched.
    for (const t of plan.targets) {
      const client = await deps.pools.get(t.node.dsn).connect();
      targetClients.push(client);
      await client.query('begin');
      await client.query(`set local lock_timeout = ${options.lockTimeoutMs ?? 5000}`);
      await dropFence(client, t.schema, plan.tables.map((tb) => tb.name));
    }
    await failpoint('cutover.before-switch');
    // The switch's transaction holds the lease row from before the first PREPARE: a replaced attempt stops here.
    catalogClient = await beginSwitch(deps, plan.movementId, attempt);
    for (const s of sources) {
      await clients.get(s)!.query(`prepare transaction ${quoteLiteral(s.gid)}`);
      prepared.push(s);
    }
    for (const [i, client] of targetClients.entries()) {
      await client.query(`prepare transaction ${quoteLiteral(targetGidOf(plan, i))}`);
      targetsPrepared++;
    }
    const c = catalogClient;
    const { rows } = await c.query<{ n: number }>(
      `select count(*)::int as n from shardcast.placements p
         join unnest($1::bigint[], $2::bigint[]) as want(shard_id, node_id) on want.shard_id = p.shard_id and want.node_id = p.node_id`,
      [plan.sources.map((s) => s.shardId), plan.sources.map((s) => s.node.id)],
    );
    if (rows[0]!.n !== plan.sources.length) {
      throw new ShardcastError('SHARD_ELSEWHERE', `shards ${plan.sources.map((s) => s.shardId).join(', ')} are no longer where the ${plan.operation} found them`);
    }
    for (const t of plan.targets) {
      const hash = 'hashMin' in t.range;
      await c.query(
        `insert into shardcast.shards (id, group_id, schema_name, hash_min, hash_max, range_min, range_max) overriding system value
         values ($1, $2, $3, $4::bigint, $5::bigint, $6, $7)`,
        [
          t.shardId,
          plan.groupId,
          t.schema,
          hash ? (t.range as { hashMin: string }).hashMin : null,
          hash ? (t.range as { hashMax: string }).hashMax : null,
          hash ? null : (t.range as { rangeMin: string }).rangeMin,
          hash ? null : (t.range as { rangeMax: string }).rangeMax,
        ],
      );
      await c.query('insert into shardcast.placements (shard_id, node_id) values ($1, $2)', [t.shardId, t.node.id]);
    }
    await c.query('delete from shardcast.shards where id = any($1::bigint[])', [plan.sources.map((s) => s.shardId)]);
    await c.query(`prepare transaction ${quoteLiteral(plan.catalogGid)}`);
    await failpoint('cutover.after-catalog-prepare', { connection: c });
    await failpoint('cutover.after-prepare');
    return lockedAt;
  } catch (err) {
    broken = err as Error;
    for (const [s, client] of clients) if (!prepared.includes(s)) await client.query('rollback').catch(() => undefined);
    for (const client of targetClients.slice(targetsPrepared)) await client.query('rollback').catch(() => undefined);
    await catalogClient?.query('rollback').catch(() => undefined);
    if (prepared.length > 0) await settleFailedSwitch(deps, plan.movementId, attempt, plan.catalogGid, reshardFences(plan), broken);
    throw err;
  } finally {
    for (const client of clients.values()) client.release(broken);
    for (const client of targetClients) client.release(broken);
    catalogClient?.release(broken);
  }
}

/** Phase two: the catalog (and a NOTIFY to routers), then every source. Each step skips what is done. */
async function finish(deps: ReshardCutoverDeps, plan: ReshardPlan, catalogPrepared: boolean): Promise<void> {
  if (catalogPrepared) await commitCatalogSwitch(deps, plan.catalogGid);
  await failpoint('cutover.after-catalog-commit');
  // The new shards first (they take writes once unfenced), then the sources.
  for (const [i, t] of plan.targets.entries()) await commitPreparedIfAny(deps.pools, t.node.dsn, targetGidOf(plan, i));
  for (const s of plan.sources) await commitPreparedIfAny(deps.pools, s.node.dsn, s.gid);
}

const DIGEST = {
  checksums: `count(*)::bigint::text as n, coalesce(sum(hashtextextended(row(t.*)::text, 0)), 0)::text as digest`,
  counts: `count(*)::bigint::text as n, '' as digest`,
};

/**
 * Each source against each target, on the rows they share (the source's rows of the target's range,
 * the target's rows of the source's range), inside the locking transactions; and no target row
 * outside every source.
 */
async function verify(
  pools: NodePools,
  plan: ReshardPlan,
  clients: Map<ReshardSource, pg.PoolClient>,
  mode: 'counts' | 'checksums' | 'changes',
  onOwnReads?: (reads: OwnReadCount[]) => void,
): Promise<void> {
  if (mode === 'changes') {
    await recheckChanges(pools, plan, new Map([...clients].map(([s, c]) => [s.slot, c])), onOwnReads);
    return;
  }
  const measure = DIGEST[mode];
  for (const table of plan.tables) {
    for (const t of plan.targets) {
      let total = 0;
      for (const s of plan.sources) {
        const from = (schema: string) => `${quoteIdent(schema)}.${quoteIdent(table.name)} t`;
        const onSource = await clients.get(s)!.query<{ n: string; digest: string }>(
          `select ${measure} from ${from(s.schema)} where ${rangePredicate(plan.keyType, table.keyColumn, t.range)}`,
        );
        const onTarget = await pools
          .get(t.node.dsn)
          .query<{ n: string; digest: string }>(`select ${measure} from ${from(t.schema)} where ${rangePredicate(plan.keyType, table.keyColumn, s.range)}`);
        const a = onSource.rows[0]!;
        const b = onTarget.rows[0]!;
        if (a.n !== b.n || a.digest !== b.digest) {
          throw new VerificationError(
            `${plan.operation} of shard ${s.shardId}: ${table.name} differs between ${s.node.name} (${a.n} rows) and new shard ${t.shardId} on ${t.node.name} (${b.n} rows)${a.n === b.n ? ', same count, different content' : ''}; cutover aborted`,
          );
        }
        total += Number(b.n);
      }
      const all = await pools.get(t.node.dsn).query<{ n: string }>(`select count(*)::bigint::text as n from ${quoteIdent(t.schema)}.${quoteIdent(table.name)}`);
      if (Number(all.rows[0]!.n) !== total) {
        throw new VerificationError(`new shard ${t.shardId}: ${table.name} holds ${Number(all.rows[0]!.n) - total} row(s) outside its sources' ranges; cutover aborted`);
      }
    }
  }
}

/** Every target's sequences continue after the largest value any source handed out. */
async function copySequences(pools: NodePools, plan: ReshardPlan, clients: Map<ReshardSource, pg.PoolClient>): Promise<void> {
  const last = new Map<string, bigint>();
  for (const s of plan.sources) {
    const { rows } = await clients.get(s)!.query<{ name: string; last_value: string | null }>(
      'select sequencename as name, last_value::text from pg_sequences where schemaname = $1',
      [s.schema],
    );
    for (const r of rows) if (r.last_value !== null) last.set(r.name, BigInt(r.last_value) > (last.get(r.name) ?? -(2n ** 63n)) ? BigInt(r.last_value) : last.get(r.name)!);
  }
  for (const t of plan.targets) {
    for (const [name, value] of last) {
      await pools.get(t.node.dsn).query('select setval($1::regclass, $2::bigint, true)', [`${quoteIdent(t.schema)}.${quoteIdent(name)}`, value.toString()]);
    }
  }
}
