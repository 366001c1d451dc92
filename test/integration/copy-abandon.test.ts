import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportBackup, plainTable } from '../../src/backup/export.js';
import { resetFailpoints } from '../../src/failpoints.js';
import { copyChunked } from '../../src/movement/logical-apply.js';
import { adminQuery, createTestCatalog, type TestCatalog, until } from '../helpers/fleet.js';

let catalog: TestCatalog;

beforeAll(async () => {
  catalog = await createTestCatalog('copychunk');
});

afterAll(async () => {
  delete process.env.SHARDCAST_FAILPOINTS;
  await catalog?.close();
});

/** The sessions on a node that are in a transaction reading `table` (by their query text). */
async function sessionsCopying(url: string, table: string): Promise<number> {
  const { rows } = await adminQuery(url, "select count(*)::int as n from pg_stat_activity where pid <> pg_backend_pid() and query like $1 and state <> 'idle'", [`%copy%${table}%`]);
  return rows[0].n;
}

describe('a chunked copy whose target fails while the source is still sending', () => {
  it('fails at once and leaves the source connection failing fast, not waiting forever in the middle of its COPY', async () => {
    const table = `copy_src_${Date.now().toString(36)}`;
    await adminQuery(catalog.nodeUrl('node-1'), `create table public.${table} (id bigint primary key, body text)`);
    await adminQuery(catalog.nodeUrl('node-1'), `insert into public.${table} select g, repeat(md5(g::text), 8) from generate_series(1, 100000) g`);
    await adminQuery(catalog.nodeUrl('node-2'), `create table public.${table} (id bigint primary key, body text)`);
    const out = new pg.Client({ connectionString: catalog.nodeUrl('node-1') });
    const into = new pg.Client({ connectionString: catalog.nodeUrl('node-2') });
    out.on('error', () => undefined);
    into.on('error', () => undefined);
    await out.connect();
    await into.connect();
    try {
      const sourcePid = (await out.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
      const targetPid = (await into.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
      await out.query('begin isolation level repeatable read read only');
      let killed = false;
      const copy = copyChunked({
        out,
        into,
        from: `public.${table}`,
        to: `public.${table}`,
        keyColumns: ['id'],
        chunkRows: 1_000_000, // one chunk: the source is still sending when the target goes
        pace: async () => {
          if (killed) return;
          killed = true;
          // The target's session is ended for real, in the middle of its COPY FROM.
          await adminQuery(catalog.nodeUrl('node-2'), 'select pg_terminate_backend($1)', [targetPid]);
        },
      });
      await expect(copy).rejects.toThrow();
      expect(killed).toBe(true);
      // The caller's rollback on the source answers (here: fails, its session closed) within seconds.
      const t0 = Date.now();
      const next = await Promise.race([
        out.query('rollback').then(
          () => 'answered',
          () => 'failed',
        ),
        new Promise<string>((r) => setTimeout(() => r('hung'), 10_000)),
      ]);
      expect(next).not.toBe('hung');
      expect(Date.now() - t0).toBeLessThan(10_000);
      // Its session is gone from the source, and with it the snapshot and the transaction.
      await until('the source session to end', async () => {
        const { rows } = await adminQuery(catalog.nodeUrl('node-1'), 'select count(*)::int as n from pg_stat_activity where pid = $1', [sourcePid]);
        return rows[0].n === 0;
      });
      const { rows: landed } = await adminQuery(catalog.nodeUrl('node-2'), `select count(*)::int as n from public.${table}`);
      expect(landed[0].n).toBe(0);
    } finally {
      await out.end().catch(() => undefined);
      await into.end().catch(() => undefined);
      await adminQuery(catalog.nodeUrl('node-1'), `drop table if exists public.${table}`);
      await adminQuery(catalog.nodeUrl('node-2'), `drop table if exists public.${table}`);
    }
  }, 60_000);
});

describe('a backup whose file cannot be written in the middle of a COPY', () => {
  it('fails at once, naming the table, and leaves no session behind on the source', async () => {
    const table = `export_src_${Date.now().toString(36)}`;
    const url = catalog.nodeUrl('node-1');
    await adminQuery(url, `create table public.${table} (id bigint primary key, body text)`);
    await adminQuery(url, `insert into public.${table} select g, repeat(md5(g::text), 8) from generate_series(1, 100000) g`);
    const pool = new pg.Pool({ connectionString: url, max: 2 });
    pool.on('error', () => undefined);
    const dir = mkdtempSync(path.join(tmpdir(), 'sc-abandon-'));
    // The first record batch (1,000 rows of 100,000) fails to be written: the COPY has far more to send.
    process.env.SHARDCAST_FAILPOINTS = 'backup.batch=throw*1';
    resetFailpoints();
    try {
      const outcome = await Promise.race([
        exportBackup([plainTable(pool, `public.${table}`)], path.join(dir, 'b'), { batchRows: 1000 }).then(
          () => 'exported',
          (err: Error) => err.message,
        ),
        new Promise<string>((r) => setTimeout(() => r('hung'), 20_000)),
      ]);
      expect(outcome).toMatch(new RegExp(`^table ${table}, public.${table}: failpoint backup.batch: injected failure$`));
      await until('no session still copying on the source', async () => (await sessionsCopying(url, table)) === 0);
    } finally {
      delete process.env.SHARDCAST_FAILPOINTS;
      await pool.end();
      rmSync(dir, { recursive: true, force: true });
      await adminQuery(url, `drop table if exists public.${table}`);
    }
  }, 60_000);
});
