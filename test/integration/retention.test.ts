import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable, ensureSchedules, moveResult, retentionScheduleId, runRetentionNow } from '../../client/index.js';
import { rowHash } from '../../src/backup/checksum.js';
import { openBackup } from '../../src/backup/reader.js';
import { canonicalSettingsSql, canonicalText } from '../../src/backup/values.js';
import { NodePools } from '../../src/catalog/node-pools.js';
import { parseConfig } from '../../src/config.js';
import { resetFailpoints } from '../../src/failpoints.js';
import { retentionRowsArchived } from '../../src/metrics/metrics.js';
import { archiveShard, beginRetentionRun, finishRetentionRun, shardsOfGroup } from '../../src/restore/retention.js';
import { createRouter, type Router } from '../../src/router/router.js';
import { createTestCatalog, fleet, startTestWorker, startWorkerProcess, uniqueName, until, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

let catalog: TestCatalog;
let worker: TestWorker;
let pools: NodePools;
let router: Router;
let root: string;

const CLI = path.resolve(import.meta.dirname, '../../bin/shardcast.js');

beforeAll(async () => {
  catalog = await createTestCatalog('retention');
  worker = await startTestWorker(catalog.catalogUrl);
  pools = new NodePools({ max: 4 });
  router = await createRouter({ catalogUrl: catalog.catalogUrl });
  root = mkdtempSync(path.join(tmpdir(), 'sc-retention-'));
}, 120_000);

afterAll(async () => {
  delete process.env.SHARDCAST_FAILPOINTS;
  await router?.close();
  await pools?.end();
  await worker?.close();
  await catalog?.close();
  if (root) rmSync(root, { recursive: true, force: true });
});

/** The configuration the runs take their input from: the test's archive root, splits of any size. */
const config = (over: Record<string, unknown> = {}) => parseConfig({ retention: { archiveDir: root, minShardBytes: 0, ...over }, movement: { graceSeconds: 0 } });

/** A finished restore of `table` with these policies (the restore workflow writes such rows). */
async function restored(table: string, policy: { days?: number; column?: string; threshold?: number }): Promise<void> {
  await catalog.pool.query(
    `insert into shardcast.restores (id, table_name, backup, proposal, state, rows_expected, retention_days, retention_column, rebalance_threshold, finished_at)
     values ($1, $2, '/backups/x', '{}', 'done', 0, $3, $4, $5, now())`,
    [`r_${randomBytes(4).toString('hex')}`, table, policy.days ?? null, policy.column ?? null, policy.threshold ?? null],
  );
}

async function groupOf(table: string): Promise<number> {
  const { rows } = await catalog.pool.query<{ g: number }>('select group_id::int as g from shardcast.distributed_tables where name = $1', [table]);
  return rows[0]!.g;
}

/** Every row of the table on its shards: id → (hash of its canonical text, its time). */
async function snapshot(table: string): Promise<Map<string, { hash: string; at: number }>> {
  const out = new Map<string, { hash: string; at: number }>();
  for (const s of await shardsOfGroup(catalog.pool, await groupOf(table))) {
    const client = await pools.get(s.dsn).connect();
    try {
      await client.query('begin');
      for (const q of canonicalSettingsSql()) await client.query(q);
      const { rows } = await client.query<{ id: string; h: string; at: Date }>(`select id::text, hashtextextended(row(sc_row.*)::text, 0)::text as h, at from ${s.schema}.${table} sc_row`);
      await client.query('commit');
      for (const r of rows) out.set(r.id, { hash: r.h, at: r.at.getTime() });
    } finally {
      client.release();
    }
  }
  return out;
}

/** The rows of a backup directory's table: id → hash of its canonical text. */
async function archived(dir: string, table: string): Promise<Map<string, string>> {
  const backup = await openBackup(dir);
  await backup.validate({ digest: true });
  const t = backup.table(table);
  const kinds = t.columns.map((c) => c.arrow);
  const idAt = t.columns.findIndex((c) => c.name === 'id');
  const out = new Map<string, string>();
  for await (const batch of backup.batches(table)) {
    const cols = kinds.map((_, c) => batch.data.children[c]!);
    for (let i = 0; i < batch.numRows; i++) {
      const fields = kinds.map((k, c) => canonicalText(k, cols[c]!, i));
      const id = fields[idAt]!;
      expect(out.has(id), `row ${id} archived twice`).toBe(false);
      out.set(id, rowHash(fields).toString());
    }
  }
  return out;
}

async function metric(table: string): Promise<number> {
  const m = await retentionRowsArchived.get();
  return m.values.find((v) => v.labels.table === table)?.value ?? 0;
}

/** Inserts rows of `table` (columns id, at, note) straight into the shards the router places their ids on. */
async function fill(table: string, rows: Array<{ id: number; at: string; note: string | null }>): Promise<void> {
  await router.refresh();
  const byShard = new Map<number, typeof rows>();
  for (const r of rows) {
    const shard = router.forKey(table, r.id).route().shardId;
    byShard.set(shard, [...(byShard.get(shard) ?? []), r]);
  }
  for (const s of await shardsOfGroup(catalog.pool, await groupOf(table))) {
    const mine = byShard.get(s.shardId) ?? [];
    if (mine.length === 0) continue;
    await pools.get(s.dsn).query(`insert into ${s.schema}.${table} (id, at, note) select * from unnest($1::bigint[], $2::timestamptz[], $3::text[])`, [
      mine.map((r) => r.id),
      mine.map((r) => r.at),
      mine.map((r) => r.note),
    ]);
  }
}

const NOTES = ['plain', 'tab\there', 'new\nline', 'back\\slash', 'ünïcødé ✓', '', null, 'quote " , ( )'];
const ago = (ms: number) => new Date(Date.now() - ms).toISOString();
const DAY = 86_400_000;

describe('retention of restored tables', () => {
  it('archives and drops exactly the expired range of every shard: the archive is a valid backup holding those rows, identical; rows at or after the cutoff stay', { timeout: 180_000 }, async () => {
    await createDistributedTable(worker.options, { name: 'events', columns: 'id bigint primary key, at timestamptz not null, note text', shardKey: 'id', shardCount: 4 });
    // 60 days of rows, plus a pair a minute either side of the 30-day cutoff on every shard.
    const rows = Array.from({ length: 3000 }, (_, i) => ({ id: i + 1, at: ago((i % 60) * DAY + (i % 1440) * 60_000), note: NOTES[i % NOTES.length]! }));
    for (let i = 0; i < 40; i++) rows.push({ id: 10_000 + i, at: ago(30 * DAY + (i % 2 === 0 ? 60_000 : -120_000)), note: 'edge' });
    await fill('events', rows);
    await restored('events', { days: 30, column: 'at' });
    const before = await snapshot('events');
    const metricBefore = await metric('events');
    // The dry run (CLI): what would be archived per shard, nothing changed.
    const dry = await cli(['retention', '--table', 'events', '--dry-run']);
    expect(dry.code).toBe(0);
    const would = /^ {2}would archive (\d+) row\(s\)$/m.exec(dry.stdout);
    expect(would, dry.stdout + dry.stderr).not.toBeNull();
    expect(dry.stdout.match(/^ {2}shard \d+ on node-\d: \d+ row\(s\) would be archived and deleted$/gm)).toHaveLength(4);
    expect((await snapshot('events')).size).toBe(before.size);

    const result = await runRetentionNow(worker.options, config(), { table: 'events' });
    const t = result.tables.find((x) => x.table === 'events')!;
    expect(t.problem).toBeUndefined();
    expect(t.failures).toEqual([]);
    const cutoff = Date.parse(t.cutoff!);
    const expired = [...before].filter(([, r]) => r.at < cutoff);
    const kept = [...before].filter(([, r]) => r.at >= cutoff);
    expect(expired.length).toBeGreaterThan(1000);
    expect(kept.length).toBeGreaterThan(1000);
    expect(t.rows).toBe(expired.length);
    expect(Math.abs(Number(would![1]) - expired.length)).toBeLessThanOrEqual(20); // the edge rows a minute either side of a later cutoff
    expect(t.shards.map((s) => s.state)).toEqual(['archived', 'archived', 'archived', 'archived']);

    // The archive: a backup directory openBackup/validate accept, holding exactly the expired rows.
    expect(t.dir).toBe(path.join(root, 'events', t.runId!));
    const inArchive = await archived(t.dir!, 'events');
    expect(new Map(inArchive)).toEqual(new Map(expired.map(([id, r]) => [id, r.hash])));
    // The shards: exactly the rest, untouched.
    const after = await snapshot('events');
    expect(new Map([...after].map(([id, r]) => [id, r.hash]))).toEqual(new Map(kept.map(([id, r]) => [id, r.hash])));
    expect((await metric('events')) - metricBefore).toBe(expired.length);
    const recorded = await catalog.pool.query<{ n: number; rows: string }>(`select count(*)::int as n, sum(rows)::text as rows from shardcast.retention_archives where run_id = $1`, [t.runId]);
    expect(recorded.rows[0]).toEqual({ n: 4, rows: String(expired.length) });
    expect(readdirSync(t.dir!).sort()).toEqual(['manifest.json', ...t.shards.map((s) => ('file' in s ? s.file : ''))].sort());

    // A second run finds nothing expired: no directory.
    const again = await runRetentionNow(worker.options, config(), { table: 'events' });
    expect(again.tables[0]).toMatchObject({ rows: 0, dir: null });
    expect(again.tables[0]!.shards.map((s) => s.state)).toEqual(['empty', 'empty', 'empty', 'empty']);
  });

  it('a reply lost after the shard committed: the retry archives nothing twice and loses nothing', { timeout: 180_000 }, async () => {
    await createDistributedTable(worker.options, { name: 'visits', columns: 'id bigint primary key, at timestamptz not null, note text', shardKey: 'id', shardCount: 3 });
    await fill('visits', Array.from({ length: 900 }, (_, i) => ({ id: i + 1, at: ago((i % 20) * DAY), note: `v${i}` })));
    await restored('visits', { days: 10, column: 'at' });
    const before = await snapshot('visits');
    // The first shard's activity commits on its node, then fails before it replies (and before the catalog's record).
    process.env.SHARDCAST_FAILPOINTS = 'retention.committed=throw*1';
    resetFailpoints();
    let result;
    try {
      result = await runRetentionNow(worker.options, config(), { table: 'visits' });
    } finally {
      delete process.env.SHARDCAST_FAILPOINTS;
    }
    const t = result.tables[0]!;
    expect(t.failures).toEqual([]);
    const replayed = t.shards.filter((s) => 'replayed' in s && s.replayed);
    expect(replayed).toHaveLength(1);
    const cutoff = Date.parse(t.cutoff!);
    const expired = [...before].filter(([, r]) => r.at < cutoff);
    expect(t.rows).toBe(expired.length);
    expect(await archived(t.dir!, 'visits')).toEqual(new Map(expired.map(([id, r]) => [id, r.hash])));
    // One file per shard, the one the committed transaction named: nothing written twice.
    expect(readdirSync(t.dir!).filter((f) => f.endsWith('.arrow'))).toHaveLength(3);
    expect((await snapshot('visits')).size).toBe(before.size - expired.length);
  });

  it('a worker process killed after a shard committed: another worker retries it, nothing archived twice or lost', { timeout: 300_000 }, async () => {
    await createDistributedTable(worker.options, { name: 'pages', columns: 'id bigint primary key, at timestamptz not null, note text', shardKey: 'id', shardCount: 2 });
    await fill('pages', Array.from({ length: 600 }, (_, i) => ({ id: i + 1, at: ago((i % 10) * DAY), note: `p${i}` })));
    await restored('pages', { days: 5, column: 'at' });
    const before = await snapshot('pages');
    const queue = uniqueName('tq');
    // The process holds every shard's activity just after its node committed, and is killed there.
    const proc = await startWorkerProcess(catalog.catalogUrl, queue, { SHARDCAST_FAILPOINTS: 'retention.committed=sleep:600000' });
    let second: TestWorker | undefined;
    try {
      const options = { ...worker.options, taskQueue: queue, workflowIdPrefix: `${queue}-` };
      const running = runRetentionNow(options, config(), { table: 'pages' });
      const ledgered = async () => {
        let n = 0;
        for (const node of catalog.nodes) {
          const r = await pools.get(node.dsn).query<{ n: number }>(`select count(*)::int as n from sc_retention.archives where table_name = 'pages' and file is not null`).catch(() => ({ rows: [{ n: 0 }] }));
          n += r.rows[0]!.n;
        }
        return n;
      };
      await until('a shard committed on its node', async () => (await ledgered()) >= 1, 120_000, 200);
      proc.child.kill('SIGKILL');
      second = await startTestWorker(catalog.catalogUrl, undefined, queue);
      const result = await running;
      const t = result.tables[0]!;
      expect(t.failures).toEqual([]);
      expect(t.shards.filter((s) => 'replayed' in s && s.replayed).length).toBeGreaterThanOrEqual(1);
      const cutoff = Date.parse(t.cutoff!);
      const expired = [...before].filter(([, r]) => r.at < cutoff);
      expect(t.rows).toBe(expired.length);
      expect(await archived(t.dir!, 'pages')).toEqual(new Map(expired.map(([id, r]) => [id, r.hash])));
      expect(readdirSync(t.dir!).filter((f) => f.endsWith('.arrow'))).toHaveLength(2);
      expect((await snapshot('pages')).size).toBe(before.size - expired.length);
    } finally {
      await proc.stop();
      await second?.close();
    }
  });

  it('a retry beside an attempt still going waits for it and takes its result; an archive that cannot be written deletes nothing', { timeout: 120_000 }, async () => {
    await createDistributedTable(worker.options, { name: 'clicks', columns: 'id bigint primary key, at timestamptz not null, note text', shardKey: 'id', shardCount: 2 });
    await fill('clicks', Array.from({ length: 400 }, (_, i) => ({ id: i + 1, at: ago((i % 4) * DAY), note: null })));
    const groupId = await groupOf('clicks');
    const [first, second] = await shardsOfGroup(catalog.pool, groupId);
    const cutoff = ago(2 * DAY - 3_600_000);
    const runId = `test-${randomBytes(3).toString('hex')}`;
    const dir = path.join(root, 'clicks', runId);
    await beginRetentionRun(catalog.pool, { runId, table: 'clicks', dir, cutoff });
    const input = (shardId: number) => ({ runId, table: 'clicks', groupId, shardId, column: 'at', cutoff, dir });
    const count = async (s: typeof first) => Number((await pools.get(s!.dsn).query<{ n: string }>(`select count(*)::text as n from ${s!.schema}.clicks`)).rows[0]!.n);

    // The archive cannot be written (its directory is a file): rolled back, nothing deleted, no ledger row.
    const before = await count(first);
    const blocked = path.join(root, `blocked-${runId}`);
    writeFileSync(blocked, 'not a directory');
    await expect(archiveShard(catalog.pool, pools, { ...input(first!.shardId), dir: path.join(blocked, 'x') })).rejects.toThrow(/clicks, shard \d+ on node-\d: .*(ENOTDIR|EEXIST|not a directory)/i);
    expect(await count(first)).toBe(before);
    // Failing just before COMMIT, with the file written: rolled back and the file removed.
    process.env.SHARDCAST_FAILPOINTS = 'retention.beforeCommit=throw*1';
    resetFailpoints();
    try {
      await expect(archiveShard(catalog.pool, pools, input(first!.shardId))).rejects.toThrow(/failpoint retention.beforeCommit/);
    } finally {
      delete process.env.SHARDCAST_FAILPOINTS;
    }
    expect(await count(first)).toBe(before);
    expect(readdirSync(dir)).toEqual([]);

    // Two attempts of one shard at once: one archives, the other waits on the ledger row and reports the same file.
    const [a, b] = await Promise.all([archiveShard(catalog.pool, pools, input(first!.shardId)), archiveShard(catalog.pool, pools, input(first!.shardId))]);
    expect([a.state, b.state]).toEqual(['archived', 'archived']);
    expect(a.file).toBe(b.file);
    expect([a.replayed ?? false, b.replayed ?? false].sort()).toEqual([false, true]);
    expect(await count(first)).toBe(before - a.rows);
    await archiveShard(catalog.pool, pools, input(second!.shardId));
    const finished = await finishRetentionRun(catalog.pool, pools, { runId, table: 'clicks', groupId, dir });
    expect(finished.files).toBe(2);
    expect((await archived(dir, 'clicks')).size).toBe(finished.rows);
    // After the run ended, an attempt of it starts nothing (a stale one finds the run over).
    await catalog.pool.query('delete from shardcast.retention_archives where run_id = $1 and shard_id = $2', [runId, second!.shardId]);
    await pools.get(second!.dsn).query('delete from sc_retention.archives where run_id = $1 and shard_id = $2', [runId, second!.shardId]);
    expect(await archiveShard(catalog.pool, pools, input(second!.shardId))).toMatchObject({ state: 'skipped', reason: `run ${runId} has ended` });
  });

  it('an archive that cannot be written in the middle of its COPY fails at once: the delete rolled back, no session left holding it', { timeout: 120_000 }, async () => {
    await createDistributedTable(worker.options, { name: 'taps', columns: 'id bigint primary key, at timestamptz not null, note text', shardKey: 'id', shardCount: 1 });
    const groupId = await groupOf('taps');
    const [only] = await shardsOfGroup(catalog.pool, groupId);
    const db = pools.get(only!.dsn);
    // 20,000 expired rows of 2 kB: the first record batch (16 MB) is cut long before the COPY has sent them all.
    await db.query(`insert into ${only!.schema}.taps select g, now() - interval '3 days', repeat(md5(g::text), 64) from generate_series(1, 20000) g`);
    const runId = `test-${randomBytes(3).toString('hex')}`;
    const dir = path.join(root, 'taps', runId);
    const cutoff = ago(DAY);
    await beginRetentionRun(catalog.pool, { runId, table: 'taps', dir, cutoff });
    const input = { runId, table: 'taps', groupId, shardId: only!.shardId, column: 'at', cutoff, dir };
    process.env.SHARDCAST_FAILPOINTS = 'retention.batch=throw*1';
    resetFailpoints();
    try {
      const outcome = await Promise.race([
        archiveShard(catalog.pool, pools, input).then(
          () => 'archived',
          (err: Error) => err.message,
        ),
        new Promise<string>((r) => setTimeout(() => r('hung'), 20_000)),
      ]);
      expect(outcome).toMatch(/^taps, shard \d+ on node-\d: failpoint retention.batch: injected failure$/);
    } finally {
      delete process.env.SHARDCAST_FAILPOINTS;
    }
    // Its session is gone (closing it rolled the delete back): nothing deleted, no ledger row, no file.
    await until('no session left deleting', async () => {
      const { rows } = await db.query<{ n: number }>("select count(*)::int as n from pg_stat_activity where pid <> pg_backend_pid() and query like '%delete from%taps%' and state <> 'idle'");
      return rows[0]!.n === 0;
    });
    expect(Number((await db.query<{ n: string }>(`select count(*)::text as n from ${only!.schema}.taps`)).rows[0]!.n)).toBe(20_000);
    expect(readdirSync(dir)).toEqual([]);
    // And the retry archives them all.
    const again = await archiveShard(catalog.pool, pools, input);
    expect(again).toMatchObject({ state: 'archived', rows: 20_000 });
    expect(Number((await db.query<{ n: string }>(`select count(*)::text as n from ${only!.schema}.taps`)).rows[0]!.n)).toBe(0);
  });

  it('a date column, and a shard under a running movement is skipped until the next run', { timeout: 120_000 }, async () => {
    await createDistributedTable(worker.options, { name: 'daily', columns: 'id bigint primary key, at date not null, note text', shardKey: 'id', shardCount: 2 });
    const days = (n: number) => new Date(Date.now() - n * DAY).toISOString().slice(0, 10);
    await router.refresh();
    const shards = await shardsOfGroup(catalog.pool, await groupOf('daily'));
    for (const s of shards) {
      await pools.get(s.dsn).query(`insert into ${s.schema}.daily select g, $2::date - (g % 6), 'd' from generate_series($1::int, $1::int + 99) g`, [s.shardId * 1000, days(0)]);
    }
    await restored('daily', { days: 3, column: 'at' });
    const [moving, idle] = shards;
    // A movement of the first shard holds its lease (as a running move does).
    await catalog.pool.query(
      `insert into shardcast.movements (id, operation, shard_id, source_node_id, target_node_ids) values ('m_test_daily', 'move', $1, $2, array[$2]::bigint[])`,
      [moving!.shardId, moving!.nodeId],
    );
    const count = async (s: typeof moving, where = 'true') => Number((await pools.get(s!.dsn).query<{ n: string }>(`select count(*)::text as n from ${s!.schema}.daily where ${where}`)).rows[0]!.n);
    try {
      const result = await runRetentionNow(worker.options, config(), { table: 'daily' });
      const t = result.tables[0]!;
      expect(t.shards.find((s) => s.shardId === moving!.shardId)).toMatchObject({ state: 'skipped', reason: expect.stringMatching(/^a move of shard \d+ is running \(movement m_test_daily\): the next run archives it$/) });
      expect(t.shards.find((s) => s.shardId === idle!.shardId)).toMatchObject({ state: 'archived' });
      expect(await count(moving)).toBe(100);
      // A date is expired when its midnight (UTC) is before the cutoff: 3 days ago and older.
      expect(await count(idle, `at < '${days(3)}'::date`)).toBe(0);
      expect(await count(idle, `at >= '${days(3)}'::date`)).toBeGreaterThan(0);
      expect(t.rows).toBe(100 - (await count(idle)));
    } finally {
      await catalog.pool.query(`update shardcast.movements set state = 'cancelled', finished_at = now() where id = 'm_test_daily'`);
    }
    const next = await runRetentionNow(worker.options, config(), { table: 'daily' });
    expect(next.tables[0]!.shards.find((s) => s.shardId === moving!.shardId)).toMatchObject({ state: 'archived' });
    expect(await count(moving, `at < '${days(3)}'::date`)).toBe(0);
  });

  it('a bad retention column is a clear one-line error and changes nothing', { timeout: 120_000 }, async () => {
    await createDistributedTable(worker.options, { name: 'notes', columns: 'id bigint primary key, at timestamptz not null, note text', shardKey: 'id', shardCount: 2 });
    await fill('notes', Array.from({ length: 50 }, (_, i) => ({ id: i + 1, at: ago(100 * DAY), note: 'old' })));
    await restored('notes', { days: 1, column: 'note' });
    const result = await runRetentionNow(worker.options, config(), { table: 'notes' });
    expect(result.tables[0]!.problem).toBe('table notes: the retention column "note" is text, not a date, timestamp or timestamptz (data_retention_policy of its restore)');
    expect(result.tables[0]!.rows).toBe(0);
    expect((await snapshot('notes')).size).toBe(50);

    // The CLI: one line on stderr, exit 1; the dry run too.
    await restored('notes', { days: 1, column: 'created' });
    for (const args of [['retention', '--table', 'notes'], ['retention', '--table', 'notes', '--dry-run']]) {
      const out = await cli(args);
      expect(out.stderr.trim()).toBe('shardcast: error: table notes: the retention column "created" does not exist (data_retention_policy of its restore)');
      expect(out.code).toBe(1);
    }
    expect((await snapshot('notes')).size).toBe(50);
    const unknown = await cli(['retention', '--table', 'nope', '--dry-run']);
    expect(unknown.stderr.trim()).toBe('shardcast: error: table "nope" has no finished restore: retention and the rebalance threshold apply to restored tables');
  });
});

function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const env = {
    ...process.env,
    SHARDCAST_CATALOG_URL: catalog.catalogUrl,
    SHARDCAST_TEMPORAL_ADDRESS: fleet().temporalAddress,
    SHARDCAST_TEMPORAL_TASK_QUEUE: worker.taskQueue,
    SHARDCAST_RETENTION_ARCHIVE_DIR: root,
  };
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('the retention schedule', () => {
  it('is created daily at retention.at (or every intervalHours), with the archive root and the check settings; retention.enabled false removes it', async () => {
    const id = retentionScheduleId(worker.options.workflowIdPrefix);
    try {
      await ensureSchedules(worker.options, config({ at: '01:45' }));
      const s = await worker.client.schedule.getHandle(id).describe();
      expect(s.spec.calendars).toMatchObject([{ hour: [{ start: 1, end: 1 }], minute: [{ start: 45, end: 45 }] }]);
      expect(s.action).toMatchObject({ type: 'startWorkflow', workflowType: 'retention', taskQueue: worker.taskQueue, args: [{ archiveDir: root, dryRun: false, rebalanceCheck: true, minShardBytes: 0 }] });
      expect((await ensureSchedules(worker.options, config({ intervalHours: 6 }))).find((x) => x.scheduleId === id)?.outcome).toBe('updated');
      expect((await worker.client.schedule.getHandle(id).describe()).spec.intervals).toMatchObject([{ every: 6 * 3_600_000 }]);
      await ensureSchedules(worker.options, config({ enabled: false }));
      await expect(worker.client.schedule.getHandle(id).describe()).rejects.toThrow();
    } finally {
      for (const run of ['retrain', 'forecast']) await worker.client.schedule.getHandle(`${worker.options.workflowIdPrefix}shardcast-${run === 'retrain' ? 'retrain-daily' : 'forecast-hourly'}`).delete().catch(() => undefined);
      await worker.client.schedule.getHandle(`${worker.options.workflowIdPrefix}shardcast-janitor`).delete().catch(() => undefined);
      await worker.client.schedule.getHandle(id).delete().catch(() => undefined);
    }
  });
});

describe('the rebalance-threshold check', () => {
  it('does nothing for an even table, and splits a planted oversized shard (one split, the reason given)', { timeout: 240_000 }, async () => {
    await createDistributedTable(worker.options, { name: 'even', columns: 'id bigint primary key, at timestamptz not null, note text', shardKey: 'id', shardCount: 4 });
    await fill('even', Array.from({ length: 8000 }, (_, i) => ({ id: i + 1, at: ago(0), note: 'x'.repeat(100) })));
    await restored('even', { threshold: 0.5 });
    const even = await runRetentionNow(worker.options, config(), { table: 'even' });
    expect(even.tables[0]!.balance).toMatchObject({ action: 'none', threshold: 0.5 });
    expect(even.tables[0]!.balance!.reason).toMatch(/^size skew \d+%, no load figures .*: within the threshold 50%$/);

    await createDistributedTable(worker.options, { name: 'skewed', columns: 'id bigint primary key, at timestamptz not null, note text', shardKey: 'id', shardCount: 4 });
    const keys = Array.from({ length: 40_000 }, (_, i) => i + 1);
    const shards = await shardsOfGroup(catalog.pool, await groupOf('skewed'));
    const big = shards[1]!;
    // 500 rows on each shard, and 8000 more on the second one.
    await router.refresh();
    const planted = keys.filter((k) => router.forKey('skewed', k).route().shardId === big.shardId).slice(0, 8500);
    const others = shards.filter((s) => s !== big).flatMap((s) => keys.filter((k) => router.forKey('skewed', k).route().shardId === s.shardId).slice(0, 500));
    await fill('skewed', [...planted, ...others].map((id) => ({ id, at: ago(0), note: 'x'.repeat(100) })));
    await restored('skewed', { threshold: 0.5 });
    const before = await snapshot('skewed');

    const dry = await runRetentionNow(worker.options, config(), { table: 'skewed', dryRun: true });
    expect(dry.tables[0]!.balance).toMatchObject({ action: 'split', split: { shardId: big.shardId, by: 'size' } });
    expect(dry.tables[0]!.balance!.started).toBeUndefined();

    const run = await runRetentionNow(worker.options, config(), { table: 'skewed' });
    const b = run.tables[0]!.balance!;
    expect(b).toMatchObject({ action: 'split', split: { shardId: big.shardId, by: 'size' } });
    expect(b.reason).toMatch(new RegExp(`^shard ${big.shardId} on ${big.node} is \\d+% over the mean size \\(threshold 50%.*\\): split, the upper half to node-\\d$`));
    expect(b.started).toBeDefined();
    await moveResult(worker.client.workflow.getHandle(b.started!));
    const after = await shardsOfGroup(catalog.pool, await groupOf('skewed'));
    expect(after).toHaveLength(5);
    expect(after.map((s) => s.shardId)).not.toContain(big.shardId);
    expect(new Map([...(await snapshot('skewed'))].map(([id, r]) => [id, r.hash]))).toEqual(new Map([...before].map(([id, r]) => [id, r.hash])));
  });
});
