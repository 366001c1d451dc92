import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, truncateSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rowDigestSql } from '../../src/backup/checksum.js';
import { PgDumpBackup, PgRestoreMissingError } from '../../src/backup/pg-dump.js';
import { BackupInvalidError } from '../../src/backup/reader.js';
import { canonicalSettingsSql } from '../../src/backup/values.js';
import { until } from '../helpers/fleet.js';

/**
 * The fixture is made for real: this machine's pg_dump is version 15 and refuses the fleet's
 * PostgreSQL 18, so the test starts the PostgreSQL 15 server of the same client package, dumps a
 * table with `pg_dump -Fd` and reads it back through pg_restore 15.
 */
const BIN = '/usr/lib/postgresql/15/bin';
const available = existsSync(path.join(BIN, 'postgres')) && existsSync(path.join(BIN, 'pg_dump'));

let root: string;
let server: ChildProcess | undefined;
let url: string;
let dump: string;

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** As root, PostgreSQL runs as the postgres OS user. */
function asOwner(): { uid?: number; gid?: number } {
  if (process.getuid?.() !== 0) return {};
  return { uid: Number(execFileSync('id', ['-u', 'postgres']).toString()), gid: Number(execFileSync('id', ['-g', 'postgres']).toString()) };
}

beforeAll(async () => {
  if (!available) return;
  root = mkdtempSync(path.join(tmpdir(), 'sc-pgdump-'));
  const owner = asOwner();
  if (owner.uid !== undefined) chownSync(root, owner.uid, owner.gid!);
  const data = path.join(root, 'data');
  const init = spawnSync(path.join(BIN, 'initdb'), ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync'], { ...owner, encoding: 'utf8' });
  expect(init.status, init.stderr).toBe(0);
  const port = await freePort();
  server = spawn(path.join(BIN, 'postgres'), ['-D', data, '-p', String(port), '-k', root, '-c', 'listen_addresses=127.0.0.1', '-c', 'timezone=Europe/Berlin', '-c', 'fsync=off'], { ...owner, stdio: 'ignore' });
  url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  await until('PostgreSQL 15', async () => {
    const c = new pg.Client({ connectionString: url });
    try {
      await c.connect();
      await c.end();
      return true;
    } catch {
      return false;
    }
  }, 60_000, 200);
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  await c.query(`create table items (id bigint primary key, name varchar(40) not null, price numeric(10,2), at timestamptz, ratio double precision, tags int[], note text)`);
  await c.query('create index items_at on items (at)');
  await c.query(`insert into items select i, 'item ' || i, i * 0.01, timestamptz '2024-03-31 00:30:00+00' + i * interval '7 minutes', i / 7.0, array[i, i + 1],
                   case when i % 5 = 0 then null else E'tab\\there, "quoted" \\\\ line\\nbreak' end from generate_series(1, 30000) i`);
  await c.query(`create table empty_one (k int)`);
  await c.end();
  dump = path.join(root, 'dump');
  const out = spawnSync(path.join(BIN, 'pg_dump'), ['-Fd', '-f', dump, '-d', url], { encoding: 'utf8' });
  expect(out.status, out.stderr).toBe(0);
}, 120_000);

afterAll(async () => {
  server?.kill('SIGINT');
  if (server) await new Promise((r) => server!.once('exit', r));
  if (root) rmSync(root, { recursive: true, force: true });
});

describe.skipIf(!available)('pg_dump directory backups', () => {
  it('reads a pg_dump -Fd table through pg_restore: DDL, and rows whose digest is PostgreSQL 15\'s', async () => {
    const backup = await PgDumpBackup.open(dump, { pgRestore: path.join(BIN, 'pg_restore') });
    expect(backup.tables.map((t) => `${t.schema}.${t.name}`).sort()).toEqual(['public.empty_one', 'public.items']);
    const t = backup.table('items');
    expect(t.columns.map((c) => `${c.name} ${c.pgType} ${c.arrow}${c.notNull ? ' not null' : ''}`)).toEqual([
      'id int8 int64 not null',
      'name varchar(40) text not null',
      'price numeric(10,2) text',
      'at timestamptz timestamptz',
      'ratio float8 float64',
      'tags int4[] text',
      'note text text',
    ]);
    expect(t.primaryKey).toEqual(['id']);
    expect(t.indexes).toEqual([{ name: 'items_at', unique: false, definition: 'using btree (at)' }]);
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      await c.query('begin');
      for (const s of canonicalSettingsSql()) await c.query(s);
      const { rows } = await c.query<{ n: string; s: string }>(rowDigestSql(null, 'items'));
      await c.query('commit');
      // The dump's timestamps carry the server's +01/+02 offsets; the batches hold UTC, and give the same digest.
      expect(await backup.digest('items')).toEqual({ rows: Number(rows[0]!.n), sum: rows[0]!.s });
    } finally {
      await c.end();
    }
  });

  it('says so when pg_restore is not installed, and refuses what is not a pg_dump directory or is damaged', async () => {
    await expect(PgDumpBackup.open(dump, { pgRestore: path.join(root, 'no', 'pg_restore') })).rejects.toThrow(PgRestoreMissingError);
    await expect(PgDumpBackup.open(dump, { pgRestore: path.join(root, 'no', 'pg_restore') })).rejects.toThrow(/pg_restore is not installed \(or not on PATH\): reading a pg_dump directory backup needs pg_restore/);
    const empty = path.join(root, 'empty');
    mkdirSync(empty);
    await expect(PgDumpBackup.open(empty)).rejects.toThrow(`${empty}: not a pg_dump directory-format backup (no toc.dat)`);
    // A truncated data file: pg_restore's own error, in one line.
    const backup = await PgDumpBackup.open(dump, { pgRestore: path.join(BIN, 'pg_restore') });
    const dataFile = readdirSync(dump).find((f) => /^\d+\.dat(\.gz)?$/.test(f) && f !== 'toc.dat')!;
    truncateSync(path.join(dump, dataFile), 100);
    const err = await backup.digest('items').then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(BackupInvalidError);
    expect((err as Error).message).toMatch(/pg_restore .* failed: |ends without its terminator/);
  });
});
