import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable } from '../../client/index.js';
import { NodePools } from '../../src/catalog/node-pools.js';
import { getNodeByName, type NodeRecord } from '../../src/catalog/nodes.js';
import { InvalidInputError } from '../../src/errors.js';
import {
  assertMovable,
  currentLsn,
  dropTargetShard,
  movementNames,
  prepareTarget,
  shardTables,
  startStreaming,
  stopStreaming,
  streamProgress,
  targetHasWatermark,
  bumpWatermark,
  type ShardTables,
} from '../../src/movement/replication.js';
import { createRouter, type Router } from '../../src/router/router.js';
import { quoteIdent } from '../../src/sql/ident.js';
import { createTestCatalog, expectNoMovementLeftovers, startTestWorker, type TestCatalog, type TestWorker, uniqueName, until } from '../helpers/fleet.js';

let catalog: TestCatalog;
let worker: TestWorker;
let router: Router;
const pools = new NodePools();
const ACCOUNTS = 3000;

beforeAll(async () => {
  catalog = await createTestCatalog('repl');
  worker = await startTestWorker(catalog.catalogUrl);
  await createDistributedTable(worker.options, {
    name: 'accounts',
    columns: 'id bigint primary key, owner text not null, balance bigint not null',
    shardKey: 'id',
    shardCount: 3,
  });
  await createDistributedTable(worker.options, {
    name: 'entries',
    columns: 'account_id bigint not null, seq int not null, amount numeric(12,2), primary key (account_id, seq)',
    shardKey: 'account_id',
    colocateWith: 'accounts',
  });
  await createDistributedTable(worker.options, { name: 'notes', columns: 'id bigint, body text', shardKey: 'id', shardCount: 1 });
  router = await createRouter({ catalogUrl: catalog.catalogUrl });
  for (let id = 1; id <= ACCOUNTS; id++) {
    await router.forKey('accounts', id).transaction(async (tx) => {
      await tx.query('insert into accounts values ($1, $2, $3)', [id, `owner-${id}`, id]);
      await tx.query('insert into entries values ($1, 1, $2), ($1, 2, $3)', [id, id / 100, -id / 200]);
    });
  }
});

afterAll(async () => {
  await router?.close();
  await pools.end();
  await worker?.close();
  await catalog?.close();
});

async function shardOn(table: string, index: number): Promise<{ shard: ShardTables; source: NodeRecord; target: NodeRecord }> {
  const { rows } = await catalog.pool.query<{ id: number; node: string }>(
    `select s.id::int as id, n.name as node from shardcast.shards s join shardcast.placements p on p.shard_id = s.id
       join shardcast.nodes n on n.id = p.node_id join shardcast.distributed_tables t on t.group_id = s.group_id
      where t.name = $1 order by s.id`,
    [table],
  );
  const row = rows[index]!;
  const source = await getNodeByName(catalog.pool, row.node);
  const target = await getNodeByName(catalog.pool, ['node-1', 'node-2', 'node-3'].find((n) => n !== row.node)!);
  return { shard: await shardTables(catalog.pool, row.id), source, target };
}

/** Row count and an order-independent content digest of one shard table, as a node holds it. */
async function digest(node: NodeRecord, schema: string, table: string, where = 'true'): Promise<{ n: number; md5: string | null }> {
  const { rows } = await pools
    .get(node.dsn)
    .query<{ n: number; md5: string | null }>(
      `select count(*)::int as n, md5(string_agg(md5(t::text), '' order by md5(t::text))) as md5 from ${quoteIdent(schema)}.${quoteIdent(table)} t where ${where}`,
    );
  return rows[0]!;
}

async function noLeftovers(): Promise<void> {
  await expectNoMovementLeftovers(pools, catalog.nodes);
}

/** Replication waits here are short: 30 s at most. */
const waitFor = (what: string, check: () => Promise<boolean>): Promise<void> => until(what, check, 30_000);

describe('shard copy and streaming (logical replication)', () => {
  it('copies a shard’s colocated tables and streams writes made during the copy, then tears down leaving nothing', async () => {
    const { shard, source, target } = await shardOn('accounts', 0);
    expect(shard.tables.map((t) => t.name)).toEqual(['accounts', 'entries']);
    const names = movementNames(uniqueName('m').replace(/[^a-z0-9_]/g, '_'));
    await assertMovable(pools, source, shard);
    await prepareTarget(pools, target, shard);
    await prepareTarget(pools, target, shard); // a retried activity
    await startStreaming(pools, { source, target }, shard, names);
    await startStreaming(pools, { source, target }, shard, names);

    // Writers on the source while the copy runs: inserts, updates, deletes.
    const writer = pools.get(source.dsn);
    const schema = quoteIdent(shard.schema);
    let stop = false;
    let writes = 0;
    const writing = (async () => {
      for (let i = 0; !stop; i++) {
        await writer.query(`insert into ${schema}.accounts values ($1, $2, 0) on conflict (id) do update set balance = accounts.balance + 1`, [
          1_000_000 + i,
          `new-${i}`,
        ]);
        await writer.query(`update ${schema}.accounts set balance = balance + 7 where id = (select min(id) from ${schema}.accounts where id < 1000000)`);
        await writer.query(`delete from ${schema}.entries where (account_id, seq) in (select account_id, seq from ${schema}.entries where seq = 2 limit 1)`);
        writes += 3;
      }
    })();
    await waitFor('initial copy', async () => {
      const p = await streamProgress(pools, { source, target }, shard, names);
      return p.tables === 2 && p.tablesReady === 2;
    });
    await new Promise((r) => setTimeout(r, 300));
    stop = true;
    await writing;
    expect(writes).toBeGreaterThan(30);

    expect(await currentLsn(writer)).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    const mark = await bumpWatermark(pools, source, names);
    await waitFor('target to apply every write before the watermark', () => targetHasWatermark(pools, target, names, mark));
    for (const table of ['accounts', 'entries']) {
      const [onSource, onTarget] = [await digest(source, shard.schema, table), await digest(target, shard.schema, table)];
      expect(onTarget, table).toEqual(onSource);
      expect(onSource.n).toBeGreaterThan(0);
    }
    const progress = await streamProgress(pools, { source, target }, shard, names);
    expect(progress.rowsCopied).toBeGreaterThan(0);
    expect(progress.tablesCopied).toBe(2);
    expect(progress.bytesCopied).toBeGreaterThan(0);
    expect(progress.lagBytes).toBeGreaterThanOrEqual(0);

    await stopStreaming(pools, { source, target }, names);
    await stopStreaming(pools, { source, target }, names); // idempotent
    await noLeftovers();
    const before = await digest(source, shard.schema, 'accounts');
    await dropTargetShard(catalog.pool, pools, target, shard);
    const { rows } = await pools.get(target.dsn).query('select 1 from pg_namespace where nspname = $1', [shard.schema]);
    expect(rows).toHaveLength(0);
    expect(await digest(source, shard.schema, 'accounts')).toEqual(before); // the source is as it was
    // The compensation never drops the copy the catalog points at.
    await expect(dropTargetShard(catalog.pool, pools, source, shard)).rejects.toThrow(/is placed on/);
  });

  it('streams only the rows of a hash range when given a row filter (the split’s half)', async () => {
    const { shard, source, target } = await shardOn('accounts', 1);
    const names = movementNames(uniqueName('split').replace(/[^a-z0-9_]/g, '_'));
    const { rows } = await catalog.pool.query<{ lo: string; hi: string }>('select hash_min::text as lo, hash_max::text as hi from shardcast.shards where id = $1', [
      shard.shardId,
    ]);
    const mid = (BigInt(rows[0]!.lo) + BigInt(rows[0]!.hi)) / 2n;
    const key = (table: string): string => (table === 'accounts' ? 'id' : 'account_id');
    const lowerHalf = (table: string): string => `hashint8extended(${key(table)}, 0) <= ${mid}`;
    await prepareTarget(pools, target, shard);
    await startStreaming(pools, { source, target }, shard, names, { rowFilter: lowerHalf });
    await waitFor('initial copy', async () => (await streamProgress(pools, { source, target }, shard, names)).tablesReady === 2);
    await pools.get(source.dsn).query(`update ${quoteIdent(shard.schema)}.accounts set balance = balance * 2`);
    const mark = await bumpWatermark(pools, source, names);
    await waitFor('target to apply every write before the watermark', () => targetHasWatermark(pools, target, names, mark));
    for (const table of ['accounts', 'entries']) {
      const expected = await digest(source, shard.schema, table, lowerHalf(table));
      const total = await digest(source, shard.schema, table);
      expect(await digest(target, shard.schema, table), table).toEqual(expected);
      expect(expected.n).toBeGreaterThan(0);
      expect(expected.n).toBeLessThan(total.n);
    }
    await stopStreaming(pools, { source, target }, names);
    await dropTargetShard(catalog.pool, pools, target, shard);
    await noLeftovers();
  });

  it('refuses a shard with a table that has no primary key before creating anything', async () => {
    const { shard, source, target } = await shardOn('notes', 0);
    const attempt = assertMovable(pools, source, shard);
    await expect(attempt).rejects.toBeInstanceOf(InvalidInputError);
    await expect(attempt).rejects.toThrow(/table notes has no primary key \(nor a replica identity\)/);
    const { rows } = await pools.get(target.dsn).query('select 1 from pg_namespace where nspname = $1', [shard.schema]);
    expect(rows).toHaveLength(0);
    await noLeftovers();
  });

  it('names movement objects safely', () => {
    expect(movementNames('m_42')).toEqual({ publication: 'sc_mv_m_42', subscription: 'sc_mv_m_42', slot: 'sc_mv_m_42', gid: 'sc_mv_m_42' });
    expect(() => movementNames('x"; drop')).toThrow(InvalidInputError);
    expect(() => movementNames('')).toThrow(/1–40 lower-case letters/);
  });
});
