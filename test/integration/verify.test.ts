import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WorkflowHandle } from '@temporalio/client';
import { createDistributedTable, moveResult, startMove, startSplit } from '../../client/index.js';
import { NodePools } from '../../src/catalog/node-pools.js';
import { getNodeByName } from '../../src/catalog/nodes.js';
import { cutover, VerificationError, type CutoverTarget } from '../../src/movement/cutover.js';
import { acquireMovementLease, finishMovement } from '../../src/movement/lease.js';
import { movementNames, prepareTarget, shardTables, startStreaming, stopStreaming, streamProgress, WATERMARKS } from '../../src/movement/replication.js';
import { dropVerifySlots, refreshVerification, verifyChunks, type VerifyProgress } from '../../src/movement/verify.js';
import { quoteIdent } from '../../src/sql/ident.js';
import { movementProgressQuery } from '../../workflows/messages.js';
import { adminQuery, createTestCatalog, expectNoMovementLeftovers, startTestWorker, startWorkerProcess, type TestCatalog, type TestWorker, uniqueName, until } from '../helpers/fleet.js';

/**
 * The verify phase without a long write block (issue 9, section 2): chunk digests in consistent
 * snapshots, divergence found and named, resumable; the cutover re-checks only what changed since.
 */

let catalog: TestCatalog;
let worker: TestWorker;
const pools = new NodePools();

beforeAll(async () => {
  catalog = await createTestCatalog('ver');
  worker = await startTestWorker(catalog.catalogUrl);
  await createDistributedTable(worker.options, { name: 'items', columns: 'id bigint primary key, payload text not null, n bigint not null default 0', shardKey: 'id', shardCount: 5 });
  await createDistributedTable(worker.options, { name: 'parts', columns: 'id bigint primary key, n bigint not null default 0', shardKey: 'id', shardCount: 1 });
});

afterAll(async () => {
  await pools.end();
  await worker?.close();
  await catalog?.close();
});

type Move = CutoverTarget;

async function shards(table: string): Promise<Array<{ id: number; node: string; schema: string }>> {
  const { rows } = await catalog.pool.query<{ id: number; node: string; schema: string }>(
    `select s.id::int as id, n.name as node, s.schema_name as schema from shardcast.shards s join shardcast.placements p on p.shard_id = s.id
       join shardcast.nodes n on n.id = p.node_id join shardcast.distributed_tables t on t.group_id = s.group_id where t.name = $1 order by s.id`,
    [table],
  );
  return rows;
}

/** A move of the table's `index`-th shard, filled with `rows` rows written straight into its schema, streaming and caught up. */
async function streamingMove(table: string, index: number, rows: number, fill = (schema: string) => `insert into ${quoteIdent(schema)}.items select g, md5(g::text), 0 from generate_series(1, $1::bigint) g`): Promise<Move> {
  const row = (await shards(table))[index]!;
  const move: Move = {
    shard: await shardTables(catalog.pool, row.id),
    source: await getNodeByName(catalog.pool, row.node),
    target: await getNodeByName(catalog.pool, ['node-1', 'node-2', 'node-3'].find((n) => n !== row.node)!),
    names: movementNames(uniqueName('vf')),
  };
  // The cutover takes its fencing token from the movement's lease, as in the workflow.
  await acquireMovementLease(catalog.pool, { id: move.names.gid.slice('sc_mv_'.length), operation: 'move', shardId: row.id, sourceNodeId: move.source.id, targetNodeIds: [move.target.id] }, 10);
  await pools.get(move.source.dsn).query(fill(row.schema), [rows]);
  await prepareTarget(pools, move.target, move.shard);
  await startStreaming(pools, move, move.shard, move.names);
  await until('the copy is done and caught up', async () => {
    const p = await streamProgress(pools, move, move.shard, move.names);
    return p.tables > 0 && p.tablesReady === p.tables && p.lagBytes !== null && p.lagBytes < 64 * 1024;
  });
  return move;
}

async function endMove(move: Move): Promise<void> {
  await stopStreaming(pools, move, move.names);
  await dropVerifySlots(pools, move);
  await finishMovement(catalog.pool, move.names.gid.slice('sc_mv_'.length), 'done');
}

async function placement(shardId: number): Promise<string> {
  const { rows } = await catalog.pool.query<{ node: string }>('select n.name as node from shardcast.placements p join shardcast.nodes n on n.id = p.node_id where p.shard_id = $1', [shardId]);
  return rows[0]!.node;
}

/** Writers updating random rows on the source until stopped; returns the longest write. */
function writers(move: Move, keys: number, n = 3): { stop(): Promise<{ writes: number; maxMs: number }> } {
  let running = true;
  let writes = 0;
  let maxMs = 0;
  const db = pools.get(move.source.dsn);
  const sql = `update ${quoteIdent(move.shard.schema)}.items set n = n + 1 where id = $1`;
  const loops = Array.from({ length: n }, async () => {
    while (running) {
      const t = Date.now();
      const ok = await db.query(sql, [1 + Math.floor(Math.random() * keys)]).then(
        () => true,
        () => false, // fenced once the shard has moved
      );
      if (!ok) break;
      maxMs = Math.max(maxMs, Date.now() - t);
      writes++;
    }
  });
  return {
    async stop() {
      running = false;
      await Promise.all(loops);
      return { writes, maxMs };
    },
  };
}

describe('verify without a long write block', () => {
  it('verifies a 200k-row shard under writes with writes blocked at most 100 ms, resumes after an abort, and the cutover re-checks only the changes', async () => {
    const move = await streamingMove('items', 0, 200_000);
    const load = writers(move, 200_000);
    try {
      // An attempt stopped after 4 chunks (as a cancelled or timed-out activity is)…
      const abort = new AbortController();
      let partial: VerifyProgress | undefined;
      await expect(
        verifyChunks(pools, move, {
          chunkRows: 10_000,
          signal: abort.signal,
          onProgress: (p) => {
            partial = structuredClone(p);
            if (p.chunks === 4) abort.abort();
          },
        }),
      ).rejects.toThrow(/cancelled/);
      expect(partial!.rowsVerified).toBe(40_000);
      // … and its retry continues after the last verified chunk, in new snapshots.
      const seen: number[] = [];
      const done = await verifyChunks(pools, move, { chunkRows: 10_000, resume: partial, onProgress: (p) => seen.push(p.rowsVerified) });
      expect(seen[0]).toBeGreaterThanOrEqual(40_000);
      expect(done.done).toBe(true);
      expect(done.rowsVerified).toBe(200_000);
      expect(done.chunks).toBe(21); // 20 full chunks and the empty tail, none twice
      expect(done.rowsTotal).toBeGreaterThan(150_000);
      expect(done.snapshots).toBe(2);
      console.log(`verify of 200k rows: writes blocked at most ${done.blockedMs} ms per snapshot (${done.snapshots} snapshots, ${done.snapshotsGivenUp ?? 0} moment(s) given up for the budget)`);
      expect(done.blockedMs).toBeLessThanOrEqual(100);

      // The cutover: changes since verify compared without the lock, then the last ones under it.
      const refreshed = await refreshVerification(pools, move);
      expect(refreshed.keys).toBeGreaterThan(0);
      const switched = await cutover({ catalogUrl: catalog.catalogUrl, pools }, move, { verify: 'changes' });
      console.log(`cutover after verify: writes blocked ${switched.blockedMs} ms, steps ${JSON.stringify(switched.steps)}; refresh compared ${refreshed.keys} keys, blocked ${refreshed.blockedMs} ms`);
      // The re-check under the lock is this change's part of the cutover's blocked time (the whole is asserted by the cutover's own test).
      expect(switched.steps!.verified - switched.steps!.caughtUp).toBeLessThanOrEqual(100);
      expect(await placement(move.shard.shardId)).toBe(move.target.name);
    } finally {
      await load.stop();
      await endMove(move);
    }
  });

  it('a target that cannot catch up under the lock within the block budget: the snapshot moment is given up, retried, and writes never wait past the budget', async () => {
    const move = await streamingMove('items', 4, 20_000);
    const target = pools.get(move.target.dsn);
    // The target's apply of the next 5 watermarks takes 150 ms each (a replica trigger, as a slow disk would): two moments overrun their 60 ms budget.
    await target.query(`create sequence sc_movement.slow_marks;
      create function sc_movement.slow_mark() returns trigger language plpgsql as $$ begin if nextval('sc_movement.slow_marks') <= 5 then perform pg_sleep(0.15); end if; return new; end $$;
      create trigger slow_mark before update on ${WATERMARKS} for each row execute function sc_movement.slow_mark();
      alter table ${WATERMARKS} enable replica trigger slow_mark;`);
    const load = writers(move, 20_000, 1);
    try {
      const done = await verifyChunks(pools, move);
      console.log(`verify with a slow target: ${done.snapshotsGivenUp} snapshot moment(s) given up, writes blocked at most ${done.blockedMs} ms (total ${done.blockedTotalMs} ms)`);
      expect(done.done).toBe(true);
      expect(done.rowsVerified).toBe(20_000);
      expect(done.snapshotsGivenUp).toBe(2);
      expect(done.blockedMs).toBeLessThanOrEqual(100);
      const { maxMs } = await load.stop();
      expect(maxMs).toBeLessThan(250);
    } finally {
      await load.stop();
      await target.query(`drop trigger slow_mark on ${WATERMARKS}; drop function sc_movement.slow_mark(); drop sequence sc_movement.slow_marks`);
      await endMove(move);
    }
  });

  it('a row changed on the target behind replication’s back during the copy: verify names the table and the key range', async () => {
    const move = await streamingMove('items', 1, 30_000);
    try {
      await adminQuery(
        move.target.dsn,
        `set session_replication_role = replica; update ${quoteIdent(move.shard.schema)}.items set n = n + 1000 where id = 12345; reset session_replication_role`,
      );
      const failure = verifyChunks(pools, move, { chunkRows: 5000 });
      await expect(failure).rejects.toBeInstanceOf(VerificationError);
      await expect(failure).rejects.toThrow(/items differs between .* \(5000 rows\) and .* \(5000 rows\) in id in \(10000, 15000\], same count, different content; differing keys: 12345 \(changed\)/);
      expect(await placement(move.shard.shardId)).toBe(move.source.name);
    } finally {
      await endMove(move);
    }
  });

  it('a table with a column named t: every column is compared, not that one alone', async () => {
    // The row hash was hashtextextended(t::text) over the alias t: with a column t, PostgreSQL took the column.
    await createDistributedTable(worker.options, { name: 'tees', columns: 'id bigint primary key, t int not null default 0, payload text not null', shardKey: 'id', shardCount: 1 });
    const move = await streamingMove('tees', 0, 2000, (schema) => `insert into ${quoteIdent(schema)}.tees select g, 1, md5(g::text) from generate_series(1, $1::bigint) g`);
    const tees = `${quoteIdent(move.shard.schema)}.tees`;
    try {
      await adminQuery(move.target.dsn, `set session_replication_role = replica; update ${tees} set payload = 'changed' where id = 1234; reset session_replication_role`);
      const failure = verifyChunks(pools, move, { chunkRows: 5000 });
      await expect(failure).rejects.toBeInstanceOf(VerificationError);
      await expect(failure).rejects.toThrow(/tees differs between .*differing keys: 1234 \(changed\)/);
      // The cutover's own check of a table hashes every column too.
      await expect(cutover({ catalogUrl: catalog.catalogUrl, pools }, move, { verify: 'checksums' })).rejects.toThrow(/tees/);
      expect(await placement(move.shard.shardId)).toBe(move.source.name);
    } finally {
      await endMove(move);
    }
  });

  it('the cutover finds a change since verify that the target does not have (an update, a lost delete) and switches nothing', async () => {
    const move = await streamingMove('items', 2, 20_000);
    try {
      expect((await verifyChunks(pools, move)).done).toBe(true);
      const items = `${quoteIdent(move.shard.schema)}.items`;
      await pools.get(move.source.dsn).query(`update ${items} set n = 5 where id = 7`);
      await pools.get(move.source.dsn).query(`delete from ${items} where id = 8`);
      await until('the target applied both', async () => (await pools.get(move.target.dsn).query(`select 1 from ${items} where id = 8`)).rowCount === 0);
      // Behind replication's back: the update undone, the deleted row back (as if a delete were lost).
      await adminQuery(
        move.target.dsn,
        `set session_replication_role = replica; update ${items} set n = 0 where id = 7; insert into ${items} values (8, md5('8'), 0); reset session_replication_role`,
      );
      await expect(cutover({ catalogUrl: catalog.catalogUrl, pools }, move, { verify: 'changes' })).rejects.toThrow(
        /items differs between .* in rows changed since verification \(id: 7 \(changed\); 8 \(only on the target\)\); cutover aborted/,
      );
      expect(await placement(move.shard.shardId)).toBe(move.source.name);
      // The lock-free refresh finds it as well, and does not move the verify slot past it.
      await expect(refreshVerification(pools, move)).rejects.toBeInstanceOf(VerificationError);
      await expect(cutover({ catalogUrl: catalog.catalogUrl, pools }, move, { verify: 'changes' })).rejects.toBeInstanceOf(VerificationError);
      expect((await adminQuery(move.source.dsn, `select count(*)::int as n from ${items}`)).rows[0].n).toBe(19_999);
    } finally {
      await endMove(move);
    }
    await expectNoMovementLeftovers(pools, catalog.nodes);
  });

  it('a split whose new shard is changed behind replication’s back stops before its cutover, naming the range; nothing switched', async () => {
    const [shard] = await shards('parts');
    await adminQuery(catalog.nodeUrl(shard!.node), `insert into ${quoteIdent(shard!.schema)}.parts select g, 0 from generate_series(1, 20000) g`);
    const others = ['node-1', 'node-2', 'node-3'].filter((n) => n !== shard!.node);
    process.env.SHARDCAST_FAILPOINTS = 'verify.before=sleep:2000';
    try {
      const handle = await startSplit(worker.options, { shardId: shard!.id, targetNodes: [others[0]!, others[1]!], graceSeconds: 0, pollSeconds: 0.2 });
      const deadline = Date.now() + 60_000;
      while ((await handle.query(movementProgressQuery)).phase !== 'verify') {
        if (Date.now() > deadline) throw new Error('the split never reached verify');
        await new Promise((r) => setTimeout(r, 100));
      }
      // The new shards' schemas are the ones on the targets that the catalog does not know yet.
      const known = (await catalog.pool.query<{ s: string }>('select schema_name as s from shardcast.shards')).rows.map((r) => r.s);
      const target = await getNodeByName(catalog.pool, others[0]!);
      const { rows } = await adminQuery(target.dsn, `select nspname::text as s from pg_namespace where nspname ~ '^sc_s[0-9]+$' and not (nspname = any($1::text[]))`, [known]);
      const schema = rows[0]!.s as string;
      await adminQuery(target.dsn, `set session_replication_role = replica; update ${quoteIdent(schema)}.parts set n = 99 where id = (select max(id) from ${quoteIdent(schema)}.parts); reset session_replication_role`);
      await expect(moveResult(handle)).rejects.toThrow(/split of shard \d+ into new shard \d+: parts differs between \S+ \(\d+ rows\) and \S+ \(\d+ rows\) in (all of id|id \S+ .*), same count, different content; differing keys: \d+ \(changed\)/);
      expect((await shards('parts')).map((s) => s.id)).toEqual([shard!.id]);
      expect(await placement(shard!.id)).toBe(shard!.node);
    } finally {
      delete process.env.SHARDCAST_FAILPOINTS;
    }
    // This catalog's database only: pg_replication_slots lists the whole server's.
    let remaining: string[] = [];
    await until('nothing is left', async () => {
      const left = await Promise.all(
        catalog.nodes.map((n) => adminQuery(n.dsn, "select coalesce(array_agg(slot_name::text), '{}') as s from pg_replication_slots where slot_name like 'sc\\_mv\\_%' and database = current_database()")),
      );
      remaining = left.flatMap((r) => r.rows[0].s as string[]);
      return remaining.length === 0;
    }).catch((err: Error) => {
      throw new Error(`${err.message}: slots ${remaining.join(', ')}`);
    });
    await expectNoMovementLeftovers(pools, catalog.nodes);
  });

  it('a verify activity killed with its worker resumes on another worker after its last verified chunk', async () => {
    const [row] = (await shards('items')).slice(3);
    await adminQuery(catalog.nodeUrl(row!.node), `insert into ${quoteIdent(row!.schema)}.items select g, md5(g::text), 0 from generate_series(1, 100000) g`);
    const taskQueue = uniqueName('vkill');
    // Slow chunks (5000 rows, 1 s each: heartbeats reach the server at most every 8 s), so that the kill lands mid-verify.
    const env = { SHARDCAST_FAILPOINTS: 'verify.after-chunk=sleep:1000' };
    const first = await startWorkerProcess(catalog.catalogUrl, taskQueue, env);
    let second: Awaited<ReturnType<typeof startWorkerProcess>> | undefined;
    try {
      const options = { ...worker.options, taskQueue };
      const target = ['node-1', 'node-2', 'node-3'].find((n) => n !== row!.node)!;
      const handle = await startMove(options, { shardId: row!.id, targetNode: target, pollSeconds: 0.2, graceSeconds: 0, verifyChunkRows: 5000 });
      let before: VerifyProgress | undefined;
      await until('verify has heartbeated some chunks', async () => {
        before = await verifyHeartbeat(handle);
        return (before?.rowsVerified ?? 0) >= 20_000;
      }, 120_000, 200);
      await new Promise<void>((resolve) => {
        first.child.once('exit', () => resolve());
        first.child.kill('SIGKILL');
      });
      second = await startWorkerProcess(catalog.catalogUrl, taskQueue, env);
      // The retry (after the heartbeat timeout) takes new snapshots and goes on from where the heartbeat said.
      let after: VerifyProgress | undefined;
      await until('the retried attempt has heartbeated', async () => {
        after = await verifyHeartbeat(handle);
        return (after?.snapshots ?? 0) > before!.snapshots;
      }, 120_000, 200);
      expect(after!.rowsVerified).toBeGreaterThanOrEqual(before!.rowsVerified);
      const result = await moveResult(handle);
      expect(result.target).toBe(target);
      const progress = await handle.query(movementProgressQuery);
      expect(progress.rowsVerified).toBe(100_000);
    } finally {
      await first.stop();
      await second?.stop();
    }
    await expectNoMovementLeftovers(pools, catalog.nodes);
  }, 360_000);
});

/** The verify activity's last heartbeat details, while it is pending. */
async function verifyHeartbeat(handle: WorkflowHandle): Promise<VerifyProgress | undefined> {
  const { raw } = await handle.describe();
  const pending = raw.pendingActivities?.find((a) => a.activityType?.name === 'verify');
  const payload = pending?.heartbeatDetails?.payloads?.[0];
  if (!payload?.data) return undefined;
  const details = JSON.parse(Buffer.from(payload.data).toString()) as VerifyProgress | string;
  return typeof details === 'string' ? undefined : details;
}
