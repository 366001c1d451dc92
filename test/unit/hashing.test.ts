import { describe, it, expect } from 'vitest';
import { hashBytesExtended, hashInt4Extended, hashInt8Extended, hashSafeIntegerAsInt8, hashTextExtended, hashUuidExtended } from '../../src/hashing.js';
import { rng } from '../helpers/random.js';


const MIN64 = -(2n ** 63n);
const MAX64 = 2n ** 63n - 1n;

describe('known vectors (PostgreSQL 18, seed 0)', () => {
  it('hashint8extended', () => {
    expect(hashInt8Extended(0n)).toBe(4154612158245552303n);
    expect(hashInt8Extended(-1n)).toBe(-1888257769727981238n);
  });

  it('hashint4extended', () => {
    expect(hashInt4Extended(5)).toBe(-9138765687874534020n);
  });

  it('hashtextextended', () => {
    expect(hashTextExtended('')).toBe(-6939563903564495251n);
    expect(hashTextExtended('hello world!')).toBe(-2866487628948787489n);
    expect(hashTextExtended('abcdefghijklmnopqrstuvwxyz')).toBe(-6612928417832572997n);
  });

  it('uuid_hash_extended', () => {
    expect(hashUuidExtended('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')).toBe(7543054272012930821n);
  });
});

describe('relations between the hashes', () => {
  it('int8 values that fit in int4 hash like int4 (PostgreSQL guarantees this for cross-type hashing)', () => {
    for (const v of [0, 1, -1, 5, 42, -42, 2147483647, -2147483648, 123456789]) {
      expect(hashInt8Extended(BigInt(v))).toBe(hashInt4Extended(v));
    }
  });

  it('text hashes its UTF-8 bytes', () => {
    for (const s of ['', 'a', 'héllo', '表', '\u{1F600}', 'abcdefghijkl', 'abcdefghijklm', 'x'.repeat(100)]) {
      expect(hashTextExtended(s)).toBe(hashBytesExtended(new TextEncoder().encode(s)));
    }
  });

  it('a UUID hashes its 16 bytes, with or without dashes, in any case', () => {
    const u = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11';
    const bytes = Uint8Array.from(u.replaceAll('-', '').match(/../g)!.map((h) => parseInt(h, 16)));
    expect(hashUuidExtended(u)).toBe(hashBytesExtended(bytes));
    expect(hashUuidExtended(u.toUpperCase())).toBe(7543054272012930821n);
    expect(hashUuidExtended(u.replaceAll('-', ''))).toBe(7543054272012930821n);
  });

  it('every tail length 0..24 gives distinct results in the signed 64-bit range', () => {
    const seen = new Set<bigint>();
    for (let len = 0; len <= 24; len++) {
      const bytes = Uint8Array.from({ length: len }, (_, i) => (i * 37 + 11) & 0xff);
      const h = hashBytesExtended(bytes);
      expect(h >= MIN64 && h <= MAX64).toBe(true);
      seen.add(h);
    }
    expect(seen.size).toBe(25);
  });

  it('changing any single byte changes the hash', () => {
    const base = Uint8Array.from({ length: 23 }, (_, i) => i);
    const h0 = hashBytesExtended(base);
    for (let i = 0; i < base.length; i++) {
      const copy = Uint8Array.from(base);
      copy[i] = copy[i]! ^ 0x80;
      expect(hashBytesExtended(copy)).not.toBe(h0);
    }
  });
});

describe('hashSafeIntegerAsInt8', () => {
  it('equals hashInt8Extended(BigInt(x)) at the edges', () => {
    const edges = [
      0, -0, 1, -1, 2, -2, 255, 256, 2 ** 31 - 1, 2 ** 31, -(2 ** 31), -(2 ** 31) - 1, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, -(2 ** 32), -(2 ** 32) - 1,
      -(2 ** 32) + 1, 2 ** 52, -(2 ** 52), Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER - 1, -Number.MAX_SAFE_INTEGER + 1,
    ];
    for (const x of edges) expect(hashSafeIntegerAsInt8(x)).toBe(hashInt8Extended(BigInt(x)));
  });

  it('equals hashInt8Extended(BigInt(x)) for many random safe integers', () => {
    const random = rng(20240601);
    for (let i = 0; i < 5000; i++) {
      const bits = Math.floor(random() * 54);
      let x = Math.floor(random() * 2 ** bits);
      if (random() < 0.5) x = -x;
      if (!Number.isSafeInteger(x)) continue;
      expect(hashSafeIntegerAsInt8(x)).toBe(hashInt8Extended(BigInt(x)));
    }
  });
});

describe('range errors', () => {
  it('hashInt8Extended refuses values outside bigint', () => {
    expect(hashInt8Extended(MIN64)).toBeTypeOf('bigint');
    expect(hashInt8Extended(MAX64)).toBeTypeOf('bigint');
    expect(() => hashInt8Extended(MAX64 + 1n)).toThrow(RangeError);
    expect(() => hashInt8Extended(MAX64 + 1n)).toThrow('9223372036854775808 is out of range for bigint');
    expect(() => hashInt8Extended(MIN64 - 1n)).toThrow('-9223372036854775809 is out of range for bigint');
  });

  it('hashInt4Extended refuses values outside integer and non-integers', () => {
    expect(hashInt4Extended(2147483647)).toBeTypeOf('bigint');
    expect(hashInt4Extended(-2147483648)).toBeTypeOf('bigint');
    expect(() => hashInt4Extended(2147483648)).toThrow(RangeError);
    expect(() => hashInt4Extended(2147483648)).toThrow('2147483648 is out of range for integer');
    expect(() => hashInt4Extended(-2147483649)).toThrow('-2147483649 is out of range for integer');
    expect(() => hashInt4Extended(1.5)).toThrow(RangeError);
    expect(() => hashInt4Extended(NaN)).toThrow(RangeError);
  });

  it('hashUuidExtended refuses strings that are not UUIDs', () => {
    for (const bad of ['', 'xyz', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111', 'z0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', ' a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11']) {
      expect(() => hashUuidExtended(bad)).toThrow(RangeError);
      expect(() => hashUuidExtended(bad)).toThrow(`${JSON.stringify(bad)} is not a UUID`);
    }
  });
});
