import { describe, it, expect } from 'vitest';
import { compareKeys, evenHashRanges, hashKey, KEY_TYPES, keyToText, keyTypeOf, normalizeKey, sqlHashFunction } from '../../src/catalog/keys.js';
import { hashInt4Extended, hashInt8Extended, hashTextExtended, hashUuidExtended } from '../../src/hashing.js';
import { rng } from '../helpers/random.js';

const MIN64 = -(2n ** 63n);
const MAX64 = 2n ** 63n - 1n;


function typeError(fn: () => unknown): TypeError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(TypeError);
    return err as TypeError;
  }
  throw new Error('expected a TypeError');
}

describe('keyTypeOf', () => {
  it('maps the supported format_type names', () => {
    expect(keyTypeOf('smallint')).toBe('smallint');
    expect(keyTypeOf('integer')).toBe('integer');
    expect(keyTypeOf('bigint')).toBe('bigint');
    expect(keyTypeOf('text')).toBe('text');
    expect(keyTypeOf('uuid')).toBe('uuid');
    expect(keyTypeOf('character varying')).toBe('text');
    expect(keyTypeOf('character varying(255)')).toBe('text');
    expect(keyTypeOf('date')).toBe('date');
    expect(keyTypeOf('timestamp with time zone')).toBe('timestamptz');
    expect(keyTypeOf('timestamp without time zone')).toBe('timestamp');
  });

  it('refuses everything else', () => {
    for (const t of ['json', 'jsonb', 'numeric', 'character(10)', 'character', 'timestamp(3) with time zone', 'timestamp(0) without time zone', 'time without time zone', 'interval', 'bytea', 'int', 'int8', 'Integer', 'real', '']) {
      expect(keyTypeOf(t)).toBeUndefined();
    }
  });
});

describe('sqlHashFunction', () => {
  it('names the PostgreSQL extended hash of each type', () => {
    expect(KEY_TYPES.map(sqlHashFunction)).toEqual([
      'hashint2extended',
      'hashint4extended',
      'hashint8extended',
      'hashtextextended',
      'uuid_hash_extended',
      'hashdateextended',
      'timestamp_hash_extended',
      'timestamptz_hash_extended',
    ]);
  });
});

describe('time keys', () => {
  it('normalize ISO text, offsets and Dates to PostgreSQL\'s canonical text under UTC', () => {
    expect(normalizeKey('timestamptz', '2026-03-01 10:00:00+00')).toBe('2026-03-01 10:00:00+00');
    expect(normalizeKey('timestamptz', '2026-03-01T12:30:00.250+02:30')).toBe('2026-03-01 10:00:00.25+00');
    expect(normalizeKey('timestamptz', '2026-03-01 05:00-05')).toBe('2026-03-01 10:00:00+00');
    expect(normalizeKey('timestamptz', '2026-03-01T10:00:00Z')).toBe('2026-03-01 10:00:00+00');
    expect(normalizeKey('timestamptz', '2026-03-01 10:00')).toBe('2026-03-01 10:00:00+00'); // no offset: UTC
    expect(normalizeKey('timestamptz', '2026-03-01')).toBe('2026-03-01 00:00:00+00');
    expect(normalizeKey('timestamptz', new Date('2026-03-01T10:00:00.123Z'))).toBe('2026-03-01 10:00:00.123+00');
    expect(normalizeKey('timestamp', '2026-03-01 10:00:00.000001')).toBe('2026-03-01 10:00:00.000001');
    expect(normalizeKey('timestamp', new Date('2026-03-01T10:00:00Z'))).toBe('2026-03-01 10:00:00');
    expect(normalizeKey('date', '2026-03-01')).toBe('2026-03-01');
    expect(normalizeKey('date', new Date('2026-03-01T23:59:59Z'))).toBe('2026-03-01');
    expect(normalizeKey('date', '0001-01-01')).toBe('0001-01-01');
    expect(normalizeKey('timestamptz', '9999-12-31 23:59:59.999999+00')).toBe('9999-12-31 23:59:59.999999+00');
  });

  it('refuse what is not such a time, naming it', () => {
    expect(typeError(() => normalizeKey('timestamp', '2026-03-01 10:00+02')).message).toMatch(/a timestamp shard key takes no UTC offset/);
    expect(typeError(() => normalizeKey('date', '2026-03-01 10:00')).message).toMatch(/expected a date YYYY-MM-DD key/);
    expect(typeError(() => normalizeKey('date', '2026-02-30')).message).toMatch(/no such date/);
    expect(typeError(() => normalizeKey('timestamptz', '2026-03-01 24:00')).message).toMatch(/no such timestamptz/);
    expect(typeError(() => normalizeKey('timestamptz', 'infinity')).message).toMatch(/expected a timestamptz/);
    expect(typeError(() => normalizeKey('timestamptz', '0000-12-31')).message).toMatch(/no such timestamptz/);
    expect(typeError(() => normalizeKey('timestamptz', '9999-12-31 23:59:59-01')).message).toMatch(/outside the years 1 to 9999/);
    expect(typeError(() => normalizeKey('timestamptz', 1767225600000)).message).toMatch(/expected a timestamptz key \(a Date or ISO text\), got the number/);
    expect(typeError(() => normalizeKey('date', new Date(Number.NaN))).message).toMatch(/invalid Date/);
  });

  it('compare in time order, whatever the text', () => {
    const sorted = ['2025-12-31 23:59:59.999999+00', '2026-01-01 00:00:00+00', '2026-01-01 00:00:00.5+00', '2026-01-01 00:00:00.55+00', '2026-01-02 00:00:00+00'];
    const shuffled = [sorted[3]!, sorted[0]!, sorted[4]!, sorted[2]!, sorted[1]!];
    expect(shuffled.sort((a, b) => compareKeys('timestamptz', a, b))).toEqual(sorted);
    expect(compareKeys('date', '2026-01-10', '2026-01-09')).toBe(1);
    expect(compareKeys('timestamp', '2026-01-01 00:00:00', '2026-01-01 00:00:00')).toBe(0);
  });

  it('hash as PostgreSQL does (values from PostgreSQL 18: timestamp_hash_extended, timestamptz_hash_extended, hashdateextended, seed 0)', () => {
    expect(hashKey('timestamp', '2026-01-01 10:00:00.5')).toBe(1538548720792071232n);
    expect(hashKey('timestamptz', '2026-01-01 12:00:00.5+02')).toBe(1538548720792071232n);
    expect(hashKey('date', '2026-01-01')).toBe(1578779592015251209n);
  });
});

describe('normalizeKey: integers', () => {
  const limits: Array<['smallint' | 'integer' | 'bigint', bigint, bigint]> = [
    ['smallint', -32768n, 32767n],
    ['integer', -2147483648n, 2147483647n],
    ['bigint', MIN64, MAX64],
  ];
  for (const [type, min, max] of limits) {
    it(`${type}: accepts its min and max, rejects one past`, () => {
      expect(normalizeKey(type, min)).toBe(min);
      expect(normalizeKey(type, max)).toBe(max);
      expect(normalizeKey(type, min.toString())).toBe(min);
      expect(normalizeKey(type, max.toString())).toBe(max);
      expect(typeError(() => normalizeKey(type, min - 1n)).message).toBe(`key ${min - 1n} is out of range for ${type}`);
      expect(typeError(() => normalizeKey(type, max + 1n)).message).toBe(`key ${max + 1n} is out of range for ${type}`);
      expect(typeError(() => normalizeKey(type, (max + 1n).toString())).message).toBe(`key ${max + 1n} is out of range for ${type}`);
    });
  }

  it('number limits for smallint and integer', () => {
    expect(normalizeKey('smallint', 32767)).toBe(32767n);
    expect(typeError(() => normalizeKey('smallint', 32768)).message).toBe('key 32768 is out of range for smallint');
    expect(normalizeKey('integer', -2147483648)).toBe(-2147483648n);
    expect(typeError(() => normalizeKey('integer', -2147483649)).message).toBe('key -2147483649 is out of range for integer');
  });

  it('returns bigints for numbers and strings of digits', () => {
    expect(normalizeKey('integer', 42)).toBe(42n);
    expect(normalizeKey('integer', '42')).toBe(42n);
    expect(normalizeKey('integer', ' 42 ')).toBe(42n);
    expect(normalizeKey('bigint', '-17')).toBe(-17n);
    expect(normalizeKey('bigint', '007')).toBe(7n);
    expect(normalizeKey('bigint', '9223372036854775807')).toBe(MAX64);
    expect(normalizeKey('smallint', -0)).toBe(0n);
  });

  it('rejects non-integers with a message naming the type and the value', () => {
    expect(typeError(() => normalizeKey('integer', 1.5)).message).toBe('expected an integer key for an integer shard key, got the number 1.5');
    expect(typeError(() => normalizeKey('bigint', NaN)).message).toBe('expected an integer key for a bigint shard key, got the number NaN');
    expect(typeError(() => normalizeKey('bigint', Infinity)).message).toContain('got the number Infinity');
    expect(typeError(() => normalizeKey('bigint', null)).message).toBe('expected an integer key for a bigint shard key, got null');
    expect(typeError(() => normalizeKey('bigint', undefined)).message).toBe('expected an integer key for a bigint shard key, got undefined');
    expect(typeError(() => normalizeKey('smallint', '1e3')).message).toBe('expected an integer key for a smallint shard key, got the string "1e3"');
    expect(typeError(() => normalizeKey('integer', '')).message).toContain('got the string ""');
    expect(typeError(() => normalizeKey('integer', '12abc')).message).toContain('"12abc"');
    expect(typeError(() => normalizeKey('integer', '+5')).message).toContain('"+5"');
    expect(typeError(() => normalizeKey('integer', '0x10')).message).toContain('"0x10"');
    expect(typeError(() => normalizeKey('integer', true)).message).toContain('got boolean');
    expect(typeError(() => normalizeKey('integer', { id: 1 })).message).toContain('got object');
  });

  it('shortens long strings in messages', () => {
    const long = 'x'.repeat(100);
    const message = typeError(() => normalizeKey('bigint', long)).message;
    expect(message).toBe(`expected an integer key for a bigint shard key, got the string "${'x'.repeat(40)}…"`);
  });
});

describe('normalizeKey: text and uuid', () => {
  it('text keeps the string as is', () => {
    expect(normalizeKey('text', '')).toBe('');
    expect(normalizeKey('text', ' Héllo ')).toBe(' Héllo ');
    expect(normalizeKey('text', '42')).toBe('42');
  });

  it('text rejects non-strings and NUL', () => {
    expect(typeError(() => normalizeKey('text', 42)).message).toBe('expected a string key for a text shard key, got the number 42');
    expect(typeError(() => normalizeKey('text', 42n)).message).toBe('expected a string key for a text shard key, got bigint');
    expect(typeError(() => normalizeKey('text', null)).message).toBe('expected a string key for a text shard key, got null');
    expect(typeError(() => normalizeKey('text', 'a\u0000b')).message).toBe('text keys cannot contain NUL characters');
  });

  it('uuid is normalised to lower case with dashes', () => {
    const canonical = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11';
    expect(normalizeKey('uuid', canonical)).toBe(canonical);
    expect(normalizeKey('uuid', canonical.toUpperCase())).toBe(canonical);
    expect(normalizeKey('uuid', 'a0eebc999c0b4ef8bb6d6bb9bd380a11')).toBe(canonical);
    expect(normalizeKey('uuid', 'A0EEBC999C0B4EF8BB6D6BB9BD380A11')).toBe(canonical);
  });

  it('uuid rejects malformed values', () => {
    for (const bad of ['', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111', 'g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}']) {
      expect(typeError(() => normalizeKey('uuid', bad)).message).toBe(`expected a UUID key, got the string ${JSON.stringify(bad.length > 40 ? `${bad.slice(0, 40)}…` : bad)}`);
    }
    expect(typeError(() => normalizeKey('uuid', 5)).message).toBe('expected a UUID string key, got the number 5');
  });
});

describe('keyToText', () => {
  it('prints bigints in decimal and leaves strings alone', () => {
    expect(keyToText(-9223372036854775808n)).toBe('-9223372036854775808');
    expect(keyToText('abc')).toBe('abc');
  });
});

describe('compareKeys', () => {
  it('integers compare numerically', () => {
    expect(compareKeys('bigint', 2n, 10n)).toBe(-1);
    expect(compareKeys('bigint', 10n, 2n)).toBe(1);
    expect(compareKeys('integer', -5n, -5n)).toBe(0);
    expect(compareKeys('bigint', MIN64, MAX64)).toBe(-1);
  });

  it('integers as the catalog keeps them (text) compare numerically too: a range split at 500 of [0, 1000) lies inside', () => {
    expect(compareKeys('bigint', '500', '1000')).toBe(-1);
    expect(compareKeys('integer', '0', '500')).toBe(-1);
    expect(compareKeys('bigint', '-20', '-3')).toBe(-1);
    expect(compareKeys('bigint', '9', 10n)).toBe(-1);
  });

  it('text compares by UTF-8 bytes', () => {
    expect(compareKeys('text', 'Z', 'a')).toBeLessThan(0);
    expect(compareKeys('text', 'a', 'Z')).toBeGreaterThan(0);
    expect(compareKeys('text', 'é', 'z')).toBeGreaterThan(0);
    expect(compareKeys('text', 'a', 'ab')).toBeLessThan(0);
    expect(compareKeys('text', '', 'a')).toBeLessThan(0);
    expect(compareKeys('text', 'same', 'same')).toBe(0);
    expect(compareKeys('text', '10', '9')).toBeLessThan(0);
  });

  it('an astral code point sorts after U+FFFD (byte order, not UTF-16 order)', () => {
    const emoji = '\u{1F600}'; // F0 9F 98 80; UTF-16 D83D DE00
    const replacement = '\uFFFD'; // EF BF BD
    expect(emoji < replacement).toBe(true); // UTF-16 code unit order disagrees
    expect(compareKeys('text', emoji, replacement)).toBeGreaterThan(0);
    expect(compareKeys('text', replacement, emoji)).toBeLessThan(0);
  });

  it('sorting with compareKeys equals sorting the UTF-8 bytes', () => {
    const words = ['b', 'A', 'é', 'z', '\u{1F600}', '\uFFFD', 'aa', 'a', '', 'Ω', '表'];
    const sorted = [...words].sort((x, y) => compareKeys('text', x, y));
    expect(sorted).toEqual(['', 'A', 'a', 'aa', 'b', 'z', 'é', 'Ω', '表', '\uFFFD', '\u{1F600}']);
  });

  it('uuids compare as their lower-case text', () => {
    expect(compareKeys('uuid', '00000000-0000-0000-0000-000000000001', 'ffffffff-0000-0000-0000-000000000000')).toBeLessThan(0);
  });
});

describe('evenHashRanges', () => {
  for (const n of [1, 2, 3, 7, 4096]) {
    it(`${n} range(s) are contiguous, cover the 64-bit space, and differ in width by at most 1`, () => {
      const ranges = evenHashRanges(n);
      expect(ranges).toHaveLength(n);
      expect(ranges[0]!.min).toBe(MIN64);
      expect(ranges[n - 1]!.max).toBe(MAX64);
      let minWidth = 2n ** 64n;
      let maxWidth = 0n;
      let total = 0n;
      for (let i = 0; i < n; i++) {
        const r = ranges[i]!;
        expect(r.min <= r.max).toBe(true);
        if (i > 0) expect(r.min).toBe(ranges[i - 1]!.max + 1n);
        const width = r.max - r.min + 1n;
        total += width;
        if (width < minWidth) minWidth = width;
        if (width > maxWidth) maxWidth = width;
      }
      expect(total).toBe(2n ** 64n);
      expect(maxWidth - minWidth <= 1n).toBe(true);
    });
  }

  it('two ranges split at zero', () => {
    expect(evenHashRanges(2)).toEqual([
      { min: MIN64, max: -1n },
      { min: 0n, max: MAX64 },
    ]);
  });
});

describe('hashKey', () => {
  it('uses the type\'s PostgreSQL hash', () => {
    expect(hashKey('bigint', 0)).toBe(4154612158245552303n);
    expect(hashKey('integer', 5)).toBe(-9138765687874534020n);
    expect(hashKey('smallint', 5)).toBe(hashKey('integer', 5));
    expect(hashKey('text', 'hello world!')).toBe(-2866487628948787489n);
    expect(hashKey('uuid', 'A0EEBC999C0B4EF8BB6D6BB9BD380A11')).toBe(7543054272012930821n);
  });

  it('bigint: number, bigint and string forms of one key hash alike (fast path = slow path)', () => {
    const random = rng(1234);
    const values: number[] = [0, 1, -1, 2 ** 31 - 1, -(2 ** 31), 2 ** 31, -(2 ** 31) - 1, 2 ** 32, -(2 ** 32), 2 ** 32 + 1, Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER];
    for (let i = 0; i < 2000; i++) {
      const magnitude = 2 ** Math.floor(random() * 54);
      const v = Math.floor(random() * magnitude) * (random() < 0.5 ? -1 : 1);
      values.push(Number.isSafeInteger(v) ? v : 0);
    }
    for (const v of values) {
      const expected = hashInt8Extended(BigInt(v));
      expect(hashKey('bigint', v)).toBe(expected);
      expect(hashKey('bigint', BigInt(v))).toBe(expected);
      expect(hashKey('bigint', String(v))).toBe(expected);
    }
  });

  it('integer and smallint: number, bigint and string forms hash alike', () => {
    const random = rng(99);
    for (let i = 0; i < 1000; i++) {
      const v = Math.floor(random() * 2 ** 32) - 2 ** 31;
      const expected = hashInt4Extended(v);
      expect(hashKey('integer', v)).toBe(expected);
      expect(hashKey('integer', BigInt(v))).toBe(expected);
      expect(hashKey('integer', String(v))).toBe(expected);
      const s = (v % 32768) | 0;
      expect(hashKey('smallint', s)).toBe(hashInt4Extended(s));
      expect(hashKey('smallint', BigInt(s))).toBe(hashInt4Extended(s));
    }
  });

  it('text and uuid hash their canonical form', () => {
    expect(hashKey('text', 'héllo')).toBe(hashTextExtended('héllo'));
    const u = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11';
    expect(hashKey('uuid', u.toUpperCase())).toBe(hashUuidExtended(u));
  });

  it('rejects keys of the wrong type or out of range', () => {
    expect(() => hashKey('bigint', 'abc')).toThrow(TypeError);
    expect(() => hashKey('bigint', 1.5)).toThrow('expected an integer key for a bigint shard key, got the number 1.5');
    expect(() => hashKey('integer', 2 ** 31)).toThrow('key 2147483648 is out of range for integer');
    expect(() => hashKey('smallint', 32768)).toThrow('key 32768 is out of range for smallint');
    expect(() => hashKey('bigint', 2 ** 63)).toThrow('out of range for bigint');
    expect(() => hashKey('text', 5)).toThrow('expected a string key for a text shard key, got the number 5');
    expect(() => hashKey('uuid', 'nope')).toThrow('expected a UUID key');
  });
});
