import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { confirmRound, flushedLsn } from '../../src/movement/logical-apply.js';
import { createTestCatalog, type TestCatalog } from '../helpers/fleet.js';

/**
 * How a split's or merge's apply confirms its slot (confirmRound), on a real node: past the WAL of
 * other tables when a round read every change, never backwards, and refused (as PostgreSQL refuses
 * it) when another apply has confirmed further than this round's rows.
 */
let catalog: TestCatalog;
let db: pg.Client;
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
  await db?.query(`select pg_drop_replication_slot('${SLOT}')`).catch(() => undefined);
  await db?.end();
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
