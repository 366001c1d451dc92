import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable } from '../../client/index.js';
import { setNodeCapacity } from '../../src/catalog/nodes.js';
import { createRouter, type Router } from '../../src/router/router.js';
import { writeShardForecasts } from '../helpers/forecasts.js';
import { adminQuery, createTestCatalog, runCli, shardPlacements, startTestWorker, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

/**
 * Shardability per entity through `shardcast tenants`, against real PostgreSQL: a hot tenant's
 * predicted load is its share of its shard's forecast, its size its rows' share of the shard's bytes
 * (counted on the node), and its node's load the node's forecast over capacity; `--ranges` scores the
 * table's shards the same way.
 */

let catalog: TestCatalog;
let worker: TestWorker;
let router: Router;
const HOT = 42;

beforeAll(async () => {
  catalog = await createTestCatalog('shardability');
  worker = await startTestWorker(catalog.catalogUrl);
  await createDistributedTable(worker.options, { name: 'accounts', columns: 'id bigint primary key, balance bigint not null, pad text', shardKey: 'id', shardCount: 2, nodes: ['node-1'] });
  router = await createRouter({ catalogUrl: catalog.catalogUrl, profile: { flushIntervalMs: 3_600_000 } });
  for (let k = 1; k <= 1000; k++) await router.forKey('accounts', k).query("insert into accounts values ($1, 0, repeat('x', 200))", [k]);
  for (let i = 0; i < 1000; i++) {
    const key = i % 10 < 8 ? HOT : 1 + ((i * 7919) % 1000);
    await router.forKey('accounts', key).query('update accounts set balance = balance + 1 where id = $1', [key]);
  }
  await router.flushProfile();
  for (const n of catalog.nodes) await setNodeCapacity(catalog.pool, n.name, 1000);
}, 180_000);

afterAll(async () => {
  await router?.close();
  await worker?.close();
  await catalog?.close();
});

const cli = (...args: string[]) => runCli(args, { SHARDCAST_CATALOG_URL: catalog.catalogUrl });

describe('shardability', () => {
  it('scores a hot tenant from its share of its shard\'s forecast, its rows\' bytes and its node\'s predicted load; --ranges scores the shards', { timeout: 120_000 }, async () => {
    const shards = await shardPlacements(catalog.pool);
    const hotShard = router.forKey('accounts', HOT).route().shardId;
    const other = shards.find((s) => s.id !== hotShard)!.id;
    // The hot shard 600 load units, the other 100 (the 95% bound is 5% above): node-1 at 73.5% of 1000 at its peak.
    await writeShardForecasts(catalog.pool, [hotShard, other], (k) => (k === 0 ? 600 : 100));
    for (const s of shards) await adminQuery(catalog.nodeUrl(s.node), `analyze ${s.schema}.accounts`);

    const listed = await cli('tenants', '--table', 'accounts', '--json');
    expect(listed.stderr).toBe('');
    const [tenant] = JSON.parse(listed.stdout) as Array<{ key: string; share: number; predictedLoad: number; bytes: number; nodeUtilisation: number; shardability: { score: number; relief: number; pressure: number; gib: number } }>;
    expect(tenant!.key).toBe(String(HOT));
    expect(tenant!.nodeUtilisation).toBeCloseTo(0.735, 3);
    expect(tenant!.predictedLoad).toBeCloseTo(630 * tenant!.share, 1);
    // One row of the shard's: its share of the shard's bytes (the planner's: its relations with their indexes).
    const { rows } = await adminQuery(
      catalog.nodeUrl('node-1'),
      `select pg_total_relation_size('sc_s${hotShard}.accounts')::float8 / (select count(*) from sc_s${hotShard}.accounts) as per_row`,
    );
    expect(Math.abs(tenant!.bytes - (rows[0].per_row as number))).toBeLessThanOrEqual(1);
    expect(tenant!.shardability.relief).toBeCloseTo(tenant!.predictedLoad / 1000, 3);
    expect(tenant!.shardability.pressure).toBeCloseTo(0.735 / 0.7, 3);
    expect(tenant!.shardability.score).toBeCloseTo((tenant!.shardability.relief * tenant!.shardability.pressure) / (1 + tenant!.shardability.gib), 3);

    const ranges = await cli('tenants', '--table', 'accounts', '--ranges', '--json');
    expect(ranges.stderr).toBe('');
    const scored = JSON.parse(ranges.stdout) as Array<{ shardId: number; predictedLoad: number; bytes: number; shardability: { score: number } }>;
    expect(scored.map((r) => r.shardId)).toEqual([hotShard, other]);
    expect(scored[0]!.predictedLoad).toBeCloseTo(630, 1);
    expect(scored[1]!.predictedLoad).toBeCloseTo(105, 1);
    expect(scored[0]!.shardability.score).toBeGreaterThan(scored[1]!.shardability.score);
    const text = await cli('tenants', '--table', 'accounts', '--ranges');
    expect(text.stdout.split('\n')[0]).toMatch(/^SHARD +NODE +SHARDABILITY +PREDICTED-LOAD +BYTES +NODE-UTIL%$/);
    expect(text.stdout.split('\n')[1]).toMatch(new RegExp(`^${hotShard} +node-1 +[0-9.]+ +630 +\\d+ +73\\.5$`));

    const bad = await cli('tenants', '--ranges');
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim()).toBe('shardcast: error: --ranges lists the key ranges of one table: give --table');
  });
});
