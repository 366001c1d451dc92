import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable } from '../../client/index.js';
import type { ForecastingSummary } from '../../src/forecasting/runs.js';
import { resetFailpoints } from '../../src/failpoints.js';
import { createRouter } from '../../src/router/router.js';
import { pruneWorkloadProfile } from '../../src/profiling/hot.js';
import { accessFeatures, computeTemperature, latestTemperature, refreshTemperatures, type TemperatureReport } from '../../src/profiling/temperature.js';
import { createTestCatalog, runCli, startTestWorker, uniqueName, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

/**
 * Hot, warm and cold shards from the workload profile in the catalog (rows written as the routers'
 * flushes write them): classes, the key map, the forecast as a feature, a change of access moving a
 * shard on the next computation, the hourly forecast run storing each computation, and the CLI.
 */

let catalog: TestCatalog;
let worker: TestWorker;
/** The shards of `events` in key (hash) order. */
let shards: Array<{ id: number; range: string }>;
const MINUTES = 180;
/** By key order: the classes the accesses are made for (two of each, not adjacent). */
const PLANNED = ['hot', 'warm', 'cold', 'hot', 'warm', 'cold'] as const;
const PER_MINUTE = { hot: 600, warm: 30, cold: 0 } as const;

beforeAll(async () => {
  catalog = await createTestCatalog('temperature');
  worker = await startTestWorker(catalog.catalogUrl);
  await createDistributedTable(worker.options, { name: 'events', columns: 'id bigint primary key', shardKey: 'id', shardCount: 6, nodes: ['node-1', 'node-2'] });
  await createDistributedTable(worker.options, { name: 'tenants', columns: 'tenant int primary key', shardKey: 'tenant', method: 'range', rangeBounds: ['0', '100', '1000', '100000'] });
  const { rows } = await catalog.pool.query<{ id: number; hash_min: string; hash_max: string }>(
    `select s.id::int as id, s.hash_min::text as hash_min, s.hash_max::text as hash_max from shardcast.shards s
       join shardcast.distributed_tables t on t.group_id = s.group_id where t.name = 'events' order by s.hash_min`,
  );
  shards = rows.map((r) => ({ id: r.id, range: `hash [${r.hash_min}, ${r.hash_max}]` }));
  // Three hours of per-minute accesses, as flushed: hot about 10/s, warm 0.5/s, cold one access every ten minutes.
  for (const [i, s] of shards.entries()) {
    const planned = PLANNED[i]!;
    await catalog.pool.query(
      `insert into shardcast_stats.shard_accesses (table_name, shard_id, bucket, accesses)
       select 'events', $1, date_trunc('minute', now()) - make_interval(mins => m), $2 + m % 7
         from generate_series(1, $3) m where $2 > 0 or m % 10 = 0`,
      [s.id, planned === 'cold' ? 1 : PER_MINUTE[planned], MINUTES],
    );
  }
});

afterAll(async () => {
  await worker?.close();
  await catalog?.close();
});

const classes = (r: TemperatureReport): string[] => r.shards.map((s) => s.class);

describe('hot, warm and cold shards', () => {
  it('classes by clustering, the key map in key order, the forecast a feature only where every shard has one', async () => {
    const report = await computeTemperature(catalog.pool, { table: 'events' });
    expect(report.shards.map((s) => s.shardId)).toEqual(shards.map((s) => s.id));
    expect(classes(report)).toEqual([...PLANNED]);
    expect(report.clusters).toBe(3);
    expect(report.keyMap).toEqual({
      hot: [shards[0], shards[3]].map((s) => ({ shardId: s!.id, range: s!.range })),
      warm: [shards[1], shards[4]].map((s) => ({ shardId: s!.id, range: s!.range })),
      cold: [shards[2], shards[5]].map((s) => ({ shardId: s!.id, range: s!.range })),
    });
    expect(report.forecast).toEqual({ used: false, note: 'not used: no shard has a load forecast issued in the window' });
    const hot = report.shards[0]!;
    expect(hot.features.meanRate).toBeGreaterThan(9.5);
    expect(hot.features.meanRate).toBeLessThan(10.5);
    expect(hot.features.forecastPeak).toBeNull();
    expect(['node-1', 'node-2']).toContain(hot.node);
    expect(report.accesses).toBe(report.shards.reduce((a, s) => a + s.accesses, 0));
    // The catalog's sums give the features the per-minute counts give (accessFeatures, unit-tested).
    const { rows: first } = await catalog.pool.query<{ at: Date }>("select min(bucket) as at from shardcast_stats.shard_accesses where table_name = 'events'");
    for (const i of [0, 1, 2]) {
      const { rows: minutes } = await catalog.pool.query<{ at: number; n: number }>(
        "select (extract(epoch from bucket) * 1000)::float8 as at, accesses::float8 as n from shardcast_stats.shard_accesses where table_name = 'events' and shard_id = $1",
        [shards[i]!.id],
      );
      const counted = accessFeatures(new Map(minutes.map((r) => [r.at, r.n])), first[0]!.at.getTime(), Date.parse(report.computedAt));
      for (const [name, value] of Object.entries(counted)) expect(report.shards[i]!.features[name as keyof typeof counted], name).toBeCloseTo(value, 9);
    }

    // A forecast for some shards only: not used, and the note says which lack one.
    const forecast = async (ids: number[]): Promise<void> => {
      for (const id of ids) {
        const peak = { hot: 40, warm: 2, cold: 0.01 }[PLANNED[shards.findIndex((s) => s.id === id)]!];
        await catalog.pool.query(
          `insert into shardcast_forecast.forecasts (series, issued_at, step, ts, yhat, lo80, hi80, lo95, hi95, model)
           select $1, date_trunc('minute', now()) - interval '10 minutes', step, now() + make_interval(mins => 5 * step), $2::float8 * step / 3, 0, $2::float8, 0, $2::float8, 'ets'
             from generate_series(1, 3) step`,
          [`shard:${id}:load`, peak],
        );
      }
    };
    await forecast(shards.slice(0, 4).map((s) => s.id));
    const partial = await computeTemperature(catalog.pool, { table: 'events' });
    expect(partial.forecast).toEqual({ used: false, note: `not used: no load forecast issued in the window for shards ${shards[4]!.id}, ${shards[5]!.id}` });
    expect(partial.shards[0]!.features.forecastPeak).toBe(40);
    await forecast(shards.slice(4).map((s) => s.id));
    const full = await computeTemperature(catalog.pool, { table: 'events' });
    expect(full.forecast.used).toBe(true);
    expect(full.forecast.note).toMatch(/^used: peak of each shard's latest load forecast \(issued \d{4}-/);
    expect(classes(full)).toEqual([...PLANNED]);

    // A range table: its ranges as text, in key order; without accesses, one class.
    const tenants = await computeTemperature(catalog.pool, { table: 'tenants' });
    expect(tenants.shards.map((s) => s.range)).toEqual(['[0, 100)', '[100, 1000)', '[1000, 100000)']);
    expect(tenants).toMatchObject({ accesses: 0, clusters: 1 });
    expect(classes(tenants)).toEqual(['warm', 'warm', 'warm']);
  });

  it('the hourly forecast run stores each computation; a change of access moves a shard on the next; a retried refresh writes nothing twice', { timeout: 120_000 }, async () => {
    const run = async (): Promise<ForecastingSummary> =>
      (await worker.client.workflow.execute('forecastLoad', { taskQueue: worker.taskQueue, workflowId: uniqueName('forecast'), args: [{ batchSize: 4, parallelBatches: 1 }] })) as ForecastingSummary;
    const first = await run();
    expect(first.temperature).toBe('events: 2 hot, 2 warm, 2 cold');
    const stored = await latestTemperature(catalog.pool, 'events');
    expect(stored!.computedAt).toBe(first.asOf);
    expect(stored!.shards.map((s) => [s.shardId, s.class, s.range])).toEqual(shards.map((s, i) => [s.id, PLANNED[i], s.range]).sort((a, b) => (a[0] as number) - (b[0] as number)));
    // Tables without accesses in the window are not stored.
    expect(await latestTemperature(catalog.pool, 'tenants')).toBeUndefined();

    // The cold shard at index 2 becomes the busiest for the last hour and a half (a tenant arrived): now, through a profiling router,
    const cold = shards[2]!;
    const router = await createRouter({ catalogUrl: catalog.catalogUrl, profile: { flushIntervalMs: 3_600_000 } });
    let key = 0;
    try {
      while (router.shardMap.route('events', key).shardId !== cold.id) key++;
      for (let i = 0; i < 50; i++) await router.forKey('events', key).query('select * from events where id = $1', [key]);
      await router.flushProfile();
    } finally {
      await router.close();
    }
    expect(Number((await catalog.pool.query<{ n: string }>(`select sum(accesses)::text as n from shardcast_stats.shard_accesses where shard_id = $1 and bucket >= date_trunc('minute', now())`, [cold.id])).rows[0]!.n)).toBe(50);
    // and before, as earlier flushes would have written it, 1,500 a minute (a mean of about 12.5/s over the three hours, the old hot shards' 10/s: hot by its mean rate, not by a hair).
    await catalog.pool.query(
      `insert into shardcast_stats.shard_accesses as a (table_name, shard_id, bucket, accesses)
       select 'events', $1, date_trunc('minute', now()) - make_interval(mins => m), 1500 from generate_series(1, 90) m
       on conflict (table_name, shard_id, bucket) do update set accesses = a.accesses + excluded.accesses`,
      [cold.id],
    );
    const second = await run();
    expect(second.temperature).toMatch(/^events: \d hot, \d warm, \d cold$/);
    const after = await latestTemperature(catalog.pool, 'events');
    expect(after!.computedAt).toBe(second.asOf);
    console.log(`temperature after the change: ${second.temperature}; by key order ${shards.map((s) => `${s.id} ${after!.shards.find((x) => x.shardId === s.id)!.class}`).join(', ')}`);
    expect(after!.shards.find((s) => s.shardId === cold.id)!.class).toBe('hot');
    // Two computations kept (the history of the key map); a refresh retried at the same time adds nothing.
    const count = async (): Promise<number> => Number((await catalog.pool.query<{ n: string }>("select count(*)::text as n from shardcast_stats.temperature where table_name = 'events'")).rows[0]!.n);
    expect(await count()).toBe(12);
    await refreshTemperatures(catalog.pool, { asOf: new Date(second.asOf) });
    expect(await count()).toBe(12);
  });

  it('a classification that keeps failing does not fail the forecast run: the summary says so, the key map stays as it was', { timeout: 120_000 }, async () => {
    const before = await latestTemperature(catalog.pool, 'events');
    process.env.SHARDCAST_FAILPOINTS = 'activity.refreshTemperatures=throw';
    resetFailpoints();
    try {
      const summary = (await worker.client.workflow.execute('forecastLoad', { taskQueue: worker.taskQueue, workflowId: uniqueName('forecast'), args: [{ batchSize: 4, parallelBatches: 1 }] })) as ForecastingSummary;
      expect(summary.temperature).toBe('failed: failpoint activity.refreshTemperatures: injected failure');
    } finally {
      delete process.env.SHARDCAST_FAILPOINTS;
    }
    expect(await latestTemperature(catalog.pool, 'events')).toEqual(before);
  });

  it('CLI: the table per shard and the key map, JSON, --store; bad input is one line, exit 1, nothing printed or stored', { timeout: 120_000 }, async () => {
    const env = { SHARDCAST_CATALOG_URL: catalog.catalogUrl };
    const json = await runCli(['temperature', 'events', '--json'], env);
    expect(json.stderr).toBe('');
    expect(json.code).toBe(0);
    const report = JSON.parse(json.stdout) as TemperatureReport;
    expect(report.table).toBe('events');
    expect(report.shards).toHaveLength(6);
    // After the previous test's change: the shard that became busiest is the hot one.
    expect(report.keyMap.hot.map((r) => r.shardId)).toEqual([shards[2]!.id]);

    const text = await runCli(['temperature', 'events', '--since', '6h', '--store'], env);
    expect(text.stderr).toBe('');
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^events \(hash\): 6 shard\(s\), \d+ accesses from \S+ to \S+\n/);
    expect(text.stdout).toMatch(/\nSHARD +CLASS +NODE +KEY RANGE +ACCESSES +RECENT\/S +MEAN\/S +PEAK\/S +TREND\/S\/H +FORECAST PEAK\n/);
    expect(text.stdout).toMatch(new RegExp(`\\n${shards[2]!.id} +hot +node-\\d +hash \\[`));
    expect(text.stdout).toContain(`\nhot   ${shards[2]!.range} (shard ${shards[2]!.id})\n`);
    expect(text.stdout).toMatch(/\nkey map\nhot {3}.+\nwarm {2}.+\ncold {2}.+\n/);
    expect(text.stdout).toMatch(/\nstored as the computation of \S+\n$/);
    const storedBefore = Number((await catalog.pool.query<{ n: string }>('select count(*)::text as n from shardcast_stats.temperature')).rows[0]!.n);

    for (const [args, message] of [
      [['temperature', 'nope', '--store'], 'shardcast: error: unknown distributed table "nope"'],
      [['temperature', 'events', '--since', '5x'], "shardcast: error: option '--since <duration>' argument '5x' is invalid. expected a duration such as 30s, 15m, 2h or 7d (up to 366d) (see --help)"],
      [['temperature'], "shardcast: error: missing required argument 'table' (see --help)"],
    ] as const) {
      const bad = await runCli([...args], env);
      expect(bad.code, args.join(' ')).toBe(1);
      expect(bad.stderr.trim()).toBe(message);
      expect(bad.stdout).toBe('');
    }
    expect(Number((await catalog.pool.query<{ n: string }>('select count(*)::text as n from shardcast_stats.temperature')).rows[0]!.n)).toBe(storedBefore);
  });

  it('computations are pruned with the workload profile, recent ones kept', async () => {
    await catalog.pool.query(
      `insert into shardcast_stats.temperature (table_name, computed_at, shard_id, class, key_range, node, features)
       values ('events', now() - interval '40 days', $1, 'cold', 'hash [0, 1]', 'node-1', '{}')`,
      [shards[0]!.id],
    );
    await pruneWorkloadProfile(catalog.pool, 30);
    const { rows } = await catalog.pool.query<{ old: number; recent: number }>(
      `select count(*) filter (where computed_at < now() - interval '30 days')::int as old, count(*) filter (where computed_at >= now() - interval '1 day')::int as recent
         from shardcast_stats.temperature`,
    );
    expect(rows[0]).toMatchObject({ old: 0 });
    expect(rows[0]!.recent).toBeGreaterThan(0);
  });
});
