import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable, moveResult, startMerge, startSplit } from '../../client/index.js';
import { NodePools } from '../../src/catalog/node-pools.js';
import { InvalidInputError } from '../../src/errors.js';
import { createRouter, type Router } from '../../src/router/router.js';
import { SA_OPERATION, SA_PHASE } from '../../src/search-attributes.js';
import { movementProgressQuery, pauseSignal, resumeSignal } from '../../workflows/messages.js';
import { adminQuery, createTestCatalog, expectNoMovementLeftovers, recordHistory, startTestWorker, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

let catalog: TestCatalog;
let worker: TestWorker;
let router: Router;
const pools = new NodePools();

beforeAll(async () => {
  catalog = await createTestCatalog('reshard');
  worker = await startTestWorker(catalog.catalogUrl);
  await createDistributedTable(worker.options, {
    name: 'orders',
    columns: "id bigint primary key, qty int not null default 0, note text not null default '', serial bigserial",
    shardKey: 'id',
    shardCount: 3,
  });
  await createDistributedTable(worker.options, { name: 'lines', columns: 'order_id bigint, line int, sku text, primary key (order_id, line)', shardKey: 'order_id', colocateWith: 'orders' });
  await createDistributedTable(worker.options, { name: 'ranged', columns: 'k text primary key, v int', shardKey: 'k', method: 'range', rangeBounds: ['a', 'n', '~'] });
  await createDistributedTable(worker.options, { name: 'nopk', columns: 'id bigint, v int', shardKey: 'id', shardCount: 2 });
  await createDistributedTable(worker.options, { name: 'timed', columns: 'at timestamptz primary key, v int', shardKey: 'at', method: 'range', rangeBounds: ['2026-01-01', '2026-02-01T00:00:00Z', '2026-03-01 01:00+01'] });
  router = await createRouter({ catalogUrl: catalog.catalogUrl });
});

afterAll(async () => {
  await router?.close();
  await pools.end();
  await worker?.close();
  await catalog?.close();
});

interface ShardRow {
  id: number;
  node: string;
  schema: string;
  hash_min: string | null;
  hash_max: string | null;
}

async function shardsOf(table: string): Promise<ShardRow[]> {
  const { rows } = await catalog.pool.query<ShardRow>(
    `select s.id::int as id, n.name as node, s.schema_name as schema, s.hash_min::text, s.hash_max::text from shardcast.shards s
       join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id
       join shardcast.distributed_tables t on t.group_id = s.group_id where t.name = $1 order by coalesce(s.hash_min::text, s.range_min), s.id`,
    [table],
  );
  return rows;
}

async function expectNothingLeft(): Promise<void> {
  await expectNoMovementLeftovers(pools, catalog.nodes);
  for (const node of catalog.nodes) {
    const stray = await adminQuery(catalog.nodeUrl(node.name), "select nspname::text as s from pg_namespace where nspname like 'sc\\_s%\\_moved\\_%'");
    expect(stray.rows).toEqual([]);
  }
  const { rows } = await catalog.pool.query("select count(*)::int as n from shardcast.movements where state = 'running'");
  expect(rows[0].n).toBe(0);
}

/** Every schema named in the catalog exists on its node, and no node has a shard schema the catalog does not name. */
async function expectSchemasMatchCatalog(): Promise<void> {
  const { rows } = await catalog.pool.query<{ node: string; schema: string }>(
    'select n.name as node, s.schema_name as schema from shardcast.shards s join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id',
  );
  for (const node of catalog.nodes) {
    const found = await adminQuery(catalog.nodeUrl(node.name), "select nspname::text as s from pg_namespace where nspname ~ '^sc_s[0-9]+$' order by 1");
    expect(found.rows.map((r: { s: string }) => r.s)).toEqual(rows.filter((r) => r.node === node.name).map((r) => r.schema).sort());
  }
}

/**
 * Writers that each own a set of keys and log every acknowledged write: inserts of new orders (with
 * a line), updates, deletes, and read-your-writes checks, all through the router.
 */
function startWriters(keysPerWriter: number[][]) {
  const model = new Map<number, { qty: number; note: string } | null>();
  const errors: string[] = [];
  let stop = false;
  let acknowledged = 0;
  const done = keysPerWriter.map(async (keys, w) => {
    let i = 0;
    while (!stop) {
      const key = keys[i++ % keys.length]!;
      const before = model.get(key);
      try {
        if (before === undefined || before === null) {
          const note = `w${w}-${i}`;
          await router.forKey('orders', key).transaction(async (tx) => {
            await tx.query('insert into orders (id, qty, note) values ($1, 1, $2)', [key, note]);
            await tx.query('insert into lines (order_id, line, sku) values ($1, 1, $2)', [key, note]);
          });
          model.set(key, { qty: 1, note });
        } else if (i % 7 === 0) {
          await router.forKey('orders', key).transaction(async (tx) => {
            await tx.query('delete from lines where order_id = $1', [key]);
            await tx.query('delete from orders where id = $1', [key]);
          });
          model.set(key, null);
        } else {
          await router.forKey('orders', key).query('update orders set qty = qty + 1 where id = $1', [key]);
          model.set(key, { ...before, qty: before.qty + 1 });
          const read = await router.forKey('orders', key).query<{ qty: number }>('select qty from orders where id = $1', [key]);
          if (read.rows[0]?.qty !== before.qty + 1) errors.push(`read of ${key}: ${JSON.stringify(read.rows)} after qty ${before.qty + 1}`);
        }
        acknowledged++;
      } catch (err) {
        errors.push(`${key}: ${(err as Error).message}`);
      }
    }
  });
  return {
    model,
    errors,
    get acknowledged() {
      return acknowledged;
    },
    async stop() {
      stop = true;
      await Promise.all(done);
    },
  };
}

/** The table's whole content (through the router, every shard) equals the writers' log. */
async function expectContentMatches(model: Map<number, { qty: number; note: string } | null>, keys: number[]): Promise<void> {
  const { rows: orders } = await router.all<{ id: string; qty: number; note: string }>('select id::text, qty, note from orders where id = any($1::bigint[])', [keys]);
  const { rows: lines } = await router.all<{ order_id: string; sku: string }>('select order_id::text, sku from lines where order_id = any($1::bigint[])', [keys]);
  const want = [...model].filter(([, v]) => v !== null).map(([k, v]) => ({ id: String(k), qty: v!.qty, note: v!.note }));
  const byId = (a: { id: string }, b: { id: string }) => Number(a.id) - Number(b.id);
  expect(orders.sort(byId)).toEqual(want.sort(byId));
  expect(lines.map((l) => ({ id: l.order_id, note: l.sku })).sort(byId)).toEqual(want.map((w) => ({ id: w.id, note: w.note })).sort(byId));
}

describe('split and merge', () => {
  it('splits a shard in two under load, then merges the halves back; data and routing right at every step', async () => {
    const [shard] = await shardsOf('orders');
    const keys = [...Array(5000).keys()].map((i) => i + 1).filter((k) => router.forKey('orders', k).route().shardId === shard!.id);
    // Rows that exist before the split (the initial copy), and keys the writers work on during it.
    for (const k of keys.slice(0, 200)) {
      await router.forKey('orders', k).query('insert into orders (id, qty, note) values ($1, 0, $2)', [k, 'seed']);
      await router.forKey('lines', k).query('insert into lines values ($1, 1, $2)', [k, 'seed']);
    }
    const writers = startWriters([0, 1, 2].map((w) => keys.slice(200).filter((_, i) => i % 3 === w)));
    for (const k of keys.slice(0, 200)) writers.model.set(k, { qty: 0, note: 'seed' });

    const others = catalog.nodes.map((n) => n.name).filter((n) => n !== shard!.node);
    const split = await startSplit(worker.options, { shardId: shard!.id, targetNodes: [others[0]!, shard!.node], graceSeconds: 0, pollSeconds: 0.3 });
    const splitResult = await moveResult(split);
    // Rows for a split too: at least the 200 orders and 200 lines there were before it, copied.
    const splitProgress = await split.query(movementProgressQuery);
    expect(splitProgress).toMatchObject({ phase: 'done' });
    expect(splitProgress.rowsCopied).toBeGreaterThanOrEqual(400);
    expect(splitProgress.bytesCopied).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 300)); // writes after the switch
    const afterSplit = (await shardsOf('orders')).filter((s) => splitResult.shards.includes(s.id));
    expect(afterSplit.map((s) => s.node)).toEqual([others[0], shard!.node]);
    expect(BigInt(afterSplit[0]!.hash_min!)).toBe(BigInt(shard!.hash_min!));
    expect(BigInt(afterSplit[0]!.hash_max!) + 1n).toBe(BigInt(afterSplit[1]!.hash_min!));
    expect(BigInt(afterSplit[1]!.hash_max!)).toBe(BigInt(shard!.hash_max!));
    expect(writers.errors).toEqual([]);
    // Routing: every key lands in the half that holds it.
    for (const k of keys.slice(0, 50)) expect(splitResult.shards).toContain(router.forKey('orders', k).route().shardId);
    const description = await split.describe();
    expect(description.typedSearchAttributes.get(SA_OPERATION)).toBe('split');
    expect(description.typedSearchAttributes.get(SA_PHASE)).toBe('done');
    expect(await description.staticSummary()).toBe(`split shard ${shard!.id} → ${others[0]} + ${shard!.node}`);

    const merge = await startMerge(worker.options, { shardIds: [splitResult.shards[1]!, splitResult.shards[0]!], targetNode: others[1], graceSeconds: 0, pollSeconds: 0.3 });
    const mergeResult = await moveResult(merge);
    await new Promise((r) => setTimeout(r, 300));
    await writers.stop();
    console.log(`split blocked writes ${splitResult.cutoverBlockedMs} ms, merge ${mergeResult.cutoverBlockedMs} ms; ${writers.acknowledged} acknowledged writes`);
    // Under this test's unthrottled writers (thousands of changes a second) the locked drain of the
    // slots and the re-check of the rows changed since verify take 300-450 ms here: asserted at 1 s,
    // as the README states. A move's cutover is asserted at 250 ms (cutover.test.ts).
    expect(splitResult.cutoverBlockedMs).toBeLessThanOrEqual(1000);
    expect(mergeResult.cutoverBlockedMs).toBeLessThanOrEqual(1000);
    expect(writers.errors).toEqual([]);
    expect(writers.acknowledged).toBeGreaterThan(50);
    const merged = (await shardsOf('orders')).find((s) => s.id === mergeResult.shards[0])!;
    expect(merged).toMatchObject({ node: others[1], hash_min: shard!.hash_min, hash_max: shard!.hash_max });
    await expectContentMatches(writers.model, keys);
    // The sequence of the merged shard continues after every value handed out before.
    const seq = await adminQuery(catalog.nodeUrl(others[1]!), `select max(serial)::int as m, nextval('${merged.schema}.orders_serial_seq')::int as next from ${merged.schema}.orders`);
    expect(seq.rows[0].next).toBeGreaterThan(seq.rows[0].m);
    await expectSchemasMatchCatalog();
    await expectNothingLeft();
    await recordHistory(worker.client, split.workflowId, 'split-shard');
    await recordHistory(worker.client, merge.workflowId, 'merge-shards');
  });

  it('splits a range shard at a key, in place (both halves on its own node)', async () => {
    const [shard] = await shardsOf('ranged');
    for (const k of ['apple', 'banana', 'kiwi', 'lemon', 'melon']) await router.forKey('ranged', k).query('insert into ranged values ($1, 1)', [k]);
    const handle = await startSplit(worker.options, { shardId: shard!.id, targetNodes: [shard!.node, shard!.node], at: 'f', graceSeconds: 0, pollSeconds: 0.2 });
    const result = await moveResult(handle);
    expect(router.forKey('ranged', 'banana').route().shardId).toBe(result.shards[0]);
    expect(router.forKey('ranged', 'kiwi').route().shardId).toBe(result.shards[1]);
    const low = await router.forKey('ranged', 'apple').query('select k from ranged order by k');
    expect(low.rows.map((r) => r.k)).toEqual(['apple', 'banana']);
    const high = await router.forKey('ranged', 'kiwi').query('select k from ranged order by k');
    expect(high.rows.map((r) => r.k)).toEqual(['kiwi', 'lemon', 'melon']);
    await expectSchemasMatchCatalog();
    await expectNothingLeft();
  });

  it('a timestamptz range table: routed by Date or ISO text with any offset, split at a time onto another node, every row where its time says', async () => {
    const [jan, feb] = await shardsOf('timed');
    const { rows: bounds } = await catalog.pool.query<{ range_min: string; range_max: string }>('select s.range_min, s.range_max from shardcast.shards s where s.id = $1', [jan!.id]);
    expect(bounds[0]).toEqual({ range_min: '2026-01-01 00:00:00+00', range_max: '2026-02-01 00:00:00+00' });
    const times = ['2026-01-01T00:00:00Z', '2026-01-10T08:00:00Z', '2026-01-15T10:00:00Z', '2026-01-15T10:00:00.000001Z', '2026-01-31T23:59:59.999Z', '2026-02-01T00:00:00Z', '2026-02-20T12:00:00Z'];
    for (const [i, t] of times.entries()) await router.forKey('timed', new Date(t)).query('insert into timed values ($1, $2)', [t, i]);
    // A key is the same instant whatever its offset: 12:00+02 is 10:00 UTC.
    expect(router.forKey('timed', '2026-01-15 12:00:00+02').route().shardId).toBe(jan!.id);
    expect(router.forKey('timed', '2026-02-01 00:59+01').route().shardId).toBe(jan!.id);
    expect(router.forKey('timed', '2026-02-01 01:00+01').route().shardId).toBe(feb!.id);
    expect(router.forKey('timed', '2026-02-01 00:00:00.000001+00').route().shardId).toBe(feb!.id);
    expect(() => router.forKey('timed', '2026-03-01T00:00:00Z').route()).toThrow(/2026-03-01/);
    const other = catalog.nodes.map((n) => n.name).find((n) => n !== jan!.node)!;
    const handle = await startSplit(worker.options, { shardId: jan!.id, targetNodes: [jan!.node, other], at: '2026-01-15 12:00:00+02', graceSeconds: 0, pollSeconds: 0.2 });
    const result = await moveResult(handle);
    const at = (t: string) => router.forKey('timed', new Date(t)).route().shardId;
    expect(at('2026-01-15T09:59:59.999Z')).toBe(result.shards[0]);
    expect(at('2026-01-15T10:00:00Z')).toBe(result.shards[1]);
    const read = async (t: string) => (await router.forKey('timed', new Date(t)).query<{ v: number }>('select v from timed order by at')).rows.map((r) => r.v);
    expect(await read('2026-01-01T00:00:00Z')).toEqual([0, 1]);
    expect(await read('2026-01-20T00:00:00Z')).toEqual([2, 3, 4]);
    expect(await read('2026-02-10T00:00:00Z')).toEqual([5, 6]);
    const { rows: split } = await catalog.pool.query<{ range_min: string; range_max: string }>('select range_min, range_max from shardcast.shards where id = any($1::bigint[]) order by range_min', [result.shards]);
    expect(split).toEqual([
      { range_min: '2026-01-01 00:00:00+00', range_max: '2026-01-15 10:00:00+00' },
      { range_min: '2026-01-15 10:00:00+00', range_max: '2026-02-01 00:00:00+00' },
    ]);
    await expectSchemasMatchCatalog();
    await expectNothingLeft();
  });

  it('a router with a map from before a split still answers a scatter query correctly', async () => {
    const [, , shard] = await shardsOf('orders');
    for (const k of [...Array(3000).keys()].map((i) => i + 100_000).filter((k) => router.forKey('orders', k).route().shardId === shard!.id).slice(0, 20)) {
      await router.forKey('orders', k).query('insert into orders (id, qty, note) values ($1, 7, $2)', [k, 'stale']);
    }
    // No NOTIFY and no version check: its map stays as it was until a query meets the fence.
    const stale = await createRouter({ catalogUrl: catalog.catalogUrl, listen: false, versionCheckIntervalMs: 3_600_000 });
    try {
      const before = await stale.all<{ n: number }>("select count(*)::int as n from orders where note = 'stale'");
      expect(before.rows.reduce((a, r) => a + r.n, 0)).toBe(20);
      const others = catalog.nodes.map((n) => n.name).filter((n) => n !== shard!.node);
      await moveResult(await startSplit(worker.options, { shardId: shard!.id, targetNodes: [others[0]!, others[1]!], graceSeconds: 0, pollSeconds: 0.2 }));
      const after = await stale.all<{ n: number }>("select count(*)::int as n from orders where note = 'stale'");
      expect(after.rows.reduce((a, r) => a + r.n, 0)).toBe(20);
      expect(after.shards).toBe(before.shards + 1);
    } finally {
      await stale.close();
    }
  });

  it("a merge of quiet shards catches up while the nodes write other tables' WAL (the slots advance past WAL of no interest)", { timeout: 120_000 }, async () => {
    const ROWS = 200_000;
    await createDistributedTable(worker.options, { name: 'quiet', columns: 'id bigint primary key, v int', shardKey: 'id', shardCount: 2 });
    // Enough rows for a copy of a few seconds, so that the merge can be paused once its slots exist.
    const byShard = new Map<number, number[]>();
    for (let k = 1; k <= ROWS; k++) {
      const shardId = router.forKey('quiet', k).route().shardId;
      if (!byShard.has(shardId)) byShard.set(shardId, []);
      byShard.get(shardId)!.push(k);
    }
    for (const keys of byShard.values()) await router.forKey('quiet', keys[0]!).query('insert into quiet (id, v) select k, k from unnest($1::bigint[]) k', [keys]);
    const [lo, hi] = await shardsOf('quiet');
    const merge = await startMerge(worker.options, { shardIds: [lo!.id, hi!.id], graceSeconds: 0, pollSeconds: 0.2 });
    const sourceNodes = [...new Set([lo!.node, hi!.node])];
    const slotsOf = async (node: string) =>
      (await adminQuery(catalog.nodeUrl(node), "select slot_name::text as slot from pg_replication_slots where slot_name like 'sc\\_mv\\_%' and database = current_database() and confirmed_flush_lsn is not null")).rows;
    const deadline = Date.now() + 60_000;
    while ((await Promise.all(sourceNodes.map(slotsOf))).flat().length < 2) {
      if (Date.now() > deadline) throw new Error('the merge did not create its slots within 60 s');
      await new Promise((r) => setTimeout(r, 20));
    }
    await merge.signal(pauseSignal);
    while (!(await merge.query(movementProgressQuery)).paused) {
      if (Date.now() > deadline) throw new Error(`the merge did not reach its change capture, paused, within 60 s: ${JSON.stringify(await merge.query(movementProgressQuery))} ${JSON.stringify(await Promise.all(sourceNodes.map(slotsOf)))}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    // About 16 MB of WAL on each source node (16 times the catch-up's lag bound), none of it the merged tables'.
    for (const node of sourceNodes) {
      await adminQuery(catalog.nodeUrl(node), "create table wal_of_no_interest as select g, repeat('x', 100) as pad from generate_series(1, 100000) g");
      await adminQuery(catalog.nodeUrl(node), 'drop table wal_of_no_interest');
    }
    await merge.signal(resumeSignal);
    let timer: NodeJS.Timeout | undefined;
    const stuck = new Promise<never>((_, reject) => {
      timer = setTimeout(() => void merge.query(movementProgressQuery).then((p) => reject(new Error(`the merge did not end within 45 s: ${JSON.stringify(p)}`)), reject), 45_000);
    });
    try {
      await Promise.race([moveResult(merge), stuck]);
    } finally {
      clearTimeout(timer);
    }
    const after = await shardsOf('quiet');
    expect(after).toHaveLength(1);
    const { rows } = await router.all<{ n: number; s: string }>('select count(*)::int as n, sum(v)::text as s from quiet');
    expect(rows).toEqual([{ n: ROWS, s: String((ROWS * (ROWS + 1)) / 2) }]);
    await expectNothingLeft();
  });

  it('refuses bad requests with a clear message and changes nothing', async () => {
    const [a, b, c] = await shardsOf('nopk');
    expect(c).toBeUndefined();
    const noPk = await startSplit(worker.options, { shardId: a!.id, targetNodes: [a!.node, b!.node], pollSeconds: 0.2 });
    await expect(moveResult(noPk)).rejects.toThrow(/table nopk has no primary key/);
    const ranged = await shardsOf('ranged');
    const notAdjacent = await startMerge(worker.options, { shardIds: [ranged[0]!.id, ranged[2]!.id], pollSeconds: 0.2 });
    await expect(moveResult(notAdjacent)).rejects.toThrow(/are not adjacent/);
    const otherGroup = await startMerge(worker.options, { shardIds: [a!.id, ranged[0]!.id], pollSeconds: 0.2 });
    await expect(moveResult(otherGroup)).rejects.toThrow(/different colocation groups/);
    const outside = await startSplit(worker.options, { shardId: ranged[0]!.id, targetNodes: [a!.node, a!.node], at: 'zzz', pollSeconds: 0.2 });
    await expect(moveResult(outside)).rejects.toThrow(/must lie strictly inside/);
    await expect(startMerge(worker.options, { shardIds: [a!.id, a!.id] })).rejects.toBeInstanceOf(InvalidInputError);
    await expect(startSplit(worker.options, { shardId: a!.id, targetNodes: ['node-1'] as unknown as [string, string] })).rejects.toThrow(/two target nodes/);
    expect(await shardsOf('nopk')).toEqual([a, b]);
    await expectSchemasMatchCatalog();
    await expectNothingLeft();
  });
});
