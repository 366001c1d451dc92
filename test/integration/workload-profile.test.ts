import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable } from '../../client/index.js';
import { migrate } from '../../src/catalog/migrate.js';
import { ensureNodes } from '../../src/catalog/nodes.js';
import { resetFailpoints } from '../../src/failpoints.js';
import { pruneWorkloadProfile } from '../../src/profiling/hot.js';
import { freePort, PostgresServer } from '../../src/fleet/postgres-server.js';
import { createRouter, type Router } from '../../src/router/router.js';
import { createTestCatalog, fleet, runCli, startTestWorker, uniqueName, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

/**
 * The workload profile end to end: a router created with `profile` reduces each statement to its
 * template, counts shards and shard keys, and flushes to the catalog; `shardcast hot` reads it back.
 */

let catalog: TestCatalog;
let worker: TestWorker;
const SHARDS = 4;

beforeAll(async () => {
  catalog = await createTestCatalog('profile');
  worker = await startTestWorker(catalog.catalogUrl);
  await createDistributedTable(worker.options, { name: 'items', columns: 'id bigint primary key, v text', shardKey: 'id', shardCount: SHARDS, nodes: ['node-1', 'node-2'] });
  const router = await createRouter({ catalogUrl: catalog.catalogUrl });
  try {
    for (let k = 1; k <= 200; k++) await router.forKey('items', k).query('insert into items values ($1, $2)', [k, `v${k}`]);
  } finally {
    await router.close();
  }
});

afterAll(async () => {
  await worker?.close();
  await catalog?.close();
});

async function templates(pool: pg.Pool): Promise<Array<{ query: string; kind: string; calls: number; rows: number; single: number; scatter: number; features: string }>> {
  const { rows } = await pool.query(
    `select query, kind, calls::int, rows::int, single_shard::int as single, scatter::int, features::text
       from shardcast_stats.query_templates order by calls desc, query`,
  );
  return rows;
}

async function sum(pool: pg.Pool, sql: string): Promise<number> {
  return Number((await pool.query<{ n: string | null }>(sql)).rows[0]!.n ?? 0);
}

describe('workload profile', () => {
  it('a generated workload: templates grouped, single-shard and scatter counted, the planted hot key on top with about its true count; `shardcast hot` shows it', { timeout: 120_000 }, async () => {
    const router = await createRouter({ catalogUrl: catalog.catalogUrl, profile: { flushIntervalMs: 3_600_000 } });
    const errors: Error[] = [];
    router.on('catalogError', (e: Error) => errors.push(e));
    const HOT = 77;
    let seed = 42;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return 1 + Math.floor((seed / 2147483648) * n);
    };
    let point = 0;
    let hotCalls = 0;
    let inRows = 0;
    try {
      for (let i = 0; i < 1200; i++) {
        const key = i % 4 === 0 ? HOT : rnd(200);
        if (key === HOT) hotCalls++;
        point++;
        // Parameters and constants alike: one template.
        if (i % 2) await router.forKey('items', key).query('select * from items where id = $1', [key]);
        else await router.forKey('items', key).query(`select * from items where id = ${key}`);
      }
      for (let i = 0; i < 30; i++) await router.forKey('items', 5).query('select * from items where id in (5, 6)');
      // Sent to key 5's shard only: 6 is found there only if it lives there too.
      inRows = 30 * (router.shardMap.route('items', 6).shardId === router.shardMap.route('items', 5).shardId ? 2 : 1);
      for (let i = 0; i < 12; i++) await router.all('select count(*) from items');
      await router.forKey('items', HOT).transaction(async (tx) => {
        await tx.query('update items set v = $2 where id = $1', [HOT, 'secret-value']);
        await tx.query("select * from items where v = 'another-secret'");
      });
      hotCalls++;
      await router.flushProfile();
    } finally {
      await router.close();
    }
    expect(errors).toEqual([]);
    const t = await templates(catalog.pool);
    expect(t.map(({ features: _, ...x }) => x)).toEqual([
      { query: 'select * from items where id = $1', kind: 'select', calls: point, rows: point, single: point, scatter: 0 },
      { query: 'select * from items where id in ($1, $2)', kind: 'select', calls: 30, rows: inRows, single: 30, scatter: 0 },
      { query: 'select count(*) from items', kind: 'select', calls: 12, rows: 12 * SHARDS, single: 0, scatter: 12 },
      { query: 'select * from items where v = $1', kind: 'select', calls: 1, rows: 0, single: 1, scatter: 0 },
      { query: 'update items set v = $2 where id = $1', kind: 'update', calls: 1, rows: 1, single: 1, scatter: 0 },
    ]);
    // No statement's parameter or constant is stored (only shard keys, in hot_keys).
    const { rows: dump } = await catalog.pool.query<{ t: string }>('select json_agg(q)::text as t from shardcast_stats.query_templates q');
    expect(dump[0]!.t).not.toMatch(/secret/);
    // The per-minute series adds up to the same calls.
    expect(await sum(catalog.pool, 'select sum(calls)::text as n from shardcast_stats.template_calls')).toBe(point + 30 + 12 + 2);
    // Accesses: one per keyed statement or transaction, one per shard for each scatter.
    const keyed = point + 30 + 1;
    expect(await sum(catalog.pool, "select sum(accesses)::text as n from shardcast_stats.key_accesses where table_name = 'items'")).toBe(keyed);
    expect(await sum(catalog.pool, "select sum(accesses)::text as n from shardcast_stats.shard_accesses where table_name = 'items'")).toBe(keyed + 12 * SHARDS);
    const { rows: hot } = await catalog.pool.query<{ key: string; count: string; lower_bound: string }>(
      "select key, count::text as count, lower_bound::text as lower_bound from shardcast_stats.hot_keys h where table_name = 'items' order by h.count desc, key limit 2",
    );
    expect(hot[0]!.key).toBe(String(HOT));
    expect(Number(hot[0]!.count)).toBeGreaterThanOrEqual(hotCalls);
    expect(Number(hot[0]!.count)).toBeLessThanOrEqual(hotCalls + Math.ceil((Math.E / 4096) * keyed));
    expect(Number(hot[1]!.count)).toBeLessThan(60);

    const env = { SHARDCAST_CATALOG_URL: catalog.catalogUrl };
    const json = await runCli(['hot', '--table', 'items', '--since', '1h', '--json', '--top', '3'], env);
    expect(json.stderr).toBe('');
    expect(json.code).toBe(0);
    const report = JSON.parse(json.stdout) as { tables: Array<{ table: string; keyAccesses: number; shardAccesses: number; shards: Array<{ share: number }>; keys: Array<{ key: string; count: number; share: number }> }>; templates: Array<{ query: string; calls: number }> };
    expect(report.tables).toHaveLength(1);
    const items = report.tables[0]!;
    expect(items).toMatchObject({ table: 'items', keyAccesses: keyed, shardAccesses: keyed + 12 * SHARDS });
    expect(items.keys[0]).toMatchObject({ key: '77' });
    expect(items.keys[0]!.share).toBeCloseTo(hotCalls / keyed, 2);
    expect(items.shards).toHaveLength(3);
    expect(items.shards.map((s) => s.share).every((s, i, a) => i === 0 || s <= a[i - 1]!)).toBe(true);
    expect(report.templates.map((q) => [q.query, q.calls])).toEqual([
      ['select * from items where id = $1', point],
      ['select * from items where id in ($1, $2)', 30],
      ['select count(*) from items', 12],
    ]);
    const text = await runCli(['hot'], env);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain(`items: ${keyed + 12 * SHARDS} shard accesses, ${keyed} by key`);
    expect(text.stdout).toMatch(/\n77 +\d+/);

    const dir = mkdtempSync(path.join(tmpdir(), 'hot-'));
    try {
      const png = path.join(dir, 'heat.png');
      const drawn = await runCli(['hot', '--table', 'items', '--png', png], env);
      expect(drawn.code).toBe(0);
      expect(drawn.stdout).toMatch(new RegExp(`wrote ${png} \\(${SHARDS} shard\\(s\\) × 1 minute\\(s\\)\\)`));
      expect(readFileSync(png).subarray(1, 4).toString()).toBe('PNG');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }

    for (const [args, message] of [
      [['hot', '--png', 'x.png'], 'shardcast: error: --png draws one table: give --table'],
      [['hot', '--table', 'nope'], 'shardcast: error: unknown distributed table "nope"'],
      [['hot', '--since', '5x'], "shardcast: error: option '--since <duration>' argument '5x' is invalid. expected a duration such as 30s, 15m, 2h or 7d (up to 366d) (see --help)"],
      [['hot', '--since', '0s'], "shardcast: error: option '--since <duration>' argument '0s' is invalid. expected a duration such as 30s, 15m, 2h or 7d (up to 366d) (see --help)"],
    ] as const) {
      const bad = await runCli([...args], env);
      expect(bad.code, args.join(' ')).not.toBe(0);
      expect(bad.stderr.trim()).toBe(message);
      expect(bad.stdout).toBe('');
    }
  });

  it('a flush whose commit reply is lost is not counted twice; a flush that fails inside the transaction writes nothing and is written later, once', { timeout: 60_000 }, async () => {
    await catalog.pool.query('truncate shardcast_stats.query_templates, shardcast_stats.template_calls, shardcast_stats.hot_keys, shardcast_stats.key_accesses, shardcast_stats.shard_accesses');
    const router = await createRouter({ catalogUrl: catalog.catalogUrl, profile: { flushIntervalMs: 3_600_000 } });
    const errors: Error[] = [];
    router.on('catalogError', (e: Error) => errors.push(e));
    const calls = () => sum(catalog.pool, 'select sum(calls)::text as n from shardcast_stats.query_templates');
    const keys = () => sum(catalog.pool, "select sum(count)::text as n from shardcast_stats.hot_keys where key = '9'");
    try {
      for (let i = 0; i < 5; i++) await router.forKey('items', 9).query('select v from items where id = $1', [9]);
      process.env.SHARDCAST_FAILPOINTS = 'profile.flush.after-commit=throw*1';
      resetFailpoints();
      try {
        await expect(router.flushProfile()).rejects.toThrow('failpoint profile.flush.after-commit');
      } finally {
        delete process.env.SHARDCAST_FAILPOINTS;
      }
      expect(await calls()).toBe(5); // committed, though the router was not told
      for (let i = 0; i < 3; i++) await router.forKey('items', 9).query('select v from items where id = $1', [9]);
      await router.flushProfile(); // the batch again under its id: skipped; then the 3 new ones
      expect(await calls()).toBe(8);
      expect(await keys()).toBe(8);

      // Inside the transaction: the last table written is missing, so every earlier write is undone.
      for (let i = 0; i < 4; i++) await router.forKey('items', 9).query('select v from items where id = $1', [9]);
      await catalog.pool.query('alter table shardcast_stats.hot_keys rename to hot_keys_away');
      try {
        await expect(router.flushProfile()).rejects.toThrow('hot_keys');
      } finally {
        await catalog.pool.query('alter table shardcast_stats.hot_keys_away rename to hot_keys');
      }
      expect(await calls()).toBe(8);
      for (let i = 0; i < 2; i++) await router.forKey('items', 9).query('select v from items where id = $1', [9]);
    } finally {
      await router.close(); // flushes the failed batch, then the 2 new statements
    }
    expect(await calls()).toBe(14);
    expect(await keys()).toBe(14);
    expect(errors.map((e) => e.message)).toEqual([expect.stringContaining('recording the workload profile'), expect.stringContaining('recording the workload profile')]);
  });

  it('with the catalog stopped the counts are kept, the router goes on serving, and the flush after it is back records them exactly once', { timeout: 120_000 }, async () => {
    const server = new PostgresServer({ name: 'profile-catalog', dataDir: path.join(fleet().baseDir, uniqueName('profile_catalog')), port: await freePort(), user: 'postgres', password: fleet().password });
    await server.start();
    await server.ensureDatabase('shardcast');
    const pool = new pg.Pool({ connectionString: server.url('shardcast'), max: 2 });
    pool.on('error', () => undefined); // its idle connections die with the server
    let own: TestWorker | undefined;
    let router: Router | undefined;
    try {
      const client = await pool.connect();
      try {
        await migrate(client);
      } finally {
        client.release();
      }
      await ensureNodes(pool, [{ name: 'node-3', dsn: catalog.nodeUrl('node-3') }]);
      own = await startTestWorker(server.url('shardcast'));
      await createDistributedTable(own.options, { name: 'orders', columns: 'id bigint primary key, v text', shardKey: 'id', shardCount: 2, nodes: ['node-3'] });
      router = await createRouter({ catalogUrl: server.url('shardcast'), profile: { flushIntervalMs: 3_600_000 }, versionCheckIntervalMs: 0, listen: false });
      const errors: Error[] = [];
      router.on('catalogError', (e: Error) => errors.push(e));
      for (let i = 0; i < 6; i++) await router.forKey('orders', i).query('select v from orders where id = $1', [i]);
      await server.stop(); // for real: the postmaster shuts down
      await expect(router.flushProfile()).rejects.toThrow();
      expect(errors.map((e) => e.message)).toEqual([expect.stringContaining('recording the workload profile')]);
      for (let i = 0; i < 4; i++) await router.forKey('orders', 1).query('select v from orders where id = $1', [1]); // served from the cached map
      await server.start();
      await router.flushProfile();
      await router.flushProfile(); // nothing left
      const { rows } = await pool.query<{ calls: number }>('select calls::int from shardcast_stats.query_templates');
      expect(rows).toEqual([{ calls: 10 }]);
      expect(await sum(pool, "select sum(count)::text as n from shardcast_stats.hot_keys where key = '1'")).toBe(5);
      expect(await sum(pool, 'select sum(accesses)::text as n from shardcast_stats.shard_accesses')).toBe(10);
      expect(await sum(pool, 'select count(*)::text as n from shardcast_stats.profile_flushes')).toBe(2);
    } finally {
      await router?.close();
      await own?.close();
      await pool.end();
      await server.stop();
    }
  });

  it('the profile is pruned after the retention days, recent rows kept', async () => {
    await catalog.pool.query(`insert into shardcast_stats.key_accesses values ('items', now() - interval '40 days', 5), ('items', now(), 3)`);
    await catalog.pool.query(`insert into shardcast_stats.hot_keys values ('items', now() - interval '40 days', 'old', 5, 5)`);
    expect(await pruneWorkloadProfile(catalog.pool, 30)).toBeGreaterThanOrEqual(2);
    expect(await sum(catalog.pool, "select count(*)::text as n from shardcast_stats.hot_keys where key = 'old'")).toBe(0);
    expect(await sum(catalog.pool, "select count(*)::text as n from shardcast_stats.key_accesses where bucket < now() - interval '30 days'")).toBe(0);
    expect(await sum(catalog.pool, "select count(*)::text as n from shardcast_stats.key_accesses where bucket >= now() - interval '1 day'")).toBeGreaterThan(0);
  });
});
