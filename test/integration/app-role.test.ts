import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable, moveResult, startMove, startSplit } from '../../client/index.js';
import { appCatalogUrl, provisionAppRole, provisionAppRoleOnce, type AppLogin } from '../../src/catalog/app-role.js';
import { NodePools } from '../../src/catalog/node-pools.js';
import { createRouter, type Router } from '../../src/router/router.js';
import { adminQuery, createTestCatalog, startTestWorker, uniqueName, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

/**
 * Least privilege: the application role made by `up`/`nodes add` (provisionAppRole) may read and
 * write shard rows and read the shard map, nothing else; the router works through it, also on
 * shard schemas created after the role (a table created later, a move's target, a split's halves).
 */

let catalog: TestCatalog;
let worker: TestWorker;
let router: Router;
let login: AppLogin;
const pools = new NodePools({ max: 2 });

function asApp(url: string): string {
  const u = new URL(url);
  u.username = login.user;
  u.password = login.password;
  u.search = '';
  return u.toString();
}

async function appQuery(url: string, sql: string): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: asApp(url) });
  await client.connect();
  try {
    return await client.query(sql);
  } finally {
    await client.end();
  }
}

/** The SQLSTATE an application-role statement fails with (undefined: it succeeded). */
async function refusal(url: string, sql: string): Promise<string | undefined> {
  try {
    await appQuery(url, sql);
    return undefined;
  } catch (err) {
    return (err as { code?: string }).code;
  }
}

async function placements(table: string): Promise<Array<{ id: number; schema: string; node: string }>> {
  const { rows } = await catalog.pool.query<{ id: number; schema: string; node: string }>(
    `select s.id::int as id, s.schema_name as schema, n.name as node from shardcast.shards s
       join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id
       join shardcast.distributed_tables t on t.group_id = s.group_id where t.name = $1 order by s.id`,
    [table],
  );
  return rows;
}

beforeAll(async () => {
  catalog = await createTestCatalog('approle');
  worker = await startTestWorker(catalog.catalogUrl);
  await createDistributedTable(worker.options, {
    name: 'accounts',
    columns: 'id bigint primary key, owner text not null, balance bigint not null default 0',
    shardKey: 'id',
    shardCount: 3,
  });
  // A unique role per run: roles are shared by all databases of a server (the fleet's other test files).
  login = { user: uniqueName('app'), password: randomBytes(18).toString('base64url') };
  const { failed } = await provisionAppRole(catalog.pool, pools, catalog.nodes, login);
  expect(failed).toEqual([]);
  // After the role: a table whose column takes a sequence, in the group's existing schemas.
  await createDistributedTable(worker.options, {
    name: 'entries',
    columns: 'account bigint not null, n bigserial, note text, primary key (account, n)',
    shardKey: 'account',
    colocateWith: 'accounts',
  });
  router = await createRouter({ catalogUrl: appCatalogUrl(catalog.catalogUrl, login), versionCheckIntervalMs: 200 });
}, 120_000);

afterAll(async () => {
  await router?.close();
  await worker?.close();
  await pools.end();
  await catalog?.close();
});

describe('the application role', () => {
  it('is provisioned again without error (a second up, through the helper up and nodes add use), and is an ordinary role', async () => {
    expect((await provisionAppRoleOnce(catalog.pool, login, catalog.nodes, { applicationName: 'shardcast-test' })).failed).toEqual([]);
    for (const url of [catalog.catalogUrl, ...catalog.nodes.map((n) => n.dsn)]) {
      const { rows } = await adminQuery(url, 'select rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls from pg_roles where rolname = $1', [login.user]);
      expect(rows).toEqual([{ rolsuper: false, rolcreatedb: false, rolcreaterole: false, rolreplication: false, rolbypassrls: false }]);
    }
  });

  it('serves every router feature: forKey reads and writes, sequences, transactions, all()', async () => {
    for (let id = 1; id <= 60; id++) await router.forKey('accounts', id).query('insert into accounts (id, owner, balance) values ($1, $2, 100)', [id, `o${id}`]);
    for (let id = 1; id <= 60; id += 7) await router.forKey('entries', id).query('insert into entries (account, note) values ($1, $2) returning n', [id, 'opened']);
    await router.forKey('accounts', 5).transaction(async (tx) => {
      await tx.query('update accounts set balance = balance - 10 where id = $1', [5]);
      await tx.query('insert into entries (account, note) values ($1, $2)', [5, 'debit']);
    });
    const one = await router.forKey('accounts', 5).query<{ balance: string }>('select balance from accounts where id = $1', [5]);
    expect(one.rows).toEqual([{ balance: '90' }]);
    const all = await router.all<{ n: string; total: string }>('select count(*) as n, sum(balance) as total from accounts');
    expect(all.shards).toBe(3);
    expect(all.rows.reduce((s, r) => s + Number(r.n), 0)).toBe(60);
    expect(all.rows.reduce((s, r) => s + Number(r.total), 0)).toBe(5990);
    const entries = await router.all<{ n: string }>('select count(*) as n from entries');
    expect(entries.rows.reduce((s, r) => s + Number(r.n), 0)).toBe(10);
    await router.forKey('accounts', 60).query('delete from accounts where id = $1', [60]);
  });

  it("writes its region counts and workload profile to the catalog, and reads no other statistics", async () => {
    const profiled = await createRouter({ catalogUrl: appCatalogUrl(catalog.catalogUrl, login), region: 'eu', profile: { flushIntervalMs: 3_600_000 } });
    const errors: unknown[] = [];
    profiled.on('catalogError', (err) => errors.push(err));
    try {
      for (let id = 1; id <= 20; id++) await profiled.forKey('accounts', id).query('select balance from accounts where id = $1', [id]);
      await profiled.flushProfile();
      await profiled.flushRegionAccesses();
    } finally {
      await profiled.close();
    }
    expect(errors).toEqual([]);
    const { rows } = await catalog.pool.query<{ calls: number }>("select coalesce(sum(calls), 0)::int as calls from shardcast_stats.template_calls");
    expect(rows[0]!.calls).toBeGreaterThanOrEqual(20);
    const { rows: regions } = await catalog.pool.query<{ n: number }>("select coalesce(sum(accesses), 0)::int as n from shardcast_stats.shard_region_accesses where region = 'eu'");
    expect(regions[0]!.n).toBeGreaterThanOrEqual(20);
    expect(await refusal(catalog.catalogUrl, 'select * from shardcast_stats.node_samples')).toBe('42501');
    expect(await refusal(catalog.catalogUrl, 'delete from shardcast_stats.query_templates')).toBe('42501');
  });

  it('cannot create, drop or alter tables, nor create schemas, on the nodes', async () => {
    const [shard] = await placements('accounts');
    const node = catalog.nodeUrl(shard!.node);
    expect(await refusal(node, `create table ${shard!.schema}.evil (x int)`)).toBe('42501');
    expect(await refusal(node, 'create table public.evil (x int)')).toBe('42501');
    expect(await refusal(node, `drop table ${shard!.schema}.accounts`)).toBe('42501');
    expect(await refusal(node, `alter table ${shard!.schema}.accounts add column x int`)).toBe('42501');
    expect(await refusal(node, `truncate ${shard!.schema}.accounts`)).toBe('42501');
    expect(await refusal(node, 'create schema evil')).toBe('42501');
    expect(await refusal(node, `create index on ${shard!.schema}.accounts (owner)`)).toBe('42501');
  });

  it("cannot read the catalog's internals (movements, the nodes' DSNs) nor change the map", async () => {
    expect(await refusal(catalog.catalogUrl, 'select * from shardcast.movements')).toBe('42501');
    expect(await refusal(catalog.catalogUrl, 'select dsn from shardcast.nodes')).toBe('42501');
    expect(await refusal(catalog.catalogUrl, 'select 1 from shardcast_meta.migrations')).toBe('42501');
    expect(await refusal(catalog.catalogUrl, 'update shardcast.placements set node_id = node_id')).toBe('42501');
    expect(await refusal(catalog.catalogUrl, 'create schema evil')).toBe('42501');
    expect(await refusal(catalog.catalogUrl, 'create table shardcast.evil (x int)')).toBe('42501');
    // What it reads of the nodes: addresses without credentials.
    const { rows } = await appQuery(catalog.catalogUrl, 'select dsn from shardcast.node_endpoints order by id');
    expect(rows).toHaveLength(3);
    for (const { dsn } of rows as Array<{ dsn: string }>) {
      expect(dsn).not.toContain('@');
      expect(dsn).not.toContain('shardcast-test');
      expect(new URL(dsn).username).toBe('');
    }
    // Every form of credential leaves the DSN; other parameters stay.
    await catalog.pool.query(
      "insert into shardcast.nodes (name, dsn, state) values ('ghost', 'postgres://admin:p%40ss@ghost:5432/db?passfile=/x&sslmode=verify-full&passwordenv=Y&user=u&password=p', 'standby')",
    );
    try {
      const ghost = await appQuery(catalog.catalogUrl, "select dsn from shardcast.node_endpoints where name = 'ghost'");
      expect(ghost.rows).toEqual([{ dsn: 'postgres://ghost:5432/db?sslmode=verify-full' }]);
    } finally {
      await catalog.pool.query("delete from shardcast.nodes where name = 'ghost'");
    }
  });

  it('keeps working on a schema a move creates after the grants, and cannot read the movement schema', async () => {
    const [shard] = await placements('accounts');
    const target = catalog.nodes.find((n) => n.name !== shard!.node)!.name;
    const keys = [...Array(60).keys()].map((i) => i + 1).filter((k) => router.forKey('accounts', k).route().shardId === shard!.id);
    expect(keys.length).toBeGreaterThan(0);
    const result = await moveResult(await startMove(worker.options, { shardId: shard!.id, targetNode: target, graceSeconds: 0, pollSeconds: 0.2 }));
    expect(result.target).toBe(target);
    const routed = router.forKey('accounts', keys[0]!);
    expect(routed.route().nodeName).toBe(target);
    await routed.query('update accounts set balance = balance + 1 where id = $1', [keys[0]]);
    await router.forKey('entries', keys[0]!).query('insert into entries (account, note) values ($1, $2)', [keys[0], 'after move']);
    const back = await router.forKey('accounts', keys[0]!).query<{ balance: string }>('select balance from accounts where id = $1', [keys[0]]);
    expect(Number(back.rows[0]!.balance)).toBeGreaterThan(0);
    // The movement's watermark table on the source: Shardcast's, not the application's.
    const watermarks = await adminQuery(catalog.nodeUrl(shard!.node), "select 1 from pg_namespace where nspname = 'sc_movement'");
    expect(watermarks.rowCount).toBe(1);
    expect(await refusal(catalog.nodeUrl(shard!.node), 'select * from sc_movement.watermarks')).toBe('42501');
  });

  it('keeps working on the new schemas of a split', async () => {
    const shard = (await placements('accounts'))[1]!;
    const others = catalog.nodes.map((n) => n.name).filter((n) => n !== shard.node);
    const result = await moveResult(await startSplit(worker.options, { shardId: shard.id, targetNodes: [others[0]!, shard.node], graceSeconds: 0, pollSeconds: 0.2 }));
    expect(result.shards).toHaveLength(2);
    const after = await placements('accounts');
    for (const id of result.shards) expect(after.map((p) => p.id)).toContain(id);
    const all = await router.all<{ n: string }>('select count(*) as n from accounts');
    expect(all.rows.reduce((s, r) => s + Number(r.n), 0)).toBe(59);
    for (let id = 1; id < 60; id++) {
      const r = router.forKey('accounts', id);
      if (!result.shards.includes(r.route().shardId)) continue;
      await r.query('update accounts set balance = balance + 1 where id = $1', [id]);
      await router.forKey('entries', id).query('insert into entries (account, note) values ($1, $2)', [id, 'after split']);
    }
  });
});
