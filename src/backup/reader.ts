/**
 * Reading a backup directory, from a local path or an `http(s)://` base URL (read-only). `openBackup`
 * reads and checks the manifest and that every file it names is there at its size; `validate` reads
 * every file once (sha256, Arrow magic and footer, schema against the manifest, rows per file), so a
 * restore learns of a truncated, corrupted or mismatched file before it creates anything. Batches are
 * read through Arrow's random-access file reader: a local file handle, or HTTP Range requests — a
 * batch at a time, in bounded memory.
 */
import { createHash } from 'node:crypto';
import { open, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { AsyncRecordBatchFileReader, MessageHeader, MessageReader, RecordBatchReader, Table, tableToIPC, type RecordBatch } from 'apache-arrow';
import { ShardcastError, errorMessage } from '../errors.js';
import { addBatchDigest, digestOf, type RowDigest } from './checksum.js';
import { FORMAT_VERSION, MANIFEST_FILE, manifestSchema, type Manifest, type ManifestFile, type ManifestTable } from './manifest.js';
import { arrowTypeOf } from './values.js';

/** A backup that cannot be restored as it is: names the location, the file and what is wrong. */
export class BackupInvalidError extends ShardcastError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('BACKUP_INVALID', message, options);
  }
}

/** The handle Arrow's AsyncRandomAccessFile reads through (a subset of fs.FileHandle). */
interface RandomAccess {
  fd: number;
  stat(): Promise<{ size: number }>;
  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesRead: number; buffer: Uint8Array }>;
  close(): Promise<void>;
}

const EMPTY_BUFFER = Buffer.alloc(0);
/** Buffers that in-place readers finished with, for the next ones (at most IN_PLACE_MAX, of at most IN_PLACE_BYTES). */
const inPlaceBuffers: Buffer[] = [];
const IN_PLACE_MAX = 4;
const IN_PLACE_BYTES = 32 << 20;

type Footer = NonNullable<AsyncRecordBatchFileReader['footer']>;

/**
 * The footer of each file an in-place reader opened, with its schema as a stream's first message,
 * by location and sha256 (the manifest's): a restore's units of one file read them once, not once a
 * unit. Null for a file read the ordinary way (dictionaries). At most LAYOUTS_MAX files, the oldest
 * forgotten first.
 */
const layouts = new Map<string, { footer: Footer; schema: Uint8Array } | null>();
const LAYOUTS_MAX = 64;

/** Where a backup's files are read from. */
interface Location {
  describe(file: string): string;
  /** The file's bytes, or null when it does not exist. */
  readSmall(file: string): Promise<Buffer | null>;
  /** Its size in bytes, or null when it does not exist. */
  size(file: string): Promise<number | null>;
  /** The file's bytes in order; a chunk is valid only until the next is asked for (a local file's are read into one buffer). */
  stream(file: string): AsyncIterable<Uint8Array>;
  randomAccess(file: string, size: number): Promise<RandomAccess>;
}

/**
 * A local file's bytes, 4 MB at a time into one buffer (valid until the next chunk): the check of a
 * backup hashes every byte, and a read stream's 64 KB chunks, each new memory, took it three
 * times as long (1 s for the restore bench's 377 MB, against 0.35 s).
 */
async function* readChunks(file: string): AsyncGenerator<Uint8Array> {
  const handle = await open(file);
  try {
    const buf = Buffer.allocUnsafe(4 << 20);
    for (let position = 0; ; ) {
      const { bytesRead } = await handle.read(buf, 0, buf.length, position);
      if (bytesRead === 0) return;
      position += bytesRead;
      yield buf.subarray(0, bytesRead);
    }
  } finally {
    await handle.close();
  }
}

function localLocation(dir: string): Location {
  const at = (file: string) => path.join(dir, file);
  const missing = (err: unknown) => {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  };
  return {
    describe: at,
    readSmall: (file) => readFile(at(file)).catch(missing),
    size: (file) => stat(at(file)).then((s) => s.size, missing),
    stream: (file) => readChunks(at(file)),
    randomAccess: async (file) => (await open(at(file))) as unknown as RandomAccess,
  };
}

function httpLocation(base: string): Location {
  const url = (file: string) => new URL(file, base.endsWith('/') ? base : `${base}/`).toString();
  const get = async (file: string, headers: Record<string, string> = {}, method = 'GET') => {
    try {
      return await fetch(url(file), { headers, method });
    } catch (err) {
      throw new BackupInvalidError(`${url(file)}: cannot fetch: ${errorMessage((err as { cause?: unknown }).cause ?? err)}`, { cause: err });
    }
  };
  return {
    describe: url,
    async readSmall(file) {
      const res = await get(file);
      if (res.status === 404) return null;
      if (!res.ok) throw new BackupInvalidError(`${url(file)}: HTTP ${res.status}`);
      return Buffer.from(await res.arrayBuffer());
    },
    async size(file) {
      const res = await get(file, {}, 'HEAD');
      if (res.status === 404) return null;
      const length = res.headers.get('content-length');
      if (!res.ok || length === null) throw new BackupInvalidError(`${url(file)}: HTTP ${res.status}${length === null ? ', no Content-Length' : ''}`);
      return Number(length);
    },
    async *stream(file) {
      const res = await get(file);
      if (!res.ok || !res.body) throw new BackupInvalidError(`${url(file)}: HTTP ${res.status}`);
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) yield chunk;
    },
    async randomAccess(file, size) {
      return {
        fd: -1,
        stat: async () => ({ size }),
        async read(buffer, offset, length, position) {
          if (length <= 0) return { bytesRead: 0, buffer };
          const res = await get(file, { range: `bytes=${position}-${position + length - 1}` });
          if (res.status !== 206) {
            await res.body?.cancel();
            throw new BackupInvalidError(`${url(file)}: the server answered a Range request with HTTP ${res.status}; reading an Arrow file over HTTP needs Range support`);
          }
          const bytes = new Uint8Array(await res.arrayBuffer());
          buffer.set(bytes.subarray(0, length), offset);
          return { bytesRead: Math.min(length, bytes.length), buffer };
        },
        close: async () => undefined,
      };
    },
  };
}

/** A zod issue path as `tables[0].files[1].sha256`. */
function fieldPath(p: ReadonlyArray<PropertyKey>): string {
  return p.map((k, i) => (typeof k === 'number' ? `[${k}]` : `${i ? '.' : ''}${String(k)}`)).join('') || '(top level)';
}

function checkConsistency(manifest: Manifest, where: string): void {
  const fail = (field: string, what: string) => {
    throw new BackupInvalidError(`${where}: ${field}: ${what}`);
  };
  const paths = new Set<string>();
  const names = new Set<string>();
  manifest.tables.forEach((t, i) => {
    const at = `tables[${i}] (${t.name})`;
    if (names.has(t.name)) fail(`${at}.name`, 'the table is listed twice');
    names.add(t.name);
    const columns = new Set(t.columns.map((c) => c.name));
    if (columns.size !== t.columns.length) fail(`${at}.columns`, 'a column is listed twice');
    for (const k of t.primaryKey) if (!columns.has(k)) fail(`${at}.primaryKey`, `"${k}" is not a column`);
    for (const s of t.keyStats) if (!columns.has(s.column)) fail(`${at}.keyStats`, `"${s.column}" is not a column`);
    const fileRows = t.files.reduce((a, f) => a + f.rows, 0);
    if (fileRows !== t.rows) fail(`${at}.rows`, `${t.rows}, but its files hold ${fileRows}`);
    if (t.checksum.rows !== t.rows) fail(`${at}.checksum.rows`, `${t.checksum.rows}, but the table has ${t.rows}`);
    t.files.forEach((f, j) => {
      if (paths.has(f.path)) fail(`${at}.files[${j}].path`, `${f.path} is named twice`);
      paths.add(f.path);
      if (f.path === MANIFEST_FILE) fail(`${at}.files[${j}].path`, 'the manifest is no data file');
    });
  });
}

const MAGIC = Buffer.from('ARROW1');

export class Backup {
  private constructor(
    readonly location: string,
    readonly manifest: Manifest,
    private readonly files: Location,
  ) {}

  /** Reads and checks the manifest, and that every file it names exists with its size. Changes nothing. */
  static async open(location: string): Promise<Backup> {
    const files = /^https?:\/\//i.test(location) ? httpLocation(location) : localLocation(location);
    const where = files.describe(MANIFEST_FILE);
    const raw = await files.readSmall(MANIFEST_FILE).catch((err: unknown) => {
      if (err instanceof BackupInvalidError) throw err;
      throw new BackupInvalidError(`${where}: cannot read: ${errorMessage(err)}`, { cause: err });
    });
    if (raw === null) throw new BackupInvalidError(`${where}: missing; ${location} is not a Shardcast backup (or its export did not finish)`);
    let json: unknown;
    try {
      json = JSON.parse(raw.toString('utf8'));
    } catch (err) {
      throw new BackupInvalidError(`${where}: not valid JSON: ${errorMessage(err)}`, { cause: err });
    }
    const version = (json as { version?: unknown } | null)?.version;
    if (typeof version === 'number' && version > FORMAT_VERSION) throw new BackupInvalidError(`${where}: format version ${version} is newer than this Shardcast reads (${FORMAT_VERSION})`);
    const parsed = manifestSchema.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new BackupInvalidError(`${where}: ${fieldPath(issue.path)}: ${issue.message}`);
    }
    checkConsistency(parsed.data, where);
    for (const t of parsed.data.tables) {
      for (const f of t.files) {
        const size = await files.size(f.path);
        if (size === null) throw new BackupInvalidError(`${files.describe(f.path)}: missing (table ${t.name} in the manifest)`);
        if (size !== f.bytes) throw new BackupInvalidError(`${files.describe(f.path)}: ${size} bytes, the manifest says ${f.bytes}${size < f.bytes ? ': truncated' : ''}`);
      }
    }
    return new Backup(location, parsed.data, files);
  }

  table(name: string): ManifestTable {
    const t = this.manifest.tables.find((x) => x.name === name);
    if (!t) throw new BackupInvalidError(`${this.location}: no table "${name}" in the backup (it has ${this.manifest.tables.map((x) => x.name).join(', ')})`);
    return t;
  }

  /** The Arrow reader of one file, its schema checked against the manifest. */
  private async reader(table: ManifestTable, file: ManifestFile): Promise<AsyncRecordBatchFileReader> {
    const where = this.files.describe(file.path);
    const handle = await this.files.randomAccess(file.path, file.bytes);
    let reader;
    try {
      reader = await RecordBatchReader.from(handle as unknown as import('node:fs/promises').FileHandle);
      await reader.open();
    } catch (err) {
      await handle.close();
      if (err instanceof BackupInvalidError) throw err;
      throw new BackupInvalidError(`${where}: not a readable Arrow IPC file: ${errorMessage(err)}`, { cause: err });
    }
    if (!(reader instanceof AsyncRecordBatchFileReader)) {
      await reader.cancel();
      throw new BackupInvalidError(`${where}: not an Arrow IPC file (no ARROW1 magic)`);
    }
    const fields = reader.schema.fields;
    const mismatch = (what: string) => new BackupInvalidError(`${where}: ${what} (table ${table.name})`);
    if (fields.length !== table.columns.length) {
      await reader.cancel();
      throw mismatch(`${fields.length} columns in the file, ${table.columns.length} in the manifest`);
    }
    for (const [i, c] of table.columns.entries()) {
      const f = fields[i]!;
      const expected = arrowTypeOf(c.arrow);
      if (f.name !== c.name || String(f.type) !== String(expected)) {
        await reader.cancel();
        throw mismatch(`column ${i + 1} is ${f.name} ${String(f.type)} in the file, ${c.name} ${String(expected)} in the manifest`);
      }
    }
    return reader;
  }

  /**
   * Reads every file once: size, sha256, the Arrow magic and footer, the schema and the row count
   * against the manifest (`decode: false`: the batch count from the footer instead of decoding every batch). With `digest`, also each table's row digest from its batches, against the
   * manifest's checksum. Throws BackupInvalidError naming the first file that does not hold.
   */
  async validate(options: { digest?: boolean; decode?: boolean } = {}): Promise<void> {
    for (const table of this.manifest.tables) {
      const acc = { rows: 0, sum: 0n };
      for (const file of table.files) {
        const where = this.files.describe(file.path);
        const hash = createHash('sha256');
        let size = 0;
        let head: Buffer | null = null;
        let tail = Buffer.alloc(0);
        for await (const chunk of this.files.stream(file.path)) {
          hash.update(chunk);
          size += chunk.length;
          if (!head) head = Buffer.from(chunk.subarray(0, 6));
          tail = Buffer.concat([tail, Buffer.from(chunk.subarray(Math.max(0, chunk.length - 6)))]).subarray(-6);
        }
        if (size !== file.bytes) throw new BackupInvalidError(`${where}: ${size} bytes, the manifest says ${file.bytes}${size < file.bytes ? ': truncated' : ''}`);
        if (!head || !head.equals(MAGIC)) throw new BackupInvalidError(`${where}: not an Arrow IPC file (no ARROW1 magic at the start)`);
        if (!tail.equals(MAGIC)) throw new BackupInvalidError(`${where}: no ARROW1 magic at the end: truncated or corrupted`);
        const sha = hash.digest('hex');
        if (sha !== file.sha256) throw new BackupInvalidError(`${where}: checksum mismatch: sha256 ${sha}, the manifest says ${file.sha256}: the file is corrupted or was changed`);
        if (options.decode === false && !options.digest) {
          // The bytes are the manifest's (sha256): the footer's schema and batch count are enough; rows are counted by whoever reads them.
          const reader = await this.reader(table, file);
          const count = reader.numRecordBatches;
          await reader.cancel().catch(() => undefined);
          if (count !== file.batches) throw new BackupInvalidError(`${where}: ${count} record batches, the manifest says ${file.batches}`);
          continue;
        }
        let rows = 0;
        let batches = 0;
        for await (const batch of this.fileBatches(table, file)) {
          rows += batch.numRows;
          batches++;
          if (options.digest) addBatchDigest(acc, batch, table.columns.map((c) => c.arrow));
        }
        if (rows !== file.rows || batches !== file.batches) throw new BackupInvalidError(`${where}: ${rows} rows in ${batches} batches, the manifest says ${file.rows} in ${file.batches}`);
      }
      if (options.digest && digestOf(acc).sum !== table.checksum.sum) {
        throw new BackupInvalidError(`${this.location}: table ${table.name}: the rows' checksum is ${digestOf(acc).sum}, the manifest says ${table.checksum.sum}`);
      }
    }
  }

  private async *fileBatches(table: ManifestTable, file: ManifestFile, from = 0, to = Infinity): AsyncGenerator<RecordBatch> {
    const reader = await this.reader(table, file);
    try {
      const end = Math.min(to, reader.numRecordBatches);
      for (let i = from; i < end; i++) {
        let batch: RecordBatch | null;
        try {
          batch = await reader.readRecordBatch(i);
        } catch (err) {
          throw new BackupInvalidError(`${this.files.describe(file.path)}: record batch ${i} cannot be read: ${errorMessage(err)}`, { cause: err });
        }
        if (!batch) throw new BackupInvalidError(`${this.files.describe(file.path)}: record batch ${i} is missing`);
        yield batch;
      }
    } finally {
      await reader.cancel().catch(() => undefined);
    }
  }

  /**
   * Batches [from, to) of a file read in place: each into the same buffer, which the next batch is
   * read into again, and decoded there without a copy (Arrow's stream reader over the file's schema
   * and the batch's message). A batch's columns view that memory: they are valid only until the
   * next batch is asked for. A restore's import reads a batch, encodes every row and only then asks
   * for the next; reading each batch into new memory instead (5 MB a batch of the restore bench)
   * had the worker's garbage collector run a full collection every few batches.
   */
  private async *fileBatchesInPlace(table: ManifestTable, file: ManifestFile, from: number, to: number): AsyncGenerator<RecordBatch> {
    const where = this.files.describe(file.path);
    const key = `${where}\n${file.sha256}`;
    let layout = layouts.get(key);
    if (layout === undefined) {
      const reader = await this.reader(table, file);
      const footer = reader.footer;
      // Not written by Shardcast (dictionaries): read the ordinary way.
      if (!footer || footer.numDictionaries > 0) layout = null;
      else {
        // The schema as a stream's first message (tableToIPC's bytes without the end-of-stream marker).
        const ipc = tableToIPC(new Table(reader.schema), 'stream');
        layout = { footer, schema: ipc.subarray(0, ipc.length - 8) };
      }
      await reader.cancel().catch(() => undefined);
      if (layouts.size >= LAYOUTS_MAX) layouts.delete(layouts.keys().next().value!);
      layouts.set(key, layout);
    }
    if (layout === null) {
      yield* this.fileBatches(table, file, from, to);
      return;
    }
    const { footer, schema } = layout;
    const handle = await this.files.randomAccess(file.path, file.bytes);
    let buf = inPlaceBuffers.pop() ?? EMPTY_BUFFER;
    try {
      const end = Math.min(to, footer.numRecordBatches);
      for (let i = from; i < end; i++) {
        const block = footer.getRecordBatch(i);
        if (!block) throw new BackupInvalidError(`${where}: record batch ${i} is missing`);
        const length = block.metaDataLength + Number(block.bodyLength);
        const at = Number(block.offset);
        if (at < 0 || at + length > file.bytes) throw new BackupInvalidError(`${where}: record batch ${i} lies outside the file (bytes ${at}-${at + length} of ${file.bytes})`);
        const total = schema.length + length;
        if (buf.length < total) buf = Buffer.allocUnsafe(Math.max(total, Math.ceil(buf.length * 1.5)));
        buf.set(schema, 0);
        for (let done = 0; done < length; ) {
          const { bytesRead } = await handle.read(buf, schema.length + done, length - done, at + done);
          if (bytesRead <= 0) throw new BackupInvalidError(`${where}: record batch ${i}: the file ends early: truncated`);
          done += bytesRead;
        }
        let batch: RecordBatch | undefined;
        let rows = -1;
        try {
          // The block must hold a record batch message of its body's length (Arrow's stream reader would
          // take anything else for the end of the stream, and give an empty batch).
          const message = new MessageReader(buf.subarray(schema.length, total)).readMessage(MessageHeader.RecordBatch);
          if (!message || message.bodyLength !== Number(block.bodyLength)) throw new Error(`not a record batch of ${Number(block.bodyLength)} bytes`);
          rows = (message.header() as { length: number }).length;
          const stream = RecordBatchReader.from(buf.subarray(0, total));
          stream.open();
          const next = stream.next();
          batch = next.done ? undefined : next.value;
        } catch (err) {
          throw new BackupInvalidError(`${where}: record batch ${i} cannot be read: ${errorMessage(err)}`, { cause: err });
        }
        if (!batch || batch.numRows !== Number(rows)) throw new BackupInvalidError(`${where}: record batch ${i} cannot be read: ${batch ? `${batch.numRows} rows, its header says ${rows}` : 'missing'}`);
        yield batch;
      }
    } finally {
      await handle.close().catch(() => undefined);
      if (buf.length > 0 && buf.length <= IN_PLACE_BYTES && inPlaceBuffers.length < IN_PLACE_MAX) inPlaceBuffers.push(buf);
    }
  }

  /**
   * The record batches of a table, file by file (`from`/`to`: a range of batch indexes within one
   * file, for a fan-out). `inPlace`: each batch read into the memory of the one before (see
   * fileBatchesInPlace): only for a reader done with a batch before it asks for the next.
   */
  async *batches(name: string, range?: { file: number; from: number; to: number }, options: { inPlace?: boolean } = {}): AsyncGenerator<RecordBatch> {
    const table = this.table(name);
    const read = (file: ManifestFile, from = 0, to = Infinity) => (options.inPlace ? this.fileBatchesInPlace(table, file, from, to) : this.fileBatches(table, file, from, to));
    if (range) {
      const file = table.files[range.file];
      if (!file) throw new BackupInvalidError(`${this.location}: table ${name} has no file #${range.file}`);
      yield* read(file, range.from, range.to);
      return;
    }
    for (const file of table.files) yield* read(file);
  }

  /** The row digest of a table as read from its batches (what a restore compares the shards' sum with). */
  async digest(name: string): Promise<RowDigest> {
    const table = this.table(name);
    const acc = { rows: 0, sum: 0n };
    for await (const batch of this.batches(name)) addBatchDigest(acc, batch, table.columns.map((c) => c.arrow));
    return digestOf(acc);
  }
}

export const openBackup = (location: string): Promise<Backup> => Backup.open(location);
