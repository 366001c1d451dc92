import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFileSync, copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { loadMigrations, migrate, MIGRATIONS_DIR } from '../../src/catalog/migrate.js';
import { quoteIdent } from '../../src/sql/ident.js';
import { adminQuery, fleet, uniqueName, withDatabase } from '../helpers/fleet.js';

const REPO_ROOT = path.resolve(import.meta.dirname, '../..');
const SHARDCAST_TABLES = ['colocation_groups', 'distributed_tables', 'janitor_runs', 'map_version', 'movements', 'node_endpoints', 'nodes', 'placements', 'plan_actions', 'plans', 'rebalance_control', 'restores', 'retention_archives', 'retention_runs', 'shards'];
const PROFILE_TABLES = ['hot_keys', 'key_accesses', 'profile_flushes', 'query_templates', 'shard_accesses', 'template_calls'];
/** What 0001_init alone creates (the tests that apply only it). */
const TABLES_OF_0001 = ['colocation_groups', 'distributed_tables', 'map_version', 'nodes', 'placements', 'shards'];

const databases: string[] = [];
const tempDirs: string[] = [];

afterAll(async () => {
  const f = fleet();
  for (const db of databases) await adminQuery(f.catalogAdminUrl, `drop database if exists ${quoteIdent(db)} with (force)`);
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

/** A new, empty database on the catalog server; dropped in afterAll. */
async function freshDatabase(): Promise<string> {
  const f = fleet();
  const name = uniqueName('mig');
  databases.push(name);
  await adminQuery(f.catalogAdminUrl, `create database ${quoteIdent(name)}`);
  return withDatabase(f.catalogAdminUrl, name);
}

async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

interface MigrationRow {
  version: number;
  name: string;
  checksum: string;
  applied_at: string;
  xmin: string;
}

async function migrationRows(url: string): Promise<MigrationRow[]> {
  const { rows } = await adminQuery(
    url,
    `select version, name, checksum, applied_at::text as applied_at, xmin::text as xmin
       from shardcast_meta.migrations order by version, name`,
  );
  return rows as MigrationRow[];
}

async function tablesIn(url: string, schema: string): Promise<string[]> {
  const { rows } = await adminQuery(
    url,
    `select table_name::text as t from information_schema.tables where table_schema = $1 order by 1`,
    [schema],
  );
  return rows.map((r: { t: string }) => r.t);
}

/** Everything a migration could have changed: columns, constraints, indexes, triggers, functions and the map version. */
async function schemaFingerprint(url: string): Promise<unknown> {
  const { rows } = await adminQuery(
    url,
    `select
       (select json_agg(x order by x) from (select table_schema || '.' || table_name || '.' || column_name || ':' || data_type as x
          from information_schema.columns where table_schema in ('shardcast', 'shardcast_meta')) c) as columns,
       (select json_agg(x order by x) from (select conrelid::regclass::text || ':' || pg_get_constraintdef(oid) as x
          from pg_constraint where connamespace in ('shardcast'::regnamespace, 'shardcast_meta'::regnamespace)) k) as constraints,
       (select json_agg(x order by x) from (select indexdef as x from pg_indexes
          where schemaname in ('shardcast', 'shardcast_meta')) i) as indexes,
       (select json_agg(x order by x) from (select tgrelid::regclass::text || ':' || tgname as x
          from pg_trigger where not tgisinternal) t) as triggers,
       (select json_agg(x order by x) from (select p.oid::regprocedure::text as x
          from pg_proc p where p.pronamespace = 'shardcast'::regnamespace) p) as functions,
       (select json_agg(m) from shardcast.map_version m) as map_version`,
  );
  return rows[0];
}

/** Advisory locks held in `database` by any session: migrate() must never leave its lock behind. */
async function advisoryLocks(url: string): Promise<number> {
  const { rows } = await adminQuery(
    url,
    `select count(*)::int as n from pg_locks l join pg_database d on d.oid = l.database
      where l.locktype = 'advisory' and d.datname = current_database()`,
  );
  return rows[0].n;
}

function copyMigrations(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'shardcast-migrations-'));
  tempDirs.push(dir);
  for (const file of readdirSync(MIGRATIONS_DIR)) {
    if (file.endsWith('.sql')) copyFileSync(path.join(MIGRATIONS_DIR, file), path.join(dir, file));
  }
  return dir;
}

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['bin/shardcast.js', ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('catalog migrations', () => {
  const expected = loadMigrations();

  it('the shipped migrations are every .sql file of migrations/, numbered 1..n', () => {
    const files = readdirSync(MIGRATIONS_DIR).filter((f) => f.endsWith('.sql')).sort();
    expect(files.length).toBeGreaterThan(0);
    expect(expected.map((m) => `${m.name}.sql`)).toEqual(files);
    expect(expected.map((m) => m.version)).toEqual(files.map((_, i) => i + 1));
  });

  it('applies every migration to a fresh database and records it with its checksum', async () => {
    const url = await freshDatabase();
    const result = await withClient(url, (c) => migrate(c));
    expect(result.applied).toEqual(expected.map((m) => m.name));

    const rows = await migrationRows(url);
    expect(rows.map(({ version, name, checksum }) => ({ version, name, checksum }))).toEqual(
      expected.map((m) => ({
        version: m.version,
        name: m.name,
        // Computed here from the file itself, not trusted from loadMigrations().
        checksum: createHash('sha256').update(readFileSync(path.join(MIGRATIONS_DIR, `${m.name}.sql`))).digest('hex'),
      })),
    );
    for (const row of rows) expect(row.applied_at).toMatch(/^\d{4}-\d\d-\d\d /);

    expect(await tablesIn(url, 'shardcast')).toEqual(SHARDCAST_TABLES);
    expect(await tablesIn(url, 'shardcast_meta')).toEqual(['migrations']);
    // The workload profile's (0019), beside the collector's partitioned samples.
    expect(await tablesIn(url, 'shardcast_stats')).toEqual(expect.arrayContaining(PROFILE_TABLES));
    const { rows: mv } = await adminQuery(url, 'select singleton, version::int as version from shardcast.map_version');
    expect(mv).toEqual([{ singleton: true, version: 1 }]);
    expect(await advisoryLocks(url)).toBe(0);
  });

  it('running migrate() again applies nothing and changes nothing', async () => {
    const url = await freshDatabase();
    await withClient(url, (c) => migrate(c));
    const rowsBefore = await migrationRows(url);
    const schemaBefore = await schemaFingerprint(url);
    expect(rowsBefore).toHaveLength(expected.length);

    await new Promise((r) => setTimeout(r, 20)); // a re-applied row would get a visibly later applied_at
    const again = await withClient(url, async (c) => [await migrate(c), await migrate(c)]);
    expect(again).toEqual([{ applied: [] }, { applied: [] }]);
    expect(await migrationRows(url)).toEqual(rowsBefore);
    expect(await schemaFingerprint(url)).toEqual(schemaBefore);
  });

  it('two `shardcast migrate` processes on the same fresh database at once both succeed, applying each migration once', async () => {
    const url = await freshDatabase();
    const args = ['--catalog-url', url, 'migrate'];
    const results = await Promise.all([runCli(args), runCli(args)]);
    for (const r of results) {
      expect(r, `exit code ${r.code}, stderr: ${r.stderr}`).toMatchObject({ code: 0 });
      expect(r.stdout).toContain('catalog is up to date');
    }
    const rows = await migrationRows(url);
    expect(rows.map((r) => r.version)).toEqual(expected.map((m) => m.version));
    expect(await tablesIn(url, 'shardcast')).toEqual(SHARDCAST_TABLES);
    const { rows: mv } = await adminQuery(url, 'select count(*)::int as n, max(version)::int as v from shardcast.map_version');
    expect(mv).toEqual([{ n: 1, v: 1 }]);
  });

  it('other commands never migrate: on an uninitialised catalog they fail with one clear line and change nothing', async () => {
    const url = await freshDatabase();
    for (const args of [['status'], ['nodes', 'add', 'n1', '--dsn', 'postgres://x@127.0.0.1:1/db', '--no-check'], ['tables', 'list']]) {
      const r = await runCli(['--catalog-url', url, ...args]);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr.trim()).toBe('shardcast: error: the catalog is not initialised: run `shardcast migrate` (or `shardcast up`) first');
    }
    const { rows } = await adminQuery(url, "select count(*)::int as n from pg_namespace where nspname in ('shardcast', 'shardcast_meta')");
    expect(rows).toEqual([{ n: 0 }]);
  });

  it('four clients in one process migrating the same fresh database at once: exactly one applies, all succeed', async () => {
    const url = await freshDatabase();
    const clients = Array.from({ length: 4 }, () => new pg.Client({ connectionString: url }));
    await Promise.all(clients.map((c) => c.connect()));
    try {
      const settled = await Promise.allSettled(clients.map((c) => migrate(c)));
      const failures = settled.filter((s) => s.status === 'rejected').map((s) => String((s as PromiseRejectedResult).reason));
      expect(failures).toEqual([]);
      const applied = settled.map((s) => (s as PromiseFulfilledResult<{ applied: string[] }>).value.applied);
      expect(applied.flat().sort()).toEqual(expected.map((m) => m.name).sort());
      expect(applied.filter((a) => a.length > 0)).toHaveLength(1);
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
    const rows = await migrationRows(url);
    expect(rows.map((r) => r.version)).toEqual(expected.map((m) => m.version));
    expect(await tablesIn(url, 'shardcast')).toEqual(SHARDCAST_TABLES);
    expect(await advisoryLocks(url)).toBe(0);
  });

  it('refuses a migration file changed after it was applied, and applies nothing after it', async () => {
    const url = await freshDatabase();
    const dir = copyMigrations();
    const first = loadMigrations(dir);
    await withClient(url, async (client) => {
      expect((await migrate(client, first)).applied).toEqual(first.map((m) => m.name));
      const rowsBefore = await migrationRows(url);

      // Edit the first (applied) file and add a new, pending one after it.
      const changed = first[0]!;
      appendFileSync(path.join(dir, `${changed.name}.sql`), '\n-- edited after it was applied\n');
      const next = String(first.length + 1).padStart(4, '0');
      writeFileSync(path.join(dir, `${next}_after_edit.sql`), 'create table shardcast.after_edit (a int);\n');
      const edited = loadMigrations(dir);
      expect(edited[0]!.checksum).not.toBe(changed.checksum);

      const err = await migrate(client, edited).then(
        () => undefined,
        (e: unknown) => e as Error & { code?: string },
      );
      expect(err, 'migrate() resolved although an applied migration was changed').toBeInstanceOf(Error);
      expect(err!.message).toContain('was changed after it was applied');
      expect(err!.message).toContain(changed.name);
      expect(err!.code).toBe('MIGRATION_CHANGED');

      expect(await migrationRows(url)).toEqual(rowsBefore);
      const { rows } = await client.query(`select to_regclass('shardcast.after_edit')::text as t`);
      expect(rows).toEqual([{ t: null }]);
      expect(await advisoryLocks(url)).toBe(0);
    });
  });

  it('a failing migration rolls back completely; the ones before it stay applied', async () => {
    const url = await freshDatabase();
    const dir = mkdtempSync(path.join(tmpdir(), 'shardcast-migrations-'));
    tempDirs.push(dir);
    copyFileSync(path.join(MIGRATIONS_DIR, '0001_init.sql'), path.join(dir, '0001_init.sql'));
    writeFileSync(path.join(dir, '0002_broken.sql'), 'create table shardcast.x (a int);\ninsert into shardcast.x values (1);\nselect 1/0;\n');
    const migrations = loadMigrations(dir);
    expect(migrations.map((m) => m.name)).toEqual(['0001_init', '0002_broken']);

    await withClient(url, async (client) => {
      const err = await migrate(client, migrations).then(
        () => undefined,
        (e: unknown) => e as Error & { code?: string },
      );
      expect(err, 'migrate() resolved although 0002_broken fails').toBeInstanceOf(Error);
      expect(err!.message).toContain('0002_broken');
      expect(err!.message).toContain('division by zero');
      expect(err!.code).toBe('MIGRATION_FAILED');

      // The session is usable afterwards (not left inside an aborted transaction) and holds no lock.
      const { rows } = await client.query(`select to_regclass('shardcast.x')::text as t, txid_current_if_assigned() as tx`);
      expect(rows).toEqual([{ t: null, tx: null }]);
      expect(await advisoryLocks(url)).toBe(0);
    });
    const recorded = await migrationRows(url);
    expect(recorded.map((r) => r.name)).toEqual(['0001_init']);
    expect(await tablesIn(url, 'shardcast')).toEqual(TABLES_OF_0001);

    // Fixing the broken migration lets it apply on the next run.
    writeFileSync(path.join(dir, '0002_broken.sql'), 'create table shardcast.x (a int);\n');
    const fixed = await withClient(url, (c) => migrate(c, loadMigrations(dir)));
    expect(fixed.applied).toEqual(['0002_broken']);
    expect((await migrationRows(url)).map((r) => r.version)).toEqual([1, 2]);
  });

  it('a migration and its record commit together: if recording it fails, its effects are rolled back too', async () => {
    const url = await freshDatabase();
    const dir = mkdtempSync(path.join(tmpdir(), 'shardcast-migrations-'));
    tempDirs.push(dir);
    copyFileSync(path.join(MIGRATIONS_DIR, '0001_init.sql'), path.join(dir, '0001_init.sql'));
    // The SQL itself succeeds; the insert of its own record (version 2) then violates the check it adds.
    writeFileSync(
      path.join(dir, '0002_unrecordable.sql'),
      'create table shardcast.y (a int);\nalter table shardcast_meta.migrations add constraint only_v1 check (version < 2);\n',
    );
    await withClient(url, async (client) => {
      await expect(migrate(client, loadMigrations(dir))).rejects.toThrow(/0002_unrecordable.*only_v1/);
      const { rows } = await client.query(
        `select to_regclass('shardcast.y')::text as t,
                (select count(*)::int from pg_constraint where conname = 'only_v1') as constraints`,
      );
      expect(rows).toEqual([{ t: null, constraints: 0 }]);
    });
    expect((await migrationRows(url)).map((r) => r.name)).toEqual(['0001_init']);
  });

  it('a change to the nodes table bumps shardcast.map_version by one and notifies shardcast_map with the new version', async () => {
    const url = await freshDatabase();
    await withClient(url, (c) => migrate(c));
    const listener = new pg.Client({ connectionString: url });
    await listener.connect();
    const received: pg.Notification[] = [];
    const waiters: Array<() => void> = [];
    listener.on('notification', (n) => {
      received.push(n);
      waiters.splice(0).forEach((w) => w());
    });
    const notificationCount = (count: number): Promise<void> =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for notification #${count}; got ${JSON.stringify(received)}`)), 10_000);
        const check = (): void => {
          if (received.length >= count) {
            clearTimeout(timer);
            resolve();
          } else waiters.push(check);
        };
        check();
      });
    try {
      await listener.query('listen shardcast_map');
      const version = async (): Promise<number> => (await adminQuery(url, 'select version::int as v from shardcast.map_version')).rows[0].v;
      const before = await version();

      await adminQuery(url, `insert into shardcast.nodes (name, dsn) values ('n1', 'postgres://h1/db')`);
      await notificationCount(1);
      expect(await version()).toBe(before + 1);
      expect(received[0]).toMatchObject({ channel: 'shardcast_map', payload: String(before + 1) });

      // A statement-level trigger: inserting two nodes in one statement is still one bump.
      await adminQuery(url, `insert into shardcast.nodes (name, dsn) values ('n2', 'postgres://h2/db'), ('n3', 'postgres://h3/db')`);
      await notificationCount(2);
      expect(await version()).toBe(before + 2);
      expect(received[1]).toMatchObject({ channel: 'shardcast_map', payload: String(before + 2) });

      // A rolled-back insert neither bumps nor notifies.
      await withClient(url, async (c) => {
        await c.query('begin');
        await c.query(`insert into shardcast.nodes (name, dsn) values ('n4', 'postgres://h4/db')`);
        await c.query('rollback');
      });
      await listener.query('select 1'); // a round trip on the listener, so any stray notification would have arrived
      await new Promise((r) => setTimeout(r, 200));
      expect(received).toHaveLength(2);
      expect(await version()).toBe(before + 2);
    } finally {
      await listener.end();
    }
  });
});
