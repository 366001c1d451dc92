import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Int64, RecordBatch, Schema, Field, Struct, Utf8, makeData, vectorFromArray } from 'apache-arrow';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportBackup, plainTable } from '../../src/backup/export.js';
import type { ManifestTable } from '../../src/backup/manifest.js';
import { openBackup } from '../../src/backup/reader.js';
import { NodePools } from '../../src/catalog/node-pools.js';
import { binaryKinds } from '../../src/restore/copy-binary.js';
import { RowRouter, createRestoreShards, importUnit, planImportUnits, type RestoreShard } from '../../src/restore/import.js';
import { restoreColumnsDdl } from '../../src/restore/ddl.js';
import { pgDigest } from '../helpers/digest.js';
import { createTestCatalog, uniqueName, type TestCatalog } from '../helpers/fleet.js';

/**
 * The import's binary COPY against real PostgreSQL: a table of every type it writes in binary, edge
 * values and NULLs included, lands with the source's digest; a table with one type it does not write
 * in binary goes as text and lands the same; a numeric value PostgreSQL would not have written is
 * refused with the column's name and leaves the shard empty.
 */

let catalog: TestCatalog;
let source: pg.Pool;
const pools = new NodePools({ max: 2 });
const dirs: string[] = [];
let shardNo = 9000;

beforeAll(async () => {
  catalog = await createTestCatalog('restore-binary');
  const db = uniqueName('src');
  await pools.get(catalog.nodes[0]!.dsn).query(`create database ${db}`);
  const url = new URL(catalog.nodes[0]!.dsn);
  url.pathname = `/${db}`;
  source = new pg.Pool({ connectionString: url.toString(), max: 2 });
}, 60_000);

afterAll(async () => {
  await source?.end();
  await pools.end();
  await catalog?.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Two hash shards of `table` on the first node, and every unit of the backup imported into them. */
async function restoreInto(table: string, t: ManifestTable, dir: string, oneStream = false): Promise<RestoreShard[]> {
  const node = catalog.nodes[0]!;
  const shards: RestoreShard[] = [
    { shardId: shardNo, schema: `sc_s${shardNo}`, nodeId: node.id, hashMin: '-9223372036854775808', hashMax: '-1' },
    { shardId: shardNo + 1, schema: `sc_s${shardNo + 1}`, nodeId: node.id, hashMin: '0', hashMax: '9223372036854775807' },
  ];
  shardNo += 2;
  await createRestoreShards(node, { table, schemas: shards.map((s) => s.schema), columns: restoreColumnsDdl(t).bare, grant: async () => undefined });
  const backup = await openBackup(dir);
  for (const unit of planImportUnits(t, 'shardcast', 1)) {
    await importUnit({
      restoreId: `binary-${table}`,
      table,
      columns: t.columns,
      keyColumn: 'id',
      router: new RowRouter(table, 'hash', 'integer', shards),
      nodes: new Map([[node.id, node]]),
      unit,
      batches: () => backup.batches(t.name, { file: unit.file, from: unit.from, to: unit.to }),
      oneStream,
    });
  }
  return shards;
}

async function shardsDigest(shards: RestoreShard[], table: string): Promise<{ rows: number; sum: bigint }> {
  let rows = 0;
  let sum = 0n;
  for (const s of shards) {
    const d = await pgDigest(pools.get(catalog.nodes[0]!.dsn), s.schema, table);
    rows += d.rows;
    sum += d.sum;
  }
  return { rows, sum };
}

describe('binary COPY in the restore import', () => {
  it('lands every binary type, edge values and NULLs included, with the source digest (both import modes)', async () => {
    await source.query(`create table kinds (
      id int primary key, s smallint, b bigint, r real, d double precision, n numeric(30,6), nn numeric, t text, v varchar(20), c char(3),
      ok boolean, ts timestamp, tz timestamptz, ts3 timestamp(3) with time zone, day date, u uuid, raw bytea, doc jsonb, j json, note text)`);
    await source.query(`insert into kinds values
      (1, -32768, -9223372036854775808, 1.5e-7, 1e300, 123456789012345678901234.567891, 'NaN', '', 'a b', 'x', true,
       '2024-02-29 23:59:59.123456', '2024-01-01 00:00:00+05', '2024-01-01 00:00:00.123+00', '2024-02-29',
       'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x00ff10', '{"a": [1, 2.5, "x\\"y"]}', '{"b" : 1}', 'quote " backslash \\ tab \t newline \n end'),
      (2, 32767, 9223372036854775807, 'NaN', '-Infinity', -0.000001, 'Infinity', 'ünïcødé ✓ 𝄞', null, null, false,
       '0044-03-15 12:00:00 BC', 'infinity', '-infinity', 'infinity', null, '\\x', '[]', '[]', null),
      (3, 0, 0, -0, 'Infinity', 0, '-Infinity', 'NULL', '\\N', 'a\\b', null, '1970-01-01 00:00:00', '1900-06-30 12:34:56.5+00',
       '1600-01-01 00:00:00+00', '0001-01-01 BC', '00000000-0000-0000-0000-000000000000', null, 'null', 'null', '  leading space'),
      (4, null, null, null, 0.1, 100000000, 0.00001234, null, '', '', true, 'infinity', '-infinity', '2300-05-06 07:08:09.999+00', '-infinity',
       null, '\\xdeadbeef', '{"k": null}', null, ','),
      (5, 1, 4294967296, 3.4e38, -1.7976931348623157e308, -99999999999999999999999.999999, 1e-20, 'x', 'y', 'z', false,
       '100000-12-31 23:59:59.999999', '4713-01-01 00:00:00+00 BC', '1999-12-31 23:59:59.999+00', '5874897-12-31',
       'ffffffff-ffff-ffff-ffff-ffffffffffff', null, '{"deep": {"x": [true, false, null]}}', '{}', '')`);
    // Many rows of every magnitude, so that routing and encoding meet random values too.
    await source.query(`insert into kinds (id, s, b, r, d, n, nn, t, ts, tz, day, u, raw, doc)
      select 100 + i, (i % 65536) - 32768, (random() * 2 - 1) * 9.2e18, (random() - 0.5) * 1e6, (random() - 0.5) * 10 ^ (i % 40),
             round(((random() - 0.5) * 10 ^ (i % 24))::numeric, 6), round(((random() - 0.5) * 10 ^ (i % 30 - 10))::numeric, i % 12),
             md5(i::text), timestamp '2000-01-01' + i * interval '17 minutes 3.25 seconds', timestamptz '1969-12-31 23:00:00+00' + i * interval '1 second',
             date '1970-01-01' + (i % 20000) - 10000, md5(i::text)::uuid, decode(md5(i::text), 'hex'), jsonb_build_object('i', i)
        from generate_series(1, 20000) i`);
    const dir = path.join(mkdtempSync(path.join(tmpdir(), 'sc-binary-')), 'backup');
    dirs.push(path.dirname(dir));
    const manifest = await exportBackup([plainTable(source, 'kinds')], dir, { batchRows: 4000 });
    const t = manifest.tables[0]!;
    expect(binaryKinds(t.columns)).not.toBeNull();
    const expected = await pgDigest(source, null, 'kinds');
    expect(await shardsDigest(await restoreInto('kinds_a', t, dir), 'kinds_a')).toEqual(expected);
    expect(await shardsDigest(await restoreInto('kinds_b', t, dir, true), 'kinds_b')).toEqual(expected);
  });

  it('sends a table with a type it has no binary form for as text, to the same digest', async () => {
    await source.query(`create table mixed (id int primary key, span interval, tags int[], amount numeric(12,2), at timestamptz)`);
    await source.query(`insert into mixed select i, i * interval '1 minute 3 seconds', array[i, null, -i], i / 7.0, timestamptz '2026-01-01' + i * interval '1 hour'
      from generate_series(1, 5000) i`);
    const dir = path.join(mkdtempSync(path.join(tmpdir(), 'sc-binary-')), 'backup');
    dirs.push(path.dirname(dir));
    const t = (await exportBackup([plainTable(source, 'mixed')], dir)).tables[0]!;
    expect(binaryKinds(t.columns)).toBeNull();
    expect(await shardsDigest(await restoreInto('mixed_a', t, dir), 'mixed_a')).toEqual(await pgDigest(source, null, 'mixed'));
  });

  it('refuses a numeric text PostgreSQL would not have written, naming the column, and leaves the shards empty', async () => {
    const node = catalog.nodes[0]!;
    const columns = [
      { name: 'id', pgType: 'bigint', arrow: 'int64' as const, notNull: true, default: null },
      { name: 'price', pgType: 'numeric(10,2)', arrow: 'text' as const, notNull: false, default: null },
    ];
    const shards: RestoreShard[] = [{ shardId: shardNo, schema: `sc_s${shardNo}`, nodeId: node.id, hashMin: '-9223372036854775808', hashMax: '9223372036854775807' }];
    shardNo += 1;
    await createRestoreShards(node, { table: 'prices', schemas: [shards[0]!.schema], columns: 'id bigint not null, price numeric(10,2)', grant: async () => undefined });
    const schema = new Schema([new Field('id', new Int64(), false), new Field('price', new Utf8(), true)]);
    const ids = makeData({ type: new Int64(), length: 3, nullCount: 0, data: BigInt64Array.from([1n, 2n, 3n]) });
    const prices = vectorFromArray(['1.50', '1e3', '2.00'], new Utf8()).data[0]!;
    const batch = new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: 3, nullCount: 0, children: [ids, prices] }));
    const run = importUnit({
      restoreId: 'binary-bad-numeric',
      table: 'prices',
      columns,
      keyColumn: 'id',
      router: new RowRouter('prices', 'hash', 'bigint', shards),
      nodes: new Map([[node.id, node]]),
      unit: { index: 0, file: 0, from: 0, to: 1 },
      batches: async function* () {
        yield batch;
      },
    });
    await expect(run).rejects.toThrow(/column price: "1e3" is not PostgreSQL's text of a numeric value/);
    const { rows } = await pools.get(node.dsn).query<{ n: number }>(`select count(*)::int as n from ${shards[0]!.schema}.prices`);
    expect(rows[0]!.n).toBe(0);
  });
});
