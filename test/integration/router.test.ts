import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable } from '../../client/index.js';
import { InvalidInputError, InvalidShardKeyError, KeyOutOfRangeError, SHARD_FENCED_SQLSTATE, UnknownTableError } from '../../src/errors.js';
import { createRouter, type Router } from '../../src/router/router.js';
import { quoteIdent } from '../../src/sql/ident.js';
import { adminQuery, createTestCatalog, startTestWorker, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const ROWS = 300;

let catalog: TestCatalog;
let worker: TestWorker;
let router: Router;

beforeAll(async () => {
  catalog = await createTestCatalog('router');
  worker = await startTestWorker(catalog.catalogUrl);
  await createDistributedTable(worker.options, {
    name: 'accounts',
    columns: 'id bigint primary key, owner text not null, balance bigint not null default 0',
    shardKey: 'id',
    shardCount: 6,
  });
  await createDistributedTable(worker.options, {
    name: 'tenants',
    columns: 'tenant int primary key, name text',
    shardKey: 'tenant',
    method: 'range',
    rangeBounds: ['0', '100', '1000'],
  });
  router = await createRouter({ catalogUrl: catalog.catalogUrl });
});

afterAll(async () => {
  await router?.close();
  await worker?.close();
  await catalog?.close();
});

interface ShardRow {
  shard_id: number;
  schema_name: string;
  node: string;
  hash_min: string;
  hash_max: string;
}

async function accountShards(): Promise<ShardRow[]> {
  const { rows } = await catalog.pool.query<ShardRow>(
    `select s.id::int as shard_id, s.schema_name, n.name as node, s.hash_min::text, s.hash_max::text
       from shardcast.shards s join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id
       join shardcast.distributed_tables t on t.group_id = s.group_id where t.name = 'accounts' order by s.hash_min`,
  );
  return rows;
}

/** Rows of `accounts` as the nodes themselves hold them, with the database's own hash of each key. */
async function rowsOnNodes(): Promise<Array<{ id: string; owner: string; balance: string; h: string; node: string; schema: string }>> {
  const all = [];
  for (const shard of await accountShards()) {
    const { rows } = await adminQuery(
      catalog.nodeUrl(shard.node),
      `select id::text, owner, balance::text, hashint8extended(id, 0)::text as h from ${quoteIdent(shard.schema_name)}.accounts`,
    );
    all.push(...rows.map((r) => ({ ...r, node: shard.node, schema: shard.schema_name })));
  }
  return all;
}

describe('router', () => {
  it('writes land on the shard and node the database itself hashes the key to', async () => {
    for (let id = 1; id <= ROWS; id++) {
      const result = await router.forKey('accounts', id).query('insert into accounts (id, owner, balance) values ($1, $2, $3)', [id, `owner-${id}`, id * 10]);
      expect(result.rowCount).toBe(1);
    }
    const shards = await accountShards();
    const rows = await rowsOnNodes();
    expect(rows).toHaveLength(ROWS);
    expect(new Set(rows.map((r) => r.id)).size).toBe(ROWS);
    for (const row of rows) {
      const shard = shards.find((s) => s.schema_name === row.schema)!;
      const h = BigInt(row.h);
      expect(h >= BigInt(shard.hash_min) && h <= BigInt(shard.hash_max), `id ${row.id} (hash ${h}) in ${shard.schema_name}`).toBe(true);
    }
    // Every node got some of the keys.
    expect(new Set(rows.map((r) => r.node))).toEqual(new Set(['node-1', 'node-2', 'node-3']));
  });

  it('reads, and transactions commit or roll back on the key’s shard', async () => {
    const read = await router.forKey('accounts', 42).query<{ owner: string; balance: string }>('select owner, balance from accounts where id = $1', [42]);
    expect(read.rows).toEqual([{ owner: 'owner-42', balance: '420' }]);
    // A key of another shard is not visible through this key's handle: the query runs in one shard only.
    const other = [...Array(ROWS).keys()].map((i) => i + 1).find((id) => router.forKey('accounts', id).route().shardId !== router.forKey('accounts', 42).route().shardId)!;
    const cross = await router.forKey('accounts', 42).query('select 1 from accounts where id = $1', [other]);
    expect(cross.rowCount).toBe(0);

    await router.forKey('accounts', 42).transaction(async (tx) => {
      await tx.query('update accounts set balance = balance - 100 where id = $1', [42]);
      await tx.query('update accounts set balance = balance + 1 where id = $1', [42]);
    });
    await expect(
      router.forKey('accounts', 42).transaction(async (tx) => {
        await tx.query('update accounts set balance = 0 where id = $1', [42]);
        throw new Error('changed my mind');
      }),
    ).rejects.toThrow('changed my mind');
    const after = await router.forKey('accounts', 42).query<{ balance: string }>('select balance from accounts where id = $1', [42]);
    expect(after.rows[0]!.balance).toBe('321');
  });

  it('scatter-gathers over every shard and merges the rows', async () => {
    const counts = await router.all<{ n: number }>('select count(*)::int as n from accounts');
    expect(counts.shards).toBe(6);
    expect(counts.rows).toHaveLength(6);
    expect(counts.rows.reduce((sum, r) => sum + r.n, 0)).toBe(ROWS);
    const rich = await router.all<{ id: string }>('select id from accounts where balance >= $1 order by id', [2900]);
    expect(rich.rows.map((r) => Number(r.id)).sort((a, b) => a - b)).toEqual([290, 291, 292, 293, 294, 295, 296, 297, 298, 299, 300]);
    const explicit = await router.all<{ n: number }>('select count(*)::int as n from "accounts"', [], { table: 'accounts' });
    expect(explicit.rows.reduce((sum, r) => sum + r.n, 0)).toBe(ROWS);
    await expect(router.all('select 1')).rejects.toThrow(/names no distributed table/);
  });

  it('routes range-sharded keys and refuses keys outside every range', async () => {
    for (const tenant of [0, 99, 100, 999]) {
      await router.forKey('tenants', tenant).query('insert into tenants values ($1, $2)', [tenant, `t${tenant}`]);
    }
    expect(router.forKey('tenants', 99).route().shardId).toBe(router.forKey('tenants', 0).route().shardId);
    expect(router.forKey('tenants', 100).route().shardId).not.toBe(router.forKey('tenants', 99).route().shardId);
    expect(() => router.forKey('tenants', 1000)).toThrow(KeyOutOfRangeError);
    expect(() => router.forKey('tenants', -1)).toThrow(/key "-1" is outside every shard range/);
    const total = await router.all<{ n: number }>('select count(*)::int as n from tenants');
    expect(total.rows.reduce((s, r) => s + r.n, 0)).toBe(4);
  });

  it('gives clear errors for bad input and changes nothing', async () => {
    await expect(router.forKey('no_such_table', 1).query('select 1')).rejects.toThrow(UnknownTableError);
    await expect(router.forKey('no_such_table', 1).query('select 1')).rejects.toThrow('unknown distributed table "no_such_table"');
    expect(() => router.forKey('accounts', 'abc')).toThrow(InvalidShardKeyError);
    expect(() => router.forKey('accounts', 'abc')).toThrow(/table "accounts": expected an integer key for a bigint shard key, got the string "abc"/);
    expect(() => router.forKey('accounts', 1.5)).toThrow(InvalidShardKeyError);
    expect(() => router.forKey('accounts', null)).toThrow(/got null/);
    expect(() => router.forKey('accounts', 2n ** 63n)).toThrow(/out of range for bigint/);
    expect(() => router.forKey('tenants', 'x;drop')).toThrow(InvalidShardKeyError);
    expect(() => router.forKey('', 1)).toThrow(InvalidInputError);
    const counts = await router.all<{ n: number }>('select count(*)::int as n from accounts');
    expect(counts.rows.reduce((s, r) => s + r.n, 0)).toBe(ROWS);
  });

  it('runs every statement in its shard’s schema, with prepared statements cached per connection', async () => {
    const small = await createRouter({ catalogUrl: catalog.catalogUrl, poolSize: 1, statementCacheSize: 2 });
    try {
      const keys = [...Array(60).keys()].map((i) => i + 1);
      for (let round = 0; round < 3; round++) {
        for (const id of keys) {
          const route = small.forKey('accounts', id).route();
          // current_schema() is evaluated at run time: the SET must have run even for a cached statement.
          const texts = ['select current_schema() as s', 'select current_schema() as s, $1::int as k', 'select current_schema() as s, 2 as two'];
          const text = texts[(id + round) % texts.length]!;
          const res = await small.forKey('accounts', id).query<{ s: string }>(text, text.includes('$1') ? [id] : []);
          expect(res.rows[0]!.s).toBe(route.schema);
        }
      }
      // The one connection holds at most 2 cached queries (plus one SET per schema).
      const held = await small.forKey('accounts', 1).query<{ name: string }>('select name from pg_prepared_statements');
      const queries = held.rows.filter((r) => r.name.startsWith('sc_q_'));
      expect(queries.length).toBeLessThanOrEqual(2);
      expect(held.rows.filter((r) => r.name.startsWith('sc_p_')).length).toBeGreaterThan(1);

      // Errors leave the connection usable: a statement that fails to parse, one that fails to run.
      await expect(small.forKey('accounts', 7).query('selec nonsense')).rejects.toMatchObject({ code: '42601' });
      await expect(small.forKey('accounts', 7).query('insert into accounts (id, owner) values ($1, $2)', [7, 'dup'])).rejects.toMatchObject({
        code: '23505',
      });
      await expect(small.forKey('accounts', 7).query('insert into accounts (id, owner) values ($1, $2)', [7, 'dup'])).rejects.toMatchObject({
        code: '23505',
      });
      const again = await small.forKey('accounts', 7).query<{ owner: string }>('select owner from accounts where id = $1', [7]);
      expect(again.rows).toEqual([{ owner: 'owner-7' }]);
    } finally {
      await small.close();
    }
  });

  it('survives a table changing shape under a cached plan', async () => {
    const cached = await createRouter({ catalogUrl: catalog.catalogUrl, poolSize: 1 });
    try {
      const before = await cached.forKey('accounts', 5).query('select * from accounts where id = $1', [5]);
      expect(Object.keys(before.rows[0]!)).toEqual(['id', 'owner', 'balance']);
      const shard = (await accountShards()).find((s) => s.schema_name === cached.forKey('accounts', 5).route().schema)!;
      await adminQuery(catalog.nodeUrl(shard.node), `alter table ${quoteIdent(shard.schema_name)}.accounts add column note text`);
      const after = await cached.forKey('accounts', 5).query('select * from accounts where id = $1', [5]);
      expect(Object.keys(after.rows[0]!)).toEqual(['id', 'owner', 'balance', 'note']);
      await adminQuery(catalog.nodeUrl(shard.node), `alter table ${quoteIdent(shard.schema_name)}.accounts drop column note`);
    } finally {
      await cached.close();
    }
  });

  it('sees another process’s map change within 1 s (NOTIFY)', async () => {
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      const before = router.mapVersion;
      const seen = new Promise<number>((resolve) => router.once('mapChanged', () => resolve(Date.now())));
      const committedAt = await changeMapInChildProcess(catalog.catalogUrl);
      const seenAt = await Promise.race([seen, new Promise<number>((_, reject) => setTimeout(() => reject(new Error('no map change seen in 5 s')), 5000))]);
      expect(router.mapVersion).toBeGreaterThan(before);
      delays.push(seenAt - committedAt);
    }
    console.log(`map change seen after ${delays.join(', ')} ms`);
    expect(Math.max(...delays)).toBeLessThan(1000);
  });

  it('without LISTEN, the periodic version check picks up a change', async () => {
    const polling = await createRouter({ catalogUrl: catalog.catalogUrl, listen: false, versionCheckIntervalMs: 200 });
    try {
      const before = polling.mapVersion;
      const seen = new Promise<number>((resolve) => polling.once('mapChanged', () => resolve(Date.now())));
      const committedAt = await changeMapInChildProcess(catalog.catalogUrl);
      const seenAt = await seen;
      expect(polling.mapVersion).toBeGreaterThan(before);
      expect(seenAt - committedAt).toBeLessThan(1000);
    } finally {
      await polling.close();
    }
  });

  it('listens again after its catalog connection is killed, and catches up on what it missed', async () => {
    const listener = await createRouter({ catalogUrl: catalog.catalogUrl, versionCheckIntervalMs: 0 });
    try {
      const { rows } = await catalog.pool.query<{ n: number }>(
        `select count(pg_terminate_backend(pid))::int as n from pg_stat_activity
          where application_name = 'shardcast-router-listen' and datname = current_database()`,
      );
      expect(rows[0]!.n).toBeGreaterThan(0);
      // A change while it is disconnected: seen once it has reconnected (it re-reads the version then).
      const before = listener.mapVersion;
      await changeMapInChildProcess(catalog.catalogUrl);
      await listener.waitForVersion(before + 1, 5000);
      // And a change after it is back: seen through NOTIFY again.
      const seen = new Promise<number>((resolve) => listener.once('mapChanged', () => resolve(Date.now())));
      const committedAt = await changeMapInChildProcess(catalog.catalogUrl);
      expect((await seen) - committedAt).toBeLessThan(1000);
    } finally {
      await listener.close();
    }
  });

  it('keeps answering while a shard is moved by hand, retrying fenced queries on the new placement', async () => {
    const shard = (await accountShards())[0]!;
    const target = ['node-1', 'node-2', 'node-3'].find((n) => n !== shard.node)!;
    const keys = [...Array(ROWS).keys()].map((i) => i + 1);
    const movingKeys = keys.filter((id) => router.forKey('accounts', id).route().shardId === shard.shard_id);
    expect(movingKeys.length).toBeGreaterThan(0);
    const expectedOwner = (id: number): string => `owner-${id}`;

    const retried: string[] = [];
    router.on('retried', (e: { code: string }) => retried.push(e.code));
    let stop = false;
    const errors: unknown[] = [];
    let reads = 0;
    const readers = Array.from({ length: 4 }, async (_, r) => {
      let i = r;
      while (!stop) {
        const id = movingKeys[i++ % movingKeys.length]!;
        try {
          const res = await router.forKey('accounts', id).query<{ owner: string }>('select owner from accounts where id = $1', [id]);
          if (res.rows[0]?.owner !== expectedOwner(id)) errors.push(new Error(`id ${id}: got ${JSON.stringify(res.rows)}`));
          reads++;
        } catch (err) {
          errors.push(err);
        }
      }
    });

    await sleep(200);
    await copyShard(shard, target);
    await fenceShard(shard);
    await sleep(300); // readers meet the fence and wait for the map to change
    await catalog.pool.query(`update shardcast.placements set node_id = (select id from shardcast.nodes where name = $1) where shard_id = $2`, [target, shard.shard_id]);
    await sleep(500);
    await adminQuery(catalog.nodeUrl(shard.node), `drop schema ${quoteIdent(shard.schema_name)} cascade`);
    await sleep(300);
    stop = true;
    await Promise.all(readers);

    expect(errors).toEqual([]);
    expect(reads).toBeGreaterThan(20);
    expect(retried.filter((c) => c === SHARD_FENCED_SQLSTATE).length).toBeGreaterThan(0);
    expect(router.forKey('accounts', movingKeys[0]!).route().nodeName).toBe(target);
  });

  it('recovers from a stale map without NOTIFY: a missing shard schema triggers one refresh and retry', async () => {
    const stale = await createRouter({ catalogUrl: catalog.catalogUrl, listen: false, versionCheckIntervalMs: 0 });
    try {
      const shard = (await accountShards())[1]!;
      const target = ['node-1', 'node-2', 'node-3'].find((n) => n !== shard.node)!;
      const id = [...Array(ROWS).keys()].map((i) => i + 1).find((k) => stale.forKey('accounts', k).route().shardId === shard.shard_id)!;
      const versionBefore = stale.mapVersion;
      await copyShard(shard, target);
      await catalog.pool.query(`update shardcast.placements set node_id = (select id from shardcast.nodes where name = $1) where shard_id = $2`, [target, shard.shard_id]);
      await adminQuery(catalog.nodeUrl(shard.node), `drop schema ${quoteIdent(shard.schema_name)} cascade`);
      expect(stale.mapVersion).toBe(versionBefore); // nothing told it
      const retried: string[] = [];
      stale.on('retried', (e: { code: string }) => retried.push(e.code));
      const res = await stale.forKey('accounts', id).query<{ owner: string }>('select owner from accounts where id = $1', [id]);
      expect(res.rows).toEqual([{ owner: `owner-${id}` }]);
      expect(retried).toEqual(['42P01']);
      expect(stale.forKey('accounts', id).route().nodeName).toBe(target);
      // A relation that is missing for real is an error, once, not a loop.
      await expect(stale.forKey('accounts', id).query('select * from not_a_table')).rejects.toMatchObject({ code: '42P01' });
    } finally {
      await stale.close();
    }
  });
});

/** Copies one accounts shard to another node: schema, table, rows. */
async function copyShard(shard: ShardRow, target: string): Promise<void> {
  const { rows } = await adminQuery(catalog.nodeUrl(shard.node), `select id, owner, balance from ${quoteIdent(shard.schema_name)}.accounts order by id`);
  const schema = quoteIdent(shard.schema_name);
  await adminQuery(
    catalog.nodeUrl(target),
    `create schema ${schema}; create table ${schema}.accounts (id bigint primary key, owner text not null, balance bigint not null default 0)`,
  );
  await adminQuery(catalog.nodeUrl(target), `insert into ${schema}.accounts select * from unnest($1::bigint[], $2::text[], $3::bigint[])`, [
    rows.map((r) => r.id),
    rows.map((r) => r.owner),
    rows.map((r) => r.balance),
  ]);
}

/** What a cutover does to the source: the shard's names now raise the fence error. */
async function fenceShard(shard: ShardRow): Promise<void> {
  const schema = quoteIdent(shard.schema_name);
  await adminQuery(
    catalog.nodeUrl(shard.node),
    `alter table ${schema}.accounts rename to accounts_fenced;
     create function ${schema}.fenced() returns boolean language plpgsql as
       $$ begin raise exception 'shard ${shard.schema_name} has moved' using errcode = '${SHARD_FENCED_SQLSTATE}'; end $$;
     create view ${schema}.accounts as select * from ${schema}.accounts_fenced where ${schema}.fenced();`,
  );
}

/** Another process changes the shard map and reports when its transaction committed. */
function changeMapInChildProcess(catalogUrl: string): Promise<number> {
  const script = `
    import pg from 'pg';
    const client = new pg.Client({ connectionString: process.env.CATALOG_URL });
    await client.connect();
    await client.query("update shardcast.nodes set capacity = capacity + 1 where name = 'node-1'");
    console.log(JSON.stringify({ committedAt: Date.now() }));
    await client.end();`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, env: { ...process.env, CATALOG_URL: catalogUrl } });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`child exited ${code}: ${err}`));
      resolve(JSON.parse(out.trim()).committedAt as number);
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
