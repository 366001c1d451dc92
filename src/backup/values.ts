/**
 * PostgreSQL values as a backup holds them: how a column's type maps to an Arrow type, how a value's
 * PostgreSQL text output (as COPY … TO STDOUT sends it) becomes the Arrow value, and how an Arrow
 * value becomes that text again — the *canonical text*, PostgreSQL's output under the settings of
 * CANONICAL_SETTINGS. The restore writes the canonical text back with COPY, and the row checksum
 * (checksum.ts) hashes it, so one formatter serves both and a backup whose Arrow values do not give
 * back PostgreSQL's text fails at export, not at restore.
 */
import {
  Binary,
  Bool,
  DateDay,
  FixedSizeBinary,
  Float32,
  Float64,
  Int16,
  Int32,
  Int64,
  TimeUnit,
  Timestamp,
  Utf8,
  makeData,
  type Data,
  type DataType,
} from 'apache-arrow';
import { formatDate, formatTimestamp, parseDate, parseTimestamp, ValueError } from '../sql/datetime.js';

export { formatDate, formatTimestamp, parseDate, parseTimestamp, ValueError };

/** How a column is stored in Arrow. Every PostgreSQL type not listed maps to `text` (its text output, the type recorded). */
export const VALUE_KINDS = ['int16', 'int32', 'int64', 'float32', 'float64', 'bool', 'text', 'binary', 'uuid', 'date', 'timestamp', 'timestamptz'] as const;
export type ValueKind = (typeof VALUE_KINDS)[number];

/** The session settings under which PostgreSQL's text output is the canonical text. */
export const CANONICAL_SETTINGS: Record<string, string> = {
  DateStyle: 'ISO, YMD',
  TimeZone: 'UTC',
  IntervalStyle: 'postgres',
  extra_float_digits: '1',
  bytea_output: 'hex',
  client_encoding: 'UTF8',
};

/** `set local` statements for CANONICAL_SETTINGS (inside a transaction). */
export function canonicalSettingsSql(): string[] {
  return Object.entries(CANONICAL_SETTINGS).map(([k, v]) => `set local ${k} = '${v}'`);
}

const KIND_OF_TYPE: Record<string, ValueKind> = {
  int2: 'int16',
  int4: 'int32',
  int8: 'int64',
  float4: 'float32',
  float8: 'float64',
  bool: 'bool',
  bytea: 'binary',
  uuid: 'uuid',
  date: 'date',
  timestamp: 'timestamp',
  timestamptz: 'timestamptz',
};

/**
 * The Arrow storage of a column of PostgreSQL type `typname` (pg_type.typname; '' for a type outside
 * pg_catalog). text, varchar, numeric (exact, as text), json, jsonb, domains, enums, arrays and the rest: text.
 */
export function kindOf(typname: string): ValueKind {
  return Object.hasOwn(KIND_OF_TYPE, typname) ? KIND_OF_TYPE[typname]! : 'text';
}

export function arrowTypeOf(kind: ValueKind): DataType {
  switch (kind) {
    case 'int16':
      return new Int16();
    case 'int32':
      return new Int32();
    case 'int64':
      return new Int64();
    case 'float32':
      return new Float32();
    case 'float64':
      return new Float64();
    case 'bool':
      return new Bool();
    case 'text':
      return new Utf8();
    case 'binary':
      return new Binary();
    case 'uuid':
      return new FixedSizeBinary(16);
    case 'date':
      return new DateDay();
    case 'timestamp':
      return new Timestamp(TimeUnit.MICROSECOND, null);
    case 'timestamptz':
      return new Timestamp(TimeUnit.MICROSECOND, 'UTC');
  }
}


// ---------------------------------------------------------------- dates and times: src/sql/datetime.ts

// ---------------------------------------------------------------- floats

/** PostgreSQL's shortest-exact float output (extra_float_digits > 0) from the digits and exponent of `v.toExponential()`. */
function shortestFloat(exponential: string, fixedBelow: number): string {
  const m = /^(-?)(\d)(?:\.(\d+))?e([+-]\d+)$/.exec(exponential)!;
  const sign = m[1]!;
  const digits = m[2]! + (m[3] ?? '');
  const exp = Number(m[4]);
  if (exp >= -4 && exp < fixedBelow) {
    if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
    const whole = digits.slice(0, exp + 1).padEnd(exp + 1, '0');
    const frac = digits.slice(exp + 1);
    return `${sign}${whole}${frac ? `.${frac}` : ''}`;
  }
  const e = Math.abs(exp);
  return `${sign}${digits[0]}${digits.length > 1 ? `.${digits.slice(1)}` : ''}e${exp < 0 ? '-' : '+'}${e < 10 ? `0${e}` : e}`;
}

function specialFloat(v: number): string | undefined {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return 'Infinity';
  if (v === -Infinity) return '-Infinity';
  if (v === 0) return Object.is(v, -0) ? '-0' : '0';
  return undefined;
}

const f64 = new Float64Array(1);
const w64 = new Uint32Array(f64.buffer);
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** |v| as m × 2^q exactly (m only when asked: a bigint), and whether m is the smallest mantissa of a normal binade. */
function binary(v: number, single: boolean): { m: () => bigint; q: number; binadeStart: boolean } {
  if (single) {
    f32[0] = v;
    const bits = u32[0]! & 0x7fffffff;
    const e = bits >>> 23;
    const frac = bits & 0x7fffff;
    return e === 0 ? { m: () => BigInt(frac), q: -149, binadeStart: false } : { m: () => BigInt(frac | 0x800000), q: e - 150, binadeStart: frac === 0 && e > 1 };
  }
  f64[0] = v;
  const lo = w64[0]!;
  const hi = w64[1]! & 0x7fffffff;
  const e = hi >>> 20;
  const fracHi = hi & 0xfffff;
  const frac = () => (BigInt(fracHi) << 32n) | BigInt(lo);
  return e === 0 ? { m: frac, q: -1074, binadeStart: false } : { m: () => frac() | 0x10000000000000n, q: e - 1075, binadeStart: fracHi === 0 && lo === 0 && e > 1 };
}

/** a × 2^p2 × 10^p10 == b × 2^r2 × 10^r10, exactly. */
function sameValue(a: bigint, p2: number, p10: number, b: bigint, r2: number, r10: number): boolean {
  const lo2 = Math.min(p2, r2);
  const lo10 = Math.min(p10, r10);
  return a * 2n ** BigInt(p2 - lo2) * 10n ** BigInt(p10 - lo10) === b * 2n ** BigInt(r2 - lo2) * 10n ** BigInt(r10 - lo10);
}

/**
 * Whether the decimal `digits` × 10^exp lies exactly halfway between v and a neighbour. PostgreSQL's
 * Ryū never prints such a value (it does not accept the interval's bounds) where JavaScript may.
 */
function onBoundary(v: number, single: boolean, digits: string, exp: number): boolean {
  const { m: mantissa, q, binadeStart } = binary(v, single);
  const d = digits.replace(/0+$/, '') || '0';
  const e10 = exp - (d.length - 1);
  // A bound, odd × 2^(q-1) (or 2^(q-2) below a binade's first value), has exactly that many decimals when the power is negative.
  const decimals = Math.max(0, -e10);
  const upDecimals = Math.max(0, 1 - q);
  const downDecimals = Math.max(0, (binadeStart ? 2 : 1) - q);
  if (decimals !== upDecimals && decimals !== downDecimals) return false;
  const n = BigInt(d);
  const m = mantissa();
  if (decimals === upDecimals && sameValue(n, 0, e10, 2n * m + 1n, q - 1, 0)) return true;
  if (decimals !== downDecimals) return false;
  return binadeStart ? sameValue(n, 0, e10, 4n * m - 1n, q - 2, 0) : sameValue(n, 0, e10, 2n * m - 1n, q - 1, 0);
}

/** v to p significant digits, ties to even (JavaScript rounds them away from zero): [digits, exponent]. */
function roundHalfEven(v: number, p: number): [string, number] {
  const [digits, exp] = splitExponential(v.toExponential(p - 1));
  const longer = v.toExponential(Math.min(100, p + 30));
  const tail = splitExponential(longer)[0].slice(p);
  if (/^50*$/.test(tail) && splitExponential(longer)[1] === exp) {
    const truncated = splitExponential(longer)[0].slice(0, p);
    if (Number(truncated.at(-1)) % 2 === 0) return [truncated, exp];
  }
  return [digits, exp];
}

function splitExponential(s: string): [string, number] {
  const m = /^-?(\d)(?:\.(\d+))?e([+-]\d+)$/.exec(s)!;
  return [m[1]! + (m[2] ?? ''), Number(m[3])];
}

function scientific(sign: string, digits: string, exp: number): string {
  const d = digits.replace(/0+$/, '') || '0';
  return `${sign}${d[0]}${d.length > 1 ? `.${d.slice(1)}` : ''}e${exp < 0 ? '-' : '+'}${Math.abs(exp)}`;
}

function formatShortest(v: number, single: boolean): string {
  const roundTrips = (x: number) => (single ? Math.fround(x) === v : x === v);
  const sign = v < 0 ? '-' : '';
  let start = 1;
  if (!single) {
    // JavaScript's own shortest form is PostgreSQL's unless it sits on an interval bound.
    const [digits, exp] = splitExponential(v.toExponential());
    if (!onBoundary(v, false, digits, exp)) return shortestFloat(scientific(sign, digits, exp), 15);
    start = digits.length + 1;
  }
  for (let p = start; p <= 17; p++) {
    if (!roundTrips(Number(v.toPrecision(p))) && !roundTrips(Number(v.toPrecision(p + 1)))) continue;
    const [digits, exp] = roundHalfEven(v, p);
    const text = scientific(sign, digits, exp);
    if (roundTrips(Number(text)) && !onBoundary(v, single, digits, exp)) return shortestFloat(text, single ? 6 : 15);
  }
  return shortestFloat(v.toExponential(16), single ? 6 : 15);
}

export function formatFloat8(v: number): string {
  return specialFloat(v) ?? formatShortest(v, false);
}

export function formatFloat4(v: number): string {
  return specialFloat(v) ?? formatShortest(v, true);
}

function parseFloatText(text: string): number {
  const v = Number(text);
  if (Number.isNaN(v) && text !== 'NaN') throw new ValueError(`not a number: ${JSON.stringify(text)}`);
  return v;
}

// ---------------------------------------------------------------- uuid and bytea

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

export function formatUuid(bytes: Uint8Array, at: number): string {
  let s = '';
  for (let i = 0; i < 16; i++) {
    if (i === 4 || i === 6 || i === 8 || i === 10) s += '-';
    s += HEX[bytes[at + i]!]!;
  }
  return s;
}

function parseUuidInto(text: string, out: Uint8Array, at: number): void {
  const hex = text.replaceAll('-', '');
  if (!/^[0-9a-f]{32}$/.test(hex)) throw new ValueError(`not a uuid: ${JSON.stringify(text)}`);
  for (let i = 0; i < 16; i++) out[at + i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
}

function parseBytea(text: string): Buffer {
  if (!text.startsWith('\\x') || text.length % 2 !== 0) throw new ValueError('bytea is not in hex output format');
  return Buffer.from(text.slice(2), 'hex');
}

// ---------------------------------------------------------------- column accumulation

const encoder = new TextEncoder();
const decoder = new TextDecoder();

type Fixed = Int16Array | Int32Array | Float32Array | Float64Array | BigInt64Array;

function fixedArray(kind: ValueKind, n: number): Fixed | null {
  switch (kind) {
    case 'int16':
      return new Int16Array(n);
    case 'int32':
    case 'date':
      return new Int32Array(n);
    case 'float32':
      return new Float32Array(n);
    case 'float64':
      return new Float64Array(n);
    case 'int64':
    case 'timestamp':
    case 'timestamptz':
      return new BigInt64Array(n);
    default:
      return null;
  }
}

function grow<T extends Uint8Array | Int32Array | Fixed>(a: T, need: number): T {
  if (need <= a.length) return a;
  const out = new (a.constructor as new (n: number) => T)(Math.max(need, a.length * 2));
  out.set(a as never);
  return out;
}

/** One column of one record batch, in growing typed arrays; `finish` makes the Arrow Data. */
export class ColumnBuilder {
  private length = 0;
  private nulls = 0;
  private valid = new Uint8Array(1024);
  private fixed: Fixed | null;
  private bytes = new Uint8Array(0);
  private used = 0;
  private offsets = new Int32Array(0);

  constructor(readonly kind: ValueKind) {
    this.fixed = fixedArray(kind, 1024);
    if (kind === 'text' || kind === 'binary' || kind === 'uuid') this.bytes = new Uint8Array(1 << 16);
    if (kind === 'text' || kind === 'binary') this.offsets = new Int32Array(1024);
  }

  /** Bytes held so far (for bounding a batch's size). */
  get size(): number {
    return this.used + this.length * 8;
  }

  /** Appends a value from its PostgreSQL text output (null: SQL NULL). */
  append(text: string | null): void {
    const i = this.length++;
    if (i >> 3 >= this.valid.length) this.valid = grow(this.valid, (i >> 3) + 1);
    if (this.fixed && i >= this.fixed.length) this.fixed = grow(this.fixed, i + 1);
    if (text !== null) this.valid[i >> 3]! |= 1 << (i & 7);
    else this.nulls++;
    switch (this.kind) {
      case 'int16':
      case 'int32':
        if (text !== null) (this.fixed as Int32Array)[i] = parseIntText(text);
        return;
      case 'float32':
      case 'float64':
        if (text !== null) (this.fixed as Float64Array)[i] = parseFloatText(text);
        return;
      case 'date':
        if (text !== null) (this.fixed as Int32Array)[i] = parseDate(text);
        return;
      case 'int64':
        if (text !== null) (this.fixed as BigInt64Array)[i] = BigInt(text);
        return;
      case 'timestamp':
      case 'timestamptz':
        if (text !== null) (this.fixed as BigInt64Array)[i] = parseTimestamp(text, this.kind === 'timestamptz');
        return;
      case 'bool':
        if (text === null) return;
        if (text !== 't' && text !== 'f') throw new ValueError(`not a boolean: ${JSON.stringify(text)}`);
        if ((i >> 3) >= this.bytes.length) this.bytes = grow(this.bytes, (i >> 3) + 1);
        if (text === 't') this.bytes[i >> 3]! |= 1 << (i & 7);
        return;
      case 'uuid':
        this.bytes = grow(this.bytes, this.used + 16);
        if (text !== null) parseUuidInto(text, this.bytes, this.used);
        this.used += 16;
        return;
      case 'binary':
        if (text !== null) {
          const b = parseBytea(text);
          this.bytes = grow(this.bytes, this.used + b.length);
          this.bytes.set(b, this.used);
          this.used += b.length;
        }
        this.pushOffset(i);
        return;
      case 'text':
        if (text !== null) {
          this.bytes = grow(this.bytes, this.used + text.length * 3);
          this.used += encoder.encodeInto(text, this.bytes.subarray(this.used)).written;
        }
        this.pushOffset(i);
        return;
    }
  }

  private pushOffset(i: number): void {
    this.offsets = grow(this.offsets, i + 2);
    this.offsets[i + 1] = this.used;
  }

  finish(): Data {
    const length = this.length;
    const nullBitmap = this.nulls ? this.valid.slice(0, (length + 7) >> 3) : undefined;
    const base = { length, nullCount: this.nulls, nullBitmap } as const;
    const fixed = this.fixed?.slice(0, length);
    switch (this.kind) {
      case 'int16':
        return makeData({ ...base, type: new Int16(), data: fixed as Int16Array });
      case 'int32':
        return makeData({ ...base, type: new Int32(), data: fixed as Int32Array });
      case 'date':
        return makeData({ ...base, type: new DateDay(), data: fixed as Int32Array });
      case 'float32':
        return makeData({ ...base, type: new Float32(), data: fixed as Float32Array });
      case 'float64':
        return makeData({ ...base, type: new Float64(), data: fixed as Float64Array });
      case 'int64':
        return makeData({ ...base, type: new Int64(), data: fixed as BigInt64Array });
      case 'timestamp':
      case 'timestamptz':
        return makeData({ ...base, type: arrowTypeOf(this.kind) as Timestamp, data: fixed as BigInt64Array });
      case 'bool':
        return makeData({ ...base, type: new Bool(), data: grow(this.bytes, (length + 7) >> 3).slice(0, (length + 7) >> 3) });
      case 'uuid':
        return makeData({ ...base, type: new FixedSizeBinary(16), data: this.bytes.slice(0, this.used) });
      case 'binary':
        return makeData({ ...base, type: new Binary(), data: this.bytes.slice(0, this.used), valueOffsets: grow(this.offsets, length + 1).slice(0, length + 1) });
      case 'text':
        return makeData({ ...base, type: new Utf8(), data: this.bytes.slice(0, this.used), valueOffsets: grow(this.offsets, length + 1).slice(0, length + 1) });
    }
  }
}

function parseIntText(text: string): number {
  const v = Number(text);
  if (!Number.isInteger(v)) throw new ValueError(`not an integer: ${JSON.stringify(text)}`);
  return v;
}

// ---------------------------------------------------------------- Arrow value → canonical text

/** The canonical text of row `i` of a column's Arrow data (null for SQL NULL). */
export function canonicalText(kind: ValueKind, data: Data, i: number): string | null {
  // Arrow JS slices the value and offset buffers of a sliced Data, but not its validity bitmap nor a
  // bool's bits: those are read at offset + i, everything else at i.
  const bit = data.offset + i;
  if (data.nullCount > 0 && data.nullBitmap && data.nullBitmap.length > 0 && !(data.nullBitmap[bit >> 3]! & (1 << (bit & 7)))) return null;
  const at = i;
  const values = data.values as ArrayLike<number | bigint> & Uint8Array;
  switch (kind) {
    case 'int16':
    case 'int32':
    case 'int64':
      return String(values[at]);
    case 'float64':
      return formatFloat8(values[at] as number);
    case 'float32':
      return formatFloat4(values[at] as number);
    case 'bool':
      return values[bit >> 3]! & (1 << (bit & 7)) ? 't' : 'f';
    case 'date':
      return formatDate(values[at] as number);
    case 'timestamp':
    case 'timestamptz':
      return formatTimestamp((data.values as BigInt64Array)[at]!, kind === 'timestamptz');
    case 'uuid':
      return formatUuid(values, at * 16);
    case 'binary': {
      const o = data.valueOffsets as Int32Array;
      return `\\x${Buffer.from(values.buffer, values.byteOffset + o[at]!, o[at + 1]! - o[at]!).toString('hex')}`;
    }
    case 'text': {
      const o = data.valueOffsets as Int32Array;
      return decoder.decode(values.subarray(o[at]!, o[at + 1]!));
    }
  }
}
