/**
 * The row-content checksum of a backup: the row count and the sum of the rows' 64-bit hashes, where a
 * row's hash is `hashtextextended(row::text, 0)` — the same digest the movement verify compares
 * (src/movement/verify.ts), taken under the canonical settings (values.ts). A sum does not depend on
 * the order of the rows nor on how they are batched or sharded, so a restore into any layout is
 * checked against the manifest: by PostgreSQL in SQL (rowDigestSql) on each shard, summed, or by a
 * reader over the Arrow batches (batchDigest), which gives the same figures.
 */
import type { RecordBatch } from 'apache-arrow';
import { hashBytesExtendedParts, hashTextExtended } from '../hashing.js';
import { quoteIdent } from '../sql/ident.js';
import { canonicalText, type ValueKind } from './values.js';

export interface RowDigest {
  rows: number;
  /** Sum of the rows' signed 64-bit hashes, exact (decimal text of a bigint). */
  sum: string;
}

export const DIGEST_ALGORITHM = 'sum(hashtextextended(row::text, 0)) under canonical settings';

/** A field as record_out writes it inside `( … )`: quoted when empty or holding a delimiter, quote, backslash or space. */
export function recordField(value: string | null): string {
  if (value === null) return '';
  if (value !== '' && !/["\\(),\t\n\v\f\r ]/.test(value)) return value;
  return `"${value.replace(/["\\]/g, '$&$&')}"`;
}

/** PostgreSQL's `row::text` for canonical field texts. */
export function recordText(fields: Array<string | null>): string {
  return `(${fields.map(recordField).join(',')})`;
}

export function rowHash(fields: Array<string | null>): bigint {
  return hashTextExtended(recordText(fields));
}

const encoder = new TextEncoder();
let scratch = new Uint8Array(1 << 16);

/** Adds the digest of a batch's rows to `into` (columns in table order, as the batch's fields are). */
export function addBatchDigest(into: { rows: number; sum: bigint }, batch: RecordBatch, kinds: readonly ValueKind[]): void {
  const columns = kinds.map((_, c) => batch.data.children[c]!);
  const fields: Array<string | null> = new Array<string | null>(kinds.length);
  // The halves summed as numbers (exact: under 2^53 for a batch), one bigint per batch.
  let hi = 0;
  let lo = 0;
  for (let i = 0; i < batch.numRows; i++) {
    for (let c = 0; c < kinds.length; c++) fields[c] = canonicalText(kinds[c]!, columns[c]!, i);
    const text = recordText(fields);
    if (text.length * 3 > scratch.length) scratch = new Uint8Array(text.length * 3);
    const { written } = encoder.encodeInto(text, scratch);
    const h = hashBytesExtendedParts(scratch, written);
    hi += h.hi;
    lo += h.lo;
  }
  into.rows += batch.numRows;
  into.sum += BigInt(hi) * 4294967296n + BigInt(lo);
}

/**
 * The row's text in SQL. `row(alias.*)`, not `alias::text`: in a table with a column of the alias's
 * name, a bare alias means that column, and the digest would cover it alone.
 */
export const ROW_TEXT_SQL = 'row(sc_row.*)::text';

/** The digest query of a table, for a transaction under canonical settings. */
export function rowDigestSql(schema: string | null, table: string, extra?: string): string {
  const name = schema ? `${quoteIdent(schema)}.${quoteIdent(table)}` : quoteIdent(table);
  // `extra`: one more aggregate over the same scan (as x), its columns qualified with sc_row.
  return `select count(*)::bigint::text as n, coalesce(sum(hashtextextended(${ROW_TEXT_SQL}, 0)), 0)::text as s${extra ? `, (${extra})::text as x` : ''} from ${name} sc_row`;
}

export function digestOf(acc: { rows: number; sum: bigint }): RowDigest {
  return { rows: acc.rows, sum: acc.sum.toString() };
}
