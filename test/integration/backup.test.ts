import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { RecordBatchReader } from 'apache-arrow';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable } from '../../client/index.js';
import { addBatchDigest, DIGEST_ALGORITHM, RECORD_DIGEST_ALGORITHM } from '../../src/backup/checksum.js';
import { canonicalSettingsSql } from '../../src/backup/values.js';
import { exportBackup, plainTable, shardcastTables } from '../../src/backup/export.js';
import { manifestSchema, type Manifest } from '../../src/backup/manifest.js';
import { NodePools } from '../../src/catalog/node-pools.js';
import { ensurePartitions } from '../../src/profiling/partitions.js';
import { proposeLayout } from '../../src/restore/proposal.js';
import { pgDigest } from '../helpers/digest.js';
import { createTestCatalog, startTestWorker, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

let catalog: TestCatalog;
let worker: TestWorker;
let plain: pg.Pool;
let plainUrl: string;
const dirs: string[] = [];

function tempDir(): string {
  const d = mkdtempSync(path.join(tmpdir(), 'sc-backup-'));
  dirs.push(d);
  return path.join(d, 'backup');
}

beforeAll(async () => {
  catalog = await createTestCatalog('backup');
  worker = await startTestWorker(catalog.catalogUrl);
  plainUrl = catalog.nodeUrl(catalog.nodes[0]!.name);
  plain = new pg.Pool({ connectionString: plainUrl, max: 4 });
});

afterAll(async () => {
  await plain?.end();
  await worker?.close();
  await catalog?.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Reads the Arrow file back and computes the digest of its batches, as a restore would. */
async function fileDigest(dir: string, manifest: Manifest, table: string): Promise<{ rows: number; sum: bigint; batches: number }> {
  const t = manifest.tables.find((x) => x.name === table)!;
  const reader = await RecordBatchReader.from(readFileSync(path.join(dir, t.files[0]!.path)));
  const acc = { rows: 0, sum: 0n };
  let batches = 0;
  for (const batch of reader) {
    addBatchDigest(acc, batch, t.columns.map((c) => c.arrow));
    batches++;
  }
  return { ...acc, batches };
}

function sha256(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

describe('shardcast backup', () => {
  it('exports a plain table of every mapped type, edge values and NULLs, with a manifest PostgreSQL agrees with', async () => {
    await plain.query(`create table kinds (
      id int primary key, s smallint, b bigint, r real, d double precision, n numeric(20,4), t text, v varchar(20), c char(3),
      ok boolean, ts timestamp, tz timestamptz, day date, u uuid, raw bytea, doc jsonb, span interval, tags int[], note text)`);
    await plain.query('create index kinds_tz on kinds (tz)');
    await plain.query('create unique index kinds_u on kinds (u)');
    await plain.query(`insert into kinds values
      (1, -32768, -9223372036854775808, 1.5e-7, 1e20, 12345678901234.5678, '', 'a b', 'x', true, '2024-02-29 23:59:59.123456', '2024-01-01 00:00:00+05', '2024-02-29',
       'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x00ff10', '{"a": [1, 2.5, "x\\"y"]}', '1 day 02:03:04', '{1,2,3}', 'quote " backslash \\ paren ( ) comma , tab \t newline \n end'),
      (2, 32767, 9223372036854775807, 'NaN', '-Infinity', 'NaN', 'ünïcødé ✓ 𝄞', null, null, false, '0044-03-15 12:00:00 BC', 'infinity', '-infinity',
       null, '\\x', '[]', null, '{}', null),
      (3, 0, 0, -0, 123456789012345678, -0.0001, 'NULL', '\\N', 'a\\b', null, '1970-01-01 00:00:00', '1900-06-30 12:34:56.5+00', '0001-01-01 BC',
       '00000000-0000-0000-0000-000000000000', null, 'null', '-1 mons', null, '  leading space'),
      (4, null, null, null, 0.1, 0, null, '', '', true, 'infinity', '-infinity', '9999-12-31', null, '\\xdeadbeef', '{"k": null}', '1 year', '{NULL,5}', ',')`);
    // Random floats of every magnitude: the export fails if one's Arrow value does not format back to PostgreSQL's text.
    await plain.query(`insert into kinds (id, r, d)
      select 100 + i, (x * 10 ^ (e / 2))::real, x * 10 ^ e
        from (select i, random() - 0.5 as x, (random() * 600 - 300)::int as e from generate_series(1, 20000) i) g
       where x * 10 ^ e <> 0 and abs(x * 10 ^ (e / 2)) between 1e-37 and 1e37`);
    const dir = tempDir();
    const manifest = await exportBackup([plainTable(plain, 'kinds')], dir);
    expect(manifestSchema.parse(JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8')))).toEqual(manifest);
    expect(readdirSync(dir).sort()).toEqual(['kinds.arrow', 'manifest.json']);
    const [t] = manifest.tables;
    const expected = await pgDigest(plain, null, 'kinds');
    expect(t!.rows).toBe(expected.rows);
    expect(t!.checksum).toMatchObject({ rows: expected.rows, sum: expected.sum.toString() });
    // The record digest: each column by its type's hash, but floats, numeric, char(n), interval and arrays by their text, text under "C".
    const c = await plain.connect();
    try {
      await c.query('begin');
      for (const set of canonicalSettingsSql()) await c.query(set);
      const record = await c.query<{ r: string }>(`select sum(hash_record_extended(row(id, s, b, r::text, d::text, n::text, t collate "C", v collate "C", c::text, ok, ts, tz, day, u, raw,
        doc, span::text, tags::text, note collate "C"), 0))::text as r from kinds`);
      expect(t!.checksum.record).toEqual({ algorithm: RECORD_DIGEST_ALGORITHM, sum: record.rows[0]!.r });
    } finally {
      await c.query('rollback');
      c.release();
    }
    expect(t!.files[0]).toMatchObject({ path: 'kinds.arrow', rows: expected.rows, sha256: sha256(path.join(dir, 'kinds.arrow')) });
    expect(t!.files[0]!.bytes).toBe(readFileSync(path.join(dir, 'kinds.arrow')).length);
    expect(Object.fromEntries(t!.columns.map((c) => [c.name, `${c.arrow} ${c.pgType}`]))).toEqual({
      id: 'int32 integer', s: 'int16 smallint', b: 'int64 bigint', r: 'float32 real', d: 'float64 double precision', n: 'text numeric(20,4)',
      t: 'text text', v: 'text character varying(20)', c: 'text character(3)', ok: 'bool boolean', ts: 'timestamp timestamp without time zone',
      tz: 'timestamptz timestamp with time zone', day: 'date date', u: 'uuid uuid', raw: 'binary bytea', doc: 'text jsonb', span: 'text interval',
      tags: 'text integer[]', note: 'text text',
    });
    expect(t!.primaryKey).toEqual(['id']);
    expect(t!.indexes).toEqual([
      { name: 'kinds_tz', unique: false, definition: 'using btree (tz)' },
      { name: 'kinds_u', unique: true, definition: 'using btree (u)' },
    ]);
    expect(t!.columns.find((c) => c.name === 'id')).toMatchObject({ notNull: true });
    // Read back, the batches give PostgreSQL's digest again.
    const back = await fileDigest(dir, manifest, 'kinds');
    expect({ rows: back.rows, sum: back.sum }).toEqual(expected);
    expect(back.batches).toBe(t!.files[0]!.batches);
    // Shard-key candidates: integers, text, uuid, dates and times; not floats, numeric, json or bytea.
    expect(t!.keyStats.map((s) => s.column)).toEqual(['id', 's', 'b', 't', 'v', 'c', 'ts', 'tz', 'day', 'u', 'note']);
  });

  it('takes the record digest of columns with no hash of their own (json, point, an enum) over their text', async () => {
    await plain.query(`create type mood as enum ('low', 'high')`);
    await plain.query('create table docs (id int primary key, doc json, at point, m mood)');
    await plain.query(`insert into docs select g, json_build_object('g', g), point(g, g), (array['low','high']::mood[])[1 + g % 2] from generate_series(1, 500) g`);
    const dir = tempDir();
    const manifest = await exportBackup([plainTable(plain, 'docs')], dir);
    const expected = await pgDigest(plain, null, 'docs');
    const { rows } = await plain.query<{ r: string }>(`select sum(hash_record_extended(row(id, doc::text, at::text, m::text), 0))::text as r from docs`);
    expect(manifest.tables[0]!.checksum).toEqual({ algorithm: DIGEST_ALGORITHM, rows: 500, sum: expected.sum.toString(), record: { algorithm: RECORD_DIGEST_ALGORITHM, sum: rows[0]!.r } });
  });

  it('gives key statistics: quantiles, distinct estimate and heavy hitters', async () => {
    await plain.query(`create table events (id bigint primary key, tenant int not null, at timestamptz not null, label text)`);
    // tenant 7 holds 30 % of the rows; the rest spread over 700 tenants (i % 1000 for i % 10 >= 3).
    await plain.query(`insert into events select i, case when i % 10 < 3 then 7 else 1000 + i % 1000 end,
                         timestamptz '2024-01-01 00:00:00+00' + make_interval(secs => i * 36), 'l' || (i % 50)
                         from generate_series(1, 100000) i`);
    const dir = tempDir();
    const manifest = await exportBackup([plainTable(plain, 'public.events')], dir);
    const stats = new Map(manifest.tables[0]!.keyStats.map((s) => [s.column, s]));
    const id = stats.get('id')!;
    expect(id).toMatchObject({ rows: 100000, min: '1', max: '100000', nullFraction: 0, sampleSize: 10000 });
    expect(id.quantiles).toHaveLength(101);
    expect(Math.abs(Number(id.quantiles[50]) - 50000)).toBeLessThan(2500);
    expect(Math.abs(id.distinctEstimate - 100000) / 100000).toBeLessThan(0.05);
    const tenant = stats.get('tenant')!;
    expect(tenant.heavyHitters[0]).toMatchObject({ value: '7' });
    expect(tenant.heavyHitters[0]!.count).toBeLessThanOrEqual(30000);
    expect(tenant.heavyHitters[0]!.count + tenant.maxError).toBeGreaterThanOrEqual(30000);
    expect(Math.abs(tenant.distinctEstimate - 701)).toBeLessThan(35);
    const at = stats.get('at')!;
    expect(at.min).toBe('2024-01-01 00:00:36+00');
    expect(at.max).toBe('2024-02-11 16:00:00+00');
    expect(stats.get('label')!.distinctEstimate).toBe(50);
  });

  it('exports a Shardcast table from all its shards, in parallel, to the digest of the shards summed', async () => {
    await createDistributedTable(worker.options, { name: 'orders', columns: 'id bigint primary key, customer text not null, total numeric(12,2), placed timestamptz', shardKey: 'id', shardCount: 4 });
    await createDistributedTable(worker.options, { name: 'lines', columns: 'order_id bigint not null, n int not null, sku text, primary key (order_id, n)', shardKey: 'order_id', colocateWith: 'orders' });
    const pools = new NodePools();
    try {
      const shards = await catalog.pool.query<{ schema: string; dsn: string }>(
        `select s.schema_name as schema, n.dsn from shardcast.shards s join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id order by s.id`,
      );
      expect(shards.rows).toHaveLength(4);
      // Rows written straight to the shards (the test only needs rows where the map puts them; the digest does not care).
      for (const [i, s] of shards.rows.entries()) {
        await pools.get(s.dsn).query(`insert into ${s.schema}.orders select g, 'c' || g % 7, g * 1.25, timestamptz '2024-01-01' + g * interval '1 minute' from generate_series($1::int, $2::int) g`, [i * 10000 + 1, i * 10000 + 2500 + i]);
        await pools.get(s.dsn).query(`insert into ${s.schema}.lines select g, k, 'sku' || k from generate_series($1::int, $2::int) g, generate_series(1, 3) k`, [i * 10000 + 1, i * 10000 + 100]);
      }
      let expected = { rows: 0, sum: 0n };
      for (const s of shards.rows) {
        const d = await pgDigest(pools.get(s.dsn), s.schema, 'orders');
        expected = { rows: expected.rows + d.rows, sum: expected.sum + d.sum };
      }
      const dir = tempDir();
      const seen = new Set<string>();
      const manifest = await exportBackup(await shardcastTables(catalog.pool, pools, 'orders', true), dir, { jobs: 4, onProgress: (p) => p.done && seen.add(`${p.table} ${p.part}`) });
      expect(seen.size).toBe(8);
      expect(manifest.tables.map((t) => t.name)).toEqual(['orders', 'lines']);
      const orders = manifest.tables[0]!;
      expect(orders.source).toEqual({ kind: 'shardcast', shards: 4, method: 'hash', keyColumn: 'id' });
      expect(orders.checksum).toMatchObject({ rows: expected.rows, sum: expected.sum.toString() });
      // The record digest is the shards' summed as well.
      let record = 0n;
      for (const s of shards.rows) {
        const { rows } = await pools.get(s.dsn).query<{ r: string }>(`select coalesce(sum(hash_record_extended(row(id, customer collate "C", total::text, placed), 0)), 0)::text as r from ${s.schema}.orders`);
        record += BigInt(rows[0]!.r);
      }
      expect(orders.checksum.record).toEqual({ algorithm: RECORD_DIGEST_ALGORITHM, sum: record.toString() });
      expect(await fileDigest(dir, manifest, 'orders')).toMatchObject({ rows: expected.rows, sum: expected.sum });
      expect(manifest.tables[1]!.rows).toBe(1200);
      expect(manifest.tables[1]!.primaryKey).toEqual(['order_id', 'n']);
      // No collected row counts yet: no history in the manifest.
      expect(orders.rowHistory).toBeUndefined();

      // The collector's samples of the four shards, hourly over the last 36 hours, 1,000 rows an hour
      // in all (one shard missing in one hour: that hour is left out): the manifest carries the table's
      // row counts, and the restore's growth predictor measures the growth from them.
      const now = Date.now();
      await ensurePartitions(catalog.pool, new Date(now - 2 * 86_400_000), 2);
      for (let h = 36; h >= 1; h--) {
        for (const [i, sh] of shards.rows.entries()) {
          if (h === 20 && i === 3) continue;
          await catalog.pool.query(
            `insert into shardcast_stats.table_samples (ts, node_id, schema_name, table_name, n_tup_ins, n_tup_upd, n_tup_del, seq_scan, seq_tup_read, idx_scan, idx_tup_fetch, n_live_tup, stats_epoch)
             values ($1, 1, $2, 'orders', 0, 0, 0, 0, 0, 0, 0, $3, now())`,
            [new Date(now - h * 3_600_000), sh.schema, 100_000 + (36 - h) * 250],
          );
        }
      }
      const collected = await exportBackup(await shardcastTables(catalog.pool, pools, 'orders'), tempDir());
      const history = collected.tables[0]!.rowHistory!;
      expect(history).toHaveLength(35);
      expect(history[0]!.rows).toBe(400_000);
      expect(history.at(-1)!.rows).toBe(400_000 + 35 * 1000);
      const proposal = proposeLayout(collected.tables[0]!, { nodes: [{ name: 'node-1', capacity: 1 }], exportedAt: collected.createdAt });
      expect(proposal.growth.source).toBe('metrics');
      expect(proposal.growth.rowsPerMonth).toBeCloseTo(720_000, -3);

      // The table alone, by its name.
      const one = await exportBackup(await shardcastTables(catalog.pool, pools, 'lines'), tempDir());
      expect(one.tables.map((t) => t.name)).toEqual(['lines']);
      expect(one.tables[0]!.checksum.sum).toBe(manifest.tables[1]!.checksum.sum);
    } finally {
      await pools.end();
    }
  });

  it('refuses a non-empty directory and an unknown table, leaving nothing behind', async () => {
    const dir = tempDir();
    await exportBackup([plainTable(plain, 'kinds')], dir);
    await expect(exportBackup([plainTable(plain, 'kinds')], dir)).rejects.toThrow(/the directory is not empty/);
    const other = tempDir();
    await expect(exportBackup([plainTable(plain, 'no_such_table')], other)).rejects.toThrow(/table no_such_table does not exist/);
    expect(() => readdirSync(other)).toThrow();
    await expect(shardcastTables(catalog.pool, new NodePools(), 'nope')).rejects.toThrow(/no distributed table or colocation group named "nope"/);
  });

  it('streams a million rows through the CLI with --from-url in bounded memory', async () => {
    await plain.query(`create table big (id bigint primary key, tenant int not null, at timestamptz not null, payload text)`);
    await plain.query(`insert into big select i, i % 5000, timestamptz '2024-01-01' + i * interval '1 second', repeat(md5(i::text), 3) from generate_series(1, 1000000) i`);
    const dir = tempDir();
    const root = path.resolve(import.meta.dirname, '../..');
    const out = await new Promise<{ code: number | null; stderr: string; stdout: string }>((resolve) => {
      const child = spawn('/usr/bin/time', ['-v', process.execPath, path.join(root, 'bin/shardcast.js'), 'backup', '--from-url', plainUrl, '--table', 'big', '--to', dir, '--quiet'], { cwd: root });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('exit', (code) => resolve({ code, stdout, stderr }));
    });
    expect(out.code, out.stderr).toBe(0);
    const rssKb = Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(out.stderr)![1]);
    const seconds = /Elapsed \(wall clock\) time.*: (.*)/.exec(out.stderr)![1];
    console.log(`backup of 1,000,000 rows: peak RSS ${(rssKb / 1024).toFixed(0)} MB, wall ${seconds}; ${out.stdout.trim()}`);
    expect(rssKb / 1024).toBeLessThanOrEqual(512);
    const manifest = manifestSchema.parse(JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8')));
    const expected = await pgDigest(plain, null, 'big');
    expect(manifest.tables[0]!.checksum).toMatchObject({ rows: 1000000, sum: expected.sum.toString() });
  }, 300_000);
});
