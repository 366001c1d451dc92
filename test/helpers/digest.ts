import type pg from 'pg';
import { rowDigestSql } from '../../src/backup/checksum.js';
import { canonicalSettingsSql } from '../../src/backup/values.js';

/** PostgreSQL's own digest of a table (rows, sum of row hashes), under the canonical settings. */
export async function pgDigest(pool: pg.Pool, schema: string | null, table: string): Promise<{ rows: number; sum: bigint }> {
  const client = await pool.connect();
  try {
    await client.query('begin');
    for (const s of canonicalSettingsSql()) await client.query(s);
    const { rows } = await client.query<{ n: string; s: string }>(rowDigestSql(schema, table));
    await client.query('commit');
    return { rows: Number(rows[0]!.n), sum: BigInt(rows[0]!.s) };
  } finally {
    client.release();
  }
}
