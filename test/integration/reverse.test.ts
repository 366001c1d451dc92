import { WorkflowFailedError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workflowStateOf } from '../../client/doctor.js';
import { createDistributedTable, moveResult, startMove, type MoveRequest } from '../../client/index.js';
import { NodePools } from '../../src/catalog/node-pools.js';
import { resetFailpoints } from '../../src/failpoints.js';
import { fencedSchemaName } from '../../src/movement/cutover.js';
import { doctor } from '../../src/movement/doctor.js';
import { reverseNames } from '../../src/movement/reverse.js';
import { createRouter, type Router } from '../../src/router/router.js';
import { fencedCopyProgressQuery, type MoveShardResult } from '../../workflows/messages.js';
import { adminQuery, createTestCatalog, startTestWorker, startWorkerProcess, uniqueName, until, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

/**
 * Fail-back without a second copy (issue 9 §4): after a move, its fenced copy follows the new
 * placement (reverse replication) during the grace period, so that moving back is a cutover only.
 * Writers go through a stale router (no NOTIFY, no version check): only a fence sends them on.
 */

let catalog: TestCatalog;
let worker: TestWorker;
const pools = new NodePools();
const RETRY = { maximumAttempts: 5, initialIntervalMs: 200, maximumIntervalMs: 1000 };
const FAST: Partial<MoveRequest> = { pollSeconds: 0.2, retry: RETRY };

beforeAll(async () => {
  catalog = await createTestCatalog('reverse');
  worker = await startTestWorker(catalog.catalogUrl);
  await createDistributedTable(worker.options, { name: 'acks', columns: 'id bigint primary key, w int not null, n int not null default 0', shardKey: 'id', shardCount: 6 });
});

afterAll(async () => {
  delete process.env.SHARDCAST_FAILPOINTS;
  await pools.end();
  await worker?.close();
  await catalog?.close();
});

async function shardAt(index: number): Promise<{ id: number; node: string; schema: string; other: string }> {
  const { rows } = await catalog.pool.query<{ id: number; node: string; schema: string }>(
    `select s.id::int as id, n.name as node, s.schema_name as schema from shardcast.shards s join shardcast.placements p on p.shard_id = s.id
       join shardcast.nodes n on n.id = p.node_id order by s.id`,
  );
  const row = rows[index]!;
  return { ...row, other: ['node-1', 'node-2', 'node-3'].find((n) => n !== row.node)! };
}

async function placementOf(shardId: number): Promise<string> {
  const { rows } = await catalog.pool.query<{ node: string }>('select n.name as node from shardcast.placements p join shardcast.nodes n on n.id = p.node_id where p.shard_id = $1', [shardId]);
  return rows[0]!.node;
}

function staleRouter(): Promise<Router> {
  return createRouter({ catalogUrl: catalog.catalogUrl, listen: false, versionCheckIntervalMs: 0, fenceWaitMs: 5000 });
}

/** Writers inserting new keys of the shard, and incrementing the first of them, through `router`; every acknowledged write is logged. */
function startWriters(router: Router, shardId: number, first: number, writers = 3) {
  const acknowledged: number[] = [];
  let increments = 0;
  const errors: string[] = [];
  let stop = false;
  let next = first;
  const map = router.shardMap;
  const done = Array.from({ length: writers }, async (_, w) => {
    while (!stop) {
      let key = next++;
      while (map.route('acks', key).shardId !== shardId) key = next++;
      try {
        if (w === 0 && acknowledged.length > 0) {
          await router.forKey('acks', acknowledged[0]!).query('update acks set n = n + 1 where id = $1', [acknowledged[0]!]);
          increments++;
        } else {
          await router.forKey('acks', key).query('insert into acks (id, w) values ($1, $2)', [key, w]);
          acknowledged.push(key);
        }
      } catch (err) {
        errors.push(`${key}: ${(err as Error).message}`);
      }
      await new Promise((r) => setTimeout(r, 3));
    }
  });
  return {
    acknowledged,
    errors,
    increments: () => increments,
    async stop() {
      stop = true;
      await Promise.all(done);
    },
  };
}

/** Every acknowledged key is readable through a fresh map exactly once, and the counter holds every acknowledged increment. */
async function expectAllAcknowledged(writers: ReturnType<typeof startWriters>): Promise<void> {
  const fresh = await createRouter({ catalogUrl: catalog.catalogUrl, listen: false });
  try {
    const { rows } = await fresh.all<{ id: string; n: number }>('select id::text, n from acks');
    const seen = new Map<number, number>();
    for (const r of rows) seen.set(Number(r.id), (seen.get(Number(r.id)) ?? 0) + 1);
    const missing = writers.acknowledged.filter((k) => seen.get(k) !== 1);
    expect(missing, `${missing.length} of ${writers.acknowledged.length} acknowledged writes missing or duplicated`).toEqual([]);
    const counter = rows.find((r) => Number(r.id) === writers.acknowledged[0]);
    expect(counter?.n).toBe(writers.increments());
  } finally {
    await fresh.close();
  }
}

async function schemaExists(node: string, schema: string): Promise<boolean> {
  const { rows } = await adminQuery(catalog.nodeUrl(node), 'select 1 from pg_namespace where nspname = $1', [schema]);
  return rows.length > 0;
}

async function slotsOn(node: string): Promise<string[]> {
  const { rows } = await adminQuery(catalog.nodeUrl(node), "select slot_name from pg_replication_slots where slot_name like 'sc\\_mv\\_%' and database = current_database()");
  return rows.map((r: { slot_name: string }) => r.slot_name);
}

/** Activity types a workflow run scheduled. */
async function activitiesOf(workflowId: string): Promise<string[]> {
  const history = await worker.client.workflow.getHandle(workflowId).fetchHistory();
  return (history.events ?? []).flatMap((e) => (e.activityTaskScheduledEventAttributes?.activityType?.name ? [e.activityTaskScheduledEventAttributes.activityType.name] : []));
}

/** Moves the shard away with a long grace period; returns the result. */
async function moveAway(shard: Awaited<ReturnType<typeof shardAt>>, graceSeconds = 600): Promise<MoveShardResult> {
  return moveResult(await startMove(worker.options, { ...FAST, shardId: shard.id, targetNode: shard.other, graceSeconds }));
}

describe('move back within the grace period', () => {
  it('the fenced copy follows the new placement; moving back is a cutover only, with stale-router writers losing nothing', async () => {
    const shard = await shardAt(0);
    const router = await staleRouter();
    const writers = startWriters(router, shard.id, 1);
    try {
      const forward = await moveAway(shard);
      expect(forward.reverse).toMatchObject({ operation: 'move', shardId: shard.id, targetNode: shard.node, of: forward.movementId });
      const fenced = fencedSchemaName(shard.schema, forward.movementId);
      expect(await slotsOn(shard.other)).toContain(reverseNames(forward.movementId).slot);
      // Writes at the new placement during the grace period arrive on the fenced copy.
      const child = worker.client.workflow.getHandle(forward.fencedCopy.workflowId!);
      const marker = writers.acknowledged.length;
      await until('new writes on the fenced copy', async () => {
        const { rows } = await adminQuery(catalog.nodeUrl(shard.node), `select count(*)::int as n from ${fenced}.acks`);
        return writers.acknowledged.length > marker + 20 && rows[0].n >= marker + 20;
      }, 30_000, 200);
      // Progress shows it: following, changes applied, the lag.
      await until('progress to show applied changes', async () => (await child.query(fencedCopyProgressQuery)).changesApplied > 0, 30_000, 200);
      const progress = await child.query(fencedCopyProgressQuery);
      expect(progress.reverse).toBe('following');
      expect(progress.reverseLagBytes).not.toBeNull();

      const started = Date.now();
      const back = await moveResult(
        await startMove(worker.options, { ...FAST, shardId: shard.id, targetNode: shard.node, reverseOf: forward.movementId, graceSeconds: 600 }),
      );
      const took = Date.now() - started;
      console.log(`move back within grace: ${took} ms, writes blocked ${back.cutoverBlockedMs} ms`);
      expect(back.movedBack).toEqual({ of: forward.movementId, cutoverOnly: true });
      expect(await placementOf(shard.id)).toBe(shard.node);
      expect(back.cutoverBlockedMs).toBeLessThanOrEqual(250);
      expect(took).toBeLessThan(10_000);
      // No copy: nothing was prepared or streamed on the old source; its fenced copy is the shard again.
      const ran = await activitiesOf(`${worker.options.workflowIdPrefix}move-shard-${shard.id}`);
      expect(ran).toContain('cutover');
      expect(ran).not.toContain('prepareTarget');
      expect(ran).not.toContain('startStreaming');
      expect(await schemaExists(shard.node, fenced)).toBe(false);
      expect(await schemaExists(shard.other, fencedSchemaName(shard.schema, back.movementId))).toBe(true);
      // The forward movement's child ends: its copy is in service again; its stream is gone.
      await until('the forward child to end', async () => (await child.describe()).status.name === 'COMPLETED', 30_000, 200);
      expect((await child.query(fencedCopyProgressQuery)).reverse).toBe('gone');
      await new Promise((r) => setTimeout(r, 800)); // the stale router keeps writing after the move back
    } finally {
      await writers.stop();
      await router.close();
    }
    expect(writers.errors).toEqual([]);
    expect(writers.acknowledged.length).toBeGreaterThan(100);
    await expectAllAcknowledged(writers);
    expect(await slotsOn(shard.node)).toEqual([]);
    expect(await slotsOn(shard.other)).toEqual([]);
  });

  it('a lost reply at the reverse cutover’s catalog PREPARE: finished by recovery, no acknowledged write lost', async () => {
    const shard = await shardAt(1);
    const router = await staleRouter();
    const writers = startWriters(router, shard.id, 1_000_000);
    try {
      const forward = await moveAway(shard);
      resetFailpoints();
      process.env.SHARDCAST_FAILPOINTS = 'cutover.after-catalog-prepare=drop-connection*1';
      const back = await moveResult(await startMove(worker.options, { ...FAST, shardId: shard.id, targetNode: shard.node, reverseOf: forward.movementId, graceSeconds: 600 }));
      delete process.env.SHARDCAST_FAILPOINTS;
      expect(back.movedBack?.cutoverOnly).toBe(true);
      expect(await placementOf(shard.id)).toBe(shard.node);
      await new Promise((r) => setTimeout(r, 800));
    } finally {
      delete process.env.SHARDCAST_FAILPOINTS;
      await writers.stop();
      await router.close();
    }
    expect(writers.errors).toEqual([]);
    await expectAllAcknowledged(writers);
  });

  it('a worker killed during the reverse cutover: another worker finishes it, no acknowledged write lost', async () => {
    const shard = await shardAt(2);
    const forward = await moveAway(shard);
    const queue = uniqueName('tq');
    const router = await staleRouter();
    const writers = startWriters(router, shard.id, 2_000_000);
    const first = await startWorkerProcess(catalog.catalogUrl, queue, { SHARDCAST_FAILPOINTS: 'cutover.after-catalog-prepare=sleep:600000' });
    let second: Awaited<ReturnType<typeof startWorkerProcess>> | undefined;
    try {
      const handle = await startMove({ ...worker.options, taskQueue: queue }, { ...FAST, shardId: shard.id, targetNode: shard.node, reverseOf: forward.movementId, graceSeconds: 600 });
      // Held with everything prepared (writes blocked): the process dies there.
      await until('the reverse cutover prepared', async () => {
        const { rows } = await catalog.pool.query('select 1 from pg_prepared_xacts where gid like $1 and database = current_database()', ['sc\\_mv\\_%']);
        return rows.length > 0;
      }, 60_000, 100);
      first.child.kill('SIGKILL');
      second = await startWorkerProcess(catalog.catalogUrl, queue);
      const back = await moveResult(handle);
      expect(back.movedBack?.cutoverOnly).toBe(true);
      expect(await placementOf(shard.id)).toBe(shard.node);
      await new Promise((r) => setTimeout(r, 800));
    } finally {
      await writers.stop();
      await router.close();
      await first.stop();
      await second?.stop();
    }
    expect(writers.errors).toEqual([]);
    await expectAllAcknowledged(writers);
  });

  it('after the grace period: refused without fallback (nothing changed), a full move with it, and said so', async () => {
    const shard = await shardAt(3);
    const forward = await moveAway(shard, 2);
    await until('the fenced copy dropped', async () => (await worker.client.workflow.getHandle(forward.fencedCopy.workflowId!).describe()).status.name === 'COMPLETED', 60_000, 200);
    expect(await slotsOn(shard.other)).not.toContain(reverseNames(forward.movementId).slot);
    const refused = await startMove(worker.options, { ...FAST, shardId: shard.id, targetNode: shard.node, reverseOf: forward.movementId, reverseFallback: false, graceSeconds: 0 });
    const err = await refused.result().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect(String((err as WorkflowFailedError).cause?.message)).toMatch(/fenced copy on .* is gone.*fallback refused/);
    expect(await placementOf(shard.id)).toBe(shard.other);
    const { rows } = await catalog.pool.query("select count(*)::int as n from shardcast.movements where shard_id = $1 and state = 'running'", [shard.id]);
    expect(rows[0].n).toBe(0);

    const back = await moveResult(await startMove(worker.options, { ...FAST, shardId: shard.id, targetNode: shard.node, reverseOf: forward.movementId, graceSeconds: 0 }));
    expect(back.movedBack).toMatchObject({ of: forward.movementId, cutoverOnly: false });
    expect(back.movedBack?.why).toMatch(/grace period .* is over/);
    expect(await placementOf(shard.id)).toBe(shard.node);
    expect(await activitiesOf(`${worker.options.workflowIdPrefix}move-shard-${shard.id}`)).toContain('startStreaming');
  });

  it('a fenced copy changed behind the stream\'s back: the move back stops before its cutover, says why, and nothing is switched', async () => {
    const shard = await shardAt(5);
    await adminQuery(catalog.nodeUrl(shard.node), `insert into ${shard.schema}.acks (id, w) select g, 0 from generate_series(1, 50) g on conflict do nothing`);
    const forward = await moveAway(shard);
    const fenced = fencedSchemaName(shard.schema, forward.movementId);
    // The copy the move back would serve from loses a row that the placement still has.
    await adminQuery(catalog.nodeUrl(shard.node), `set session_replication_role = replica; delete from ${fenced}.acks where id = (select min(id) from ${fenced}.acks)`);
    const handle = await startMove(worker.options, { ...FAST, shardId: shard.id, targetNode: shard.node, reverseOf: forward.movementId, graceSeconds: 600 });
    const err = await handle.result().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect(String((err as WorkflowFailedError).cause?.message)).toMatch(/row counts differ/);
    expect(await placementOf(shard.id)).toBe(shard.other);
    expect(await schemaExists(shard.node, fenced)).toBe(true);
  });

  it('bad input: a movement of another shard, or none, is refused and changes nothing', async () => {
    const shard = await shardAt(4);
    const other = await shardAt(5);
    const forward = await moveAway(other, 0);
    for (const reverseOf of [forward.movementId, 'nosuchmove']) {
      const handle = await startMove(worker.options, { ...FAST, shardId: shard.id, targetNode: shard.other, reverseOf });
      const err = await handle.result().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(WorkflowFailedError);
      expect(String((err as WorkflowFailedError).cause?.message)).toMatch(reverseOf === 'nosuchmove' ? /no movement nosuchmove/ : /is not a move of shard/);
    }
    expect(await placementOf(shard.id)).toBe(shard.node);
  });

  it('doctor: the stream of a running child is in use; once the child is terminated, --fix drops it and the fenced copy', async () => {
    const shard = await shardAt(4);
    const forward = await moveAway(shard);
    const slot = reverseNames(forward.movementId).slot;
    const deps = { catalog: catalog.pool, catalogUrl: catalog.catalogUrl, pools, workflowState: workflowStateOf(worker.client) };
    const before = await doctor(deps, { fix: true });
    expect(before.inUse.map((l) => l.name)).toEqual(expect.arrayContaining([slot, fencedSchemaName(shard.schema, forward.movementId)]));
    expect(before.actions.filter((a) => a.movementId === forward.movementId)).toEqual([]);
    expect(await slotsOn(shard.other)).toContain(slot);

    await worker.client.workflow.getHandle(forward.fencedCopy.workflowId!).terminate('test');
    const report = await doctor(deps, { fix: true });
    expect(report.actions.filter((a) => a.movementId === forward.movementId && a.ok).map((a) => a.kind)).toEqual(expect.arrayContaining(['slot', 'publication', 'fenced-schema']));
    expect(await slotsOn(shard.other)).not.toContain(slot);
    expect(await schemaExists(shard.node, fencedSchemaName(shard.schema, forward.movementId))).toBe(false);
  });
});
