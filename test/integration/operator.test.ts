import { WorkflowFailedError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable, listQueuedMovements, moveResult, startMove } from '../../client/index.js';
import { NodePools } from '../../src/catalog/node-pools.js';
import { acquireMovementLease, finishMovement } from '../../src/movement/lease.js';
import { stopReverseCapture } from '../../src/movement/reverse.js';
import { SA_PHASE } from '../../src/search-attributes.js';
import { approveSignal, movementProgressQuery, pauseSignal, rejectSignal, resumeSignal, type MovementProgress } from '../../workflows/messages.js';
import { adminQuery, createTestCatalog, expectNoMovementLeftovers, recordHistory, shardByIndex, startTestWorker, startWorkerProcess, uniqueName, until, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

/** What an operator sees of a movement (issue 9 §6): completion at the switch, queueing, pause, progress, failures. */

let catalog: TestCatalog;
let worker: TestWorker;
const pools = new NodePools();

beforeAll(async () => {
  catalog = await createTestCatalog('operator');
  worker = await startTestWorker(catalog.catalogUrl);
  // Every shard on node-1, so that each test below moves one from node-1 to node-2.
  await createDistributedTable(worker.options, { name: 'items', columns: 'id bigint primary key, body text', shardKey: 'id', shardCount: 6, nodes: ['node-1'] });
});

afterAll(async () => {
  await pools.end();
  await worker?.close();
  await catalog?.close();
});

const shard = (index: number) => shardByIndex(catalog, index);

async function placement(shardId: number): Promise<string> {
  const { rows } = await catalog.pool.query<{ node: string }>(
    'select n.name as node from shardcast.placements p join shardcast.nodes n on n.id = p.node_id where p.shard_id = $1',
    [shardId],
  );
  return rows[0]!.node;
}

async function progressOf(handle: Awaited<ReturnType<typeof startMove>>): Promise<MovementProgress> {
  return handle.query(movementProgressQuery);
}

async function subscriptionEnabled(): Promise<boolean[]> {
  const { rows } = await adminQuery(
    catalog.nodeUrl('node-2'),
    "select subenabled from pg_subscription where subname like 'sc\\_mv\\_%' and subdbid = (select oid from pg_database where datname = current_database())",
  );
  return rows.map((r: { subenabled: boolean }) => r.subenabled);
}

async function schemaCount(node: string, like: string): Promise<number> {
  const { rows } = await adminQuery(catalog.nodeUrl(node), 'select count(*)::int as n from pg_namespace where nspname like $1', [like]);
  return rows[0].n;
}

async function runningLeases(): Promise<number> {
  const { rows } = await catalog.pool.query("select count(*)::int as n from shardcast.movements where state = 'running'");
  return rows[0].n;
}

describe('what an operator sees', () => {
  it('a movement completes at the switch: the lease and the workflow id are free during the grace period, the fenced copy goes later', async () => {
    const first = await shard(0);
    const second = await shard(1);
    await adminQuery(catalog.nodeUrl('node-1'), `insert into ${first.schema}.items select g, 'x' from generate_series(1, 1000) g`);
    const started = Date.now();
    const handle = await startMove(worker.options, { shardId: first.id, targetNode: 'node-2', graceSeconds: 600, maxMovesPerNode: 1, pollSeconds: 0.2 });
    const result = await moveResult(handle);
    const took = Date.now() - started;
    expect(took).toBeLessThan(120_000); // far from the 600 s grace period
    expect(await placement(first.id)).toBe('node-2');
    // The fenced copy is still there, and the result says when it goes.
    expect(result.fencedCopy.nodes).toBe('node-1');
    expect(Date.parse(result.fencedCopy.dropAt) - started).toBeGreaterThanOrEqual(600_000);
    expect(Date.parse(result.fencedCopy.dropAt) - Date.now()).toBeGreaterThan(500_000);
    expect(await schemaCount('node-1', `${first.schema}\\_moved\\_%`)).toBe(1);
    expect((await progressOf(handle)).phase).toBe('done');
    expect(await runningLeases()).toBe(0);
    const child = worker.client.workflow.getHandle(result.fencedCopy.workflowId!);
    expect((await child.describe()).status.name).toBe('RUNNING');
    expect((await handle.describe()).status.name).toBe('COMPLETED');

    // The nodes' one movement slot is free: another shard on the same nodes starts at once, never queued.
    const next = await startMove(worker.options, { shardId: second.id, targetNode: 'node-2', graceSeconds: 0, maxMovesPerNode: 1, pollSeconds: 0.2 });
    const phases = new Set<string>();
    let done = false;
    const watching = (async () => {
      while (!done) {
        phases.add((await progressOf(next).catch(() => undefined))?.phase ?? '');
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    await moveResult(next);
    done = true;
    await watching;
    expect(phases.has('queued')).toBe(false);

    // And the same shard can move again (its workflow id is free): back to node-1, beside its own fenced copy.
    const back = await moveResult(await startMove(worker.options, { shardId: first.id, targetNode: 'node-1', graceSeconds: 0, pollSeconds: 0.2 }));
    expect(back.target).toBe('node-1');
    const { rows } = await adminQuery(catalog.nodeUrl('node-1'), `select count(*)::int as n from ${first.schema}.items`);
    expect(rows[0].n).toBe(1000);
    await child.terminate('test over');
    // A terminated child leaves its reverse stream behind (the doctor cleans it: reverse.test.ts); dropped here as the doctor would.
    expect(await stopReverseCapture(pools, catalog.nodes.find((n) => n.name === 'node-2')!, result.movementId)).toBe(true);
    await expectNoMovementLeftovers(pools, catalog.nodes);
  });

  it('the child workflow drops the fenced copy when the grace period is over', async () => {
    const s = await shard(2);
    const result = await moveResult(await startMove(worker.options, { shardId: s.id, targetNode: 'node-2', graceSeconds: 2, pollSeconds: 0.2 }));
    expect(await schemaCount('node-1', `${s.schema}\\_moved\\_%`)).toBe(1);
    await worker.client.workflow.getHandle(result.fencedCopy.workflowId!).result();
    await recordHistory(worker.client, result.fencedCopy.workflowId!, 'drop-fenced-copy');
    expect(Date.now()).toBeGreaterThanOrEqual(Date.parse(result.fencedCopy.dropAt));
    expect(await schemaCount('node-1', `${s.schema}%`)).toBe(0);
  });

  it('a movement waiting for a node slot is queued, says why, and starts when the slot frees', async () => {
    const s = await shard(3);
    const other = await shard(4);
    const node = (name: string) => catalog.nodes.find((n) => n.name === name)!.id;
    // Another movement holds node-2's only slot.
    await acquireMovementLease(catalog.pool, { id: 'holder', operation: 'move', shardId: other.id, sourceNodeId: node('node-1'), targetNodeIds: [node('node-2')] }, 1);
    const handle = await startMove(worker.options, { shardId: s.id, targetNode: 'node-2', graceSeconds: 0, maxMovesPerNode: 1, pollSeconds: 0.2 });
    await until('the movement to queue', async () => (await progressOf(handle)).phase === 'queued');
    const progress = await progressOf(handle);
    expect(progress.queued).toMatchObject({ running: 1, limit: 1 });
    expect(['node-1', 'node-2']).toContain(progress.queued!.node);
    // `shardcast movements` lists it (from Temporal's visibility: it holds no lease yet).
    await until('the queued movement to be listed', async () => (await listQueuedMovements(worker.options)).length === 1, 30_000, 200);
    const [listed] = await listQueuedMovements(worker.options);
    expect(listed).toMatchObject({ workflowId: handle.workflowId, shardId: s.id, operation: 'move', targets: 'node-2', running: 1, limit: 1 });
    expect((await handle.describe()).typedSearchAttributes.get(SA_PHASE)).toBe('queued');
    expect(await placement(s.id)).toBe('node-1');

    await finishMovement(catalog.pool, 'holder', 'done');
    const freed = Date.now();
    await until('the movement to start', async () => (await progressOf(handle)).phase !== 'queued', 30_000, 100);
    console.log(`queued movement started ${Date.now() - freed} ms after the slot freed`);
    expect(Date.now() - freed).toBeLessThan(12_000); // it asks again at least every 10 s
    await moveResult(handle);
    expect(await placement(s.id)).toBe('node-2');
    expect((await progressOf(handle)).queued).toBeNull();
    await expectNoMovementLeftovers(pools, catalog.nodes);
  });

  it('pause at the approval gate stops streaming; resume starts it again; a larger copy has an ETA', async () => {
    const s = await shard(5);
    await adminQuery(catalog.nodeUrl('node-1'), `insert into ${s.schema}.items select g, repeat(md5(g::text), 8) from generate_series(1, 250000) g`);
    const handle = await startMove(worker.options, { shardId: s.id, targetNode: 'node-2', approvalRequired: true, graceSeconds: 0, pollSeconds: 0.2 });
    try {
      // During the copy: an ETA from the bytes still to copy and the copy rate.
      let eta: number | null = null;
      await until('an ETA during the copy', async () => {
        const p = await progressOf(handle);
        if (p.phase !== 'copy' && p.phase !== 'prepare') throw new Error(`the copy ended (${p.phase}) with no ETA given`);
        eta = p.phase === 'copy' ? p.etaSeconds : null;
        return eta !== null;
      }, 60_000, 50);
      expect(eta).toBeGreaterThan(0);

      await until('the approval gate', async () => (await progressOf(handle)).phase === 'approval', 120_000, 100);
      expect(await subscriptionEnabled()).toEqual([true]);
      await handle.signal(pauseSignal);
      await until('streaming to stop at the gate', async () => (await subscriptionEnabled()).join() === 'false');
      expect(await progressOf(handle)).toMatchObject({ phase: 'approval', paused: true });
      // Writes on the source now wait in its slot.
      await adminQuery(catalog.nodeUrl('node-1'), `insert into ${s.schema}.items values (0, 'during the pause')`);
      await handle.signal(resumeSignal);
      await until('streaming to start again', async () => (await subscriptionEnabled()).join() === 'true');
      await handle.signal(approveSignal);
      await moveResult(handle);
      const { rows } = await adminQuery(catalog.nodeUrl('node-2'), `select count(*)::int as n from ${s.schema}.items`);
      expect(rows[0].n).toBe(250_001);
    } finally {
      // A failure above must not leave this movement running into the next test: cancel undoes it.
      if ((await handle.describe()).status.name === 'RUNNING') {
        await handle.cancel();
        await handle.result().catch(() => undefined);
      }
    }
    await expectNoMovementLeftovers(pools, catalog.nodes);
  });

  it('a rejected movement reads "rejected" in its progress, its search attribute and its one-line failure', async () => {
    const s = await shard(1); // on node-2 since the first test
    const handle = await startMove(worker.options, { shardId: s.id, targetNode: 'node-3', approvalRequired: true, graceSeconds: 0, pollSeconds: 0.2 });
    await until('the approval gate', async () => (await progressOf(handle)).phase === 'approval', 60_000, 100);
    await handle.signal(rejectSignal);
    const failure = await handle.result().then(
      () => undefined,
      (err: WorkflowFailedError) => err.cause,
    );
    expect(failure?.message).toBe(`move shard ${s.id} of items: node-2 → node-3: rejected in approval; undone`);
    expect((await progressOf(handle)).phase).toBe('rejected');
    expect((await handle.describe()).typedSearchAttributes.get(SA_PHASE)).toBe('rejected');
    await expect(moveResult(handle)).rejects.toThrow(/^move shard \d+ of items: node-2 → node-3: rejected in approval; undone$/);
    expect(await placement(s.id)).toBe('node-2');
    await expectNoMovementLeftovers(pools, catalog.nodes);
  });

  it('a refused request fails in one line that names it, nothing was changed, and the worker logs it as one line', async () => {
    const s = await shard(1);
    // A worker as deployed (`shardcast worker`, its own process and logger) on a queue of its own.
    const queue = uniqueName('tq');
    const deployed = await startWorkerProcess(catalog.catalogUrl, queue);
    try {
      const options = { ...worker.options, taskQueue: queue, workflowIdPrefix: `${queue}-` };
      const handle = await startMove(options, { shardId: s.id, targetNode: 'node-2', pollSeconds: 0.2 });
      await expect(moveResult(handle)).rejects.toThrow(new RegExp(`^move shard ${s.id} → node-2 failed in prepare: shard ${s.id} is already on node-2; nothing was changed$`));
      await until('the worker to log it', async () => deployed.output().includes('InvalidInputError'), 10_000, 100);
      const lines = deployed.output().split('\n');
      const logged = lines.filter((l) => l.includes(`is already on node-2`));
      // The activity's refusal and the workflow's failure: a line each.
      expect(logged).toHaveLength(2);
      expect(logged[0]).toMatch(new RegExp(`\\[WARN\\] beginMove \\(${handle.workflowId}\\): InvalidInputError: shard ${s.id} is already on node-2$`));
      expect(logged[1]).toMatch(new RegExp(`\\[WARN\\] workflow moveShard ${handle.workflowId} failed: move shard ${s.id} → node-2 failed in prepare: shard ${s.id} is already on node-2; nothing was changed$`));
      expect(lines.filter((l) => /^\s+at /.test(l))).toEqual([]); // no stack trace
    } finally {
      await deployed.stop();
    }
    expect(await runningLeases()).toBe(0);
  });
});
