import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { ShardcastError } from '../errors.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/** migrations/ at the package root: two levels up from src/catalog, three from the built dist/src/catalog. */
export const MIGRATIONS_DIR = [path.resolve(here, '../../migrations'), path.resolve(here, '../../../migrations')].find((dir) =>
  existsSync(path.join(dir, '0001_init.sql')),
) ?? path.resolve(here, '../../migrations');

/** Any 64-bit constant unique to Shardcast: serialises migrators across processes. */
const MIGRATION_LOCK = 0x5348_4152_4443_4153n; // "SHARDCAS"

export interface Migration {
  version: number;
  name: string;
  sql: string;
  checksum: string;
}

export function loadMigrations(dir = MIGRATIONS_DIR): Migration[] {
  const migrations = readdirSync(dir)
    .filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f))
    .sort()
    .map((file) => {
      const sql = readFileSync(path.join(dir, file), 'utf8');
      return {
        version: Number.parseInt(file.slice(0, 4), 10),
        name: file.replace(/\.sql$/, ''),
        sql,
        checksum: createHash('sha256').update(sql).digest('hex'),
      };
    });
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) throw new ShardcastError('MIGRATION_GAP', `migrations: expected version ${i + 1}, found ${m.name}`);
  });
  return migrations;
}

/**
 * Applies the pending migrations in order, one transaction each, recording each one. Re-running
 * is a no-op; concurrent runs queue on an advisory lock; a changed applied file is an error.
 */
export async function migrate(client: pg.ClientBase, migrations = loadMigrations()): Promise<{ applied: string[] }> {
  await client.query('select pg_advisory_lock($1::bigint)', [MIGRATION_LOCK.toString()]);
  try {
    await client.query(`create schema if not exists shardcast_meta`).catch(ignoreDuplicate);
    await client
      .query(
        `create table if not exists shardcast_meta.migrations (
           version int primary key,
           name text not null,
           checksum text not null,
           applied_at timestamptz not null default now())`,
      )
      .catch(ignoreDuplicate);
    const done = await client.query<{ version: number; name: string; checksum: string }>(
      'select version, name, checksum from shardcast_meta.migrations order by version',
    );
    const applied = new Map(done.rows.map((r) => [r.version, r]));
    const ran: string[] = [];
    for (const migration of migrations) {
      const previous = applied.get(migration.version);
      if (previous) {
        if (previous.checksum !== migration.checksum) {
          throw new ShardcastError(
            'MIGRATION_CHANGED',
            `migration ${migration.name} was changed after it was applied (checksum differs); add a new migration instead`,
          );
        }
        continue;
      }
      await client.query('begin');
      try {
        await client.query(migration.sql);
        await client.query('insert into shardcast_meta.migrations (version, name, checksum) values ($1, $2, $3)', [
          migration.version,
          migration.name,
          migration.checksum,
        ]);
        await client.query('commit');
      } catch (err) {
        await client.query('rollback');
        throw new ShardcastError('MIGRATION_FAILED', `migration ${migration.name} failed: ${(err as Error).message}`, { cause: err });
      }
      ran.push(migration.name);
    }
    return { applied: ran };
  } finally {
    await client.query('select pg_advisory_unlock($1::bigint)', [MIGRATION_LOCK.toString()]);
  }
}

/** `create ... if not exists` can still race on the system catalogs' unique indexes. */
function ignoreDuplicate(err: unknown): void {
  const code = (err as { code?: string }).code;
  if (code !== '23505' && code !== '42P06' && code !== '42P07') throw err;
}

/**
 * Fails unless every migration this version knows is applied: commands other than `up`, `worker`
 * and `migrate` never change the catalog's schema behind an operator's back.
 */
export async function assertMigrated(client: pg.ClientBase, migrations = loadMigrations()): Promise<void> {
  const exists = await client.query<{ t: string | null }>("select to_regclass('shardcast_meta.migrations')::text as t");
  if (!exists.rows[0]?.t) {
    throw new ShardcastError('CATALOG_NOT_MIGRATED', 'the catalog is not initialised: run `shardcast migrate` (or `shardcast up`) first');
  }
  const { rows } = await client.query<{ version: number }>('select version from shardcast_meta.migrations');
  const applied = new Set(rows.map((r) => r.version));
  const missing = migrations.filter((m) => !applied.has(m.version));
  if (missing.length > 0) {
    throw new ShardcastError(
      'CATALOG_NOT_MIGRATED',
      `the catalog lacks migration(s) ${missing.map((m) => m.name).join(', ')}: run \`shardcast migrate\` first`,
    );
  }
}
