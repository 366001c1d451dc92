/**
 * `manifest.json` of a backup directory: what each Arrow file holds (rows, bytes, sha256), each
 * table's DDL (columns with their PostgreSQL types and Arrow storage, primary key, indexes), its
 * row-content checksum (checksum.ts) and the key statistics of its shard-key candidates (stats.ts).
 */
import { z } from 'zod';
import { VALUE_KINDS } from './values.js';

export const MANIFEST_FILE = 'manifest.json';
export const FORMAT = 'shardcast-backup';
export const FORMAT_VERSION = 1;

const columnSchema = z.object({
  name: z.string().min(1),
  /** format_type(): the exact type to recreate, e.g. numeric(12,2), character varying(40). */
  pgType: z.string().min(1),
  /** How the values are stored in Arrow; `text` for any type without an Arrow counterpart (pgType says which). */
  arrow: z.enum(VALUE_KINDS),
  notNull: z.boolean(),
  default: z.string().nullable(),
});

const indexSchema = z.object({
  name: z.string(),
  unique: z.boolean(),
  /** What follows `on TABLE` in pg_get_indexdef: `using btree (created_at)`. */
  definition: z.string().min(1),
});

const fileSchema = z.object({
  path: z.string().regex(/^[A-Za-z0-9_.-]+$/, 'a plain file name inside the backup directory'),
  bytes: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  rows: z.number().int().nonnegative(),
  batches: z.number().int().nonnegative(),
});

const keyStatsSchema = z.object({
  column: z.string(),
  rows: z.number().int().nonnegative(),
  nullFraction: z.number().min(0).max(1),
  distinctEstimate: z.number().int().nonnegative(),
  min: z.string().nullable(),
  max: z.string().nullable(),
  quantiles: z.array(z.string()),
  sampleSize: z.number().int().nonnegative(),
  heavyHitters: z.array(z.object({ value: z.string(), count: z.number().int().nonnegative(), frequency: z.number().min(0).max(1) })),
  maxError: z.number().int().nonnegative(),
});

const tableSchema = z.object({
  name: z.string().min(1),
  columns: z.array(columnSchema).min(1),
  primaryKey: z.array(z.string()),
  indexes: z.array(indexSchema),
  /** Where it came from: a Shardcast table (its key and layout) or a plain PostgreSQL table. */
  source: z.object({
    kind: z.enum(['shardcast', 'postgres']),
    shards: z.number().int().positive(),
    method: z.enum(['hash', 'range']).nullable(),
    keyColumn: z.string().nullable(),
  }),
  files: z.array(fileSchema).min(1),
  rows: z.number().int().nonnegative(),
  checksum: z.object({
    algorithm: z.string(),
    rows: z.number().int().nonnegative(),
    sum: z.string().regex(/^-?\d+$/),
    /** The record digest of the same rows (checksum.ts RECORD_DIGEST_ALGORITHM); a restore verifies with it when it is here. */
    record: z.object({ algorithm: z.string(), sum: z.string().regex(/^-?\d+$/) }).optional(),
  }),
  keyStats: z.array(keyStatsSchema),
  /**
   * The table's live rows over time as the source cluster's collector sampled them (hourly, the
   * last 30 days, hours in which every shard was sampled): a growth source for the restore. Only a
   * backup of a Shardcast table that has been collected has it.
   */
  rowHistory: z.array(z.object({ at: z.string(), rows: z.number().nonnegative() })).optional(),
});

export const manifestSchema = z.object({
  format: z.literal(FORMAT),
  version: z.number().int(),
  createdAt: z.string(),
  /** The session settings the row checksums and the text of `text` columns were taken under. */
  settings: z.record(z.string(), z.string()),
  tables: z.array(tableSchema).min(1),
});

export type Manifest = z.infer<typeof manifestSchema>;
export type ManifestTable = z.infer<typeof tableSchema>;
export type ManifestColumn = z.infer<typeof columnSchema>;
export type ManifestFile = z.infer<typeof fileSchema>;
export type ManifestIndex = z.infer<typeof indexSchema>;

/** The Arrow file of a table in a backup directory. */
export function tableFileName(table: string): string {
  return `${table}.arrow`;
}
