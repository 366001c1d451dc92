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
  /** The record digest of the same rows (RECORD_DIGEST_ALGORITHM), when the backup has one. */
  record?: string;
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

/**
 * The second digest a backup of a Shardcast export carries, which a restore verifies with: the sum of
 * `hash_record_extended(row(…), 0)` over the rows, where each column is hashed by its type's own
 * hash function (PostgreSQL 14+), without writing the row out as text. On this machine it takes
 * about half the time of the text digest (0.7 s against 1.5 s for 1.25M rows of the restore bench's
 * table, one core). A type's hash is equality, which for most types is identity of the value; the
 * columns whose equality is looser than their text (numeric and floating point: 1.50 = 1.5, -0 = 0;
 * interval: 1 day = 24 hours; char(n)), and the types whose hash would differ between two clusters
 * (an enum hashes its label's OID) or that have no extended hash (json, point…) are hashed as their
 * text: every type but those of RECORD_HASHED_TYPES, so any table has a record digest. Text is hashed under the "C" collation, whose
 * hash is of the bytes.
 */
export const RECORD_DIGEST_ALGORITHM = 'sum(hash_record_extended(row(columns), 0)), columns outside RECORD_HASHED_TYPES as text, under canonical settings';

/** server_version_num from which PostgreSQL has hash_record_extended (14). */
export const RECORD_DIGEST_MIN_VERSION = 140_000;

/** The types (format_type's words) hashed by their own hash function in the record digest. */
const RECORD_HASHED_TYPES = /^(smallint|integer|bigint|boolean|text|character varying(\(\d+\))?|bytea|uuid|jsonb|date|timestamp(\(\d\))? with(out)? time zone)$/;

/** The row expression of the record digest, over columns `{ name, pgType }` of the table aliased sc_row. */
export function recordRowSql(columns: ReadonlyArray<{ name: string; pgType: string }>): string {
  return `row(${columns
    .map((c) => {
      const type = c.pgType.trim().toLowerCase();
      const column = `sc_row.${quoteIdent(c.name)}`;
      if (!RECORD_HASHED_TYPES.test(type)) return `${column}::text`;
      // A text's hash follows its collation: under a nondeterministic one, 'A' and 'a' could hash alike.
      return type === 'text' || type.startsWith('character varying') ? `${column} collate "C"` : column;
    })
    .join(', ')})`;
}

/**
 * One scan of a table for its digests: the count (n), the text digest (s) unless `text` is false,
 * the record digest (r) when `record` names the columns, and `extra` (x) as in rowDigestSql.
 */
export function digestsSql(schema: string | null, table: string, options: { text?: boolean; record?: ReadonlyArray<{ name: string; pgType: string }>; extra?: string }): string {
  const name = schema ? `${quoteIdent(schema)}.${quoteIdent(table)}` : quoteIdent(table);
  const parts = ['count(*)::bigint::text as n'];
  if (options.text !== false) parts.push(`coalesce(sum(hashtextextended(${ROW_TEXT_SQL}, 0)), 0)::text as s`);
  if (options.record) parts.push(`coalesce(sum(hash_record_extended(${recordRowSql(options.record)}, 0)), 0)::text as r`);
  if (options.extra) parts.push(`(${options.extra})::text as x`);
  return `select ${parts.join(', ')} from ${name} sc_row`;
}

export function digestOf(acc: { rows: number; sum: bigint }): RowDigest {
  return { rows: acc.rows, sum: acc.sum.toString() };
}
