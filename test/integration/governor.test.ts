import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable, moveResult, startMove } from '../../client/index.js';
import { NodePools } from '../../src/catalog/node-pools.js';
import { getNodeByName } from '../../src/catalog/nodes.js';
import { DEFAULT_GOVERNOR, Governor } from '../../src/movement/governor.js';
import { copyMove, dropTargetShard, movementNames, paceSubscription, prepareTarget, shardTables, startStreaming, stopStreaming } from '../../src/movement/replication.js';
import { movementThrottledSeconds } from '../../src/metrics/metrics.js';
import { createRouter, type Router } from '../../src/router/router.js';
import { type MovementProgress, movementProgressQuery } from '../../workflows/messages.js';
import { adminQuery, createTestCatalog, expectNoMovementLeftovers, startTestWorker, type TestCatalog, type TestWorker, until } from '../helpers/fleet.js';

let catalog: TestCatalog;
let worker: TestWorker;
let router: Router;
const pools = new NodePools();

beforeAll(async () => {
  catalog = await createTestCatalog('governor');
  worker = await startTestWorker(catalog.catalogUrl);
  await createDistributedTable(worker.options, { name: 'events', columns: 'id bigint primary key, body text, n int not null default 0', shardKey: 'id', shardCount: 1, nodes: ['node-1'] });
  router = await createRouter({ catalogUrl: catalog.catalogUrl });
});

afterAll(async () => {
  await router?.close();
  await pools.end();
  await worker?.close();
  await catalog?.close();
});

describe('the copy governor', () => {
  it('holds a move back while the source is slow, then completes it with every row and every write; progress shows the time throttled', async () => {
    const { rows: shards } = await catalog.pool.query<{ id: number; schema: string }>('select id::int as id, schema_name as schema from shardcast.shards');
    const s = shards[0]!;
    const rows = 20_000;
    await adminQuery(catalog.nodeUrl('node-1'), `insert into ${s.schema}.events select g, repeat(md5(g::text), 4), 0 from generate_series(1, ${rows}) g`);

    // A foreground writer through the router, all along.
    let stop = false;
    let acknowledged = 0;
    const errors: unknown[] = [];
    const writer = (async () => {
      for (let i = 0; !stop; i++) {
        const key = 1 + ((i * 7919) % rows);
        try {
          await router.forKey('events', key).query('update events set n = n + 1 where id = $1', [key]);
          acknowledged++;
        } catch (err) {
          errors.push(err);
        }
      }
    })();

    const throttledSeconds = async (): Promise<number> =>
      (await movementThrottledSeconds.get()).values.filter((v) => v.labels.operation === 'move' && v.labels.phase === 'copy').reduce((a, v) => a + v.value, 0);
    const metricBefore = await throttledSeconds();
    // Small chunks so that the copy takes a while; the governor at its default ratio.
    const handle = await startMove(worker.options, { shardId: s.id, targetNode: 'node-2', pollSeconds: 0.2, graceSeconds: 0, governor: { enabled: true, chunkRows: 500 } });
    // Rows committed on the target by the copy so far (exact, unlike the statistics behind `rowsCopied`).
    const copiedRows = async (): Promise<number> => {
      const { rows: exists } = await adminQuery(catalog.nodeUrl('node-2'), "select to_regclass('sc_movement.copies') is not null as ok");
      if (!exists[0].ok) return 0;
      const { rows: r } = await adminQuery(catalog.nodeUrl('node-2'), 'select coalesce(sum(rows), 0)::int as n from sc_movement.copies');
      return r[0].n;
    };
    await until('the copy to start', async () => (await copiedRows()) > 0);
    // Latency injected for real: the probe's table on the source is locked for 3 s, so every probe there waits.
    // Once a probe has waited past its limit (1.5 × its baseline, at least four probe intervals), the copy is
    // held: at most a chunk per maxPauseMs (0.5 s) goes through. Counted from 1 s into the lock (the baseline
    // is a p90 of at least 20 probes: well under the 0.67 s that would delay the hold past that) to its end.
    const locker = new pg.Client({ connectionString: catalog.nodeUrl('node-1') });
    await locker.connect();
    let heldRows: number;
    let during: MovementProgress;
    try {
      await locker.query('begin');
      await locker.query('lock table sc_movement.governor_probe in access exclusive mode');
      await new Promise((r) => setTimeout(r, 1000));
      const before = await copiedRows();
      await new Promise((r) => setTimeout(r, 2000));
      heldRows = (await copiedRows()) - before;
      during = await handle.query(movementProgressQuery);
      await locker.query('commit');
    } finally {
      await locker.end();
    }

    const result = await moveResult(handle);
    stop = true;
    await writer;
    // Asserted once the move is over, so that a failure here does not leave it running into the next test.
    expect(during.throttledMs ?? 0).toBeGreaterThan(0);
    expect(heldRows, `rows copied during 2 s of the hold (${JSON.stringify(during)})`).toBeLessThanOrEqual(6 * 500);
    expect(result.target).toBe('node-2');
    const progress = await handle.query(movementProgressQuery);
    expect(progress.throttledMs).toBeGreaterThan(1000);
    // The worker's Prometheus counter (this process runs the test's worker) counted the copy's share of it.
    expect(await throttledSeconds()).toBeGreaterThan(metricBefore + 0.5);
    expect(errors).toEqual([]);
    const { rows: copied } = await adminQuery(catalog.nodeUrl('node-2'), `select count(*)::int as n, sum(n)::int as writes from ${s.schema}.events`);
    expect(copied[0]).toEqual({ n: rows, writes: acknowledged });
    await expectNoMovementLeftovers(pools, catalog.nodes);
    const { rows: control } = await adminQuery(catalog.nodeUrl('node-2'), 'select count(*)::int as n from sc_movement.copy_control');
    expect(control[0].n).toBe(0);
  }, 180_000);

  it('a bad governor setting is refused by name before anything is leased or created', async () => {
    const { rows: shards } = await catalog.pool.query<{ id: number; schema: string; node: string }>(
      'select s.id::int as id, s.schema_name as schema, n.name as node from shardcast.shards s join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id',
    );
    const s = shards[0]!;
    const target = s.node === 'node-1' ? 'node-2' : 'node-1';
    const before = await catalog.pool.query('select count(*)::int as n from shardcast.movements');
    const handle = await startMove(worker.options, { shardId: s.id, targetNode: target, pollSeconds: 0.2, graceSeconds: 0, governor: { latencyRatio: 0.5 } });
    await expect(moveResult(handle)).rejects.toThrow(
      new RegExp(`^move shard ${s.id} → ${target} failed in prepare: governor latencyRatio must be a number from 1 to 100, not 0.5; nothing was changed$`),
    );
    // No lease, no schema on the would-be target, nothing on either node.
    const after = await catalog.pool.query('select count(*)::int as n from shardcast.movements');
    expect(after.rows[0].n).toBe(before.rows[0].n);
    const { rows: schemas } = await adminQuery(catalog.nodeUrl(target), 'select count(*)::int as n from pg_namespace where nspname = $1', [s.schema]);
    expect(schemas[0].n).toBe(0);
    await expectNoMovementLeftovers(pools, catalog.nodes);
  }, 60_000);

  it('holds a move\'s apply with a lock its writes wait for, never restarting the subscription, and lets it catch up once the source recovers', async () => {
    await createDistributedTable(worker.options, { name: 'paced', columns: 'id bigint primary key, n int not null default 0', shardKey: 'id', shardCount: 1, nodes: ['node-1'] });
    const { rows: ids } = await catalog.pool.query<{ id: number }>("select s.id::int as id from shardcast.shards s join shardcast.distributed_tables t on t.group_id = s.group_id where t.name = 'paced'");
    const shard = await shardTables(catalog.pool, ids[0]!.id);
    const m = { source: await getNodeByName(catalog.pool, 'node-1'), target: await getNodeByName(catalog.pool, 'node-2') };
    const names = movementNames(`gov_apply_${Date.now().toString(36)}`);
    const table = `${shard.schema}.paced`;
    await adminQuery(catalog.nodeUrl('node-1'), `insert into ${table} select g, 0 from generate_series(1, 2000) g`);
    await prepareTarget(pools, m.target, shard);
    await startStreaming(pools, m, shard, names, { copy: 'own' });
    const copying = new Governor(DEFAULT_GOVERNOR, [m.source.dsn, m.target.dsn]);
    await copyMove(pools, m, shard, names, { governor: copying });
    const applied = async (): Promise<number> => (await adminQuery(catalog.nodeUrl('node-2'), `select coalesce(sum(n), 0)::int as n from ${table}`)).rows[0].n;
    const applyWorker = async (): Promise<number | null> =>
      (await adminQuery(catalog.nodeUrl('node-2'), 'select pid from pg_stat_subscription where subname = $1 and relid is null', [names.subscription])).rows[0]?.pid ?? null;
    await until('the subscription to apply', async () => (await applyWorker()) !== null);
    const pid = await applyWorker();

    const applying = new Governor(DEFAULT_GOVERNOR, [m.source.dsn, m.target.dsn]);
    await applying.start(copying.baselines());
    // The source's probe is locked: every probe waits, the governor sees a node in trouble.
    const locker = new pg.Client({ connectionString: catalog.nodeUrl('node-1') });
    await locker.connect();
    try {
      await locker.query('begin');
      await locker.query('lock table sc_movement.governor_probe in access exclusive mode');
      await adminQuery(catalog.nodeUrl('node-1'), `update ${table} set n = n + 1`); // 2000 changes to apply
      const held = await paceSubscription(pools, m, shard, names, applying, Date.now() + 2500);
      expect(held).toBeGreaterThan(1200);
      // The same apply worker throughout: held by the lock, not stopped and started again.
      expect(await applyWorker()).toBe(pid);
      await locker.query('commit');
    } finally {
      await locker.end();
    }
    // The source answers again: the apply's share grows back, and it catches up while still paced.
    await until('the paced apply to catch up', async () => {
      await paceSubscription(pools, m, shard, names, applying, Date.now() + 500);
      return (await applied()) === 2000;
    }, 30_000, 0);
    expect(await applyWorker()).toBe(pid);
    const { rows: control } = await adminQuery(catalog.nodeUrl('node-2'), 'select throttled_ms::int as ms from sc_movement.copy_control where movement_id = $1', [names.slot]);
    expect(control[0].ms).toBeGreaterThan(1200);
    await applying.stop();
    await stopStreaming(pools, m, names);
    await dropTargetShard(catalog.pool, pools, m.target, shard);
  }, 120_000);
});
