import type { Queryable } from '../catalog/nodes.js';
import { quoteIdent } from '../sql/ident.js';

/** The daily-partitioned sample tables of migration 0005. */
export const SAMPLE_TABLES = ['table_samples', 'index_samples', 'statement_samples', 'node_samples'] as const;

const DAY_MS = 86_400_000;

function dayName(table: string, day: Date): string {
  return `${table}_${day.toISOString().slice(0, 10).replaceAll('-', '')}`;
}

function utcDay(t: Date): Date {
  return new Date(Math.floor(t.getTime() / DAY_MS) * DAY_MS);
}

/** Creates the partitions of the UTC days from `now` to `now + aheadDays` that are missing. */
export async function ensurePartitions(db: Queryable, now: Date, aheadDays = 1): Promise<string[]> {
  const created: string[] = [];
  for (let d = 0; d <= aheadDays; d++) {
    const day = new Date(utcDay(now).getTime() + d * DAY_MS);
    const next = new Date(day.getTime() + DAY_MS);
    for (const table of SAMPLE_TABLES) {
      const name = dayName(table, day);
      const { rows } = await db.query<{ ok: boolean }>('select to_regclass($1) is not null as ok', [`shardcast_stats.${name}`]);
      if (rows[0]?.ok) continue;
      try {
        await db.query(
          `create table if not exists shardcast_stats.${quoteIdent(name)} partition of shardcast_stats.${quoteIdent(table)}
           for values from ('${day.toISOString()}') to ('${next.toISOString()}')`,
        );
        created.push(name);
      } catch (err) {
        // Two collectors raced: the other one created it.
        if ((err as { code?: string }).code !== '42P07' && (err as { code?: string }).code !== '23505') throw err;
      }
    }
  }
  return created;
}

/** Drops whole-day partitions that end before `now - retentionDays`. Returns what was dropped. */
export async function dropExpiredPartitions(db: Queryable, now: Date, retentionDays: number): Promise<string[]> {
  const cutoff = new Date(utcDay(now).getTime() - retentionDays * DAY_MS);
  const { rows } = await db.query<{ name: string }>(
    `select c.relname as name from pg_inherits i
       join pg_class c on c.oid = i.inhrelid join pg_class p on p.oid = i.inhparent
       join pg_namespace n on n.oid = p.relnamespace
      where n.nspname = 'shardcast_stats' and p.relname = any($1::text[])`,
    [SAMPLE_TABLES],
  );
  const dropped: string[] = [];
  for (const { name } of rows) {
    const m = /_(\d{4})(\d{2})(\d{2})$/.exec(name);
    if (!m) continue;
    const dayEnd = new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])) + DAY_MS);
    if (dayEnd.getTime() <= cutoff.getTime()) {
      await db.query(`drop table if exists shardcast_stats.${quoteIdent(name)}`);
      dropped.push(name);
    }
  }
  // A movement's own reads are kept as long as the samples they are subtracted from.
  await db.query('delete from shardcast_stats.movement_reads where ended_at < $1', [cutoff.toISOString()]);
  return dropped.sort();
}
