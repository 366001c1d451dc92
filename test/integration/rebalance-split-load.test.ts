import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable, rebalanceWorkflowId } from '../../client/index.js';
import { setNodeCapacity } from '../../src/catalog/nodes.js';
import { storedPlans } from '../../src/planning/store.js';
import { loadSplitsFor } from '../../src/profiling/tenants.js';
import { createRouter } from '../../src/router/router.js';
import type { RebalanceInput, RebalanceResult } from '../../workflows/messages.js';
import { writeShardForecasts } from '../helpers/forecasts.js';
import { adminQuery, createTestCatalog, startTestWorker, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

/**
 * A skewed shard that alone needs four pieces: the rebalance workflow's successive halvings cut it
 * where each piece carries about a quarter of its accesses by the routers' profile, not at the
 * quarter points of its hash range.
 */

let catalog: TestCatalog;
let worker: TestWorker;
const ROWS = 400;

beforeAll(async () => {
  catalog = await createTestCatalog('rsplitload');
  worker = await startTestWorker(catalog.catalogUrl);
  for (const n of catalog.nodes) await setNodeCapacity(catalog.pool, n.name, 1000);
  await createDistributedTable(worker.options, { name: 'skewed', columns: 'id bigint primary key, n bigint not null default 0', shardKey: 'id', shardCount: 1, nodes: ['node-1'] });
}, 120_000);

afterAll(async () => {
  await worker?.close();
  await catalog?.close();
});

describe('rebalance: a split of a skewed shard into four', () => {
  it('cuts the pieces where each carries even load by the routers\' profile, and every row is still there once', { timeout: 300_000 }, async () => {
    const router = await createRouter({ catalogUrl: catalog.catalogUrl, profile: { flushIntervalMs: 3_600_000 } });
    try {
      for (let k = 1; k <= ROWS; k++) await router.forKey('skewed', k).query('insert into skewed values ($1, 0)', [k]);
      // Two keys take 30% of the updates each: cut at the quarter points of the hash range, the pieces holding them would carry most of the load.
      for (let i = 0; i < 2000; i++) {
        const key = i % 10 < 3 ? 11 : i % 10 < 6 ? 12 : 1 + ((i * 7919) % ROWS);
        await router.forKey('skewed', key).query('update skewed set n = n + 1 where id = $1', [key]);
      }
      await router.flushProfile();
    } finally {
      await router.close();
    }
    const id = (await catalog.pool.query<{ id: number }>("select s.id::int from shardcast.shards s join shardcast.distributed_tables t on t.group_id = s.group_id where t.name = 'skewed'")).rows[0]!.id;
    const expected = (await loadSplitsFor(catalog.pool, id, 4, 15 * 60_000))!;
    expect(expected.points).toHaveLength(3);
    // Even by load: no piece is off a quarter by more than the two keys' granularity allows, unlike the quarter points.
    for (const share of expected.shares) expect(Math.abs(share - 0.25)).toBeLessThan(0.15);
    // 1000 load units (1050 at the 95% bound) on one shard: four pieces of about 262.
    await writeShardForecasts(catalog.pool, [id], () => 1000);
    const prefix = `${worker.taskQueue}-`;
    const input: RebalanceInput = { dryRun: false, trigger: 'operator', isolateTenantShare: 0, movement: { graceSeconds: 0, pollSeconds: 0.3, maxMovesPerNode: 4 }, workflowIdPrefix: prefix };
    const result = (await worker.client.workflow.execute('rebalance', { taskQueue: worker.taskQueue, workflowId: rebalanceWorkflowId(prefix), args: [input] })) as RebalanceResult;
    const outcome = result.actions.find((a) => a.outcome.startsWith(`split shard ${id} into 4 by halvings`));
    expect(outcome, JSON.stringify([result.actions, (await storedPlans(catalog.pool))[0]?.plan.notes])).toBeDefined();
    expect(outcome!.state, outcome!.outcome).toBe('done');
    expect(outcome!.outcome).toContain(`; cut where its pieces carry ${expected.shares.map((x) => `${Math.round(x * 100)}%`).join(', ')} of its accesses`);
    // Three split workflows; the pieces end at the points, in key order; every row is there once.
    expect(outcome!.workflowId!.split(',')).toHaveLength(3);
    const { rows: pieces } = await catalog.pool.query<{ hash_max: string; schema: string; node: string }>(
      `select s.hash_max::text, s.schema_name as schema, n.name as node from shardcast.shards s
         join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id
        where s.group_id = (select group_id from shardcast.distributed_tables where name = 'skewed') order by s.hash_min`,
    );
    expect(pieces.map((x) => x.hash_max)).toEqual([...expected.points, (2n ** 63n - 1n).toString()]);
    const seen = new Set<number>();
    let total = 0;
    for (const x of pieces) {
      const { rows } = await adminQuery(catalog.nodeUrl(x.node), `select id::int from ${x.schema}.skewed`);
      total += rows.length;
      for (const r of rows) seen.add(r.id as number);
    }
    expect(total).toBe(ROWS);
    expect(seen.size).toBe(ROWS);
  });
});
