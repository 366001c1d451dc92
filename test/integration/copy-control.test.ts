import { WorkflowFailedError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable, moveResult, startMove } from '../../client/index.js';
import { NodePools } from '../../src/catalog/node-pools.js';
import { SA_PHASE } from '../../src/search-attributes.js';
import { movementProgressQuery, pauseSignal, resumeSignal } from '../../workflows/messages.js';
import { adminQuery, createTestCatalog, expectNoMovementLeftovers, shardByIndex, startTestWorker, type TestCatalog, type TestWorker, until } from '../helpers/fleet.js';

let catalog: TestCatalog;
let worker: TestWorker;
const pools = new NodePools();

beforeAll(async () => {
  catalog = await createTestCatalog('copyctl');
  worker = await startTestWorker(catalog.catalogUrl);
  await createDistributedTable(worker.options, { name: 'logs', columns: 'id bigint primary key, body text', shardKey: 'id', shardCount: 2, nodes: ['node-1'] });
});

afterAll(async () => {
  await pools.end();
  await worker?.close();
  await catalog?.close();
});

const shard = (index: number) => shardByIndex(catalog, index);

/** Rows big enough that the initial copy takes seconds. */
async function fill(schema: string, rows: number): Promise<void> {
  await adminQuery(catalog.nodeUrl('node-1'), `insert into ${schema}.logs select g, repeat(md5(g::text), 8) from generate_series(1, ${rows}) g`);
}

/** Physical size of the target's copy (heap and indexes): it grows during COPY (row counts only change at commit). */
async function targetBytes(schema: string): Promise<number> {
  const { rows } = await adminQuery(
    catalog.nodeUrl('node-2'),
    `select coalesce(pg_relation_size(to_regclass('${schema}.logs')) + pg_indexes_size(to_regclass('${schema}.logs')), 0)::bigint::text as b`,
  );
  return Number(rows[0].b);
}


async function expectNothingLeft(): Promise<void> {
  await expectNoMovementLeftovers(pools, catalog.nodes);
}

describe('steering a movement during its copy', () => {
  it('pause stops the copy (the subscription stops consuming the source) until resume', async () => {
    const s = await shard(0);
    await fill(s.schema, 600_000);
    // The governor off: these test steering, and a paced copy of 600k rows can take minutes on a busy machine.
    const handle = await startMove(worker.options, { shardId: s.id, targetNode: 'node-2', pollSeconds: 0.2, graceSeconds: 0, governor: { enabled: false } });
    await until('the copy to write on the target', async () => (await targetBytes(s.schema)) > 1_000_000);
    await handle.signal(pauseSignal);
    try {
      // Paused for real: the subscription disabled and none of its workers (apply, table sync) left.
      await until('the subscription to stop', async () => {
        const { rows } = await adminQuery(
          catalog.nodeUrl('node-2'),
          `select s.subenabled, (select count(*)::int from pg_stat_subscription w where w.subid = s.oid and w.pid is not null) as workers
             from pg_subscription s where s.subname like 'sc\\_mv\\_%' and s.subdbid = (select oid from pg_database where datname = current_database())`,
        );
        // A move copies by itself, holding between chunks while its pause flag is set.
        const { rows: copy } = await adminQuery(catalog.nodeUrl('node-2'), 'select coalesce(bool_and(paused), false) as paused from sc_movement.copy_control');
        return rows.length === 1 && rows[0].subenabled === false && rows[0].workers === 0 && copy[0].paused === true;
      });
      expect((await handle.query(movementProgressQuery)).paused).toBe(true);
      // The copier reads its pause flag at most once a second, between chunks: the chunk it was in, and
      // up to a second's worth, still land after the flag is set. It holds once nothing lands for a second.
      let last = -1;
      await until('the copy to hold', async () => {
        const now = await targetBytes(s.schema);
        const held = Math.abs(now - last) < 256 * 1024;
        last = now;
        return held;
      }, 30_000, 1000);
      const paused = await targetBytes(s.schema);
      await new Promise((r) => setTimeout(r, 1500));
      // A running copy writes tens of MB a second here; a stopped one nothing (autovacuum may touch a page or two).
      expect(Math.abs((await targetBytes(s.schema)) - paused)).toBeLessThan(256 * 1024);
      const sub = await adminQuery(catalog.nodeUrl('node-2'), "select subenabled from pg_subscription where subname like 'sc\\_mv\\_%' and subdbid = (select oid from pg_database where datname = current_database())");
      expect(sub.rows).toEqual([{ subenabled: false }]);
      expect(['copy', 'catch-up']).toContain((await handle.query(movementProgressQuery)).phase);
    } catch (err) {
      // Leave nothing running for the next test: resume, let the move finish, then fail.
      await handle.signal(resumeSignal);
      await moveResult(handle).catch(() => undefined);
      throw err;
    }
    await handle.signal(resumeSignal);
    const result = await moveResult(handle);
    expect(result.target).toBe('node-2');
    const copied = await adminQuery(catalog.nodeUrl('node-2'), `select count(*)::int as n from ${s.schema}.logs`);
    expect(copied.rows[0].n).toBe(600_000);
    await expectNothingLeft();
  });

  it('cancel during the copy undoes everything: source untouched, nothing on the target', async () => {
    const s = await shard(1);
    await fill(s.schema, 600_000);
    const handle = await startMove(worker.options, { shardId: s.id, targetNode: 'node-2', pollSeconds: 0.2, governor: { enabled: false } });
    await until('the copy to write on the target', async () => (await targetBytes(s.schema)) > 1_000_000);
    expect((await handle.query(movementProgressQuery)).phase).toBe('copy');
    await handle.cancel();
    await expect(handle.result()).rejects.toBeInstanceOf(WorkflowFailedError);
    expect((await handle.describe()).typedSearchAttributes.get(SA_PHASE)).toBe('cancelled');
    const onTarget = await adminQuery(catalog.nodeUrl('node-2'), 'select count(*)::int as n from pg_namespace where nspname = $1', [s.schema]);
    expect(onTarget.rows[0].n).toBe(0);
    const source = await adminQuery(catalog.nodeUrl('node-1'), `select count(*)::int as n from ${s.schema}.logs`);
    expect(source.rows[0].n).toBe(600_000);
    await expectNothingLeft();
  });
});
