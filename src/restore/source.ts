/**
 * What a restore reads: a Shardcast backup (local or http(s)) or a pg_dump directory. Both give the
 * tables as manifest entries; a pg_dump's key statistics are gathered by reading its rows once.
 */
import { access } from 'node:fs/promises';
import path from 'node:path';
import type { ManifestTable } from '../backup/manifest.js';
import { PgDumpBackup } from '../backup/pg-dump.js';
import { openBackup } from '../backup/reader.js';
import { collectStats, KEY_CANDIDATE_KINDS, KeyStatsCollector, TEXT_KEY_TYPES } from '../backup/stats.js';

export interface RestoreSource {
  kind: 'shardcast' | 'pg_dump';
  tables: ManifestTable[];
  /** Bytes of each table's data (the Arrow files; for a pg_dump, unknown: 0). */
  bytes(table: string): number;
  /** When the backup was made (a Shardcast backup's manifest createdAt; unknown for a pg_dump). */
  exportedAt?: string;
}

async function isPgDump(location: string): Promise<boolean> {
  if (/^https?:\/\//i.test(location)) return false;
  return access(path.join(location, 'toc.dat')).then(
    () => true,
    () => false,
  );
}

export async function openRestoreSource(location: string, options: { pgRestore?: string } = {}): Promise<RestoreSource> {
  if (!(await isPgDump(location))) {
    const backup = await openBackup(location);
    return { kind: 'shardcast', tables: backup.manifest.tables, bytes: (t) => backup.table(t).files.reduce((a, f) => a + f.bytes, 0), exportedAt: backup.manifest.createdAt };
  }
  const dump = await PgDumpBackup.open(location, options);
  const tables: ManifestTable[] = [];
  for (const t of dump.tables) {
    const collectors = new Map<number, KeyStatsCollector>();
    t.columns.forEach((c, i) => {
      const textKey = TEXT_KEY_TYPES.some((k) => c.pgType === k || c.pgType.startsWith(`${k}(`));
      if (KEY_CANDIDATE_KINDS.includes(c.arrow) && (c.arrow !== 'text' || textKey)) collectors.set(i, new KeyStatsCollector(c.name, c.arrow));
    });
    let rows = 0;
    for await (const batch of dump.batches(`${t.schema}.${t.name}`)) {
      collectStats(collectors, batch);
      rows += batch.numRows;
    }
    tables.push({
      name: t.name,
      columns: t.columns,
      primaryKey: t.primaryKey,
      indexes: t.indexes,
      source: { kind: 'postgres', shards: 1, method: null, keyColumn: null },
      files: [],
      rows,
      checksum: { algorithm: 'none (pg_dump)', rows, sum: '0' },
      keyStats: [...collectors.values()].map((c) => c.result()),
    });
  }
  return { kind: 'pg_dump', tables, bytes: () => 0 };
}
