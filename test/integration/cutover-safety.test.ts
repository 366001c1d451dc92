import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable, moveResult, startMove, startSplit } from '../../client/index.js';
import { NodePools } from '../../src/catalog/node-pools.js';
import { freePort, PostgresServer } from '../../src/fleet/postgres-server.js';
import { ensureNodes, getNodeByName } from '../../src/catalog/nodes.js';
import { cutover, CutoverInDoubtError, fencedSchemaName, settleMove, type CutoverResult, type CutoverTarget } from '../../src/movement/cutover.js';
import { acquireMovementLease, finishMovement, StaleCutoverAttemptError } from '../../src/movement/lease.js';
import { dropTargetShard, movementNames, prepareTarget, shardTables, startStreaming, stopStreaming, streamProgress } from '../../src/movement/replication.js';
import { resetFailpoints } from '../../src/failpoints.js';
import { createMetricsRegistry } from '../../src/metrics/metrics.js';
import { movementProgressQuery, type MoveShardInput } from '../../workflows/messages.js';
import { createRouter, type Router } from '../../src/router/router.js';
import { adminQuery, createTestCatalog, expectNoMovementLeftovers, fleet, startTestWorker, type TestCatalog, type TestWorker, uniqueName, until } from '../helpers/fleet.js';

/**
 * The cutover's safety under faults (issue 9): a lost reply at the catalog's PREPARE, the source
 * gone after the switch, a stale attempt beside its retry, stale routers writing into a target.
 * Writers go through a stale router (no NOTIFY, no version check): only a fence can send them on.
 */

let catalog: TestCatalog;
let worker: TestWorker;
/** A node of this file's own, stopped and started by the tests (the shared fleet is left alone). */
let extra: PostgresServer | undefined;
const pools = new NodePools();
const RETRY = { maximumAttempts: 5, initialIntervalMs: 200, maximumIntervalMs: 1000 };

beforeAll(async () => {
  catalog = await createTestCatalog('cutsafe');
  worker = await startTestWorker(catalog.catalogUrl);
  await createDistributedTable(worker.options, { name: 'acks', columns: 'id bigint primary key, w int not null', shardKey: 'id', shardCount: 4 });
});

afterAll(async () => {
  delete process.env.SHARDCAST_FAILPOINTS;
  await extra?.stop();
  await pools.end();
  await worker?.close();
  await catalog?.close();
});

async function shardAt(index: number): Promise<{ id: number; node: string; other: string }> {
  const { rows } = await catalog.pool.query<{ id: number; node: string }>(
    `select s.id::int as id, n.name as node from shardcast.shards s join shardcast.placements p on p.shard_id = s.id
       join shardcast.nodes n on n.id = p.node_id order by s.hash_min`,
  );
  const row = rows.at(index)!; // negative: from the end
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
    await withLostCatalogReply(0, async (shard) => {
      const result = await moveResult(await startMove(worker.options, { shardId: shard.id, targetNode: shard.other, graceSeconds: 0, pollSeconds: 0.3, retry: RETRY }));
      expect(result.target).toBe(shard.other);
    });
  });

  it('split: the sources stay fenced, a stale router is sent on, no acknowledged write is lost', async () => {
    await withLostCatalogReply(1, async (shard) => {
      const result = await moveResult(await startSplit(worker.options, { shardId: shard.id, targetNodes: [shard.other, shard.node], graceSeconds: 0, pollSeconds: 0.3, retry: RETRY }));
      expect(result.shards).toHaveLength(2);
    });
  });
});

/**
 * Runs `movement` on the `index`-th shard while writers use a router whose map is never refreshed and
 * the catalog's connection is dropped right after its cutover PREPARE (once); then every acknowledged
 * write must be there exactly once and nothing left over.
 */
async function withLostCatalogReply(index: number, movement: (shard: Awaited<ReturnType<typeof shardAt>>) => Promise<void>): Promise<void> {
  const shard = await shardAt(index);
  const router = await staleRouter();
  const writers = startWriters(router, shard.id);
  try {
    resetFailpoints();
    process.env.SHARDCAST_FAILPOINTS = 'cutover.after-catalog-prepare=drop-connection*1';
    await movement(shard);
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
}

async function placementOf(shardId: number): Promise<string> {
  const { rows } = await catalog.pool.query<{ node: string }>(
    'select n.name as node from shardcast.placements p join shardcast.nodes n on n.id = p.node_id where p.shard_id = $1',
    [shardId],
  );
  return rows[0]!.node;
}

describe('cutover: forward only once the catalog switch has committed', () => {
  it('the source down for longer than the retries after the switch: the movement waits for it, finishes, and reports done', { timeout: 180_000 }, async () => {
    extra = new PostgresServer({ name: 'node-x', dataDir: path.join(fleet().baseDir, uniqueName('node_x')), port: await freePort(), user: 'postgres', password: fleet().password });
    await extra.start();
    await extra.ensureDatabase(catalog.database);
    const nodeXUrl = extra.url(catalog.database);
    await ensureNodes(catalog.pool, [{ name: 'node-x', dsn: nodeXUrl, region: 'test', zone: 'zx' }]);
    const shard = await shardAt(2);
    const router = await createRouter({ catalogUrl: catalog.catalogUrl });
    const keys: number[] = [];
    for (let k = 1; keys.length < 100; k++) if (router.shardMap.route('acks', k).shardId === shard.id) keys.push(k);
    for (const k of keys) await router.forKey('acks', k).query('insert into acks (id, w) values ($1, 0) on conflict (id) do nothing', [k]);
    await router.close();
    // First onto the extra node, so that it is the source of the next move.
    await moveResult(await startMove(worker.options, { shardId: shard.id, targetNode: 'node-x', graceSeconds: 0, pollSeconds: 0.3, retry: RETRY }));

    resetFailpoints();
    process.env.SHARDCAST_FAILPOINTS = 'cutover.after-catalog-commit=sleep:3000*1';
    // A short history limit: the rounds of retries while the source is down continue as new.
    const handle = await startMove(worker.options, {
      shardId: shard.id,
      targetNode: 'node-1',
      graceSeconds: 0,
      pollSeconds: 0.3,
      historyLimit: 65,
      retry: { maximumAttempts: 3, initialIntervalMs: 200, maximumIntervalMs: 500 },
    });
    let switchedRun: string;
    try {
      await until('the catalog switch', async () => (await placementOf(shard.id)) === 'node-1', 60_000, 20);
      await extra.stop(); // between the catalog's COMMIT PREPARED and the source's
      switchedRun = (await handle.describe()).runId;
      // Longer than the cutover's retries (3 attempts, at most 0.5 s apart).
      await new Promise((r) => setTimeout(r, 8000));
      const described = await handle.describe();
      expect(described.status.name).toBe('RUNNING');
      // Asked until a run answers: one continued as new a moment ago may not have had its first task yet.
      let details = '';
      await until('the details to say the switch is being finished', async () => {
        details = (await handle.query<{ currentDetails: string }>('__temporal_workflow_metadata').catch(() => ({ currentDetails: '' }))).currentDetails;
        return details !== '';
      }, 15_000, 200);
      expect(details).toMatch(/switched to node-1.*node-x/);
      // The source stays down until the rounds of retries have continued the workflow as new.
      await until('the forward rounds to continue as new', async () => (await handle.describe()).runId !== switchedRun, 90_000, 500);
      expect((await handle.query(movementProgressQuery)).phase).toBe('cutover');
      // What the alert ShardcastCutoverNotFinishing watches.
      expect(await createMetricsRegistry(catalog.pool).metrics()).toContain('shardcast_movements_switched_unfinished 1');
    } finally {
      delete process.env.SHARDCAST_FAILPOINTS;
      await extra.start();
    }
    const result = await moveResult(handle);
    expect(result.target).toBe('node-1');
    expect(await placementOf(shard.id)).toBe('node-1');
    // The run that finished was continued as new while it only went forward: its input says so.
    const last = await worker.client.workflow.getHandle(handle.workflowId).fetchHistory();
    const started = last.events![0]!.workflowExecutionStartedEventAttributes!;
    const lastInput = JSON.parse(Buffer.from(started.input!.payloads![0]!.data!).toString()) as MoveShardInput;
    expect(lastInput.resume?.forward?.failures).toBeGreaterThan(0);
    const prepared = await adminQuery(nodeXUrl, "select gid from pg_prepared_xacts where gid like 'sc\\_mv\\_%'");
    expect(prepared.rows).toEqual([]);
    const { rows } = await catalog.pool.query("select state from shardcast.movements where shard_id = $1 order by started_at desc limit 1", [shard.id]);
    expect(rows[0].state).toBe('done');
    await expectAllAcknowledged(keys);
    expect(await createMetricsRegistry(catalog.pool).metrics()).toContain('shardcast_movements_switched_unfinished 0');
  });
});

/** Some session on `url` holds the fence's lock (CREATE TRIGGER's) on the shard's table: a cutover is fencing. */
async function fencing(url: string): Promise<boolean> {
  const { rows } = await adminQuery(
    url,
    `select 1 from pg_locks l join pg_class c on c.oid = l.relation
      where c.relname = 'acks' and l.granted and l.mode = 'ShareRowExclusiveLock' and l.pid <> pg_backend_pid()`,
  );
  return rows.length > 0;
}

/** A move of the shard at `index`, leased and streaming, driven by hand (as the activities do). */
async function streamingMove(index: number, targetNode?: string): Promise<CutoverTarget & { id: string }> {
  const at = await shardAt(index);
  const id = uniqueName('zm');
  const move = {
    id,
    shard: await shardTables(catalog.pool, at.id),
    source: await getNodeByName(catalog.pool, at.node),
    target: await getNodeByName(catalog.pool, targetNode ?? at.other),
    names: movementNames(id),
  };
  await acquireMovementLease(catalog.pool, { id, operation: 'move', shardId: at.id, sourceNodeId: move.source.id, targetNodeIds: [move.target.id] }, 10);
  await prepareTarget(pools, move.target, move.shard);
  await startStreaming(pools, move, move.shard, move.names);
  await until('the initial copy', async () => (await streamProgress(pools, move, move.shard, move.names)).tablesReady === move.shard.tables.length, 60_000);
  return move;
}

describe('cutover: a stale attempt beside its retry', () => {
  const deps = () => ({ catalogUrl: catalog.catalogUrl, pools });

  it('the retry takes over while the stale attempt is paused after fencing; then the movement is given up: nothing switched, no write lost', async () => {
    const move = await streamingMove(-2);
    const router = await createRouter({ catalogUrl: catalog.catalogUrl });
    const writers = startWriters(router, move.shard.shardId, 2);
    try {
      resetFailpoints();
      process.env.SHARDCAST_FAILPOINTS = 'cutover.before-switch=sleep:4000*1';
      const stale = cutover(deps(), move).catch((e: Error) => e);
      await until('the first attempt fencing the source', () => fencing(move.source.dsn), 30_000, 10);
      // Its retry takes the next attempt number and waits for the source's locks.
      const retry = cutover(deps(), move, { lockTimeoutMs: 1000 }).catch((e: Error) => e);
      await new Promise((r) => setTimeout(r, 300));
      // The workflow gives up on the cutover: it settles (undo), compensates and ends the lease.
      expect(await settleMove(deps(), move)).toBe('undo');
      await stopStreaming(pools, move, move.names);
      await dropTargetShard(catalog.pool, pools, move.target, move.shard);
      await finishMovement(catalog.pool, move.id, 'failed');
      expect(await stale).toBeInstanceOf(StaleCutoverAttemptError);
      expect(await retry).toBeInstanceOf(Error);
      await new Promise((r) => setTimeout(r, 300));
    } finally {
      delete process.env.SHARDCAST_FAILPOINTS;
      await writers.stop();
      await router.close();
    }
    expect(await placementOf(move.shard.shardId)).toBe(move.source.name);
    expect(writers.errors).toEqual([]);
    await expectAllAcknowledged(writers.acknowledged);
    await expectNoMovementLeftovers(pools, catalog.nodes);
  });

  it('the retry takes over while the stale attempt is paused after fencing: exactly one cutover, by the retry', async () => {
    const move = await streamingMove(-1);
    const router = await staleRouter();
    const writers = startWriters(router, move.shard.shardId, 2);
    let retried: CutoverResult | Error;
    try {
      resetFailpoints();
      process.env.SHARDCAST_FAILPOINTS = 'cutover.before-switch=sleep:3000*1';
      const stale = cutover(deps(), move).catch((e: Error) => e);
      await until('the first attempt fencing the source', () => fencing(move.source.dsn), 30_000, 10);
      const retry = cutover(deps(), move, { lockTimeoutMs: 15_000 }).catch((e: Error) => e);
      expect(await stale).toBeInstanceOf(StaleCutoverAttemptError);
      retried = await retry;
      await stopStreaming(pools, move, move.names);
      await finishMovement(catalog.pool, move.id, 'done');
      await new Promise((r) => setTimeout(r, 500)); // stale routers keep writing
    } finally {
      delete process.env.SHARDCAST_FAILPOINTS;
      await writers.stop();
      await router.close();
    }
    expect(retried).not.toBeInstanceOf(Error);
    expect((retried as CutoverResult).recovered).toBeUndefined();
    expect(await placementOf(move.shard.shardId)).toBe(move.target.name);
    expect(writers.errors).toEqual([]);
    await expectAllAcknowledged(writers.acknowledged);
    await expectNoMovementLeftovers(pools, catalog.nodes);
  });
});

describe('writes into an in-progress target', () => {
  const deps = () => ({ catalogUrl: catalog.catalogUrl, pools });

  it('a stale router writing into a target mid-copy meets its fence and is sent to the source; after the cutover the target takes writes', async () => {
    const first = await shardAt(0);
    const stale = await staleRouter(); // still places the shard on its first node
    let k = 1_000_000;
    while (stale.shardMap.route('acks', k).shardId !== first.id) k++;
    try {
      // There and back: the shard's schema name is reused on its first node, now a target in progress.
      const away = await streamingMove(0);
      await cutover(deps(), away);
      await stopStreaming(pools, away, away.names);
      await pools.get(away.source.dsn).query(`drop schema ${fencedSchemaName(away.shard.schema, away.id)} cascade`);
      await finishMovement(catalog.pool, away.id, 'done');
      const back = await streamingMove(0, first.node);
      expect(back.target.name).toBe(first.node);

      const retried: unknown[] = [];
      stale.on('retried', (r) => retried.push(r));
      await stale.forKey('acks', k).query('insert into acks (id, w) values ($1, 7)', [k]);
      expect(retried).toHaveLength(1); // fenced on the target, retried on the source
      const onSource = await adminQuery(back.source.dsn, `select w from ${back.shard.schema}.acks where id = $1`, [k]);
      expect(onSource.rows).toEqual([{ w: 7 }]);

      await cutover(deps(), back);
      await stopStreaming(pools, back, back.names);
      await finishMovement(catalog.pool, back.id, 'done');
      const fresh = await createRouter({ catalogUrl: catalog.catalogUrl, listen: false });
      try {
        await fresh.forKey('acks', k).query('insert into acks (id, w) values ($1, 8) on conflict (id) do update set w = 8', [k]);
        const onTarget = await adminQuery(back.target.dsn, `select w from ${back.shard.schema}.acks where id = $1`, [k]);
        expect(onTarget.rows).toEqual([{ w: 8 }]);
      } finally {
        await fresh.close();
      }
    } finally {
      await stale.close();
    }
    await expectNoMovementLeftovers(pools, catalog.nodes);
  });
});

describe('cutover: in doubt', () => {
  it('a failure right after the catalog PREPARE leaves every part prepared (CUTOVER_IN_DOUBT); the retry finishes the switch', async () => {
    const move = await streamingMove(0);
    try {
      resetFailpoints();
      process.env.SHARDCAST_FAILPOINTS = 'cutover.after-catalog-prepare=throw*1';
      await expect(cutover({ catalogUrl: catalog.catalogUrl, pools }, move)).rejects.toBeInstanceOf(CutoverInDoubtError);
    } finally {
      delete process.env.SHARDCAST_FAILPOINTS;
    }
    const prepared = async (url: string) => (await adminQuery(url, "select gid from pg_prepared_xacts where gid like 'sc\\_mv\\_%' and database = current_database() order by 1")).rows.map((r: { gid: string }) => r.gid);
    expect(await prepared(catalog.catalogUrl)).toEqual([move.names.gid]);
    expect(await prepared(move.source.dsn)).toEqual([move.names.gid]);
    expect(await prepared(move.target.dsn)).toEqual([`${move.names.gid}_t`]);
    expect(await placementOf(move.shard.shardId)).toBe(move.source.name); // not committed yet
    expect((await cutover({ catalogUrl: catalog.catalogUrl, pools }, move)).recovered).toBe('finished');
    expect(await placementOf(move.shard.shardId)).toBe(move.target.name);
    await stopStreaming(pools, move, move.names);
    await finishMovement(catalog.pool, move.id, 'done');
    await expectNoMovementLeftovers(pools, catalog.nodes);
  });
});
