import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NodePools } from '../../src/catalog/node-pools.js';
import { failpointHits, resetFailpoints } from '../../src/failpoints.js';
import { applyChanges, confirmRound, flushedLsn, stopChangeCapture } from '../../src/movement/logical-apply.js';
import type { ReshardPlan } from '../../src/movement/reshard-plan.js';
import { adminQuery, createTestCatalog, type TestCatalog } from '../helpers/fleet.js';

/**
 * How a split's or merge's apply confirms its slot (confirmRound), on a real node: past the WAL of
 * other tables when a round read every change, never backwards, and refused (as PostgreSQL refuses
 * it) when another apply has confirmed further than this round's rows. And how its writes are
 * fenced against a stale attempt of the same apply (applyFence).
 */
let catalog: TestCatalog;
let db: pg.Client;
const pools = new NodePools();
const SLOT = 'sc_test_confirm';
const PUB = 'sc_test_confirm';

beforeAll(async () => {
  catalog = await createTestCatalog('slotconfirm');
  db = new pg.Client({ connectionString: catalog.nodeUrl(catalog.nodes[0]!.name) });
  await db.connect();
  await db.query('create table watched (id int primary key, v int)');
  await db.query('create table other (id int primary key, pad text)');
  await db.query(`create publication ${PUB} for table watched`);
  await db.query(`select pg_create_logical_replication_slot('${SLOT}', 'pgoutput')`);
});

afterAll(async () => {
  delete process.env.SHARDCAST_FAILPOINTS;
  await db?.query(`select pg_drop_replication_slot('${SLOT}')`).catch(() => undefined);
  await db?.end();
  await pools.end();
  await catalog?.close();
});

const peek = (limit: number) =>
  db.query<{ lsn: string; data: Buffer }>(`select lsn::text, data from pg_logical_slot_peek_binary_changes($1, null, $2, 'proto_version', '1', 'publication_names', $3)`, [SLOT, limit, PUB]);
const confirmed = async () => (await db.query<{ lsn: string }>('select confirmed_flush_lsn::text as lsn from pg_replication_slots where slot_name = $1', [SLOT])).rows[0]!.lsn;
const lag = async () =>
  Number((await db.query<{ b: string }>('select pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::text as b from pg_replication_slots where slot_name = $1', [SLOT])).rows[0]!.b);

describe('confirmRound', () => {
  it('moves a slot with nothing to read past the WAL of other tables, and never back', async () => {
    await db.query("insert into other select g, repeat('x', 200) from generate_series(1, 20000) g");
    expect(await lag()).toBeGreaterThan(4_000_000);
    const flushed = await flushedLsn(db);
    const { rows } = await peek(1000);
    expect(rows).toEqual([]);
    await confirmRound(db, SLOT, rows, 1000, flushed);
    expect(await confirmed()).toBe(flushed);
    expect(await lag()).toBeLessThan(100_000);
    // A position older than the slot's (a stale attempt that read nothing): nothing changes, no error.
    await confirmRound(db, SLOT, [], 1000, '0/10');
    expect(await confirmed()).toBe(flushed);
  });

  it('after rows, confirms to the flushed position when the peek read everything, and only to the last row when it hit its limit; the changes after are read again', async () => {
    await db.query('insert into watched values (1, 1), (2, 2)');
    await db.query('insert into watched values (3, 3)');
    await db.query("insert into other select g, 'y' from generate_series(100000, 110000) g");
    // A limit the first transaction's rows reach: the peek stops after it.
    const limited = await peek(1);
    expect(limited.rows.length).toBeGreaterThan(1);
    const flushed = await flushedLsn(db);
    await confirmRound(db, SLOT, limited.rows, 1, flushed);
    expect(await confirmed()).toBe(limited.rows.at(-1)!.lsn);
    // The second transaction is still there to read, and the WAL after it is skipped once it is.
    const before = await flushedLsn(db);
    const rest = await peek(1000);
    expect(rest.rows.length).toBeGreaterThan(0);
    expect(rest.rows.length).toBeLessThan(1000);
    await confirmRound(db, SLOT, rest.rows, 1000, before);
    expect(await confirmed()).toBe(before);
    expect((await peek(1000)).rows).toEqual([]);
  });

  it('refuses, as PostgreSQL does, rows older than what another apply has confirmed', async () => {
    await db.query('insert into watched values (4, 4)');
    const flushed = await flushedLsn(db);
    const { rows } = await peek(1000);
    expect(rows.length).toBeGreaterThan(0);
    // Another apply read past them and confirmed further.
    await db.query('insert into watched values (5, 5)');
    const further = await flushedLsn(db);
    await db.query('select pg_replication_slot_advance($1, $2::pg_lsn)', [SLOT, further]);
    await expect(confirmRound(db, SLOT, rows, 1000, flushed)).rejects.toThrow(/cannot advance replication slot/);
    expect(await confirmed()).toBe(further);
  });
});

describe('a split or merge apply beside a stale attempt of it', () => {
  it('the stale attempt, stalled between its read and its writes, is refused: the newer row stays, and nothing is left to apply', async () => {
    const [source, target] = catalog.nodes;
    await adminQuery(catalog.nodeUrl(source!.name), 'create schema fence_src; create table fence_src.t (id bigint primary key, v int not null)');
    await adminQuery(catalog.nodeUrl(target!.name), 'create schema fence_dst; create table fence_dst.t (id bigint primary key, v int not null)');
    const slot = 'sc_mv_fence_test_0';
    const plan: ReshardPlan = {
      operation: 'merge',
      movementId: 'fence_test',
      groupId: 0,
      groupName: 'fence',
      method: 'hash',
      keyType: 'bigint',
      tables: [{ name: 't', columns: 'id bigint primary key, v int not null', keyColumn: 'id' }],
      sources: [{ shardId: 1, schema: 'fence_src', node: source!, range: { hashMin: '-9223372036854775808', hashMax: '9223372036854775807' }, slot, publication: slot, gid: slot }],
      targets: [{ shardId: 2, schema: 'fence_dst', node: target!, range: { hashMin: '-9223372036854775808', hashMax: '9223372036854775807' } }],
      catalogGid: slot,
      bytes: 0,
    };
    const src = pools.get(source!.dsn);
    await src.query(`create publication ${slot} for table fence_src.t`);
    await src.query(`select pg_create_logical_replication_slot('${slot}', 'pgoutput')`);
    try {
      await src.query('insert into fence_src.t values (1, 1)');
      // The first attempt reads v = 1, then stalls before writing it.
      process.env.SHARDCAST_FAILPOINTS = 'reshard.apply.before-write=sleep:3000*1';
      resetFailpoints();
      const hitsBefore = failpointHits.get('reshard.apply.before-write') ?? 0;
      const stale = applyChanges(pools, plan).then(
        () => 'finished',
        (err: Error) => err.message,
      );
      const deadline = Date.now() + 10_000;
      while ((failpointHits.get('reshard.apply.before-write') ?? 0) === hitsBefore) {
        if (Date.now() > deadline) throw new Error('the first attempt did not reach its writes');
        await new Promise((r) => setTimeout(r, 20));
      }
      // The retry goes on: it reads v = 1 and v = 2, writes the newer, and confirms the slot past both.
      await src.query('update fence_src.t set v = 2 where id = 1');
      const retry = await applyChanges(pools, plan);
      expect(retry.changes).toBeGreaterThan(0);
      const dst = pools.get(target!.dsn);
      expect((await dst.query('select v from fence_dst.t where id = 1')).rows).toEqual([{ v: 2 }]);
      // The stale attempt wakes up with v = 1: refused, it writes nothing.
      expect(await stale).toMatch(/another apply has written it from further on \(this attempt is stale\)/);
      expect((await dst.query('select v from fence_dst.t where id = 1')).rows).toEqual([{ v: 2 }]);
      // Nothing was lost: the slot has nothing more for the target.
      expect((await applyChanges(pools, plan)).changes).toBe(0);
      // The next change still arrives.
      await src.query('update fence_src.t set v = 3 where id = 1');
      await applyChanges(pools, plan);
      expect((await dst.query('select v from fence_dst.t where id = 1')).rows).toEqual([{ v: 3 }]);
    } finally {
      delete process.env.SHARDCAST_FAILPOINTS;
      await stopChangeCapture(pools, plan);
    }
    // Cleanup forgets the apply positions with the slot.
    const { rows } = await adminQuery(catalog.nodeUrl(target!.name), "select count(*)::int as n from sc_movement.apply_positions where slot = 'sc_mv_fence_test_0'");
    expect(rows).toEqual([{ n: 0 }]);
  });
});
