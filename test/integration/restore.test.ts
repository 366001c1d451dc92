import { mkdtempSync, readFileSync, rmSync, writeFileSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newRestoreId, restoreResult, startRestore } from '../../client/index.js';
import { exportBackup, plainTable } from '../../src/backup/export.js';
import type { Manifest } from '../../src/backup/manifest.js';
import { openBackup } from '../../src/backup/reader.js';
import { NodePools } from '../../src/catalog/node-pools.js';
import { failpointHits, resetFailpoints } from '../../src/failpoints.js';
import { RECORD_DIGEST_ALGORITHM } from '../../src/backup/checksum.js';
import { LEDGER_SCHEMA, RowRouter, buildRestoreIndexes, checkRestoredShards, compareWithManifest, createRestoreShards, importUnit, planImportUnits, readsBatchesInPlace, type RestoreShard } from '../../src/restore/import.js';
import { restoreColumnsDdl } from '../../src/restore/ddl.js';
import { createRouter } from '../../src/router/router.js';
import type { RestoreInput, RestoreProgress } from '../../workflows/messages.js';
import { restoreProgressQuery } from '../../workflows/messages.js';
import { pgDigest } from '../helpers/digest.js';
import { createTestCatalog, fleet, runCli, startTestWorker, startWorkerProcess, until, uniqueName, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

/**
 * The restore workflow against the real fleet: a plain PostgreSQL table exported to a backup, then
 * restored into layouts of other shard counts and methods, with the import's ledger under a killed
 * worker, a lost reply and two attempts side by side; bad backups and a rejected proposal change nothing.
 */

const ROWS = 30_000;
let catalog: TestCatalog;
let worker: TestWorker;
let source: pg.Pool;
let backupDir: string;
let manifest: Manifest;
const dirs: string[] = [];
const pools = new NodePools({ max: 2 });

function tempDir(name: string): string {
  const d = mkdtempSync(path.join(tmpdir(), 'sc-restore-'));
  dirs.push(d);
  return path.join(d, name);
}

/** The digest summed over every shard of a restored table, and its row count per shard. */
async function restoredDigest(table: string): Promise<{ rows: number; sum: bigint; perShard: number[] }> {
  const { rows } = await catalog.pool.query<{ schema: string; node: string }>(
    `select s.schema_name as schema, n.name as node from shardcast.distributed_tables t join shardcast.shards s on s.group_id = t.group_id
       join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id where t.name = $1 order by s.id`,
    [table],
  );
  let total = 0;
  let sum = 0n;
  const perShard: number[] = [];
  for (const r of rows) {
    const d = await pgDigest(pools.get(catalog.nodeUrl(r.node)), r.schema, table);
    total += d.rows;
    sum += d.sum;
    perShard.push(d.rows);
  }
  return { rows: total, sum, perShard };
}

function layoutInput(table: string, layout: RestoreInput['layout'], more: Partial<RestoreInput> = {}): RestoreInput {
  return {
    restoreId: newRestoreId(table, worker.options.workflowIdPrefix),
    backup: backupDir,
    sourceKind: 'shardcast',
    sourceTable: 'events',
    targetTable: table,
    layout,
    requireApproval: false,
    parallelism: 3,
    batchesPerUnit: 1,
    nodeRetry: { maximumAttempts: 3, initialIntervalMs: 200 },
    ...more,
  };
}

const names = () => catalog.nodes.map((n) => n.name);
const hashLayout = (key: string, shards: number): RestoreInput['layout'] => ({
  keyColumn: key,
  method: 'hash',
  shardCount: shards,
  nodes: Array.from({ length: shards }, (_, i) => names()[i % names().length]!),
  reasons: ['test'],
});

async function tableState(table: string): Promise<string | null> {
  const { rows } = await catalog.pool.query<{ state: string }>('select state from shardcast.distributed_tables where name = $1', [table]);
  return rows[0]?.state ?? null;
}

async function restoreRow(id: string): Promise<{ state: string; rows_imported: string; error: string | null } | undefined> {
  const { rows } = await catalog.pool.query<{ state: string; rows_imported: string; error: string | null }>('select state, rows_imported::text, error from shardcast.restores where id = $1', [id]);
  return rows[0];
}

/** Shard schemas of the test's database on every node (sc_s…): none may stay behind a failed restore. */
async function shardSchemas(): Promise<string[]> {
  const out: string[] = [];
  for (const n of catalog.nodes) {
    const { rows } = await pools.get(n.dsn).query<{ s: string }>(`select nspname as s from pg_namespace where nspname ~ '^sc_s[0-9]+$'`);
    out.push(...rows.map((r) => `${n.name}:${r.s}`));
  }
  return out.sort();
}

/** Each shard table's storage options and its TOAST table's (pg_class.reloptions), over every node: `-` when it has none. */
async function shardReloptions(table: string): Promise<string[]> {
  const out: string[] = [];
  for (const n of catalog.nodes) {
    const { rows } = await pools.get(n.dsn).query<{ o: string | null }>(
      `select concat_ws(' toast:', array_to_string(c.reloptions, ','), array_to_string(t.reloptions, ',')) as o
         from pg_class c join pg_namespace s on s.oid = c.relnamespace left join pg_class t on t.oid = c.reltoastrelid
        where c.relname = $1 and s.nspname ~ '^sc_s[0-9]+$' and c.relkind = 'r'`,
      [table],
    );
    out.push(...rows.map((r) => r.o || '-'));
  }
  return out;
}

/**
 * Two hash shards (ids `first`, `first + 1`) of `table` on `node`, created as a restore creates them,
 * and an import of one unit into them under `restoreId`: for the tests that drive the import directly.
 */
async function directShards(table: string, node: (typeof catalog.nodes)[number], first: number, restoreId: string, oneStream = false, unitBytes?: number) {
  const shards: RestoreShard[] = [
    { shardId: first, schema: `sc_s${first}`, nodeId: node.id, hashMin: '-9223372036854775808', hashMax: '-1' },
    { shardId: first + 1, schema: `sc_s${first + 1}`, nodeId: node.id, hashMin: '0', hashMax: '9223372036854775807' },
  ];
  const t = manifest.tables[0]!;
  await createRestoreShards(node, { table, schemas: shards.map((s) => s.schema), columns: restoreColumnsDdl(t).bare, grant: async () => undefined });
  const backup = await openBackup(backupDir);
  const importOne = (unit: ReturnType<typeof planImportUnits>[number]) =>
    importUnit({
      restoreId,
      table,
      columns: t.columns,
      keyColumn: 'id',
      router: new RowRouter(table, 'hash', 'bigint', shards),
      nodes: new Map([[node.id, node]]),
      unit,
      batches: () => backup.batches('events', { file: unit.file, from: unit.from, to: unit.to }, { inPlace: readsBatchesInPlace(oneStream, unitBytes) }),
      oneStream,
      ...(unitBytes !== undefined ? { unitBytes } : {}),
    });
  return { shards, t, importOne };
}

beforeAll(async () => {
  catalog = await createTestCatalog('restore');
  worker = await startTestWorker(catalog.catalogUrl);
  // The source: a plain table in a database of its own on the first node.
  const db = uniqueName('src');
  await pools.get(catalog.nodes[0]!.dsn).query(`create database ${db}`);
  const url = new URL(catalog.nodes[0]!.dsn);
  url.pathname = `/${db}`;
  source = new pg.Pool({ connectionString: url.toString(), max: 2 });
  await source.query(`create table events (
    id bigint primary key, tenant_id int not null, created_at timestamptz not null, amount numeric(12,2), kind text,
    note text, flag boolean, ref uuid, blob bytea)`);
  await source.query('create index events_created on events (created_at)');
  await source.query(
    `insert into events
     select g, g % 97, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute', (g % 10000) / 100.0,
            (array['click','view','buy'])[1 + g % 3],
            case when g % 11 = 0 then null when g % 7 = 0 then E'tab\\there, new\\nline, back\\\\slash, "quoted" é' else 'n' || g end,
            case when g % 5 = 0 then null else g % 2 = 0 end, md5(g::text)::uuid, case when g % 13 = 0 then decode(lpad(to_hex(g), 8, '0'), 'hex') end
       from generate_series(1, ${ROWS}) g`,
  );
  backupDir = tempDir('backup');
  // Small batches: several units per file, so the fan-out and the ledger have pieces to work on.
  manifest = await exportBackup([plainTable(source, 'events')], backupDir, { batchRows: 2500 });
}, 120_000);

afterAll(async () => {
  delete process.env.SHARDCAST_FAILPOINTS;
  await source?.end();
  await worker?.close();
  await pools.end();
  await catalog?.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('restoreTable', () => {
  it('restores into a hash layout of another shard count: identical rows, indexes after the load, published only at the end', async () => {
    const expected = await pgDigest(source, null, 'events');
    expect(manifest.tables[0]!.files[0]!.batches).toBeGreaterThan(3);
    const input = layoutInput('events_h', hashLayout('tenant_id', 5));
    const handle = await startRestore(worker.options, input);
    const result = await restoreResult(handle);
    expect(result.rows).toBe(ROWS);
    expect(result.shards).toBe(5);
    // Each phase's time, in order (no approval asked for).
    expect(result.phases!.map((p) => p.phase)).toEqual(['check', 'create-shards', 'import', 'index', 'verify', 'publish']);
    expect(result.phases!.every((p) => p.seconds >= 0)).toBe(true);
    expect(result.phases!.find((p) => p.phase === 'import')!.seconds).toBeGreaterThan(0);
    const got = await restoredDigest('events_h');
    expect(got.rows).toBe(expected.rows);
    expect(got.sum).toBe(expected.sum);
    expect(got.perShard.every((n) => n > 0)).toBe(true);
    expect(await tableState('events_h')).toBe('active');
    expect((await restoreRow(input.restoreId))?.state).toBe('done');
    // The primary key and the index were built on every shard; the ledger is gone.
    for (const n of catalog.nodes) {
      const { rows } = await pools.get(n.dsn).query<{ n: string }>(
        `select count(*)::text as n from pg_indexes where tablename = 'events_h' and (indexname = 'events_created' or indexdef like '%UNIQUE%(id)')`,
      );
      const shards = (await catalog.pool.query(`select 1 from shardcast.placements p join shardcast.shards s on s.id = p.shard_id join shardcast.distributed_tables t on t.group_id = s.group_id where t.name = 'events_h' and p.node_id = $1`, [n.id])).rowCount!;
      expect(Number(rows[0]!.n)).toBe(2 * shards);
      const ledger = await pools.get(n.dsn).query(`select 1 from ${LEDGER_SCHEMA}.ledger where restore_id = $1`, [input.restoreId]);
      expect(ledger.rowCount).toBe(0);
    }
    // Through the router, as an application reads it.
    const router = await createRouter({ catalogUrl: catalog.catalogUrl });
    try {
      const r = await router.forKey('events_h', 42).query<{ n: number }>('select count(*)::int as n from events_h where tenant_id = $1', [42]);
      expect(r.rows[0]!.n).toBe(Math.floor(ROWS / 97) + (ROWS % 97 >= 42 ? 1 : 0));
    } finally {
      await router.close();
    }
  });

  it('restores into a range layout on the primary key: identical rows, each shard holding its range', async () => {
    const expected = await pgDigest(source, null, 'events');
    const bounds = ['1', '7500', '15000', '22500', String(ROWS + 1000)];
    const input = layoutInput('events_r', { keyColumn: 'id', method: 'range', rangeBounds: bounds, nodes: [names()[0]!, names()[1]!, names()[2]!, names()[0]!], reasons: ['test'] });
    const result = await restoreResult(await startRestore(worker.options, input));
    expect(result.shards).toBe(4);
    const got = await restoredDigest('events_r');
    expect(got).toEqual({ rows: expected.rows, sum: expected.sum, perShard: [7499, 7500, 7500, 7501] });
  });

  it('restores into a range layout on a timestamptz column: identical rows, each shard holding its weeks, routed by time', async () => {
    const expected = await pgDigest(source, null, 'events');
    // created_at is 2026-01-01 plus id minutes: 10,080 minutes a week.
    const bounds = ['2026-01-01 00:00:00+00', '2026-01-08 00:00:00+00', '2026-01-15 01:00:00+01', '2026-02-01'];
    const input = layoutInput('events_t', { keyColumn: 'created_at', method: 'range', rangeBounds: bounds, nodes: [names()[0]!, names()[1]!, names()[2]!], reasons: ['test'] });
    const result = await restoreResult(await startRestore(worker.options, input));
    expect(result.shards).toBe(3);
    const got = await restoredDigest('events_t');
    expect(got).toEqual({ rows: expected.rows, sum: expected.sum, perShard: [10_079, 10_080, ROWS - 20_159] });
    const router = await createRouter({ catalogUrl: catalog.catalogUrl });
    try {
      const at = new Date(Date.UTC(2026, 0, 1) + 12_345 * 60_000);
      const r = await router.forKey('events_t', at).query<{ id: string }>('select id::text from events_t where created_at = $1', [at]);
      expect(r.rows).toEqual([{ id: '12345' }]);
    } finally {
      await router.close();
    }
  });

  it('a killed worker process mid-import: the import resumes on another worker and every row lands exactly once', async () => {
    const queue = uniqueName('tq-restore-kill');
    // Each batch is held a moment: the kill lands inside a unit, with rows sent and not committed.
    const first = await startWorkerProcess(catalog.catalogUrl, queue, { SHARDCAST_FAILPOINTS: 'restore.import.after-batch=sleep:400' });
    const input = layoutInput('events_k', hashLayout('id', 3), { parallelism: 2, batchesPerUnit: 3 });
    const handle = await startRestore({ ...worker.options, taskQueue: queue }, input);
    let progress: RestoreProgress | undefined;
    await until('some units imported', async () => {
      progress = await handle.query(restoreProgressQuery).catch(() => undefined);
      return (progress?.unitsDone ?? 0) >= 1;
    }, 120_000, 100);
    expect(progress!.unitsDone).toBeLessThan(progress!.units);
    // Loading: autovacuum is kept off the shards (it would scan them while they load).
    expect(await shardReloptions('events_k')).toEqual(Array(3).fill('autovacuum_enabled=false toast:autovacuum_enabled=false'));
    first.child.kill('SIGKILL');
    const second = await startWorkerProcess(catalog.catalogUrl, queue);
    try {
      const result = await restoreResult(handle);
      expect(result.rows).toBe(ROWS);
    } finally {
      await second.stop();
    }
    const expected = await pgDigest(source, null, 'events');
    const got = await restoredDigest('events_k');
    expect({ rows: got.rows, sum: got.sum }).toEqual(expected);
    // Verified and published: the shards are autovacuum's again.
    expect(await shardReloptions('events_k')).toEqual(Array(3).fill('-'));
  }, 240_000);

  it('a lost reply after the commit: the retried unit finds its ledger rows and adds nothing', async () => {
    process.env.SHARDCAST_FAILPOINTS = 'restore.import.after-commit=throw*2';
    resetFailpoints();
    try {
      const input = layoutInput('events_l', hashLayout('tenant_id', 3));
      const result = await restoreResult(await startRestore(worker.options, input));
      expect(result.rows).toBe(ROWS);
    } finally {
      delete process.env.SHARDCAST_FAILPOINTS;
    }
    const expected = await pgDigest(source, null, 'events');
    const got = await restoredDigest('events_l');
    expect({ rows: got.rows, sum: got.sum }).toEqual(expected);
  });

  it('two attempts of one unit side by side: one commits each shard, the other waits on its ledger row and skips', async () => {
    const table = 'events_twice';
    const node = catalog.nodes[1]!;
    const { shards, t, importOne } = await directShards(table, node, 900001, 'twice');
    const unit = planImportUnits(t, 'shardcast', 2)[0]!;
    const attempt = () => importOne(unit);
    const [a, b] = await Promise.all([attempt(), attempt()]);
    expect(a.skipped.length + b.skipped.length).toBe(2);
    expect(a.rows).toEqual(b.rows);
    const db = pools.get(node.dsn);
    const counts = await Promise.all(shards.map(async (s) => Number((await db.query<{ n: string }>(`select count(*)::text as n from ${s.schema}.${table}`)).rows[0]!.n)));
    expect(counts.reduce((x, y) => x + y, 0)).toBe(5000);
    expect(counts).toEqual(shards.map((s) => a.rows[s.shardId]));
    // A third attempt later: everything skipped, nothing added.
    const c = await attempt();
    expect(c.skipped.sort()).toEqual([900001, 900002]);
    await db.query(`drop schema sc_s900001 cascade; drop schema sc_s900002 cascade; delete from ${LEDGER_SCHEMA}.ledger where restore_id = 'twice'`);
  });

  // A unit of a few batches is encoded once and held until each shard's turn; a bigger one is read again for each shard
  // (its batches kept between passes when its size is unknown and they fit; read in place when it is known to be bigger).
  it.each([
    ['in a pass per shard', undefined, 900021],
    ['encoded once', 1, 900031],
    ['in a pass per shard, read in place', 64 * 1024 * 1024 + 1, 900051],
  ] as const)('one stream (%s): a lost reply (or a crash) between two shards\' commits, a crash before a commit, and two attempts side by side: every row once', async (_how, unitBytes, first) => {
    const table = `events_one_${first}`;
    const node = catalog.nodes[1]!;
    const restoreId = `one-${first}`;
    const { shards, t, importOne } = await directShards(table, node, first, restoreId, true, unitBytes);
    const db = pools.get(node.dsn);
    const counts = async () => Promise.all(shards.map(async (s) => Number((await db.query<{ n: string }>(`select count(*)::text as n from ${s.schema}.${table}`)).rows[0]!.n)));
    const ledger = async (unit: number) => (await db.query<{ shard_id: string }>(`select shard_id::text from ${LEDGER_SCHEMA}.ledger where restore_id = $2 and unit = $1 order by 1`, [unit, restoreId])).rows.map((r) => Number(r.shard_id));
    const units = planImportUnits(t, 'shardcast', 2);
    try {
      // Unit 0: the first shard commits, then the attempt fails (its reply lost, or the worker gone before the second shard).
      process.env.SHARDCAST_FAILPOINTS = 'restore.import.shard-committed=throw*1';
      resetFailpoints();
      await expect(importOne(units[0]!)).rejects.toThrow(/restore.import.shard-committed/);
      expect(await ledger(0)).toEqual([first]);
      const firstOnly = await counts();
      expect(firstOnly[0]).toBeGreaterThan(0);
      expect(firstOnly[1]).toBe(0);
      const retry = await importOne(units[0]!);
      expect(retry.skipped).toEqual([first]);
      expect(retry.rows[first]).toBe(firstOnly[0]);
      expect(await ledger(0)).toEqual([first, first + 1]);
      expect((await counts()).reduce((a, b) => a + b, 0)).toBe(5000);
      // Unit 1: a failure before the first shard's commit rolls its rows back; the retry lands both.
      process.env.SHARDCAST_FAILPOINTS = 'restore.import.before-commit=throw*1';
      resetFailpoints();
      await expect(importOne(units[1]!)).rejects.toThrow(/restore.import.before-commit/);
      expect(await ledger(1)).toEqual([]);
      expect((await counts()).reduce((a, b) => a + b, 0)).toBe(5000);
      delete process.env.SHARDCAST_FAILPOINTS;
      await importOne(units[1]!);
      expect((await counts()).reduce((a, b) => a + b, 0)).toBe(10_000);
      // Unit 2, twice at once: each shard committed by one attempt, skipped by the other.
      const [a, b] = await Promise.all([importOne(units[2]!), importOne(units[2]!)]);
      expect(a.skipped.length + b.skipped.length).toBe(2);
      expect(a.rows).toEqual(b.rows);
      expect((await counts()).reduce((x, y) => x + y, 0)).toBe(15_000);
      // The rest one by one; then the whole table against the backup's checksum: no row lost, none twice.
      for (const unit of units.slice(3)) await importOne(unit);
      const got = await checkRestoredShards(node, { table, keyColumn: 'id', keyType: 'bigint', shards });
      expect(compareWithManifest(table, { rows: t.checksum.rows, sum: t.checksum.sum }, got)).toEqual({ rows: ROWS, sum: t.checksum.sum });
    } finally {
      delete process.env.SHARDCAST_FAILPOINTS;
      await db.query(`drop schema sc_s${first} cascade; drop schema sc_s${first + 1} cascade`);
      await db.query(`delete from ${LEDGER_SCHEMA}.ledger where restore_id = $1`, [restoreId]);
    }
  });

  it('one stream through the workflow (parallelism 1), with lost replies between shards: identical rows', async () => {
    // Two lost replies; the second entry counts every other commit.
    process.env.SHARDCAST_FAILPOINTS = 'restore.import.shard-committed=throw*2,restore.import.shard-committed=sleep:0';
    resetFailpoints();
    try {
      const hits = failpointHits.get('restore.import.shard-committed') ?? 0;
      const input = layoutInput('events_1s', hashLayout('tenant_id', 4), { parallelism: 1, batchesPerUnit: 3 });
      const result = await restoreResult(await startRestore(worker.options, input));
      expect(result.rows).toBe(ROWS);
      // Each shard of each unit committed once, one at a time (the two lost replies among them: their retries skipped those shards).
      expect((failpointHits.get('restore.import.shard-committed') ?? 0) - hits).toBe(4 * planImportUnits(manifest.tables[0]!, 'shardcast', 3).length);
    } finally {
      delete process.env.SHARDCAST_FAILPOINTS;
    }
    const expected = await pgDigest(source, null, 'events');
    const got = await restoredDigest('events_1s');
    expect({ rows: got.rows, sum: got.sum }).toEqual(expected);
    expect(got.perShard.every((n) => n > 0)).toBe(true);
  });

  it('the index build on two sessions at once: every shard gets its key; a duplicate in one shard fails it once both sessions ended', async () => {
    const table = 'events_ix2';
    const node = catalog.nodes[1]!;
    const { shards, t, importOne } = await directShards(table, node, 900041, 'ix2');
    const db = pools.get(node.dsn);
    const keys = async () =>
      (await db.query<{ s: string }>(`select n.nspname as s from pg_constraint c join pg_class r on r.oid = c.conrelid join pg_namespace n on n.oid = r.relnamespace where r.relname = $1 and c.contype = 'p' order by 1`, [table])).rows.map((r) => r.s);
    try {
      for (const unit of planImportUnits(t, 'shardcast', 4)) await importOne(unit);
      // A duplicate of a row in the first shard: its key cannot be built; the second shard's session goes on and ends first.
      await db.query(`insert into sc_s900041.${table} select * from sc_s900041.${table} where id = (select min(id) from sc_s900041.${table})`);
      const spec = { table, schemas: shards.map((s) => s.schema), primaryKey: ['id'], indexes: [] };
      await expect(buildRestoreIndexes(node, spec, {}, undefined, 2)).rejects.toThrow(/could not create unique index/);
      expect(await keys()).toEqual(['sc_s900042']);
      await db.query(`delete from sc_s900041.${table} a using sc_s900041.${table} b where a.id = b.id and a.ctid > b.ctid`);
      const done: string[] = [];
      await buildRestoreIndexes(node, spec, {}, (s) => done.push(s), 2);
      expect(done.sort()).toEqual(['sc_s900041', 'sc_s900042']);
      expect(await keys()).toEqual(['sc_s900041', 'sc_s900042']);
    } finally {
      await db.query(`drop schema if exists sc_s900041 cascade; drop schema if exists sc_s900042 cascade; delete from ${LEDGER_SCHEMA}.ledger where restore_id = 'ix2'`);
    }
  });

  it('verify finds a row that differs from the backup and a row outside its shard, naming them', async () => {
    const table = 'events_verify';
    const node = catalog.nodes[2]!;
    const { shards, t, importOne } = await directShards(table, node, 900011, 'verify');
    const db = pools.get(node.dsn);
    try {
      for (const unit of planImportUnits(t, 'shardcast', 4)) await importOne(unit);
      const check = () => checkRestoredShards(node, { table, keyColumn: 'id', keyType: 'bigint', shards });
      const expected = { rows: t.checksum.rows, sum: t.checksum.sum };
      expect(compareWithManifest(table, expected, await check())).toEqual(expected);
      // The same checks on two sessions at once (a parallel restore's verify).
      expect(await checkRestoredShards(node, { table, keyColumn: 'id', keyType: 'bigint', shards }, {}, 2)).toEqual(await check());
      // The same with the backup's record digest (what a restore of this backup verifies with).
      expect(t.checksum.record?.algorithm).toBe(RECORD_DIGEST_ALGORITHM);
      const withRecord = { ...expected, record: t.checksum.record!.sum };
      const recordCheck = () => checkRestoredShards(node, { table, keyColumn: 'id', keyType: 'bigint', shards, record: t.columns });
      expect(compareWithManifest(table, withRecord, await recordCheck())).toEqual(withRecord);
      expect(() => compareWithManifest(table, expected, [{ shardId: 1, rows: 30_000, sum: '0', misplaced: 0, record: true }])).toThrow(/checked with the record digest, and the backup has none/);
      // A value only its text tells apart: an amount of another scale, equal as a numeric (1.50 = 1.5).
      await db.query(`alter table sc_s900012.${table} alter column amount type numeric`);
      await db.query(`update sc_s900012.${table} set amount = amount::numeric(14, 4) where id = (select min(id) from sc_s900012.${table} where amount is not null)`);
      const rescaled = await recordCheck();
      expect(() => compareWithManifest(table, withRecord, rescaled)).toThrow(/record checksum/);
      await db.query(`alter table sc_s900012.${table} alter column amount type numeric(12, 2)`);
      expect(compareWithManifest(table, withRecord, await recordCheck())).toEqual(withRecord);
      await db.query(`update sc_s900011.${table} set note = 'changed' where id = (select min(id) from sc_s900011.${table})`);
      expect(() => compareWithManifest(table, expected, [])).toThrow(/0 rows restored, the backup holds 30000/);
      const changed = await check();
      expect(() => compareWithManifest(table, expected, changed)).toThrow(/the restored rows' checksum is -?\d+, the backup's is -?\d+ \(same count, different content\)/);
      expect(() => compareWithManifest(table, withRecord, changed)).toThrow(/the restored rows' checksum is/);
      const changedByRecord = await recordCheck();
      expect(() => compareWithManifest(table, withRecord, changedByRecord)).toThrow(/the restored rows' record checksum is -?\d+, the backup's is -?\d+ \(same count, different content\)/);
      // A row of shard 900012's range in shard 900011.
      await db.query(`with moved as (delete from sc_s900012.${table} where id = (select min(id) from sc_s900012.${table}) returning *) insert into sc_s900011.${table} select * from moved`);
      expect(() => compareWithManifest(table, expected, changed)).toThrow(/checksum/);
      const misplaced = await check();
      expect(() => compareWithManifest(table, expected, misplaced)).toThrow(/shard 900011 holds 1 row\(s\) outside its range/);
    } finally {
      await db.query(`drop schema sc_s900011 cascade; drop schema sc_s900012 cascade; delete from ${LEDGER_SCHEMA}.ledger where restore_id = 'verify'`);
    }
  });

  it('a corrupted Arrow file: a clear error naming the file, and nothing created', async () => {
    const bad = tempDir('bad');
    cpSync(backupDir, bad, { recursive: true });
    const file = path.join(bad, manifest.tables[0]!.files[0]!.path);
    const bytes = readFileSync(file);
    bytes[Math.floor(bytes.length / 2)]! ^= 0xff;
    writeFileSync(file, bytes);
    const before = await shardSchemas();
    const input = { ...layoutInput('events_bad', hashLayout('id', 3)), backup: bad };
    await expect(restoreResult(await startRestore(worker.options, input))).rejects.toThrow(/events\.arrow: checksum mismatch/);
    expect(await tableState('events_bad')).toBeNull();
    expect(await shardSchemas()).toEqual(before);
  });

  it('an existing table of that name is refused before anything is created', async () => {
    const input = layoutInput('events_h', hashLayout('id', 3));
    await expect(restoreResult(await startRestore(worker.options, input))).rejects.toThrow(/table "events_h" already exists/);
    expect((await restoreResult(await startRestore(worker.options, layoutInput('events_h2', hashLayout('nope', 3)))).catch((e: Error) => e.message))).toMatch(/shard key column "nope" is not among its columns/);
    expect(await tableState('events_h2')).toBeNull();
  });

  it('an unreachable node: the restore fails, and what it created on the other nodes is dropped', async () => {
    await catalog.pool.query(`insert into shardcast.nodes (name, dsn, state) values ('ghost', 'postgres://postgres@127.0.0.1:1/none', 'active')`);
    try {
      const before = await shardSchemas();
      const input = layoutInput('events_u', { keyColumn: 'id', method: 'hash', shardCount: 2, nodes: [names()[0]!, 'ghost'], reasons: ['test'] });
      const message = await restoreResult(await startRestore(worker.options, input)).catch((e: Error) => e.message);
      expect(message).toMatch(/node "ghost"/);
      expect(message).toMatch(/undone/);
      expect(await tableState('events_u')).toBeNull();
      expect(await shardSchemas()).toEqual(before);
      expect((await restoreRow(input.restoreId))?.state).toBe('failed');
    } finally {
      await catalog.pool.query(`delete from shardcast.nodes where name = 'ghost'`);
    }
  });

  it('waits for approval by policy; a rejected proposal creates nothing', async () => {
    const input = layoutInput('events_a', hashLayout('id', 3), { requireApproval: true });
    const handle = await startRestore(worker.options, input);
    await until('the approval gate', async () => (await handle.query(restoreProgressQuery)).phase === 'approval');
    expect((await restoreRow(input.restoreId))?.state).toBe('proposed');
    await handle.signal('reject');
    await expect(restoreResult(handle)).rejects.toThrow(/rejected; nothing was created/);
    expect(await tableState('events_a')).toBeNull();
    expect((await restoreRow(input.restoreId))?.state).toBe('rejected');
  });

  it('shardcast restore: prints the proposal, runs the workflow with --yes, and the table is there; a bad workload file changes nothing', async () => {
    const env = { SHARDCAST_CATALOG_URL: catalog.catalogUrl, SHARDCAST_TEMPORAL_ADDRESS: fleet().temporalAddress, SHARDCAST_TEMPORAL_TASK_QUEUE: worker.taskQueue };
    const workload = path.join(path.dirname(backupDir), 'workload.yaml');
    writeFileSync(workload, 'predicted_peak_qps: 2500\ndata_retention_policy: 400d\nrebalance_threshold: 30%\n');
    const dry = await runCli(['restore', backupDir, '--workload', workload, '--as', 'events_cli', '--dry-run'], env);
    expect(dry.stderr).toBe('');
    expect(dry.stdout).toMatch(/^events: hash on \w+, 3 shard\(s\)/m);
    expect(await tableState('events_cli')).toBeNull();
    const chosen = await runCli(['restore', backupDir, '--key', 'tenant_id', '--method', 'hash', '--shards', '2', '--dry-run'], env);
    expect(chosen.stdout).toMatch(/^events: hash on tenant_id, 2 shard\(s\)\n {2}key tenant_id: chosen by the operator \(--key\)/m);
    // An earlier backup of the same table (its manifest made 60 days before, with half the rows): the growth is measured from it.
    const earlier = tempDir('earlier');
    cpSync(backupDir, earlier, { recursive: true });
    const m = JSON.parse(readFileSync(path.join(earlier, 'manifest.json'), 'utf8')) as Manifest;
    const half = Math.floor(ROWS / 2);
    m.createdAt = new Date(Date.parse(m.createdAt) - 60 * 86_400_000).toISOString();
    const t = m.tables[0]!;
    t.rows = half;
    t.checksum.rows = half;
    t.files.forEach((f, i) => (f.rows = i === 0 ? half : 0));
    writeFileSync(path.join(earlier, 'manifest.json'), JSON.stringify(m));
    const grown = await runCli(['restore', backupDir, '--history', earlier, '--nodes', 'node-1,node-2', '--dry-run', '--json'], env);
    expect(grown.stderr).toBe('');
    const [proposal] = JSON.parse(grown.stdout) as Array<{ growth: { source: string; rowsPerMonth: number }; reasons: string[] }>;
    expect(proposal!.growth.source).toBe('history');
    // (ROWS - half) rows in 60 days = two 30-day months.
    expect(proposal!.growth.rowsPerMonth).toBeCloseTo((ROWS - half) / 2, -1);
    expect(proposal!.reasons.join('\n')).toMatch(/growth: \d+ rows\/month from 2 manifests/);
    const noSuch = await runCli(['restore', backupDir, '--history', path.join(earlier, 'missing'), '--nodes', 'node-1', '--dry-run'], env);
    expect(noSuch.code).toBe(1);
    expect(noSuch.stderr).toMatch(/missing/);
    const weird = await runCli(['restore', backupDir, '--method', 'list', '--dry-run'], env);
    expect(weird.stderr.trim()).toBe('shardcast: error: --method: expected hash or range, got "list"');
    const run = await runCli(['restore', backupDir, '--workload', workload, '--as', 'events_cli', '--yes'], env);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`events_cli: ${ROWS} rows restored into 3 shard\\(s\\) on .*verified against the backup's checksum; published`));
    expect(run.stdout).toMatch(/^ {2}check \d+\.\d s, (approval \d+\.\d s, )?create-shards \d+\.\d s, import \d+\.\d s, index \d+\.\d s, verify \d+\.\d s, publish \d+\.\d s$/m);
    expect(await tableState('events_cli')).toBe('active');
    const { rows } = await catalog.pool.query<{ retention_days: number; retention_column: string; rebalance_threshold: number; state: string }>(
      `select retention_days, retention_column, rebalance_threshold, state from shardcast.restores where table_name = 'events_cli'`,
    );
    expect(rows).toEqual([{ retention_days: 400, retention_column: 'created_at', rebalance_threshold: 0.3, state: 'done' }]);
    const got = await restoredDigest('events_cli');
    expect(got.rows).toBe(ROWS);

    writeFileSync(workload, 'predicted_peak_qps: -4\n');
    const bad = await runCli(['restore', backupDir, '--workload', workload, '--as', 'events_cli2', '--yes'], env);
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim()).toBe(`shardcast: error: ${workload}: predicted_peak_qps: expected a positive number of queries per second, got -4`);
    expect(await tableState('events_cli2')).toBeNull();
  }, 120_000);

  it('refuses a backup URL with credentials before starting', async () => {
    const input = { ...layoutInput('events_c', hashLayout('id', 3)), backup: 'https://user:secret@example.com/b' };
    await expect(startRestore(worker.options, input)).rejects.toThrow(/must not carry credentials/);
  });
});
