/**
 * A `pg_dump -Fd` directory backup as a restore source, read through `pg_restore` (the archive's
 * format is pg_dump's own; pg_restore is its reader): `pg_restore -l` lists the tables with data,
 * `--schema-only -t` gives each table's DDL (parsed with PostgreSQL's parser, libpg-query), and
 * `--data-only -t` streams its rows as COPY text, which become Arrow record batches as an export's
 * do. There is no manifest: the row digest (checksum.ts) is computed from the batches as they are
 * read, and the restore checks the shards against that.
 */
import { spawn } from 'node:child_process';
import { access } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { RecordBatch } from 'apache-arrow';
import { loadModule, parseSync } from 'libpg-query';
import { errorMessage } from '../errors.js';
import { addBatchDigest, digestOf, type RowDigest } from './checksum.js';
import type { ManifestColumn, ManifestIndex } from './manifest.js';
import { BackupInvalidError } from './reader.js';
import { kindOf } from './values.js';
import { arrowSchema, BatchAssembler, copyField } from './writer.js';

export class PgRestoreMissingError extends BackupInvalidError {}

export interface DumpedTable {
  schema: string;
  name: string;
  columns: ManifestColumn[];
  primaryKey: string[];
  indexes: ManifestIndex[];
}

/** Runs pg_restore with `args`, its whole stdout as text (for the listing and the DDL: small). */
async function pgRestoreText(bin: string, args: string[]): Promise<string> {
  let out = '';
  for await (const line of pgRestoreLines(bin, args)) out += `${line}\n`;
  return out;
}

/** pg_restore's stdout line by line; a missing binary or a failure is a one-line error. */
async function* pgRestoreLines(bin: string, args: string[]): AsyncGenerator<string> {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; error?: NodeJS.ErrnoException }>((resolve) => {
    child.once('error', (error: NodeJS.ErrnoException) => resolve({ code: null, error }));
    child.once('close', (code) => resolve({ code }));
  });
  let finished = false;
  try {
    for await (const line of createInterface({ input: child.stdout, crlfDelay: Infinity })) yield line;
    finished = true;
  } finally {
    if (!finished) child.kill();
  }
  const { code, error } = await exited;
  if (error?.code === 'ENOENT') {
    throw new PgRestoreMissingError(`${bin} is not installed (or not on PATH): reading a pg_dump directory backup needs pg_restore from the PostgreSQL client tools (e.g. apt-get install postgresql-client), of the pg_dump's version or newer`);
  }
  if (error) throw new BackupInvalidError(`${bin}: ${errorMessage(error)}`, { cause: error });
  if (code !== 0) throw new BackupInvalidError(`${bin} ${args.join(' ')} failed: ${stderr.trim().split('\n').at(-1) ?? `exit ${code}`}`);
}

type Node = Record<string, unknown>;
const str = (n: unknown): string => ((n as { String?: { sval?: string } }).String?.sval ?? '');

function typeText(typeName: Node): { pgType: string; typname: string } {
  const names = (typeName.names as unknown[]).map(str);
  const base = names.at(-1)!;
  const inCatalog = names.length === 1 || names[0] === 'pg_catalog';
  const mods = ((typeName.typmods as unknown[] | undefined) ?? []).map((m) => String((m as { A_Const?: { ival?: { ival?: number } } }).A_Const?.ival?.ival ?? 0));
  const array = (typeName.arrayBounds as unknown[] | undefined)?.length ? '[]' : '';
  const pgType = `${inCatalog ? base : names.join('.')}${mods.length ? `(${mods.join(',')})` : ''}${array}`;
  return { pgType, typname: inCatalog && !array ? base : '' };
}

/** The table's DDL from pg_restore's schema-only script, through PostgreSQL's parser. */
function tableDdl(script: string, schema: string, name: string, where: string): DumpedTable {
  // psql meta-commands in the script (pg_restore 15.14+ writes \restrict and \unrestrict) are not SQL.
  const sql = script.replace(/^\\.*$/gm, '');
  const { stmts } = parseSync(sql) as { stmts: Array<{ stmt: Node; stmt_location?: number; stmt_len?: number }> };
  const isOurs = (rel: unknown) => (rel as { relname?: string; schemaname?: string }).relname === name && ((rel as { schemaname?: string }).schemaname ?? 'public') === schema;
  let columns: ManifestColumn[] | null = null;
  const primaryKey: string[] = [];
  const indexes: ManifestIndex[] = [];
  for (const { stmt, stmt_location: at = 0, stmt_len: len } of stmts) {
    const create = stmt.CreateStmt as Node | undefined;
    if (create && isOurs(create.relation)) {
      columns = [];
      for (const elt of create.tableElts as Node[]) {
        const col = elt.ColumnDef as Node | undefined;
        if (!col) continue;
        const { pgType, typname } = typeText(col.typeName as Node);
        const constraints = ((col.constraints as Node[] | undefined) ?? []).map((c) => (c.Constraint as Node).contype);
        columns.push({ name: col.colname as string, pgType, arrow: kindOf(typname), notNull: constraints.includes('CONSTR_NOTNULL') || constraints.includes('CONSTR_PRIMARY'), default: null });
        if (constraints.includes('CONSTR_PRIMARY')) primaryKey.push(col.colname as string);
      }
    }
    const alter = stmt.AlterTableStmt as Node | undefined;
    if (alter && isOurs(alter.relation)) {
      for (const cmd of alter.cmds as Node[]) {
        const def = ((cmd.AlterTableCmd as Node).def as Node | undefined)?.Constraint as Node | undefined;
        if (def?.contype === 'CONSTR_PRIMARY') primaryKey.push(...(def.keys as unknown[]).map(str));
      }
    }
    const index = stmt.IndexStmt as Node | undefined;
    if (index && isOurs(index.relation)) {
      const text = sql.slice(at, len === undefined ? undefined : at + len);
      const using = / USING (.*?);?\s*$/s.exec(text);
      if (using) indexes.push({ name: index.idxname as string, unique: index.unique === true, definition: `using ${using[1]!.trim()}` });
    }
  }
  if (!columns) throw new BackupInvalidError(`${where}: the archive has no CREATE TABLE for ${schema}.${name}`);
  return { schema, name, columns, primaryKey, indexes };
}

let parserLoaded: Promise<void> | undefined;

/** Tables of a `pg_dump -Fd` directory that have data, with their DDL. */
export class PgDumpBackup {
  private constructor(
    readonly dir: string,
    readonly tables: DumpedTable[],
    private readonly bin: string,
  ) {}

  static async open(dir: string, options: { pgRestore?: string } = {}): Promise<PgDumpBackup> {
    const bin = options.pgRestore ?? 'pg_restore';
    try {
      await access(path.join(dir, 'toc.dat'));
    } catch {
      throw new BackupInvalidError(`${dir}: not a pg_dump directory-format backup (no toc.dat)`);
    }
    await (parserLoaded ??= loadModule());
    const listing = await pgRestoreText(bin, ['-l', dir]);
    // "3345; 0 16385 TABLE DATA public items postgres"
    const withData = [...listing.matchAll(/^\d+; \d+ \d+ TABLE DATA (\S+) (\S+) /gm)].map((m) => ({ schema: m[1]!, name: m[2]! }));
    if (withData.length === 0) throw new BackupInvalidError(`${dir}: the archive has no table data`);
    // The whole schema: pg_restore -t would leave out the table's indexes and constraints.
    const sql = await pgRestoreText(bin, ['-f', '-', '--schema-only', dir]);
    const tables = withData.map((t) => tableDdl(sql, t.schema, t.name, dir));
    return new PgDumpBackup(dir, tables, bin);
  }

  table(name: string): DumpedTable {
    const t = this.tables.find((x) => x.name === name || `${x.schema}.${x.name}` === name);
    if (!t) throw new BackupInvalidError(`${this.dir}: no table "${name}" with data in the archive (it has ${this.tables.map((x) => `${x.schema}.${x.name}`).join(', ')})`);
    return t;
  }

  /** The table's rows as record batches, streamed from `pg_restore --data-only`. */
  async *batches(name: string): AsyncGenerator<RecordBatch> {
    const t = this.table(name);
    const kinds = t.columns.map((c) => c.arrow);
    const schema = arrowSchema(t.name, t.columns);
    const assembler = new BatchAssembler(schema, kinds);
    let inData = false;
    let order: number[] | null = null;
    let ended = false;
    let rows = 0;
    let rowError: BackupInvalidError | undefined;
    for await (const line of pgRestoreLines(this.bin, ['-f', '-', '--data-only', '-n', t.schema, '-t', t.name, this.dir])) {
      if (!inData) {
        const copy = /^COPY \S+ \((.*)\) FROM stdin;$/.exec(line);
        if (!copy) continue;
        const named = copy[1]!.split(', ').map((c) => c.replace(/^"(.*)"$/, '$1').replaceAll('""', '"'));
        order = t.columns.map((c) => named.indexOf(c.name));
        if (order.some((i) => i < 0)) throw new BackupInvalidError(`${this.dir}: the data of ${t.schema}.${t.name} has columns ${named.join(', ')}, its DDL ${t.columns.map((c) => c.name).join(', ')}`);
        inData = true;
        continue;
      }
      if (line === '\\.') {
        ended = true;
        inData = false;
        continue;
      }
      if (ended || rowError) continue;
      const fields = line.split('\t').map(copyField);
      let full: boolean;
      try {
        full = assembler.add(order!.map((i) => fields[i] ?? null));
      } catch (err) {
        // Read on: when pg_restore fails (a damaged archive cuts a row short), its error is the one to tell.
        rowError = new BackupInvalidError(`${this.dir}: the data of ${t.schema}.${t.name}, row ${rows + 1}: ${errorMessage(err)}`, { cause: err });
        continue;
      }
      rows++;
      if (full) yield assembler.take();
    }
    if (rowError) throw rowError;
    if (inData) throw new BackupInvalidError(`${this.dir}: the data of ${t.schema}.${t.name} ends without its terminator: truncated`);
    if (assembler.rows > 0) yield assembler.take();
  }

  async digest(name: string): Promise<RowDigest> {
    const kinds = this.table(name).columns.map((c) => c.arrow);
    const acc = { rows: 0, sum: 0n };
    for await (const b of this.batches(name)) addBatchDigest(acc, b, kinds);
    return digestOf(acc);
  }
}
