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
const INT64_MAX = 9223372036854775807n;
const INT64_MIN = -9223372036854775808n;

/** A growing byte buffer of COPY text. */
export class CopyBuffer {
  buf = Buffer.allocUnsafe(1 << 16);
  length = 0;

  ensure(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.length + n));
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

  /** A non-negative integer below 2^53, in decimal. */
  digits(v: number): void {
    if (v < 10) {
      this.byte(48 + v);
      return;
    }
    this.ascii(String(v));
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

  /** The bytes so far, handed over; the buffer starts again empty. */
  take(): Buffer {
    const out = this.buf.subarray(0, this.length);
    this.buf = Buffer.allocUnsafe(Math.max(1 << 16, this.length));
    this.length = 0;
    return out;
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
  const offset = data.offset;
  const nulls = data.nullCount > 0 && data.nullBitmap && data.nullBitmap.length > 0 ? data.nullBitmap : null;
  const value = valueWriter(kind, data);
  if (!nulls) return (out, i) => value(out, offset + i);
  return (out, i) => {
    const at = offset + i;
    if (!(nulls[at >> 3]! & (1 << (at & 7)))) {
      out.byte(BACKSLASH);
      out.byte(78); // N
      return;
    }
    value(out, at);
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
      return (out, at) => {
        const v = values[at]!;
        if (v >= -9007199254740991n && v <= 9007199254740991n) {
          const n = Number(v);
          if (n < 0) {
            out.byte(45);
            out.digits(-n);
          } else out.digits(n);
        } else out.ascii(v.toString());
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
      return (out, at) => out.byte(values[at >> 3]! & (1 << (at & 7)) ? 116 : 102);
    }
    case 'date': {
      const values = data.values as Int32Array;
      return (out, at) => out.ascii(dateText(values[at]!));
    }
    case 'timestamp':
    case 'timestamptz': {
      const values = data.values as BigInt64Array;
      const zone = kind === 'timestamptz';
      return (out, at) => {
        const raw = values[at]!;
        const date = raw === INT64_MAX || raw === INT64_MIN ? null : dateText(Math.floor(Number(raw) / MICROS_PER_DAY));
        if (date === null || date.length !== 10 || raw > 9007199254740991n || raw < -9007199254740991n) {
          out.ascii(formatTimestamp(raw, zone)); // infinities, BC, years past 9999: the general form
          return;
        }
        const v = Number(raw);
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
