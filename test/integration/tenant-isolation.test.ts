import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable, rebalanceWorkflowId } from '../../client/index.js';
import { setNodeCapacity } from '../../src/catalog/nodes.js';
import { storedPlans } from '../../src/planning/store.js';
import { isolateWorkflowId } from '../../workflows/describe.js';
import type { IsolateKeyResult, RebalanceInput, RebalanceResult } from '../../workflows/messages.js';
import { writeShardForecasts } from '../helpers/forecasts.js';
import { hashKey } from '../../src/catalog/keys.js';
import { hotTenants, loadSplitsFor } from '../../src/profiling/tenants.js';
import { createRouter, type Router } from '../../src/router/router.js';
import { adminQuery, createTestCatalog, fleet, runCli, shardPlacements, startTestWorker, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

/**
 * Tenant isolation end to end, against real PostgreSQL and Temporal: a planted hot tenant (one key
 * taking most of its shard's accesses through a profiling router) is found by `shardcast tenants`,
 * then `shardcast isolate` splits it off into a shard of its own on another node by the movement
 * workflow's splits; every row is still there once, the router finds the key on its new shard, and
 * the node that held it carries less of the table's load.
 */

let catalog: TestCatalog;
let worker: TestWorker;
let router: Router;
const ROWS = 2000;
const HOT = 42;

beforeAll(async () => {
  catalog = await createTestCatalog('tenant');
  worker = await startTestWorker(catalog.catalogUrl);
  await createDistributedTable(worker.options, { name: 'accounts', columns: 'id bigint primary key, balance bigint not null', shardKey: 'id', shardCount: 2, nodes: ['node-1'] });
  router = await createRouter({ catalogUrl: catalog.catalogUrl, profile: { flushIntervalMs: 3_600_000 } });
  for (let k = 1; k <= ROWS; k++) await router.forKey('accounts', k).query('insert into accounts values ($1, 0)', [k]);
}, 180_000);

afterAll(async () => {
  await router?.close();
  await worker?.close();
  await catalog?.close();
});

function cli(...args: string[]) {
  return runCli(args, { SHARDCAST_CATALOG_URL: catalog.catalogUrl, SHARDCAST_TEMPORAL_ADDRESS: fleet().temporalAddress, SHARDCAST_TEMPORAL_TASK_QUEUE: worker.taskQueue });
}

async function rowCount(): Promise<number> {
  let n = 0;
  for (const s of await shardPlacements(catalog.pool)) n += (await adminQuery(catalog.nodeUrl(s.node), `select count(*)::int as n from ${s.schema}.accounts`)).rows[0].n as number;
  return n;
}

/** The table's accesses per node over the last minutes, from the profile's shard accesses and the placements now. */
async function accessesByNode(): Promise<Map<string, number>> {
  const placed = new Map((await shardPlacements(catalog.pool)).map((s) => [s.id, s.node]));
  const { rows } = await catalog.pool.query<{ shard_id: string; n: string }>(
    "select shard_id::text, sum(accesses)::text as n from shardcast_stats.shard_accesses where table_name = 'accounts' and bucket > now() - interval '10 minutes' group by 1",
  );
  const out = new Map<string, number>();
  for (const r of rows) {
    const node = placed.get(Number(r.shard_id));
    if (node) out.set(node, (out.get(node) ?? 0) + Number(r.n));
  }
  return out;
}

describe('tenant isolation', () => {
  it('a planted hot tenant is found, split off onto another node, and every row is still there once', { timeout: 240_000 }, async () => {
    // 3,000 updates: 70% to the hot tenant, the rest spread over the other keys.
    let seed = 7;
    for (let i = 0; i < 3000; i++) {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      const key = i % 10 < 7 ? HOT : 1 + (seed % ROWS);
      await router.forKey('accounts', key).query('update accounts set balance = balance + 1 where id = $1', [key]);
    }
    await router.flushProfile();

    const found = await hotTenants(catalog.pool, { table: 'accounts', sinceMs: 600_000 });
    expect(found.map((t) => t.key)).toEqual([String(HOT)]);
    expect(found[0]!.share).toBeGreaterThan(0.5);
    expect(found[0]!.node).toBe('node-1');
    const listed = await cli('tenants', '--table', 'accounts', '--json');
    // No node's capacity is known yet: the listing stands, without shardability (test/integration/shardability.test.ts).
    expect(listed.stderr.trim()).toMatch(/^shardability not computed: no node's capacity/);
    expect((JSON.parse(listed.stdout) as Array<{ key: string; shardId: number }>).map((t) => [t.key, t.shardId])).toEqual([[String(HOT), found[0]!.shardId]]);

    const rows = await rowCount();
    const before = await shardPlacements(catalog.pool);
    const dry = await cli('isolate', 'accounts', String(HOT), '--to', 'node-2', '--dry-run');
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(new RegExp(`key ${HOT} of accounts: hash \\[(-?\\d+), \\1\\] out of shard ${found[0]!.shardId} on node-1, onto node-2`));
    expect(await shardPlacements(catalog.pool)).toEqual(before);

    const isolated = await cli('isolate', 'accounts', String(HOT), '--to', 'node-2');
    expect(isolated.code, isolated.stderr).toBe(0);
    const h = hashKey('bigint', BigInt(HOT)).toString();
    const { rows: alone } = await catalog.pool.query<{ id: string; node: string }>(
      `select s.id::text, n.name as node from shardcast.shards s join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id
        where s.hash_min = $1::bigint and s.hash_max = $1::bigint`,
      [h],
    );
    expect(alone).toHaveLength(1);
    expect(alone[0]!.node).toBe('node-2');
    expect(isolated.stdout).toContain(`key ${HOT} of accounts is alone in shard ${alone[0]!.id} on node-2 (hash [${h}, ${h}])`);
    // Everything else stayed on node-1; the hot tenant's rows are the only ones on node-2.
    const after = await shardPlacements(catalog.pool);
    expect(after.filter((s) => s.node === 'node-2').map((s) => s.id)).toEqual([Number(alone[0]!.id)]);
    expect(await rowCount()).toBe(rows);
    const onTarget = await adminQuery(catalog.nodeUrl('node-2'), `select id, balance from sc_s${alone[0]!.id}.accounts`);
    expect(onTarget.rows).toEqual([{ id: String(HOT), balance: '2100' }]);

    // The router finds it there; the next accesses split between the nodes, node-1 no longer takes the tenant's.
    const read = await router.forKey('accounts', HOT).query<{ balance: string }>('select balance from accounts where id = $1', [HOT]);
    expect(read.rows).toEqual([{ balance: '2100' }]);
    await catalog.pool.query("delete from shardcast_stats.shard_accesses where table_name = 'accounts'");
    for (let i = 0; i < 1000; i++) {
      const key = i % 10 < 7 ? HOT : 1 + ((i * 7919) % ROWS);
      await router.forKey('accounts', key).query('update accounts set balance = balance + 1 where id = $1', [key]);
    }
    await router.flushProfile();
    const byNode = await accessesByNode();
    expect(byNode.get('node-2')).toBeGreaterThanOrEqual(700);
    expect(byNode.get('node-1')).toBeLessThanOrEqual(300);
  });

  it('a tenant accessed from one region is isolated onto the node in that region (the routers count hot keys per region)', { timeout: 240_000 }, async () => {
    const KEY = 1234;
    await catalog.pool.query("update shardcast.nodes set region = case name when 'node-3' then 'eu' else 'us' end");
    const eu = await createRouter({ catalogUrl: catalog.catalogUrl, profile: { flushIntervalMs: 3_600_000 }, region: 'eu' });
    try {
      for (let i = 0; i < 300; i++) await eu.forKey('accounts', KEY).query('update accounts set balance = balance + 1 where id = $1', [KEY]);
      await eu.flushProfile();
      const { rows: counted } = await catalog.pool.query("select region, sum(count)::int as n from shardcast_stats.hot_keys where table_name = 'accounts' and key = $1 group by region", [String(KEY)]);
      expect(counted).toEqual([{ region: 'eu', n: 300 }]);
      // node-2 (us) and node-3 (eu) are as idle as each other: the key's region decides.
      const dry = await cli('isolate', 'accounts', String(KEY), '--dry-run');
      expect(dry.code, dry.stderr).toBe(0);
      expect(dry.stdout).toContain(`out of shard`);
      expect(dry.stdout).toMatch(/, onto node-3\n/);
      expect(dry.stdout).toMatch(/target node-3: 0% utilised; 100% of the key's accesses from eu \(target cost 0\.00, next node-2 0\.50\)/);
      const rows = await rowCount();
      const isolated = await cli('isolate', 'accounts', String(KEY));
      expect(isolated.code, isolated.stderr).toBe(0);
      const h = hashKey('bigint', BigInt(KEY)).toString();
      const { rows: alone } = await catalog.pool.query<{ node: string }>(
        `select n.name as node from shardcast.shards s join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id
          where s.hash_min = $1::bigint and s.hash_max = $1::bigint`,
        [h],
      );
      expect(alone).toEqual([{ node: 'node-3' }]);
      expect(await rowCount()).toBe(rows);
    } finally {
      await eu.close();
      await catalog.pool.query('update shardcast.nodes set region = null');
    }
  });

  it('the rebalancer isolates a hot tenant on a node predicted over target before planning its shard again', { timeout: 240_000 }, async () => {
    await createDistributedTable(worker.options, { name: 'orders', columns: 'id bigint primary key, n bigint not null', shardKey: 'id', shardCount: 1, nodes: ['node-1'] });
    for (let k = 1; k <= 500; k++) await router.forKey('orders', k).query('insert into orders values ($1, 0)', [k]);
    const TENANT = 9;
    for (let i = 0; i < 2000; i++) {
      const key = i % 10 < 8 ? TENANT : 1 + ((i * 7919) % 500);
      await router.forKey('orders', key).query('update orders set n = n + 1 where id = $1', [key]);
    }
    await router.flushProfile();
    for (const n of catalog.nodes) await setNodeCapacity(catalog.pool, n.name, 1000);
    const placed = await shardPlacements(catalog.pool);
    const ordersShard = (await catalog.pool.query<{ id: number }>("select s.id::int from shardcast.shards s join shardcast.distributed_tables t on t.group_id = s.group_id where t.name = 'orders'")).rows[0]!.id;
    // The orders shard alone puts node-1 over its target (700 of 1000); everything else is idle.
    await writeShardForecasts(catalog.pool, placed.map((p) => p.id), (k) => (placed[k]!.id === ordersShard ? 900 : 10));
    const prefix = `${worker.taskQueue}-`;
    const input: RebalanceInput = { dryRun: false, trigger: 'operator', isolateTenantShare: 0.5, movement: { graceSeconds: 0, pollSeconds: 0.3, maxMovesPerNode: 4 }, workflowIdPrefix: prefix };
    const result = (await worker.client.workflow.execute('rebalance', { taskQueue: worker.taskQueue, workflowId: rebalanceWorkflowId(prefix), args: [input] })) as RebalanceResult;
    const id = isolateWorkflowId('orders', String(TENANT), prefix);
    // 1,600 of the shard's 2,500 accesses (its 500 inserts counted): 64%.
    expect(result.notes).toContain(`isolating key ${TENANT} of orders (64% of shard ${ordersShard}'s accesses on node-1): started ${id}`);
    const [stored] = await storedPlans(catalog.pool);
    expect(stored!.plan.actions.filter((a) => 'shardIds' in a && a.shardIds.includes(ordersShard))).toEqual([]);
    expect(stored!.plan.notes.join('\n')).toMatch(new RegExp(`key ${TENANT} of orders takes 64% of shard ${ordersShard}'s accesses on node-1, predicted over target: isolating it`));
    const done = (await worker.client.workflow.getHandle(id).result()) as IsolateKeyResult;
    expect(done.node).not.toBe('node-1');
    const h = hashKey('bigint', BigInt(TENANT)).toString();
    const { rows: alone } = await catalog.pool.query<{ id: number; node: string }>(
      `select s.id::int, n.name as node from shardcast.shards s join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id
        where s.hash_min = $1::bigint and s.hash_max = $1::bigint and s.group_id = (select group_id from shardcast.distributed_tables where name = 'orders')`,
      [h],
    );
    expect(alone).toEqual([{ id: done.shardId, node: done.node }]);
    let total = 0;
    const ordersShards = await catalog.pool.query<{ schema: string; node: string }>(
      `select s.schema_name as schema, n.name as node from shardcast.shards s join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id
        where s.group_id = (select group_id from shardcast.distributed_tables where name = 'orders')`,
    );
    for (const s of ordersShards.rows) total += (await adminQuery(catalog.nodeUrl(s.node), `select count(*)::int as n from ${s.schema}.orders`)).rows[0].n as number;
    expect(total).toBe(500);
  });

  it('the rebalancer splits a skewed shard where its halves carry even load by the profile, not at the middle of its hash range', { timeout: 240_000 }, async () => {
    await createDistributedTable(worker.options, { name: 'carts', columns: 'id bigint primary key, n bigint not null', shardKey: 'id', shardCount: 1, nodes: ['node-1'] });
    for (let k = 1; k <= 500; k++) await router.forKey('carts', k).query('insert into carts values ($1, 0)', [k]);
    // One key takes 40% of the updates (32% of all accesses): heavy, but under isolateTenantShare (0.5): the shard is split, not the key cut out.
    const SKEWED = 77;
    for (let i = 0; i < 2000; i++) {
      const key = i % 10 < 6 ? 1 + ((i * 7919) % 500) : SKEWED;
      await router.forKey('carts', key).query('update carts set n = n + 1 where id = $1', [key]);
    }
    await router.flushProfile();
    const cartsShard = (await catalog.pool.query<{ id: number }>("select s.id::int from shardcast.shards s join shardcast.distributed_tables t on t.group_id = s.group_id where t.name = 'carts'")).rows[0]!.id;
    const cut = (await loadSplitsFor(catalog.pool, cartsShard, 2, 15 * 60_000))!;
    const expected = { at: cut.points[0]!, lowerShare: cut.shares[0]!, heavyShare: cut.heavyShare };
    expect(expected).toBeDefined();
    expect(BigInt(expected.at)).not.toBe(-1n); // not the middle of [-2^63, 2^63 - 1]
    // The key's 801 of the 2,500 accesses (the 500 inserts counted), and a few the top-k list holds besides.
    expect(expected.heavyShare).toBeGreaterThanOrEqual(801 / 2500);
    expect(expected.heavyShare).toBeLessThan(0.4);
    expect(Math.abs(expected.lowerShare - 0.5)).toBeLessThan(0.2);
    const placed = await shardPlacements(catalog.pool);
    // The carts shard alone puts any node over its target (800 against 700 of 1000); two pieces of 400 fit.
    await writeShardForecasts(catalog.pool, placed.map((p) => p.id), (k) => (placed[k]!.id === cartsShard ? 800 : 10));
    const prefix = `${worker.taskQueue}-split-`;
    const input: RebalanceInput = { dryRun: false, trigger: 'operator', isolateTenantShare: 0.5, movement: { graceSeconds: 0, pollSeconds: 0.3, maxMovesPerNode: 4 }, workflowIdPrefix: prefix };
    const result = (await worker.client.workflow.execute('rebalance', { taskQueue: worker.taskQueue, workflowId: rebalanceWorkflowId(prefix), args: [input] })) as RebalanceResult;
    const split = result.actions.find((o) => o.outcome.startsWith(`split shard ${cartsShard}`));
    expect(split, JSON.stringify(result.actions)).toBeDefined();
    expect(split!.state).toBe('done');
    expect(split!.outcome).toContain(`; split at hash ${expected.at}, where its halves carry ${Math.round(expected.lowerShare * 100)}%`);
    // The lower half ends at that point; every row is still there once.
    const { rows: halves } = await catalog.pool.query<{ hash_min: string; hash_max: string; schema: string; node: string }>(
      `select s.hash_min::text, s.hash_max::text, s.schema_name as schema, n.name as node from shardcast.shards s
         join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id
        where s.group_id = (select group_id from shardcast.distributed_tables where name = 'carts') order by s.hash_min`,
    );
    expect(halves.map((h) => [h.hash_min, h.hash_max])).toEqual([
      [(-(2n ** 63n)).toString(), expected.at],
      [(BigInt(expected.at) + 1n).toString(), (2n ** 63n - 1n).toString()],
    ]);
    let total = 0;
    for (const h of halves) total += (await adminQuery(catalog.nodeUrl(h.node), `select count(*)::int as n from ${h.schema}.carts`)).rows[0].n as number;
    expect(total).toBe(500);
  });

  it('refuses bad input with one line naming the problem, and changes nothing', { timeout: 120_000 }, async () => {
    const before = await shardPlacements(catalog.pool);
    const cases: Array<[string[], RegExp]> = [
      [['isolate', 'accounts', 'abc'], /key "abc" of table "accounts"/],
      [['isolate', 'nosuch', '1'], /there is no distributed table "nosuch"/],
      [['isolate', 'accounts', '7', '--to', 'node-9'], /there is no node "node-9"/],
      [['isolate', 'accounts', String(HOT)], new RegExp(`key ${HOT} of table "accounts" already has shard \\d+ to itself`)],
      [['tenants', '--min-share', '2'], /--min-share/],
    ];
    for (const [args, message] of cases) {
      const r = await cli(...args);
      expect(r.code, args.join(' ')).not.toBe(0);
      expect(r.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
      expect(r.stderr, args.join(' ')).toMatch(message);
    }
    expect(await shardPlacements(catalog.pool)).toEqual(before);
  });
});
