/**
 * Writing a table's Arrow IPC file: record batches from COPY text, appended to one file by any number
 * of concurrent producers (one per shard), with the file's sha256 taken as the bytes go out. Memory is
 * a batch per producer: each waits until its batch is on disk before reading more of its COPY stream.
 */
import { createHash, type Hash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { AsyncByteQueue, Field, RecordBatch, RecordBatchFileWriter, Schema, Struct, makeData } from 'apache-arrow';
import { arrowTypeOf, ColumnBuilder, type ValueKind } from './values.js';

/** A batch is cut at this many rows or this many bytes of values, whichever comes first. */
export const BATCH_ROWS = 65_536;
export const BATCH_BYTES = 16 * 1024 * 1024;

export function arrowSchema(table: string, columns: ReadonlyArray<{ name: string; pgType: string; arrow: ValueKind }>): Schema {
  const fields = columns.map((c) => new Field(c.name, arrowTypeOf(c.arrow), true, new Map([['pg_type', c.pgType]])));
  return new Schema(fields, new Map([['shardcast_table', table]]));
}

/** The writer's output, caught chunk by chunk instead of queued for a reader. */
class Capture extends AsyncByteQueue {
  chunks: Uint8Array[] = [];
  override write(value: Uint8Array): void {
    this.chunks.push(value);
  }
  take(): Uint8Array[] {
    const out = this.chunks;
    this.chunks = [];
    return out;
  }
}

export interface WrittenFile {
  bytes: number;
  sha256: string;
  rows: number;
  batches: number;
}

export class ArrowFileSink {
  private readonly capture = new Capture();
  private readonly writer = new RecordBatchFileWriter();
  private readonly hash: Hash = createHash('sha256');
  private tail: Promise<void> = Promise.resolve();
  private bytes = 0;
  private rows = 0;
  private batches = 0;

  private constructor(
    private readonly file: FileHandle,
    schema: Schema,
  ) {
    this.writer.reset(this.capture as unknown as AsyncByteQueue<Uint8Array>, schema);
  }

  static async create(path: string, schema: Schema): Promise<ArrowFileSink> {
    return new ArrowFileSink(await open(path, 'wx'), schema);
  }

  /** Appends a batch; resolves once it (and every batch before it) is written to the file. */
  write(batch: RecordBatch): Promise<void> {
    this.writer.write(batch);
    this.rows += batch.numRows;
    this.batches++;
    return this.flush(this.capture.take());
  }

  private flush(chunks: Uint8Array[]): Promise<void> {
    this.tail = this.tail.then(async () => {
      for (const c of chunks) {
        this.hash.update(c);
        let done = 0;
        while (done < c.length) done += (await this.file.write(c, done, c.length - done)).bytesWritten;
        this.bytes += c.length;
      }
    });
    return this.tail;
  }

  /** Writes the footer, syncs and closes the file. */
  async close(): Promise<WrittenFile> {
    this.writer.close();
    await this.flush(this.capture.take());
    await this.file.sync();
    await this.file.close();
    return { bytes: this.bytes, sha256: this.hash.digest('hex'), rows: this.rows, batches: this.batches };
  }

  async abort(): Promise<void> {
    await this.tail.catch(() => undefined);
    await this.file.close().catch(() => undefined);
  }
}

/** Accumulates rows (as PostgreSQL text) into a record batch of the table's schema. */
export class BatchAssembler {
  private builders: ColumnBuilder[];
  private count = 0;

  constructor(
    private readonly schema: Schema,
    private readonly kinds: readonly ValueKind[],
    /** Rows per batch at most (smaller batches: finer units for a restore's fan-out). */
    private readonly batchRows = BATCH_ROWS,
  ) {
    this.builders = kinds.map((k) => new ColumnBuilder(k));
  }

  get rows(): number {
    return this.count;
  }

  /** True once the batch should be cut. */
  add(fields: Array<string | null>): boolean {
    if (fields.length !== this.builders.length) throw new Error(`a row has ${fields.length} fields, the table ${this.builders.length} columns`);
    for (let c = 0; c < fields.length; c++) this.builders[c]!.append(fields[c]!);
    this.count++;
    if (this.count >= this.batchRows) return true;
    if ((this.count & 1023) !== 0) return false;
    let size = 0;
    for (const b of this.builders) size += b.size;
    return size >= BATCH_BYTES;
  }

  take(): RecordBatch {
    const children = this.builders.map((b) => b.finish());
    const batch = new RecordBatch(this.schema, makeData({ type: new Struct(this.schema.fields), length: this.count, nullCount: 0, children }));
    this.builders = this.kinds.map((k) => new ColumnBuilder(k));
    this.count = 0;
    return batch;
  }
}

const ESCAPES: Record<string, string> = { b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v' };

/** A field of COPY's text format: `\N` is NULL, backslash escapes undone. */
export function copyField(raw: string): string | null {
  if (raw === '\\N') return null;
  if (!raw.includes('\\')) return raw;
  return raw.replace(/\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|([\s\S]))/g, (_m, oct: string | undefined, hex: string | undefined, ch: string | undefined) =>
    oct ? String.fromCharCode(parseInt(oct, 8)) : hex ? String.fromCharCode(parseInt(hex, 16)) : (ESCAPES[ch!] ?? ch!),
  );
}

/** Splits COPY text output (chunks of bytes, lines cut anywhere) into rows of fields. */
export class CopyTextParser {
  private rest: Buffer = Buffer.alloc(0);

  *push(chunk: Buffer): Generator<Array<string | null>> {
    const data = this.rest.length ? Buffer.concat([this.rest, chunk]) : chunk;
    const end = data.lastIndexOf(0x0a);
    if (end < 0) {
      this.rest = Buffer.from(data);
      return;
    }
    this.rest = Buffer.from(data.subarray(end + 1));
    const text = data.toString('utf8', 0, end);
    for (const line of text.split('\n')) yield line.split('\t').map(copyField);
  }

  end(): void {
    if (this.rest.length) throw new Error('COPY output ended inside a row');
  }
}
