import { WorkflowFailedError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable, moveResult, startMove } from '../../client/index.js';
import { NodePools } from '../../src/catalog/node-pools.js';
import { AlreadyExistsError } from '../../src/errors.js';
import { createRouter, type Router } from '../../src/router/router.js';
import { SA_GROUP, SA_PHASE, SA_SHARD, SA_SOURCE_NODE, SA_TARGET_NODE } from '../../src/search-attributes.js';
import { approveSignal, movementProgressQuery, pauseSignal, rejectSignal, resumeSignal } from '../../workflows/messages.js';
import { adminQuery, createTestCatalog, expectNoMovementLeftovers, recordHistory, startTestWorker, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

let catalog: TestCatalog;
let worker: TestWorker;
let router: Router;
const pools = new NodePools();

beforeAll(async () => {
  catalog = await createTestCatalog('move');
  worker = await startTestWorker(catalog.catalogUrl);
  await createDistributedTable(worker.options, {
    name: 'carts',
    columns: 'id bigint primary key, items int not null default 0',
    shardKey: 'id',
    shardCount: 6,
  });
  await createDistributedTable(worker.options, { name: 'loose', columns: 'id bigint, note text', shardKey: 'id', shardCount: 1 });
  router = await createRouter({ catalogUrl: catalog.catalogUrl });
  for (let id = 1; id <= 600; id++) await router.forKey('carts', id).query('insert into carts values ($1, 0)', [id]);
});

afterAll(async () => {
  await router?.close();
  await pools.end();
  await worker?.close();
  await catalog?.close();
});

async function shardOf(table: string, index: number): Promise<{ id: number; node: string; schema: string; other: string }> {
  const { rows } = await catalog.pool.query<{ id: number; node: string; schema: string }>(
    `select s.id::int as id, n.name as node, s.schema_name as schema from shardcast.shards s
       join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id
       join shardcast.distributed_tables t on t.group_id = s.group_id where t.name = $1 order by s.id`,
    [table],
  );
  const row = rows[index]!;
  return { ...row, other: ['node-1', 'node-2', 'node-3'].find((n) => n !== row.node)! };
}

async function placement(shardId: number): Promise<string> {
  const { rows } = await catalog.pool.query<{ node: string }>(
    'select n.name as node from shardcast.placements p join shardcast.nodes n on n.id = p.node_id where p.shard_id = $1',
    [shardId],
  );
  return rows[0]!.node;
}

async function expectNothingLeft(): Promise<void> {
  await expectNoMovementLeftovers(pools, catalog.nodes);
  const { rows } = await catalog.pool.query("select count(*)::int as n from shardcast.movements where state = 'running'");
  expect(rows[0].n).toBe(0);
}

async function schemasOn(node: string, like: string): Promise<string[]> {
  const { rows } = await adminQuery(catalog.nodeUrl(node), 'select nspname::text as s from pg_namespace where nspname like $1 order by 1', [like]);
  return rows.map((r: { s: string }) => r.s);
}

describe('moveShard workflow', () => {
  it('moves a shard while the application writes through the router, and drops the fenced copy after the grace period', async () => {
    const shard = await shardOf('carts', 0);
    const keys = [...Array(600).keys()].map((i) => i + 1).filter((k) => router.forKey('carts', k).route().shardId === shard.id);
    let acknowledged = 0;
    let stop = false;
    const errors: unknown[] = [];
    const writers = Array.from({ length: 3 }, async (_, w) => {
      for (let i = w; !stop; i += 3) {
        const key = keys[i % keys.length]!;
        try {
          await router.forKey('carts', key).query('update carts set items = items + 1 where id = $1', [key]);
          acknowledged++;
        } catch (err) {
          errors.push(err);
        }
      }
    });
    const handle = await startMove(worker.options, { shardId: shard.id, targetNode: shard.other, graceSeconds: 1, pollSeconds: 0.2 });
    const result = await moveResult(handle);
    stop = true;
    await Promise.all(writers);
    const verifyBlockedMs = (await handle.query(movementProgressQuery)).verifyBlockedMs;
    console.log(`moveShard: verify held writes ${verifyBlockedMs} ms, cutover blocked writes ${result.cutoverBlockedMs} ms`);
    expect(verifyBlockedMs).toBeGreaterThanOrEqual(0);

    expect(errors).toEqual([]);
    expect(result).toMatchObject({ shardId: shard.id, source: shard.node, target: shard.other });
    expect(await placement(shard.id)).toBe(shard.other);
    const { rows } = await adminQuery(catalog.nodeUrl(shard.other), `select coalesce(sum(items), 0)::int as total from ${shard.schema}.carts`);
    expect(rows[0].total).toBe(acknowledged);
    // Autovacuum was off on the target's tables until the cutover (see prepareTarget), and is on again.
    const options = await adminQuery(catalog.nodeUrl(shard.other), `select reloptions from pg_class where oid = $1::regclass`, [`${shard.schema}.carts`]);
    expect(options.rows[0].reloptions).toBeNull();
    // The movement completed at the switch; its child workflow drops the fenced copy after the grace period.
    expect(result.fencedCopy.nodes).toBe(shard.node);
    await worker.client.workflow.getHandle(result.fencedCopy.workflowId!).result();
    expect(await schemasOn(shard.node, `${shard.schema}%`)).toEqual([]);
    const description = await handle.describe();
    expect(description.typedSearchAttributes.get(SA_PHASE)).toBe('done');
    expect(description.typedSearchAttributes.get(SA_SOURCE_NODE)).toBe(shard.node);
    expect(description.typedSearchAttributes.get(SA_TARGET_NODE)).toBe(shard.other);
    expect(description.typedSearchAttributes.get(SA_GROUP)).toBe('carts');
    expect(description.typedSearchAttributes.get(SA_SHARD)).toBe(shard.id);
    expect(await description.staticSummary()).toBe(`move shard ${shard.id} → ${shard.other}`);
    await expectNothingLeft();
    await recordHistory(worker.client, handle.workflowId, 'move-shard');
  });

  it('waits at the approval gate; pause holds it, approve lets it through', async () => {
    const shard = await shardOf('carts', 1);
    // By policy: this shard is larger than 1 byte.
    const handle = await startMove(worker.options, { shardId: shard.id, targetNode: shard.other, approvalOverBytes: 1, graceSeconds: 0, pollSeconds: 0.2 });
    await expect(startMove(worker.options, { shardId: shard.id, targetNode: shard.other })).rejects.toBeInstanceOf(AlreadyExistsError);
    await waitForPhase(handle, 'approval');
    expect((await handle.query(movementProgressQuery)).approvalReason).toMatch(/^the shard holds \d+ bytes, over 1$/);
    await handle.signal(pauseSignal);
    await handle.signal(approveSignal);
    await new Promise((r) => setTimeout(r, 1000));
    expect((await handle.query(movementProgressQuery)).phase).toBe('approval'); // paused: no cutover
    expect(await placement(shard.id)).toBe(shard.node);
    await handle.signal(resumeSignal);
    await moveResult(handle);
    expect(await placement(shard.id)).toBe(shard.other);
    await expectNothingLeft();
  });

  it('reject undoes everything: the source as it was, nothing on the target', async () => {
    const shard = await shardOf('carts', 2);
    const before = await adminQuery(catalog.nodeUrl(shard.node), `select count(*)::int as n from ${shard.schema}.carts`);
    // By policy: every hour of the day needs approval.
    const handle = await startMove(worker.options, { shardId: shard.id, targetNode: shard.other, approvalHoursUtc: [0, 24], pollSeconds: 0.2 });
    await waitForPhase(handle, 'approval');
    expect((await handle.query(movementProgressQuery)).approvalReason).toMatch(/^it is \d+:00 UTC, inside the approval hours 0–24$/);
    expect(await schemasOn(shard.other, shard.schema)).toEqual([shard.schema]);
    await handle.signal(rejectSignal);
    await expect(handle.result()).rejects.toBeInstanceOf(WorkflowFailedError);
    expect(await placement(shard.id)).toBe(shard.node);
    expect(await schemasOn(shard.other, shard.schema)).toEqual([]);
    const after = await adminQuery(catalog.nodeUrl(shard.node), `select count(*)::int as n from ${shard.schema}.carts`);
    expect(after.rows).toEqual(before.rows);
    expect((await handle.describe()).typedSearchAttributes.get(SA_PHASE)).toBe('rejected');
    await expectNothingLeft();
  });

  it('cancel undoes everything too', async () => {
    const shard = await shardOf('carts', 3);
    const handle = await startMove(worker.options, { shardId: shard.id, targetNode: shard.other, approvalRequired: true, pollSeconds: 0.2 });
    await waitForPhase(handle, 'approval');
    await handle.cancel();
    await expect(handle.result()).rejects.toBeInstanceOf(WorkflowFailedError);
    expect(await placement(shard.id)).toBe(shard.node);
    expect(await schemasOn(shard.other, shard.schema)).toEqual([]);
    expect((await handle.describe()).typedSearchAttributes.get(SA_PHASE)).toBe('cancelled');
    await expectNothingLeft();
  });

  it('verify finds a target that differs from the source: the movement stops before the cutover and is undone', async () => {
    const shard = await shardOf('carts', 4);
    process.env.SHARDCAST_FAILPOINTS = 'verify.before=sleep:2000';
    try {
      const handle = await startMove(worker.options, { shardId: shard.id, targetNode: shard.other, pollSeconds: 0.2, graceSeconds: 0 });
      await waitForPhase(handle, 'verify');
      // A row changed on the target behind replication's back (past the target's fence, as only replication's role can).
      await adminQuery(catalog.nodeUrl(shard.other), `set session_replication_role = replica; update ${shard.schema}.carts set items = items + 1000 where id = (select min(id) from ${shard.schema}.carts)`);
      await expect(moveResult(handle)).rejects.toThrow(/carts differs between .* same count, different content/);
      expect(await placement(shard.id)).toBe(shard.node);
      expect(await schemasOn(shard.other, shard.schema)).toEqual([]);
      expect((await handle.describe()).typedSearchAttributes.get(SA_PHASE)).toBe('failed');
    } finally {
      delete process.env.SHARDCAST_FAILPOINTS;
    }
    await expectNothingLeft();
  });

  it('a long copy continues as a new run with its state; cancelling the new run undoes everything', async () => {
    const shard = await shardOf('carts', 5);
    // A lag that is never small enough keeps it copying; a small history limit makes it continue as new soon.
    const handle = await startMove(worker.options, { shardId: shard.id, targetNode: shard.other, pollSeconds: 0.1, catchUpLagBytes: -1, historyLimit: 60 });
    const latest = worker.client.workflow.getHandle(handle.workflowId);
    const deadline = Date.now() + 60_000;
    while ((await latest.describe()).runId === handle.firstExecutionRunId) {
      if (Date.now() > deadline) throw new Error('never continued as new');
      await new Promise((r) => setTimeout(r, 200));
    }
    const progress = await latest.query(movementProgressQuery);
    expect(progress.phase).toBe('catch-up');
    expect(progress.tables).toBe(1);
    expect(progress.rowsCopied).toBeGreaterThan(0);
    expect((await latest.describe()).historyLength).toBeLessThan(80);
    await latest.cancel();
    await expect(handle.result()).rejects.toBeInstanceOf(WorkflowFailedError);
    expect(await placement(shard.id)).toBe(shard.node);
    expect(await schemasOn(shard.other, shard.schema)).toEqual([]);
    await expectNothingLeft();
  });

  it('refuses a shard with a table without a primary key before creating anything', async () => {
    const shard = await shardOf('loose', 0);
    const handle = await startMove(worker.options, { shardId: shard.id, targetNode: shard.other, pollSeconds: 0.2 });
    await expect(moveResult(handle)).rejects.toThrow(/table loose has no primary key/);
    expect(await schemasOn(shard.other, shard.schema)).toEqual([]);
    await expectNothingLeft();
  });
});

async function waitForPhase(handle: Awaited<ReturnType<typeof startMove>>, phase: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while ((await handle.query(movementProgressQuery)).phase !== phase) {
    if (Date.now() > deadline) throw new Error(`movement never reached ${phase}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
