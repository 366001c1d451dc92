import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable, moveResult, startMove } from '../../client/index.js';
import { reportingSlotWait, slotBlockers } from '../../src/movement/slot-wait.js';
import { adminQuery, createTestCatalog, fleet, startTestWorker, uniqueName, until, withDatabase, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

/**
 * A logical slot's creation waits for every transaction that held a transaction id when it began,
 * in any database of the server: a prepared transaction somebody left behind stalls every movement
 * from that node. The movement must say what it waits for, and go on once it has ended.
 */
let catalog: TestCatalog;
let worker: TestWorker;
let otherDb: string;
let holder: pg.Client | undefined;

beforeAll(async () => {
  catalog = await createTestCatalog('slotwait');
  worker = await startTestWorker(catalog.catalogUrl);
  await createDistributedTable(worker.options, { name: 'things', columns: 'id bigint primary key, v int not null default 0', shardKey: 'id', shardCount: 2 });
  otherDb = uniqueName('elsewhere');
});

afterAll(async () => {
  await holder?.end().catch(() => undefined);
  for (const n of fleet().nodes) {
    await adminQuery(withDatabase(n.adminUrl, otherDb), "rollback prepared 'left_behind_by_someone'").catch(() => undefined);
  }
  await worker?.close();
  await catalog?.close();
});

/** A prepared transaction with a transaction id, in a database of its own on the node's server. */
async function prepareElsewhere(adminUrl: string): Promise<void> {
  await adminQuery(adminUrl, `create database ${otherDb}`).catch(() => undefined);
  holder = new pg.Client({ connectionString: withDatabase(adminUrl, otherDb) });
  await holder.connect();
  await holder.query('create table if not exists t (x int)');
  await holder.query('begin');
  await holder.query('insert into t values (1)');
  await holder.query("prepare transaction 'left_behind_by_someone'");
  await holder.end();
  holder = undefined;
}

describe('a slot whose creation waits for a transaction left open', () => {
  it('names the prepared transaction it waits for, and completes once it is gone', async () => {
    const node = fleet().nodes[0]!;
    await prepareElsewhere(node.adminUrl);
    const db = new pg.Pool({ connectionString: withDatabase(node.adminUrl, catalog.database), max: 3 });
    const slot = uniqueName('sc_wait_probe');
    try {
      const reports: string[] = [];
      let settled = false;
      const creating = reportingSlotWait(db.query(`select pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]), db, (w) => reports.push(w), 300).finally(() => {
        settled = true;
      });
      await until('the wait is reported', async () => reports.length > 0, 20_000);
      expect(settled).toBe(false);
      expect(reports[0]).toMatch(/prepared transaction 'left_behind_by_someone' in database elsewhere_/);
      expect(await slotBlockers(db, new Date())).toEqual(expect.arrayContaining([expect.stringContaining('left_behind_by_someone')]));
      await adminQuery(withDatabase(node.adminUrl, otherDb), "rollback prepared 'left_behind_by_someone'");
      await creating;
      const { rows } = await db.query('select 1 from pg_replication_slots where slot_name = $1', [slot]);
      expect(rows).toHaveLength(1);
      const count = reports.length;
      await new Promise((r) => setTimeout(r, 700));
      expect(reports.length).toBe(count); // nothing reported once the slot exists
    } finally {
      await adminQuery(withDatabase(node.adminUrl, otherDb), "rollback prepared 'left_behind_by_someone'").catch(() => undefined);
      await db.query('select pg_drop_replication_slot($1)', [slot]).catch(() => undefined);
      await db.end();
    }
  });

  it('a move behind it waits, shows what it waits for in its heartbeat, and completes once it ends', async () => {
    const { rows } = await catalog.pool.query<{ id: number; node: string }>(
      `select s.id::int as id, n.name as node from shardcast.shards s join shardcast.placements p on p.shard_id = s.id
         join shardcast.nodes n on n.id = p.node_id order by s.id limit 1`,
    );
    const shard = rows[0]!;
    const source = fleet().nodes.find((n) => n.name === shard.node)!;
    const target = fleet().nodes.find((n) => n.name !== shard.node)!.name;
    await prepareElsewhere(source.adminUrl);
    const handle = await startMove(worker.options, { shardId: shard.id, targetNode: target });
    let seen = '';
    await until(
      'the copy heartbeats what it waits for',
      async () => {
        const d = await handle.describe();
        for (const a of d.raw.pendingActivities ?? []) {
          for (const p of a.heartbeatDetails?.payloads ?? []) seen += Buffer.from(p.data ?? []).toString('utf8');
        }
        return seen.includes('left_behind_by_someone');
      },
      60_000,
      250,
    );
    expect(seen).toMatch(/waits for prepared transaction 'left_behind_by_someone'/);
    await adminQuery(withDatabase(source.adminUrl, otherDb), "rollback prepared 'left_behind_by_someone'");
    const result = await moveResult(handle);
    expect(result.shards).toEqual([shard.id]);
    const { rows: placed } = await catalog.pool.query<{ node: string }>(
      'select n.name as node from shardcast.placements p join shardcast.nodes n on n.id = p.node_id where p.shard_id = $1',
      [shard.id],
    );
    expect(placed[0]!.node).toBe(target);
  });
});
