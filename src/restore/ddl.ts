/**
 * The DDL a restore creates its table with, from the backup's description of it. Pure (the restore
 * workflow uses it in its sandbox).
 */
import { quoteIdent } from '../sql/ident.js';

interface ColumnDescription {
  name: string;
  pgType: string;
  notNull: boolean;
  default: string | null;
}

/** `"name" type [not null] [default …]`; a default that draws from a sequence is left out (the values come with the rows). */
function columnDdl(c: ColumnDescription): string {
  const def = c.default !== null && !/\bnextval\s*\(/i.test(c.default) ? ` default ${c.default}` : '';
  return `${quoteIdent(c.name)} ${c.pgType}${c.notNull ? ' not null' : ''}${def}`;
}

/**
 * `full`: the column definitions as the catalog keeps them (`--columns` of `tables create`), with the
 * primary key, so that later movements create their targets with it. `bare`: the columns alone, which
 * the shards are loaded into; the key and indexes are built after the load.
 */
export function restoreColumnsDdl(table: { columns: readonly ColumnDescription[]; primaryKey: readonly string[] }): { full: string; bare: string } {
  const bare = table.columns.map(columnDdl).join(', ');
  return { full: table.primaryKey.length > 0 ? `${bare}, primary key (${table.primaryKey.map(quoteIdent).join(', ')})` : bare, bare };
}
