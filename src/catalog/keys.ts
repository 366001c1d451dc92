import { hashInt4Extended, hashInt8Extended, hashSafeIntegerAsInt8, hashTextExtended, hashUuidExtended } from '../hashing.js';

export const KEY_TYPES = ['smallint', 'integer', 'bigint', 'text', 'uuid'] as const;
export type KeyType = (typeof KEY_TYPES)[number];

/** PostgreSQL's format_type() names of the columns that can be shard keys, to our key types. */
export function keyTypeOf(formatType: string): KeyType | undefined {
  if (formatType === 'smallint' || formatType === 'integer' || formatType === 'bigint' || formatType === 'text' || formatType === 'uuid') {
    return formatType;
  }
  if (formatType === 'character varying' || formatType.startsWith('character varying(')) return 'text';
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
  }
}

/** Order of range-sharded keys: numeric for integers, UTF-8 byte (code point) order for text and UUIDs. */
export function compareKeys(type: KeyType, a: bigint | string, b: bigint | string): number {
  if (type === 'text' || type === 'uuid') return Buffer.compare(Buffer.from(a as string, 'utf8'), Buffer.from(b as string, 'utf8'));
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
