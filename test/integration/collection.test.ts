import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable, ensureCollector } from '../../client/index.js';
import { NodePools } from '../../src/catalog/node-pools.js';
import { ensureNodes, getNodeByName } from '../../src/catalog/nodes.js';
import { freePort, PostgresServer } from '../../src/fleet/postgres-server.js';
import { createMetricsRegistry } from '../../src/metrics/metrics.js';
import { collectNode, ensureStatementStats, nodeHealth } from '../../src/profiling/collector.js';
import { dropExpiredPartitions, ensurePartitions } from '../../src/profiling/partitions.js';
import { counterRates } from '../../src/profiling/rates.js';
import { listSeries, loadSeries } from '../../src/profiling/series.js';
import { createRouter, type Router } from '../../src/router/router.js';
import { adminQuery, createTestCatalog, fleet, recordHistory, startTestWorker, uniqueName, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

let catalog: TestCatalog;
let worker: TestWorker;
let router: Router;
const pools = new NodePools();

beforeAll(async () => {
  catalog = await createTestCatalog('collect');
  worker = await startTestWorker(catalog.catalogUrl);
  await createDistributedTable(worker.options, { name: 'clicks', columns: 'id bigint primary key, n int not null default 0', shardKey: 'id', shardCount: 1, nodes: ['node-1'] });
  router = await createRouter({ catalogUrl: catalog.catalogUrl });
  const { rows } = await catalog.pool.query<{ now: Date }>('select now()');
  await ensurePartitions(catalog.pool, rows[0]!.now);
});

afterAll(async () => {
  await router?.close();
  await pools.end();
  await worker?.close();
  await catalog?.close();
});

describe('workload collection', () => {
  it('sees the insert and update rates a generated workload produced (within 10%)', async () => {
    const node1 = catalog.nodes.find((n) => n.name === 'node-1')!;
    expect(await ensureStatementStats(pools, node1)).toBe(true);
    // A steady workload through the router: inserts at ~200/s, updates of earlier rows at ~100/s.
    let stop = false;
    const done: Array<{ t: number; kind: 'ins' | 'upd' }> = [];
    let next = 1;
    const load = (async () => {
      const t0 = Date.now();
      let i = 0;
      while (!stop) {
        const due = t0 + i * 10; // one insert every 10 ms, one update every 20 ms
        if (Date.now() < due) await new Promise((r) => setTimeout(r, due - Date.now()));
        const id = next++;
        await router.forKey('clicks', id).query('insert into clicks (id) values ($1)', [id]);
        done.push({ t: Date.now(), kind: 'ins' });
        if (i % 2 === 0 && id > 10) {
          await router.forKey('clicks', id - 10).query('update clicks set n = n + 1 where id = $1', [id - 10]);
          done.push({ t: Date.now(), kind: 'upd' });
        }
        i++;
      }
    })();
    await new Promise((r) => setTimeout(r, 2000)); // steady state
    const samples: Array<{ t: number }> = [];
    for (let k = 0; k < 21; k++) {
      const r = await collectNode(catalog.pool, pools, node1);
      expect(r).toMatchObject({ ok: true, host: true });
      samples.push({ t: Date.now() });
      await new Promise((res) => setTimeout(res, 1000));
    }
    stop = true;
    await load;

    const first = samples[0]!.t;
    const last = samples.at(-1)!.t;
    const expected = (kind: 'ins' | 'upd') => done.filter((d) => d.kind === kind && d.t > first && d.t <= last).length / ((last - first) / 1000);
    const { rows } = await catalog.pool.query<{ t: number; ins: string; upd: string; epoch: number }>(
      `select extract(epoch from ts) * 1000 as t, n_tup_ins::text as ins, n_tup_upd::text as upd, extract(epoch from stats_epoch) * 1000 as epoch
         from shardcast_stats.table_samples where table_name = 'clicks' order by ts`,
    );
    expect(rows).toHaveLength(21);
    // Microseconds are kept: not every timestamp falls on a whole millisecond.
    expect(rows.some((r) => Number(r.t) % 1 !== 0)).toBe(true);
    const mean = (key: 'ins' | 'upd') => {
      const rates = counterRates(rows.map((r) => ({ t: Number(r.t), value: Number(r[key]), epoch: Number(r.epoch) })));
      const span = rates.reduce((a, r) => a + (r.end - r.start), 0);
      return rates.reduce((a, r) => a + r.rate * (r.end - r.start), 0) / span;
    };
    console.log(`collection: inserts ${mean('ins').toFixed(1)}/s measured vs ${expected('ins').toFixed(1)}/s generated; updates ${mean('upd').toFixed(1)}/s vs ${expected('upd').toFixed(1)}/s`);
    expect(Math.abs(mean('ins') / expected('ins') - 1)).toBeLessThan(0.1);
    expect(Math.abs(mean('upd') / expected('upd') - 1)).toBeLessThan(0.1);

    // The same through the 5-minute series.
    const from = new Date(first - 600_000);
    const to = new Date(last + 300_000);
    const inserts = (await loadSeries(catalog.pool, 'table:clicks:inserts', from, to)).filter((p) => p.value !== null);
    expect(inserts.length).toBeGreaterThanOrEqual(1);
    // A bucket holds the samples' intervals that fall in it: one the 20 s window only grazes (at a
    // 5-minute boundary) holds a second or two, as noisy as one interval (the statistics reach
    // PostgreSQL's counters up to a second late). The buckets with at least 10 s are held to 10% each,
    // and all of them, weighted by what they cover, too.
    const covered = (p: { ts: Date }) => Math.max(0, Math.min(last, p.ts.getTime() + 300_000) - Math.max(first, p.ts.getTime()));
    expect(inserts.some((p) => covered(p) >= 10_000)).toBe(true);
    for (const p of inserts.filter((q) => covered(q) >= 10_000)) expect(Math.abs(p.value! / expected('ins') - 1)).toBeLessThan(0.1);
    const weighted = inserts.reduce((a, p) => a + p.value! * covered(p), 0) / inserts.reduce((a, p) => a + covered(p), 0);
    expect(Math.abs(weighted / expected('ins') - 1)).toBeLessThan(0.1);
    const shard = (await catalog.pool.query<{ id: number }>('select id::int as id from shardcast.shards')).rows[0]!.id;
    const ids = await listSeries(catalog.pool, from);
    expect(ids).toEqual(expect.arrayContaining(['table:clicks:inserts', 'table:clicks:reads', 'index:clicks.clicks_pkey:scans', `shard:${shard}:load`, 'node:node-1:cpu', 'node:node-1:io']));
    const cpu = (await loadSeries(catalog.pool, 'node:node-1:cpu', from, to)).filter((p) => p.value !== null);
    for (const p of cpu) expect(p.value).toBeGreaterThan(0);
    const statements = await catalog.pool.query("select count(*)::int as n from shardcast_stats.statement_samples where query like 'insert into %clicks%'");
    expect(statements.rows[0].n).toBeGreaterThan(0);
    await expect(loadSeries(catalog.pool, 'table:clicks:bogus', from, to)).rejects.toThrow(/metric must be one of inserts, updates, deletes, reads/);
  });

  it('runs durably under Temporal: a new worker carries on after the old one stops, without a long gap', async () => {
    const started = await ensureCollector(worker.options, { intervalSeconds: 1, retentionDays: 35 });
    const queue = worker.taskQueue;
    // A second start finds the running collector instead of starting another.
    const again = await ensureCollector(worker.options, { intervalSeconds: 1, retentionDays: 35 });
    expect((await again.describe()).runId).toBe((await started.describe()).runId);
    const count = async () => Number((await catalog.pool.query("select count(*) as n from shardcast_stats.node_samples where node_id = (select id from shardcast.nodes where name = 'node-2')")).rows[0].n);
    const base = await count();
    const deadline = Date.now() + 30_000;
    while ((await count()) < base + 3) {
      if (Date.now() > deadline) throw new Error('the collector took no samples');
      await new Promise((r) => setTimeout(r, 200));
    }
    const stoppedAt = Date.now();
    await worker.close();
    worker = await startTestWorker(catalog.catalogUrl, undefined, queue);
    const handle = worker.client.workflow.getHandle(started.workflowId);
    const restartedAt = Date.now();
    const resumed = await count();
    while ((await count()) < resumed + 3) {
      if (Date.now() > deadline + 30_000) throw new Error('the collector did not carry on after the restart');
      await new Promise((r) => setTimeout(r, 200));
    }
    await recordHistory(worker.client, started.workflowId, 'collect-stats');
    await handle.terminate('test over');
    const { rows } = await catalog.pool.query<{ gap: number }>(
      `select coalesce(max(gap), 0)::float8 as gap from (
         select extract(epoch from ts - lag(ts) over (order by ts)) * 1000 as gap from shardcast_stats.node_samples
          where node_id = (select id from shardcast.nodes where name = 'node-2') and ts > now() - interval '2 minutes') g`,
    );
    const downMs = restartedAt - stoppedAt;
    console.log(`collection: worker down ${downMs} ms, longest gap between samples ${Math.round(rows[0]!.gap)} ms (interval 1000 ms)`);
    // At most one interval plus the restart (the old worker's shutdown and the new one's start), and 250 ms of
    // scheduling. A timer that fires while the old worker is gone waits on its sticky queue until the
    // control worker's stickyQueueScheduleToStartTimeout (2 s) hands it to the new one; a workflow task
    // the old worker took as it stopped, and never finished, is handed over after the collector's
    // workflow task timeout (3 s; the default 10 s once made a 10 s gap here): the restart counts as at
    // least that long.
    expect(rows[0]!.gap).toBeLessThanOrEqual(1000 + Math.max(downMs, 3000) + 250);
  });

  it('keeps daily partitions: creates them ahead, drops those past the retention', async () => {
    const now = new Date('2030-01-15T12:00:00Z');
    await ensurePartitions(catalog.pool, new Date(now.getTime() - 40 * 86_400_000), 0);
    const created = await ensurePartitions(catalog.pool, now, 1);
    expect(created).toEqual(expect.arrayContaining(['table_samples_20300115', 'table_samples_20300116', 'node_samples_20300116']));
    const dropped = await dropExpiredPartitions(catalog.pool, now, 35);
    expect(dropped).toEqual(expect.arrayContaining(['index_samples_20291206', 'node_samples_20291206', 'statement_samples_20291206', 'table_samples_20291206']));
    expect(dropped.every((d) => Number(d.slice(-8)) < 20291211)).toBe(true);
    const { rows } = await adminQuery(catalog.catalogUrl, "select count(*)::int as n from pg_class where relname like '%\\_20300115'");
    expect(rows[0].n).toBe(4);
  });

  it('a node that stops answering is unreachable in status and metrics after one round, and ok again once it answers', { timeout: 120_000 }, async () => {
    const { rows: clock } = await catalog.pool.query<{ now: Date }>('select now()');
    await ensurePartitions(catalog.pool, clock[0]!.now); // the test before dropped today's with its 2030 clock
    const server = new PostgresServer({ name: 'node-h', dataDir: path.join(fleet().baseDir, uniqueName('node_h')), port: await freePort(), user: 'postgres', password: fleet().password });
    await server.start();
    try {
      await server.ensureDatabase(catalog.database);
      await ensureNodes(catalog.pool, [{ name: 'node-h', dsn: server.url(catalog.database), region: 'test', zone: 'zh' }]);
      const node = await getNodeByName(catalog.pool, 'node-h');
      const health = async () => (await nodeHealth(catalog.pool)).find((h) => h.node === 'node-h')!;
      expect((await health()).reachable).toBeNull(); // not checked yet
      const first = await collectNode(catalog.pool, pools, node);
      expect(first.ok, first.error).toBe(true);
      expect(await health()).toMatchObject({ reachable: true, error: null });

      await server.stop();
      const round = await collectNode(catalog.pool, pools, node);
      expect(round.ok).toBe(false);
      const down = await health();
      expect(down).toMatchObject({ reachable: false });
      expect(down.error).toMatch(/ECONNREFUSED|connect|terminat/i);
      expect(down.lastOkAt).not.toBeNull();
      expect(await createMetricsRegistry(catalog.pool).metrics()).toContain('shardcast_node_reachable{node="node-h"} 0');
      const status = spawnSync(process.execPath, [path.resolve(import.meta.dirname, '../../bin/shardcast.js'), 'status', '--json'], {
        encoding: 'utf8',
        env: { ...process.env, SHARDCAST_CATALOG_URL: catalog.catalogUrl },
        timeout: 60_000,
      });
      expect(status.status, status.stderr).toBe(0);
      const shown = (JSON.parse(status.stdout) as { nodes: Array<{ name: string; reachable: boolean | null; health: string }> }).nodes.find((n) => n.name === 'node-h')!;
      expect(shown.reachable).toBe(false);
      expect(shown.health).toMatch(/^unreachable \(last answered \d\d:\d\d:\d\d UTC\): /);

      await server.start();
      expect(await collectNode(catalog.pool, pools, node)).toMatchObject({ ok: true });
      expect(await health()).toMatchObject({ reachable: true, error: null });
      expect(await createMetricsRegistry(catalog.pool).metrics()).toContain('shardcast_node_reachable{node="node-h"} 1');
    } finally {
      await catalog.pool.query("update shardcast.nodes set state = 'retired' where name = 'node-h'");
      await server.stop();
    }
  });
});
