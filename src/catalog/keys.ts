import { hashInt4Extended, hashInt8Extended, hashSafeIntegerAsInt8, hashTextExtended, hashUuidExtended } from '../hashing.js';
import { formatDate, formatTimestamp, parseDate, parseTimestamp } from '../sql/datetime.js';

export const KEY_TYPES = ['smallint', 'integer', 'bigint', 'text', 'uuid', 'date', 'timestamp', 'timestamptz'] as const;
export type KeyType = (typeof KEY_TYPES)[number];
export type TimeKeyType = 'date' | 'timestamp' | 'timestamptz';

export function isTimeKey(type: KeyType): type is TimeKeyType {
  return type === 'date' || type === 'timestamp' || type === 'timestamptz';
}

/** The key types, as the error for another type names them. */
export const SUPPORTED_KEY_TYPES = 'smallint, integer, bigint, text, varchar, uuid, date, timestamp, timestamptz';

/** PostgreSQL's format_type() names of the columns that can be shard keys, to our key types. */
export function keyTypeOf(formatType: string): KeyType | undefined {
  if (formatType === 'smallint' || formatType === 'integer' || formatType === 'bigint' || formatType === 'text' || formatType === 'uuid' || formatType === 'date') {
    return formatType;
  }
  if (formatType === 'character varying' || formatType.startsWith('character varying(')) return 'text';
  // Full precision only: a timestamp(p) column rounds what it stores, and a key rounded over a range bound would land in the wrong shard.
  if (formatType === 'timestamp with time zone') return 'timestamptz';
  if (formatType === 'timestamp without time zone') return 'timestamp';
  return undefined;
}

/** The SQL the database itself uses to hash a key of this type (seed 0). */
export function sqlHashFunction(type: KeyType): string {
  switch (type) {
    case 'smallint':
      return 'hashint2extended';
    case 'integer':
      return 'hashint4extended';
    case 'bigint':
      return 'hashint8extended';
    case 'text':
      return 'hashtextextended';
    case 'uuid':
      return 'uuid_hash_extended';
    case 'date':
      return 'hashdateextended';
    case 'timestamp':
      return 'timestamp_hash_extended';
    case 'timestamptz':
      return 'timestamptz_hash_extended';
  }
}

/** 2000-01-01, PostgreSQL's epoch for dates and timestamps, in days and microseconds since 1970-01-01. */
const PG_EPOCH_DAYS = 10_957;
const PG_EPOCH_MICROS = 946_684_800_000_000n;

const TIME_KEY = /^(\d{4})-(\d\d)-(\d\d)(?:[ T](\d\d):(\d\d)(?::(\d\d)(?:\.(\d{1,6}))?)?)?\s*(Z|[+-]\d\d(?::?\d\d)?)?$/i;

/**
 * A time key as a number: days (date) or microseconds (timestamp, timestamptz) since 1970-01-01.
 * Takes a JavaScript Date (a timestamp key takes its UTC wall-clock time, a date its UTC day) or ISO
 * text: `YYYY-MM-DD`, for timestamps optionally followed by ` HH:MM[:SS[.ffffff]]` (or `T…`) and, for
 * timestamptz only, an offset (`Z`, `+02`, `-05:30`; none is UTC). Years 1 to 9999; no infinities.
 */
export function timeKeyValue(type: TimeKeyType, key: unknown): bigint {
  let micros: bigint;
  if (key instanceof Date) {
    const ms = key.getTime();
    if (!Number.isFinite(ms)) throw new TypeError(`expected a valid date for a ${type} shard key, got an invalid Date`);
    micros = BigInt(ms) * 1000n;
  } else if (typeof key === 'string') {
    const m = TIME_KEY.exec(key.trim());
    if (!m || (type === 'date' && m[4] !== undefined)) {
      throw new TypeError(`expected ${type === 'date' ? 'a date YYYY-MM-DD' : `a ${type} YYYY-MM-DD[ HH:MM[:SS[.ffffff]]]${type === 'timestamptz' ? '[+HH[:MM]]' : ''}`} key, got ${describe(key)}`);
    }
    if (m[8] !== undefined && type !== 'timestamptz') throw new TypeError(`a ${type} shard key takes no UTC offset, got ${describe(key)}`);
    const days = parseDate(`${m[1]}-${m[2]}-${m[3]}`);
    const [h, min, sec] = [Number(m[4] ?? 0), Number(m[5] ?? 0), Number(m[6] ?? 0)];
    if (formatDate(days) !== `${m[1]}-${m[2]}-${m[3]}` || m[1] === '0000' || h > 23 || min > 59 || sec > 59) throw new TypeError(`no such ${type}: ${describe(key)}`);
    let offset = 0;
    if (m[8] !== undefined && m[8].toUpperCase() !== 'Z') {
      const o = /^([+-])(\d\d):?(\d\d)?$/.exec(m[8])!;
      offset = (o[1] === '-' ? -1 : 1) * (Number(o[2]) * 60 + Number(o[3] ?? 0)) * 60;
    }
    micros = BigInt(days) * 86_400_000_000n + BigInt(((h * 60 + min) * 60 + sec - offset) * 1_000_000 + Number((m[7] ?? '').padEnd(6, '0')));
  } else {
    throw new TypeError(`expected a ${type} key (a Date or ISO text), got ${describe(key)}`);
  }
  const value = type === 'date' ? BigInt(Math.floor(Number(micros / 1000n) / 86_400_000)) : micros;
  // Years 1 to 9999, as the canonical text writes them with four digits.
  const [lo, hi] = type === 'date' ? [-719_162n, 2_932_896n] : [-62_135_596_800_000_000n, 253_402_300_799_999_999n];
  if (value < lo || value > hi) throw new TypeError(`${type} key ${describe(key)} is outside the years 1 to 9999`);
  return value;
}

/** The canonical text of a time key (PostgreSQL's output under UTC, ISO): what the catalog keeps and SQL reads. */
export function timeKeyText(type: TimeKeyType, value: bigint): string {
  return type === 'date' ? formatDate(Number(value)) : formatTimestamp(value, type === 'timestamptz');
}

/** A canonical time key's number (timeKeyValue of catalog text, fast for the canonical form). */
function canonicalTimeValue(type: TimeKeyType, text: string): bigint {
  try {
    return type === 'date' ? BigInt(parseDate(text)) : parseTimestamp(text, type === 'timestamptz');
  } catch {
    return timeKeyValue(type, text);
  }
}

export type KeyValue = number | bigint | string;

const INT_LIMITS: Record<'smallint' | 'integer' | 'bigint', [bigint, bigint]> = {
  smallint: [-32768n, 32767n],
  integer: [-2147483648n, 2147483647n],
  bigint: [-(2n ** 63n), 2n ** 63n - 1n],
};

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * Checks a key against the shard key's type and returns it in canonical form: integers as bigint,
 * text as string, UUIDs lower-case with dashes. Throws a TypeError naming what was wrong.
 */
export function normalizeKey(type: KeyType, key: unknown): bigint | string {
  switch (type) {
    case 'smallint':
    case 'integer':
    case 'bigint': {
      let value: bigint;
      if (typeof key === 'bigint') value = key;
      else if (typeof key === 'number' && Number.isInteger(key)) value = BigInt(key);
      else if (typeof key === 'string' && /^-?\d+$/.test(key.trim())) value = BigInt(key.trim());
      else throw new TypeError(`expected an integer key for ${type === 'integer' ? 'an' : 'a'} ${type} shard key, got ${describe(key)}`);
      const [min, max] = INT_LIMITS[type];
      if (value < min || value > max) throw new TypeError(`key ${value} is out of range for ${type}`);
      return value;
    }
    case 'text':
      if (typeof key !== 'string') throw new TypeError(`expected a string key for a text shard key, got ${describe(key)}`);
      if (key.includes('\u0000')) throw new TypeError('text keys cannot contain NUL characters');
      return key;
    case 'uuid': {
      if (typeof key !== 'string') throw new TypeError(`expected a UUID string key, got ${describe(key)}`);
      const lower = key.toLowerCase();
      const dashed = /^[0-9a-f]{32}$/.test(lower)
        ? `${lower.slice(0, 8)}-${lower.slice(8, 12)}-${lower.slice(12, 16)}-${lower.slice(16, 20)}-${lower.slice(20)}`
        : lower;
      if (!UUID.test(dashed)) throw new TypeError(`expected a UUID key, got ${describe(key)}`);
      return dashed;
    }
    case 'date':
    case 'timestamp':
    case 'timestamptz':
      return timeKeyText(type, timeKeyValue(type, key));
  }
}

/** The 64-bit hash PostgreSQL computes for this key with the type's built-in extended hash, seed 0. */
export function hashKey(type: KeyType, key: unknown): bigint {
  // Fast path for the commonest case: a JS integer for an integer key, no BigInt conversion.
  if (typeof key === 'number' && Number.isSafeInteger(key)) {
    if (type === 'bigint') return hashSafeIntegerAsInt8(key);
    if ((type === 'integer' && key >= -2147483648 && key <= 2147483647) || (type === 'smallint' && key >= -32768 && key <= 32767)) {
      return hashInt4Extended(key);
    }
  }
  const value = normalizeKey(type, key);
  switch (type) {
    case 'smallint':
    case 'integer':
      return hashInt4Extended(Number(value));
    case 'bigint':
      return hashInt8Extended(value as bigint);
    case 'text':
      return hashTextExtended(value as string);
    case 'uuid':
      return hashUuidExtended(value as string);
    case 'date':
      return hashInt4Extended(Number(canonicalTimeValue(type, value as string)) - PG_EPOCH_DAYS);
    case 'timestamp':
    case 'timestamptz':
      return hashInt8Extended(canonicalTimeValue(type, value as string) - PG_EPOCH_MICROS);
  }
}

/** PostgreSQL's hash of a time key from its number (timeKeyValue), without text: the restore's rows. */
export function hashTimeValue(type: TimeKeyType, value: bigint | number): bigint {
  return type === 'date' ? hashInt4Extended(Number(value) - PG_EPOCH_DAYS) : hashInt8Extended(BigInt(value) - PG_EPOCH_MICROS);
}

/** Order of range-sharded keys: numeric for integers, UTF-8 byte (code point) order for text and UUIDs, time order for times. */
export function compareKeys(type: KeyType, a: bigint | string, b: bigint | string): number {
  if (type === 'text' || type === 'uuid') return Buffer.compare(Buffer.from(a as string, 'utf8'), Buffer.from(b as string, 'utf8'));
  if (isTimeKey(type)) {
    const x = canonicalTimeValue(type, a as string);
    const y = canonicalTimeValue(type, b as string);
    return x < y ? -1 : x > y ? 1 : 0;
  }
  // Integer keys as the catalog keeps them (text) compare as numbers: '500' < '1000'.
  const x = typeof a === 'string' ? BigInt(a) : a;
  const y = typeof b === 'string' ? BigInt(b) : b;
  return x < y ? -1 : x > y ? 1 : 0;
}

export function keyToText(key: bigint | string): string {
  return typeof key === 'bigint' ? key.toString() : key;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'string') return `the string ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)}`;
  if (typeof value === 'number') return `the number ${value}`;
  return typeof value;
}

const HASH_MIN = -(2n ** 63n);
const HASH_SPAN = 2n ** 64n;

/** N contiguous, inclusive hash ranges covering the whole 64-bit space, equally wide. */
export function evenHashRanges(count: number): Array<{ min: bigint; max: bigint }> {
  const ranges: Array<{ min: bigint; max: bigint }> = [];
  for (let i = 0; i < count; i++) {
    const min = HASH_MIN + (HASH_SPAN * BigInt(i)) / BigInt(count);
    const max = HASH_MIN + (HASH_SPAN * BigInt(i + 1)) / BigInt(count) - 1n;
    ranges.push({ min, max });
  }
  return ranges;
}
