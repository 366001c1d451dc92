import type pg from 'pg';

/**
 * Makes a node's `sc_movement` bookkeeping table on first use: nothing when `table` is there, else
 * the schema and `ddl` (`create table if not exists …` statements). Two movements making it at once
 * race on the system catalogs' unique indexes; the loser's error (unique violation, duplicate schema
 * or table) means it is there.
 */
export async function ensureMovementTable(db: Pick<pg.Pool, 'query'>, table: string, ddl: readonly string[]): Promise<void> {
  const exists = await db.query<{ ok: boolean }>('select to_regclass($1) is not null as ok', [table]);
  if (exists.rows[0]?.ok) return;
  try {
    await db.query('create schema if not exists sc_movement');
    for (const statement of ddl) await db.query(statement);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code !== '23505' && code !== '42P06' && code !== '42P07') throw err; // created meanwhile
  }
}
