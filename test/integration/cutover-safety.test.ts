import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable, moveResult, startMove, startSplit } from '../../client/index.js';
import { NodePools } from '../../src/catalog/node-pools.js';
import { resetFailpoints } from '../../src/failpoints.js';
import { createRouter, type Router } from '../../src/router/router.js';
import { createTestCatalog, expectNoMovementLeftovers, startTestWorker, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

/**
 * The cutover's safety under faults (issue 9): a lost reply at the catalog's PREPARE, the source
 * gone after the switch, a stale attempt beside its retry, stale routers writing into a target.
 * Writers go through a stale router (no NOTIFY, no version check): only a fence can send them on.
 */

let catalog: TestCatalog;
let worker: TestWorker;
const pools = new NodePools();
const RETRY = { maximumAttempts: 5, initialIntervalMs: 200, maximumIntervalMs: 1000 };

beforeAll(async () => {
  catalog = await createTestCatalog('cutsafe');
  worker = await startTestWorker(catalog.catalogUrl);
  await createDistributedTable(worker.options, { name: 'acks', columns: 'id bigint primary key, w int not null', shardKey: 'id', shardCount: 4 });
});

afterAll(async () => {
  delete process.env.SHARDCAST_FAILPOINTS;
  await pools.end();
  await worker?.close();
  await catalog?.close();
});

async function shardAt(index: number): Promise<{ id: number; node: string; other: string }> {
  const { rows } = await catalog.pool.query<{ id: number; node: string }>(
    `select s.id::int as id, n.name as node from shardcast.shards s join shardcast.placements p on p.shard_id = s.id
       join shardcast.nodes n on n.id = p.node_id order by s.hash_min`,
  );
  const row = rows[index]!;
  return { ...row, other: ['node-1', 'node-2', 'node-3'].find((n) => n !== row.node)! };
}

/** A router that learns of map changes only from a fenced (or vanished) shard. */
function staleRouter(): Promise<Router> {
  return createRouter({ catalogUrl: catalog.catalogUrl, listen: false, versionCheckIntervalMs: 0, fenceWaitMs: 5000 });
}

/** Writers inserting new keys of `shardId` through `router`; every acknowledged key is logged. */
function startWriters(router: Router, shardId: number, writers = 3) {
  const acknowledged: number[] = [];
  const errors: string[] = [];
  let stop = false;
  let next = 1;
  const map = router.shardMap; // the keys are the shard's by the map at the start
  const done = Array.from({ length: writers }, async (_, w) => {
    while (!stop) {
      let key = next++;
      while (map.route('acks', key).shardId !== shardId) key = next++;
      try {
        await router.forKey('acks', key).query('insert into acks (id, w) values ($1, $2)', [key, w]);
        acknowledged.push(key);
      } catch (err) {
        errors.push(`${key}: ${(err as Error).message}`);
      }
      await new Promise((r) => setTimeout(r, 2));
    }
  });
  return {
    acknowledged,
    errors,
    async stop() {
      stop = true;
      await Promise.all(done);
    },
  };
}

/** Every acknowledged key is readable through a fresh map, exactly once. */
async function expectAllAcknowledged(acknowledged: number[]): Promise<void> {
  const fresh = await createRouter({ catalogUrl: catalog.catalogUrl, listen: false });
  try {
    const { rows } = await fresh.all<{ id: string }>('select id::text from acks');
    const seen = new Map<number, number>();
    for (const r of rows) seen.set(Number(r.id), (seen.get(Number(r.id)) ?? 0) + 1);
    const missing = acknowledged.filter((k) => seen.get(k) !== 1);
    expect(missing, `${missing.length} of ${acknowledged.length} acknowledged writes missing or duplicated`).toEqual([]);
  } finally {
    await fresh.close();
  }
}

describe('cutover: the catalog PREPARE succeeded but its reply was lost', () => {
  it('move: the source stays fenced, a stale router is sent on, no acknowledged write is lost', async () => {
    const shard = await shardAt(0);
    const router = await staleRouter();
    const writers = startWriters(router, shard.id);
    try {
      resetFailpoints();
      process.env.SHARDCAST_FAILPOINTS = 'cutover.after-catalog-prepare=drop-connection*1';
      const handle = await startMove(worker.options, { shardId: shard.id, targetNode: shard.other, graceSeconds: 0, pollSeconds: 0.3, retry: RETRY });
      const result = await moveResult(handle);
      expect(result.target).toBe(shard.other);
      await new Promise((r) => setTimeout(r, 800)); // the stale router keeps writing after the movement's cleanup
    } finally {
      delete process.env.SHARDCAST_FAILPOINTS;
      await writers.stop();
      await router.close();
    }
    expect(writers.errors).toEqual([]);
    expect(writers.acknowledged.length).toBeGreaterThan(50);
    await expectAllAcknowledged(writers.acknowledged);
    await expectNoMovementLeftovers(pools, catalog.nodes);
  });

  it('split: the sources stay fenced, a stale router is sent on, no acknowledged write is lost', async () => {
    const shard = await shardAt(1);
    const router = await staleRouter();
    const writers = startWriters(router, shard.id);
    try {
      resetFailpoints();
      process.env.SHARDCAST_FAILPOINTS = 'cutover.after-catalog-prepare=drop-connection*1';
      const handle = await startSplit(worker.options, { shardId: shard.id, targetNodes: [shard.other, shard.node], graceSeconds: 0, pollSeconds: 0.3, retry: RETRY });
      const result = await moveResult(handle);
      expect(result.shards).toHaveLength(2);
      await new Promise((r) => setTimeout(r, 800));
    } finally {
      delete process.env.SHARDCAST_FAILPOINTS;
      await writers.stop();
      await router.close();
    }
    expect(writers.errors).toEqual([]);
    expect(writers.acknowledged.length).toBeGreaterThan(50);
    await expectAllAcknowledged(writers.acknowledged);
    await expectNoMovementLeftovers(pools, catalog.nodes);
  });
});
