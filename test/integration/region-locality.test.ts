import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable } from '../../client/index.js';
import { NodePools } from '../../src/catalog/node-pools.js';
import { listNodes, setNodeCapacity } from '../../src/catalog/nodes.js';
import { gatherPlanInput } from '../../src/planning/inputs.js';
import { planRebalance } from '../../src/planning/planner.js';
import type { MoveAction } from '../../src/planning/types.js';
import { ensurePartitions } from '../../src/profiling/partitions.js';
import { regionShares } from '../../src/profiling/region-accesses.js';
import { createRouter } from '../../src/router/router.js';
import { writeShardForecasts } from '../helpers/forecasts.js';
import { createTestCatalog, startTestWorker, until, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

/**
 * Locality end to end: routers created with a `region` count the statements they send to each shard
 * and flush the counts to the catalog; the planner's input reads each shard's shares; a node's region
 * is set with `shardcast nodes set-region`; a hot shard reached only from eu moves to the eu node.
 */

const CLI = path.resolve(import.meta.dirname, '../../bin/shardcast.js');
let catalog: TestCatalog;
let worker: TestWorker;

beforeAll(async () => {
  catalog = await createTestCatalog('region');
  worker = await startTestWorker(catalog.catalogUrl);
  await createDistributedTable(worker.options, { name: 'items', columns: 'id bigint primary key, v text', shardKey: 'id', shardCount: 4, nodes: ['node-1'] });
});

afterAll(async () => {
  await worker?.close();
  await catalog?.close();
});

function cli(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, SHARDCAST_CATALOG_URL: catalog.catalogUrl } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A key of `items` that the router places in shard `shardId`. */
function keyIn(router: Awaited<ReturnType<typeof createRouter>>, shardId: number): number {
  for (let k = 1; k < 100_000; k++) if (router.shardMap.route('items', k).shardId === shardId) return k;
  throw new Error(`no key for shard ${shardId}`);
}

describe('region locality', () => {
  it('`nodes set-region` sets where a node is; bad input is one line and changes nothing', async () => {
    expect(cli('nodes', 'set-region', 'node-3', 'eu').stdout.trim()).toBe('node node-3: region eu, zone z3');
    expect(cli('nodes', 'set-region', 'node-2', 'us', '--zone', 'us-1a').stdout.trim()).toBe('node node-2: region us, zone us-1a');
    expect(cli('nodes', 'set-region', 'node-1', 'us').status).toBe(0);
    const bad = cli('nodes', 'set-region', 'node-1', ' ');
    expect(bad.status).toBe(1);
    expect(bad.stderr.trim()).toBe('shardcast: error: node "node-1": region must be a non-empty name without surrounding spaces, got " "');
    const unknown = cli('nodes', 'set-region', 'node-9', 'eu');
    expect(unknown.status).toBe(1);
    expect(unknown.stderr.trim()).toBe('shardcast: error: node "node-9" does not exist');
    expect((await listNodes(catalog.pool)).map((n) => [n.name, n.region, n.zone])).toEqual([
      ['node-1', 'us', 'z1'],
      ['node-2', 'us', 'us-1a'],
      ['node-3', 'eu', 'z3'],
    ]);
  });

  it('counts the catalog cannot take are kept, and written by a later flush', async () => {
    const router = await createRouter({ catalogUrl: catalog.catalogUrl, region: 'ap', regionFlushIntervalMs: 3_600_000 });
    const errors: Error[] = [];
    router.on('catalogError', (e: Error) => errors.push(e));
    const shard = router.shardMap.shardsOf('items')[3]!.shardId;
    const count = async () => Number((await catalog.pool.query<{ n: string | null }>("select sum(accesses)::text as n from shardcast_stats.shard_region_accesses where region = 'ap'")).rows[0]!.n ?? 0);
    try {
      for (let i = 0; i < 5; i++) await router.forKey('items', keyIn(router, shard)).query('select 1 from items where id = $1', [keyIn(router, shard)]);
      await catalog.pool.query('alter table shardcast_stats.shard_region_accesses rename to shard_region_accesses_away');
      try {
        await expect(router.flushRegionAccesses()).rejects.toThrow('shard_region_accesses');
      } finally {
        await catalog.pool.query('alter table shardcast_stats.shard_region_accesses_away rename to shard_region_accesses');
      }
      expect(errors.map((e) => e.message)).toEqual([expect.stringContaining('recording region accesses')]);
      expect(await count()).toBe(0);
      for (let i = 0; i < 2; i++) await router.forKey('items', keyIn(router, shard)).query('select 1 from items where id = $1', [keyIn(router, shard)]);
      await router.flushRegionAccesses();
      expect(await count()).toBe(7);
    } finally {
      await router.close();
    }
    expect(await count()).toBe(7); // nothing left for close to flush twice
    await catalog.pool.query("delete from shardcast_stats.shard_region_accesses where region = 'ap'");
  });

  it('routers record their region per shard; the planner reads the shares and moves an eu-bound hot shard to the eu node', { timeout: 120_000 }, async () => {
    await expect(createRouter({ catalogUrl: catalog.catalogUrl, region: '' })).rejects.toThrow('createRouter: region must be a non-empty name without surrounding spaces, got ""');
    const eu = await createRouter({ catalogUrl: catalog.catalogUrl, region: 'eu', regionFlushIntervalMs: 200 });
    const us = await createRouter({ catalogUrl: catalog.catalogUrl, region: 'us', regionFlushIntervalMs: 200 });
    const plain = await createRouter({ catalogUrl: catalog.catalogUrl }); // no region: counts nothing
    const shards = eu.shardMap.shardsOf('items').map((r) => r.shardId).sort((a, b) => a - b);
    const [hot, usShard, mixed] = shards as [number, number, number];
    try {
      for (let i = 0; i < 30; i++) await eu.forKey('items', keyIn(eu, hot)).query('insert into items values ($1, $2) on conflict (id) do update set v = excluded.v', [keyIn(eu, hot), `e${i}`]);
      for (let i = 0; i < 10; i++) await us.forKey('items', keyIn(us, usShard)).query('select * from items where id = $1', [keyIn(us, usShard)]);
      await eu.forKey('items', keyIn(eu, mixed)).transaction(async (tx) => {
        await tx.query('select 1 from items where id = $1', [keyIn(eu, mixed)]);
        await tx.query('select 2 from items where id = $1', [keyIn(eu, mixed)]);
      });
      await us.forKey('items', keyIn(us, mixed)).query('select 1 from items where id = $1', [keyIn(us, mixed)]);
      for (let i = 0; i < 20; i++) await plain.forKey('items', keyIn(plain, usShard)).query('select 1 from items where id = $1', [keyIn(plain, usShard)]);
      await until('the counts flushed', async () => (await regionShares(catalog.pool, new Date())).length === 3, 10_000);
    } finally {
      await Promise.all([eu.close(), us.close(), plain.close()]);
    }
    const shares = new Map((await regionShares(catalog.pool, new Date())).map((r) => [r.shardId, r.shares]));
    expect(shares.get(hot)).toEqual({ eu: 1 });
    expect(shares.get(usShard)).toEqual({ us: 1 });
    // A transaction is one access, a statement one: one from eu, one from us.
    expect(shares.get(mixed)).toEqual({ eu: 0.5, us: 0.5 });
    const { rows } = await catalog.pool.query<{ n: string }>('select sum(accesses)::text as n from shardcast_stats.shard_region_accesses');
    expect(Number(rows[0]!.n)).toBe(30 + 10 + 2);

    // The planner: node-1 (us) holds every shard; the eu-bound one rises over node-1's target. node-2 (us)
    // and node-3 (eu) are alike but for their region: it goes to node-3.
    for (const n of await listNodes(catalog.pool)) await setNodeCapacity(catalog.pool, n.name, 1000);
    await writeShardForecasts(catalog.pool, shards, (k, i) => (k === 0 ? 400 + (200 * i) / 11 : 50));
    const pools = new NodePools({ max: 1 });
    try {
      const gathered = await gatherPlanInput(catalog.pool, pools);
      expect(gathered.input.regionShares).toEqual(expect.arrayContaining([{ shardId: hot, shares: { eu: 1 } }]));
      const plan = planRebalance(gathered.input);
      const moves = plan.actions.filter((a): a is MoveAction => a.kind === 'move');
      const names = new Map(gathered.input.nodes.map((n) => [n.id, n.name]));
      expect(moves.map((m) => [m.shardIds, names.get(m.toNodeId)]), JSON.stringify(plan.notes)).toEqual([[[hot], 'node-3']]);

      // Without the shares the two targets tie, and the planner does not pick eu for a reason.
      const blind = planRebalance({ ...gathered.input, regionShares: [] });
      const blindTarget = blind.actions.find((a): a is MoveAction => a.kind === 'move')!;
      expect(names.get(blindTarget.toNodeId)).toBe('node-2');
    } finally {
      await pools.end();
    }
  });

  it('a shard with no trustworthy forecast gets room kept for its observed peak of the last day, once it has been seen for most of a day', { timeout: 60_000 }, async () => {
    const shardId = (await catalog.pool.query<{ id: number }>(`select max(id)::int as id from shardcast.shards`)).rows[0]!.id;
    const schema = (await catalog.pool.query<{ schema_name: string }>('select schema_name from shardcast.shards where id = $1', [shardId])).rows[0]!.schema_name;
    const series = `shard:${shardId}:load`;
    for (const n of await listNodes(catalog.pool)) await setNodeCapacity(catalog.pool, n.name, 1000);
    await catalog.pool.query('delete from shardcast_forecast.models where series = $1', [series]);
    // The collector's samples of the shard every 5 minutes over the last 25 hours: 1 write a second,
    // 10 a second for the hour that ended 6 hours ago.
    const now = Math.floor(Date.now() / 300_000) * 300_000;
    await ensurePartitions(catalog.pool, new Date(now - 2 * 86_400_000), 3);
    const epoch = new Date(now - 30 * 3_600_000);
    let writes = 0;
    for (let t = now - 25 * 3_600_000; t <= now; t += 300_000) {
      const hoursAgo = (now - t) / 3_600_000;
      writes += (hoursAgo > 6 && hoursAgo <= 7 ? 10 : 1) * 300;
      await catalog.pool.query(
        `insert into shardcast_stats.table_samples (ts, node_id, schema_name, table_name, n_tup_ins, n_tup_upd, n_tup_del, seq_scan, seq_tup_read, idx_scan, idx_tup_fetch, n_live_tup, stats_epoch)
         values ($1, 1, $2, 'items', $3, 0, 0, 0, 0, 0, 0, 0, $4)`,
        [new Date(t), schema, writes, epoch],
      );
    }
    const pools = new NodePools({ max: 1 });
    try {
      const forecast = async () => (await gatherPlanInput(catalog.pool, pools)).input.shardForecasts.find((f) => f.shardId === shardId)!;
      const seen = await forecast();
      expect(seen.trustworthy).toBe(false);
      expect(seen.observedLoad).toBeCloseTo(1, 1);
      expect(seen.observedPeak).toBeCloseTo(10, 1);
      const plan = planRebalance((await gatherPlanInput(catalog.pool, pools)).input);
      expect(plan.notes.join('\n')).toContain(`${series}: no trustworthy model (no model trained yet); planned on its observed load 1, with room kept for its peak of the last day, 10, reactively`);
      // Seen for the last 3 hours only (a shard split off lately): no peak yet, its recent load alone.
      await catalog.pool.query(`delete from shardcast_stats.table_samples where schema_name = $1 and ts < $2`, [schema, new Date(now - 3 * 3_600_000)]);
      const lately = await forecast();
      expect(lately.observedPeak).toBeUndefined();
      expect(lately.observedLoad).toBeCloseTo(1, 1);
    } finally {
      await pools.end();
    }
  });
});
