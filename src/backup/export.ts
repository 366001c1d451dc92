/**
 * `shardcast backup`: a table (or a colocation group's tables) of a live Shardcast cluster, or a plain
 * PostgreSQL table, to a backup directory. Every part (a shard, or the plain table) is read in a
 * REPEATABLE READ transaction of its own under the canonical settings: COPY … TO STDOUT streamed into
 * Arrow record batches, then, in the same snapshot, PostgreSQL's row digest of the part, which must
 * equal the digest of the batches as written — so the file holds exactly the rows PostgreSQL has, in
 * values that give back PostgreSQL's text. Parts run in parallel (`jobs`), every producer holding at
 * most one batch. The manifest is written last, by rename: a directory without one is no backup.
 */
import { mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import { abandonIfRunning } from '../catalog/abandon.js';
import { failpoint } from '../failpoints.js';
import { to as copyTo } from 'pg-copy-streams';
import type { NodePools } from '../catalog/node-pools.js';
import { InvalidInputError, NotFoundError, ShardcastError, errorMessage } from '../errors.js';
import { quoteIdent } from '../sql/ident.js';
import { addBatchDigest, DIGEST_ALGORITHM, digestsSql, RECORD_DIGEST_ALGORITHM, RECORD_DIGEST_MIN_VERSION, rowDigestSql } from './checksum.js';
import { FORMAT, FORMAT_VERSION, MANIFEST_FILE, type Manifest, type ManifestColumn, type ManifestIndex, type ManifestTable } from './manifest.js';
import { collectStats, KEY_CANDIDATE_KINDS, KeyStatsCollector, TEXT_KEY_TYPES } from './stats.js';
import { canonicalSettingsSql, CANONICAL_SETTINGS, kindOf } from './values.js';
import { ArrowFileSink, arrowSchema, BatchAssembler, CopyTextParser } from './writer.js';

export class BackupError extends ShardcastError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('BACKUP_FAILED', message, options);
  }
}

/** One place a table's rows live: a shard's table on its node, or the plain table. */
export interface TablePart {
  label: string;
  pool: pg.Pool;
  schema: string | null;
  table: string;
}

export interface TableToExport {
  name: string;
  parts: TablePart[];
  source: ManifestTable['source'];
  rowHistory?: ManifestTable['rowHistory'];
}

export interface ExportOptions {
  /** Parts read at once (default 4). */
  jobs?: number;
  /** Rows per record batch at most (default 65,536; a batch also ends at 16 MB). */
  batchRows?: number;
  onProgress?: (p: { table: string; part: string; rows: number; done: boolean }) => void;
}

const qualified = (schema: string | null, table: string) => (schema ? `${quoteIdent(schema)}.${quoteIdent(table)}` : quoteIdent(table));

/** The Shardcast table `name` (or, when it is no table or `group` is set, the colocation group `name`'s tables) with their shards. */
export async function shardcastTables(catalog: pg.Pool, pools: NodePools, name: string, group = false): Promise<TableToExport[]> {
  const { rows } = await catalog.query<{ name: string; key_column: string; method: 'hash' | 'range'; group_id: number; state: string }>(
    `select t.name, t.key_column, g.method, g.id::int as group_id, t.state
       from shardcast.distributed_tables t join shardcast.colocation_groups g on g.id = t.group_id
      where case when $2 or not exists (select 1 from shardcast.distributed_tables where name = $1) then g.name = $1 else t.name = $1 end
      order by t.id`,
    [name, group],
  );
  if (rows.length === 0) throw new NotFoundError(`no distributed table${group ? '' : ' or colocation group'} named "${name}"`);
  const creating = rows.find((r) => r.state !== 'active');
  if (creating) throw new InvalidInputError(`table "${creating.name}" is ${creating.state}, not active: nothing to back up yet`);
  const shards = await catalog.query<{ schema: string; node: string; dsn: string }>(
    `select s.schema_name as schema, n.name as node, n.dsn
       from shardcast.shards s join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id
      where s.group_id = $1 order by s.id`,
    [rows[0]!.group_id],
  );
  const schemas = shards.rows.map((s) => s.schema);
  return Promise.all(
    rows.map(async (t) => {
      const rowHistory = await collectedRows(catalog, t.name, schemas);
      return {
        name: t.name,
        source: { kind: 'shardcast' as const, shards: shards.rows.length, method: t.method, keyColumn: t.key_column },
        parts: shards.rows.map((s) => ({ label: `${s.schema} on ${s.node}`, pool: pools.get(s.dsn), schema: s.schema, table: t.name })),
        ...(rowHistory.length > 0 ? { rowHistory } : {}),
      };
    }),
  );
}

/**
 * The table's live rows per hour over the last 30 days, from the collector's samples: per shard
 * schema the largest count sampled that hour (a shard being moved is counted once), summed over the
 * shards; only hours in which every one of today's shards was sampled.
 */
async function collectedRows(catalog: pg.Pool, table: string, schemas: readonly string[]): Promise<Array<{ at: string; rows: number }>> {
  const { rows } = await catalog.query<{ at: string; rows: number }>(
    `select to_char(h at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') as at, sum(n)::float8 as rows
       from (select date_trunc('hour', ts) as h, schema_name, max(n_live_tup) as n
               from shardcast_stats.table_samples
              where table_name = $1 and schema_name = any($2::text[]) and ts >= now() - interval '30 days'
              group by 1, 2) per_shard
      group by h having count(*) = $3 order by h`,
    [table, schemas, schemas.length],
  );
  return rows;
}

/** A plain PostgreSQL table (`name` or `schema.name`) reached through `pool`. */
export function plainTable(pool: pg.Pool, name: string): TableToExport {
  const parts = name.split('.');
  if (parts.length > 2 || parts.some((p) => p === '')) throw new InvalidInputError(`--table ${JSON.stringify(name)}: expected NAME or SCHEMA.NAME`);
  const table = parts.at(-1)!;
  const schema = parts.length === 2 ? parts[0]! : null;
  return { name: table, source: { kind: 'postgres', shards: 1, method: null, keyColumn: null }, parts: [{ label: name, pool, schema, table }] };
}

export interface Ddl {
  columns: Array<ManifestColumn & { typname: string }>;
  primaryKey: string[];
  indexes: ManifestIndex[];
}

export async function describeTable(db: pg.Pool, part: TablePart, name: string): Promise<Ddl> {
  const rel = qualified(part.schema, part.table);
  const exists = await db.query<{ oid: string | null }>('select to_regclass($1)::oid::text as oid', [rel]);
  if (!exists.rows[0]?.oid) throw new NotFoundError(`table ${part.schema ? `${part.schema}.` : ''}${part.table} does not exist (${part.label})`);
  const columns = await db.query<{ name: string; pg_type: string; typname: string; not_null: boolean; default: string | null }>(
    `select a.attname as name, format_type(a.atttypid, a.atttypmod) as pg_type,
            case when tn.nspname = 'pg_catalog' then t.typname else '' end as typname,
            a.attnotnull as not_null, pg_get_expr(d.adbin, d.adrelid) as default
       from pg_attribute a join pg_type t on t.oid = a.atttypid join pg_namespace tn on tn.oid = t.typnamespace
       left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
      where a.attrelid = $1::regclass and a.attnum > 0 and not a.attisdropped order by a.attnum`,
    [rel],
  );
  const pk = await db.query<{ name: string }>(
    `select a.attname as name from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
      where i.indrelid = $1::regclass and i.indisprimary order by array_position(i.indkey::int2[], a.attnum)`,
    [rel],
  );
  const indexes = await db.query<{ name: string; unique: boolean; def: string }>(
    `select c.relname as name, i.indisunique as unique, pg_get_indexdef(i.indexrelid) as def
       from pg_index i join pg_class c on c.oid = i.indexrelid where i.indrelid = $1::regclass and not i.indisprimary order by c.relname`,
    [rel],
  );
  return {
    columns: columns.rows.map((c) => ({ name: c.name, pgType: c.pg_type, typname: c.typname, arrow: kindOf(c.typname), notNull: c.not_null, default: c.default })),
    primaryKey: pk.rows.map((r) => r.name),
    indexes: indexes.rows.map((i) => {
      const m = / USING (.*)$/.exec(i.def);
      if (!m) throw new BackupError(`table ${name}: cannot read the definition of index ${i.name}: ${i.def}`);
      return { name: i.name, unique: i.unique, definition: `using ${m[1]}` };
    }),
  };
}

function fileNameFor(table: string, taken: Set<string>): string {
  const base = table.replace(/[^A-Za-z0-9_.-]/g, '_');
  let name = `${base}.arrow`;
  for (let i = 2; taken.has(name); i++) name = `${base}_${i}.arrow`;
  taken.add(name);
  return name;
}

/** Runs `tasks` with at most `jobs` at once; the first failure is thrown once the running ones settle. */
async function runLimited(tasks: Array<() => Promise<void>>, jobs: number): Promise<void> {
  let next = 0;
  let failure: unknown;
  const lane = async () => {
    while (next < tasks.length && failure === undefined) {
      const task = tasks[next++]!;
      try {
        await task();
      } catch (err) {
        failure ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(jobs, tasks.length)) }, lane));
  if (failure !== undefined) throw failure;
}

/** server_version_num of each connection, asked once (a pool hands the same client out again for the next part). */
const serverVersions = new WeakMap<object, number>();

async function serverVersion(client: pg.PoolClient): Promise<number> {
  let v = serverVersions.get(client);
  if (v === undefined) {
    v = Number((await client.query<{ v: string }>(`select current_setting('server_version_num') as v`)).rows[0]!.v);
    serverVersions.set(client, v);
  }
  return v;
}

/**
 * PostgreSQL's digests of a part in the export's snapshot, in one scan: the text digest (checked
 * against the batches written) and, when `record` and the server has hash_record_extended
 * (PostgreSQL 14+), the record digest a restore verifies with (r; absent otherwise).
 */
async function snapshotDigests(client: pg.PoolClient, part: TablePart, ddl: Ddl, record: boolean): Promise<Array<{ n: string; s: string; r?: string }>> {
  const version = record ? await serverVersion(client) : 0;
  const sql = record && version >= RECORD_DIGEST_MIN_VERSION ? digestsSql(part.schema, part.table, { record: ddl.columns }) : rowDigestSql(part.schema, part.table);
  return (await client.query<{ n: string; s: string; r?: string }>(sql)).rows;
}

/** Streams one part into the table's file; checks its digest against PostgreSQL's in the same snapshot. */
async function exportPart(
  table: string,
  part: TablePart,
  ddl: Ddl,
  sink: ArrowFileSink,
  assemblerOf: () => BatchAssembler,
  stats: Map<number, KeyStatsCollector>,
  total: { rows: number; sum: bigint; record: bigint | null },
  onProgress: ExportOptions['onProgress'],
): Promise<void> {
  const kinds = ddl.columns.map((c) => c.arrow);
  let client: pg.PoolClient;
  try {
    client = await part.pool.connect();
  } catch (err) {
    throw new BackupError(`table ${table}, ${part.label}: cannot connect: ${errorMessage(err)}`, { cause: err });
  }
  let broken: Error | undefined;
  let stream: unknown;
  try {
    await client.query('begin isolation level repeatable read read only');
    for (const s of canonicalSettingsSql()) await client.query(s);
    const digest = { rows: 0, sum: 0n };
    const assembler = assemblerOf();
    const parser = new CopyTextParser();
    const emit = async () => {
      const batch = assembler.take();
      addBatchDigest(digest, batch, kinds);
      collectStats(stats, batch);
      await failpoint('backup.batch'); // tests: the file cannot be written in the middle of the COPY
      await sink.write(batch);
      onProgress?.({ table, part: part.label, rows: digest.rows, done: false });
    };
    const columns = ddl.columns.map((c) => quoteIdent(c.name)).join(', ');
    const copy = client.query(copyTo(`copy ${qualified(part.schema, part.table)} (${columns}) to stdout`));
    stream = copy;
    for await (const chunk of copy as AsyncIterable<Buffer>) {
      for (const row of parser.push(chunk)) {
        try {
          if (assembler.add(row)) await emit();
        } catch (err) {
          throw new BackupError(`table ${table}, ${part.label}: ${errorMessage(err)}`, { cause: err });
        }
      }
    }
    parser.end();
    if (assembler.rows > 0) await emit();
    const rows = await snapshotDigests(client, part, ddl, total.record !== null);
    if (Number(rows[0]!.n) !== digest.rows || BigInt(rows[0]!.s) !== digest.sum) {
      throw new BackupError(
        `table ${table}, ${part.label}: the exported rows do not match PostgreSQL's (${digest.rows} rows written, ${rows[0]!.n} in the snapshot${Number(rows[0]!.n) === digest.rows ? ', same count, different content' : ''})`,
      );
    }
    await client.query('commit');
    total.rows += digest.rows;
    total.sum += digest.sum;
    // A part without a record digest (a type with no extended hash) leaves the table without one.
    total.record = total.record !== null && rows[0]!.r !== undefined ? total.record + BigInt(rows[0]!.r) : null;
    onProgress?.({ table, part: part.label, rows: digest.rows, done: true });
  } catch (err) {
    broken = err as Error;
    abandonIfRunning(client, stream); // left mid-COPY (the file could not be written), the rollback would wait forever
    await client.query('rollback').catch(() => undefined);
    if (err instanceof ShardcastError) throw err;
    throw new BackupError(`table ${table}, ${part.label}: ${errorMessage(err)}`, { cause: err });
  } finally {
    client.release(broken);
  }
}

/** Writes the backup of `tables` into `dir` (created; must be empty if it exists) and returns its manifest. */
export async function exportBackup(tables: TableToExport[], dir: string, options: ExportOptions = {}): Promise<Manifest> {
  const existing = await readdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    throw new InvalidInputError(`--to ${dir}: ${errorMessage(err)}`);
  });
  if (existing && existing.length > 0) throw new InvalidInputError(`--to ${dir}: the directory is not empty`);
  const names = new Set<string>();
  for (const t of tables) {
    if (names.has(t.name)) throw new InvalidInputError(`table ${t.name} is named twice`);
    names.add(t.name);
  }
  const ddls = await Promise.all(tables.map((t) => describeTable(t.parts[0]!.pool, t.parts[0]!, t.name)));
  await mkdir(dir, { recursive: true });
  const written: string[] = [];
  const sinks: ArrowFileSink[] = [];
  try {
    const taken = new Set<string>();
    const work: Array<() => Promise<void>> = [];
    const finishers: Array<() => Promise<ManifestTable>> = [];
    for (const [i, t] of tables.entries()) {
      const ddl = ddls[i]!;
      const file = fileNameFor(t.name, taken);
      const schema = arrowSchema(t.name, ddl.columns);
      const sink = await ArrowFileSink.create(path.join(dir, file), schema);
      written.push(file);
      sinks.push(sink);
      const kinds = ddl.columns.map((c) => c.arrow);
      const stats = new Map<number, KeyStatsCollector>();
      ddl.columns.forEach((c, index) => {
        if (KEY_CANDIDATE_KINDS.includes(c.arrow) && (c.arrow !== 'text' || TEXT_KEY_TYPES.includes(c.typname))) stats.set(index, new KeyStatsCollector(c.name, c.arrow));
      });
      const total: { rows: number; sum: bigint; record: bigint | null } = { rows: 0, sum: 0n, record: 0n };
      for (const part of t.parts) work.push(() => exportPart(t.name, part, ddl, sink, () => new BatchAssembler(schema, kinds, options.batchRows), stats, total, options.onProgress));
      finishers.push(async () => {
        const f = await sink.close();
        return {
          name: t.name,
          columns: ddl.columns.map(({ typname: _typname, ...c }) => c),
          primaryKey: ddl.primaryKey,
          indexes: ddl.indexes,
          source: t.source,
          files: [{ path: file, ...f }],
          rows: total.rows,
          checksum: {
            algorithm: DIGEST_ALGORITHM,
            rows: total.rows,
            sum: total.sum.toString(),
            ...(total.record !== null ? { record: { algorithm: RECORD_DIGEST_ALGORITHM, sum: total.record.toString() } } : {}),
          },
          keyStats: [...stats.values()].map((s) => s.result()),
          ...(t.rowHistory ? { rowHistory: t.rowHistory } : {}),
        };
      });
    }
    await runLimited(work, options.jobs ?? 4);
    const manifestTables: ManifestTable[] = [];
    for (const finish of finishers) manifestTables.push(await finish());
    const manifest: Manifest = { format: FORMAT, version: FORMAT_VERSION, createdAt: new Date().toISOString(), settings: CANONICAL_SETTINGS, tables: manifestTables };
    const tmp = path.join(dir, `.${MANIFEST_FILE}.tmp`);
    await writeFile(tmp, `${JSON.stringify(manifest, null, 2)}\n`);
    await rename(tmp, path.join(dir, MANIFEST_FILE));
    return manifest;
  } catch (err) {
    // Only what this run wrote: the directory may have been there, empty, before.
    await Promise.all(sinks.map((s) => s.abort()));
    await Promise.all(written.map((f) => rm(path.join(dir, f), { force: true })));
    throw err;
  }
}
