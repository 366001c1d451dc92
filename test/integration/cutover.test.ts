import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable } from '../../client/index.js';
import { NodePools } from '../../src/catalog/node-pools.js';
import { getNodeByName, type NodeRecord } from '../../src/catalog/nodes.js';
import { acquireMovementLease } from '../../src/movement/lease.js';
import { cutover, fencedSchemaName, prepareCutover, VerificationError } from '../../src/movement/cutover.js';
import {
  movementLeftovers,
  movementNames,
  prepareTarget,
  shardTables,
  startStreaming,
  stopStreaming,
  streamProgress,
  type MovementNames,
  type ShardTables,
} from '../../src/movement/replication.js';
import { createRouter, type Router } from '../../src/router/router.js';
import { quoteIdent } from '../../src/sql/ident.js';
import { adminQuery, createTestCatalog, expectNoMovementLeftovers, startTestWorker, type TestCatalog, type TestWorker, uniqueName } from '../helpers/fleet.js';

let catalog: TestCatalog;
let worker: TestWorker;
let router: Router;
const pools = new NodePools();

beforeAll(async () => {
  catalog = await createTestCatalog('cut');
  worker = await startTestWorker(catalog.catalogUrl);
  await createDistributedTable(worker.options, {
    name: 'events',
    columns: 'id bigint primary key, kind text not null, n bigint not null default 0',
    shardKey: 'id',
    shardCount: 3,
  });
  router = await createRouter({ catalogUrl: catalog.catalogUrl });
});

afterAll(async () => {
  await router?.close();
  await pools.end();
  await worker?.close();
  await catalog?.close();
});

interface Move {
  shard: ShardTables;
  source: NodeRecord;
  target: NodeRecord;
  names: MovementNames;
  id: string;
}

async function planMove(index: number): Promise<Move> {
  const { rows } = await catalog.pool.query<{ id: number; node: string }>(
    `select s.id::int as id, n.name as node from shardcast.shards s join shardcast.placements p on p.shard_id = s.id
       join shardcast.nodes n on n.id = p.node_id order by s.id`,
  );
  const row = rows[index]!;
  const id = uniqueName('mv');
  const move = {
    shard: await shardTables(catalog.pool, row.id),
    source: await getNodeByName(catalog.pool, row.node),
    target: await getNodeByName(catalog.pool, ['node-1', 'node-2', 'node-3'].find((n) => n !== row.node)!),
    names: movementNames(id),
    id,
  };
  // The cutover's fencing token lives on the movement's lease: an earlier test's lease of the shard ends first.
  await catalog.pool.query("update shardcast.movements set state = 'done' where shard_id = $1 and state = 'running'", [row.id]);
  await acquireMovementLease(catalog.pool, { id, operation: 'move', shardId: row.id, sourceNodeId: move.source.id, targetNodeIds: [move.target.id] }, 10);
  return move;
}

async function streamUntilReady(move: Move): Promise<void> {
  await prepareTarget(pools, move.target, move.shard);
  await startStreaming(pools, move, move.shard, move.names);
  const deadline = Date.now() + 30_000;
  while ((await streamProgress(pools, move, move.shard, move.names)).tablesReady < move.shard.tables.length) {
    if (Date.now() > deadline) throw new Error('initial copy did not finish');
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function placement(shardId: number): Promise<string> {
  const { rows } = await catalog.pool.query<{ node: string }>(
    'select n.name as node from shardcast.placements p join shardcast.nodes n on n.id = p.node_id where p.shard_id = $1',
    [shardId],
  );
  return rows[0]!.node;
}

async function preparedOnCatalog(): Promise<string[]> {
  const { rows } = await catalog.pool.query<{ gid: string }>("select gid from pg_prepared_xacts where gid like 'sc\\_mv\\_%' and database = current_database()");
  return rows.map((r) => r.gid);
}

describe('cutover', () => {
  it('moves a shard while writers keep writing through the router: every acknowledged write on the target once, none on the source after', async () => {
    const move = await planMove(0);
    const keys: number[] = [];
    for (let id = 1; keys.length < 400; id++) if (router.forKey('events', id).route().shardId === move.shard.shardId) keys.push(id);
    const counterKey = keys[0]!;
    await router.forKey('events', counterKey).query("insert into events values ($1, 'counter', 0)", [counterKey]);

    const acknowledged = new Set<number>();
    let increments = 0;
    const errors: unknown[] = [];
    let stop = false;
    let next = 1;
    let longestWriteMs = 0;
    const writers = Array.from({ length: 4 }, async () => {
      while (!stop) {
        const began = performance.now();
        // Any key of the shard but the counter's: those rows count writes, the counter counts increments.
        const key = keys[1 + ((next++ * 7) % (keys.length - 1))]!;
        try {
          await router.forKey('events', key).transaction(async (tx) => {
            await tx.query("insert into events values ($1, 'w', 1) on conflict (id) do update set n = events.n + 1", [key]);
          });
          await router.forKey('events', counterKey).query('update events set n = n + 1 where id = $1', [counterKey]);
          increments++;
          acknowledged.add(key);
          longestWriteMs = Math.max(longestWriteMs, performance.now() - began);
        } catch (err) {
          errors.push(err);
        }
      }
    });

    await streamUntilReady(move);
    await new Promise((r) => setTimeout(r, 300));
    const result = await cutover({ catalogUrl: catalog.catalogUrl, pools }, move);
    await new Promise((r) => setTimeout(r, 500));
    stop = true;
    await Promise.all(writers);
    console.log(`cutover blocked writes for ${result.blockedMs} ms; the longest write (two statements, with the router's retry) took ${Math.round(longestWriteMs)} ms`, JSON.stringify(result.steps));

    expect(errors).toEqual([]);
    expect(await placement(move.shard.shardId)).toBe(move.target.name);
    expect(router.forKey('events', counterKey).route().nodeName).toBe(move.target.name);
    // On the target: the counter saw every acknowledged increment, every acknowledged key is there once.
    const counter = await adminQuery(move.target.dsn, `select n::int from ${quoteIdent(move.shard.schema)}.events where id = $1`, [counterKey]);
    expect(counter.rows).toEqual([{ n: increments }]);
    const onTarget = await adminQuery(move.target.dsn, `select id::int, n::int from ${quoteIdent(move.shard.schema)}.events where kind = 'w'`);
    expect(new Set(onTarget.rows.map((r: { id: number }) => r.id))).toEqual(acknowledged);
    // The source was fenced: nothing written there after the switch, and writes to it fail.
    const fenced = quoteIdent(fencedSchemaName(move.shard.schema, move.id));
    const onSource = await adminQuery(move.source.dsn, `select id::int, n::int from ${fenced}.events where id = $1`, [counterKey]);
    expect(onSource.rows[0].n).toBeLessThanOrEqual(increments);
    await expect(adminQuery(move.source.dsn, `update ${fenced}.events set n = 0`)).rejects.toMatchObject({ code: 'SCF01' });
    const unresolved = await adminQuery(move.source.dsn, 'select 1 from pg_namespace where nspname = $1', [move.shard.schema]);
    expect(unresolved.rows).toHaveLength(0);
    // The README's figure: writes blocked at most 250 ms by the cutover, as the writers saw it too.
    expect(result.blockedMs).toBeLessThanOrEqual(250);
    expect(longestWriteMs).toBeLessThanOrEqual(250 + 250);

    await stopStreaming(pools, move, move.names);
    for (const node of catalog.nodes) expect((await movementLeftovers(pools, node)).preparedTransactions).toEqual([]);
    expect(await preparedOnCatalog()).toEqual([]);
  });

  it('refuses to cut over when the target differs from the source, and changes nothing', async () => {
    const move = await planMove(0); // the shard moved by the first test: now from its new node
    await streamUntilReady(move);
    const schema = quoteIdent(move.shard.schema);
    await pools.get(move.source.dsn).query(`insert into ${schema}.events values (999999001, 'x', 1), (999999002, 'y', 2)`);
    await new Promise((r) => setTimeout(r, 300));
    // Someone writes on the target behind replication's back: same count, different content.
    // (As replication does, past the target's fence: ordinary sessions cannot write there.)
    await adminQuery(move.target.dsn, `set session_replication_role = replica; update ${schema}.events set n = n + 1000 where id = 999999001`);
    const attempt = cutover({ catalogUrl: catalog.catalogUrl, pools }, move);
    await expect(attempt).rejects.toBeInstanceOf(VerificationError);
    await expect(attempt).rejects.toThrow(/events differs between .* same count, different content; cutover aborted/);
    expect(await placement(move.shard.shardId)).toBe(move.source.name);
    const stillThere = await adminQuery(move.source.dsn, `select count(*)::int as n from ${schema}.events`);
    expect(stillThere.rows[0].n).toBeGreaterThan(0); // not fenced: names still resolve, writes still work
    await pools.get(move.source.dsn).query(`update ${schema}.events set n = n + 1 where id = 999999002`);
    expect(await preparedOnCatalog()).toEqual([]);
    await stopStreaming(pools, move, move.names);
    await pools.get(move.target.dsn).query(`drop schema ${schema} cascade`);
  });

  it('a retry after a crash with both sides prepared finishes the switch', async () => {
    const move = await planMove(1);
    await streamUntilReady(move);
    await prepareCutover({ catalogUrl: catalog.catalogUrl, pools }, move); // then "crash": nothing committed
    expect(await placement(move.shard.shardId)).toBe(move.source.name);
    expect(await preparedOnCatalog()).toEqual([move.names.gid]);
    const result = await cutover({ catalogUrl: catalog.catalogUrl, pools }, move);
    expect(result.recovered).toBe('finished');
    expect(await placement(move.shard.shardId)).toBe(move.target.name);
    expect(await preparedOnCatalog()).toEqual([]);
    expect((await movementLeftovers(pools, move.source)).preparedTransactions).toEqual([]);
    expect((await cutover({ catalogUrl: catalog.catalogUrl, pools }, move)).recovered).toBe('already-done');
    await stopStreaming(pools, move, move.names);
  });

  it('a retry after a crash with only the source prepared rolls it back and cuts over again', async () => {
    const move = await planMove(2);
    await streamUntilReady(move);
    await prepareCutover({ catalogUrl: catalog.catalogUrl, pools }, move);
    // Undo the catalog half, as if the worker died between the two PREPAREs.
    await catalog.pool.query(`rollback prepared '${move.names.gid}'`);
    const result = await cutover({ catalogUrl: catalog.catalogUrl, pools }, move);
    expect(result.recovered).toBe('rolled-back-and-redone');
    expect(await placement(move.shard.shardId)).toBe(move.target.name);
    const rows = await router.all<{ n: number }>('select count(*)::int as n from events');
    expect(rows.shards).toBe(3);
    await stopStreaming(pools, move, move.names);
    await expectNoMovementLeftovers(pools, catalog.nodes);
  });
});
