import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashKey, normalizeKey, sqlHashFunction, type KeyType } from '../../src/catalog/keys.js';
import { formatTimestamp } from '../../src/sql/datetime.js';
import { hashBytesExtended, hashInt4Extended, hashInt8Extended, hashTextExtended, hashUuidExtended } from '../../src/hashing.js';
import { fleet } from '../helpers/fleet.js';

/**
 * The TypeScript port of PostgreSQL's extended hash functions must give, bit for bit, the answers
 * the database itself gives: otherwise the router and the shard map disagree on where a key lives.
 * Each type is checked on >= 10,000 values (seeded random across the whole range plus edge cases),
 * sent to the catalog server in one round trip.
 */

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;
const MASK64 = (1n << 64n) - 1n;

/** splitmix64 on BigInt: a tiny seeded PRNG giving unsigned 64-bit values, deterministic across runs. */
function prng(seed: bigint): () => bigint {
  let state = seed & MASK64;
  return () => {
    state = (state + 0x9e3779b97f4a7c15n) & MASK64;
    let z = state;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
    return z ^ (z >> 31n);
  };
}

/** Helpers over one generator: uniform integers below n, signed ranges, picks. */
function randomTools(seed: bigint) {
  const next = prng(seed);
  const below = (n: number): number => Number(next() % BigInt(n));
  return {
    next,
    below,
    int64: (): bigint => BigInt.asIntN(64, next()),
    /** A signed integer with a random bit length 0..bits-1, so that small magnitudes are well covered too. */
    anyMagnitude(bits: number): bigint {
      const width = BigInt(below(bits));
      const magnitude = next() & ((1n << width) - 1n);
      return next() & 1n ? -magnitude : magnitude;
    },
    int32: (): number => Number(BigInt.asIntN(32, next())),
  };
}

let client: pg.Client;

beforeAll(async () => {
  client = new pg.Client({ connectionString: fleet().catalogAdminUrl });
  await client.connect();
});

afterAll(async () => {
  await client?.end();
});

/** The database's hashes of `values`, in order, from one query over `unnest($1::<arrayType>)`. */
async function dbHashes(expression: string, arrayType: string, values: unknown[]): Promise<bigint[]> {
  const { rows } = await client.query<{ h: string }>(
    `select (${expression})::text as h from unnest($1::${arrayType}) with ordinality as u(v, i) order by i`,
    [values],
  );
  expect(rows, `the database returned one hash per ${arrayType} value`).toHaveLength(values.length);
  return rows.map((r) => BigInt(r.h));
}

/**
 * Compares the database's hash of every value with `port(value)`; the assertion message names how
 * many mismatched and the diff shows the first few of them.
 */
function expectParity<T>(label: string, values: T[], expected: bigint[], port: (value: T) => bigint, show: (value: T) => string = String): void {
  expect(expected).toHaveLength(values.length);
  const mismatches: string[] = [];
  let count = 0;
  values.forEach((value, i) => {
    let actual: string;
    try {
      actual = port(value).toString();
    } catch (err) {
      actual = `threw ${(err as Error).message}`;
    }
    if (actual !== expected[i]!.toString()) {
      count++;
      if (mismatches.length < 5) mismatches.push(`${show(value)}: database ${expected[i]}, port ${actual}`);
    }
  });
  expect(mismatches, `${label}: ${count} of ${values.length} values hash differently from PostgreSQL`).toEqual([]);
}

function showText(value: string): string {
  const shown = value.length > 60 ? `${value.slice(0, 60)}… (${value.length} UTF-16 units)` : value;
  return JSON.stringify(shown);
}

/** 2^k and its neighbours for k in [0, maxPower], both signs, kept inside [min, max]. */
function powerEdges(maxPower: number, min: bigint, max: bigint): bigint[] {
  const edges = [0n, 1n, -1n, min, max, min + 1n, max - 1n, min + 2n, max - 2n];
  for (let k = 0n; k <= BigInt(maxPower); k++) {
    const p = 1n << k;
    for (const v of [p - 1n, p, p + 1n]) edges.push(v, -v);
  }
  return [...new Set(edges)].filter((v) => v >= min && v <= max);
}

describe('hash parity with PostgreSQL (seed 0)', () => {
  it('runs against a UTF-8 database with a deterministic default collation (so hashtextextended hashes the bytes)', async () => {
    const { rows } = await client.query(
      `select pg_encoding_to_char(d.encoding) as encoding, d.datlocprovider as provider, d.datlocale as locale,
              (select c.collisdeterministic from pg_collation c where c.oid = 100) as default_deterministic
         from pg_database d where d.datname = current_database()`,
    );
    // 'b' = builtin provider; C.UTF-8 is deterministic and compares (and hashes) by bytes.
    expect(rows[0]).toEqual({ encoding: 'UTF8', provider: 'b', locale: 'C.UTF-8', default_deterministic: true });
  });

  it('bigint: hashint8extended = hashInt8Extended and hashKey("bigint", …)', async () => {
    const r = randomTools(0x5348_0008n);
    const values = powerEdges(63, INT64_MIN, INT64_MAX);
    for (let i = 0; i < 8_000; i++) values.push(r.int64());
    for (let i = 0; i < 8_000; i++) values.push(r.anyMagnitude(64));
    expect(values.length).toBeGreaterThanOrEqual(10_000);

    const expected = await dbHashes('hashint8extended(v, 0)', 'bigint[]', values.map(String));
    expectParity('hashInt8Extended', values, expected, hashInt8Extended);
    expectParity('hashKey(bigint, bigint)', values, expected, (v) => hashKey('bigint', v));
    expectParity('hashKey(bigint, decimal string)', values, expected, (v) => hashKey('bigint', v.toString()));

    // The number fast path (no BigInt) for every safe integer among them, which is most of the small-magnitude half.
    const safe: number[] = [];
    values.forEach((v, i) => {
      if (v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)) safe.push(i);
    });
    expect(safe.length).toBeGreaterThanOrEqual(5_000);
    expectParity(
      'hashKey(bigint, number)',
      safe.map((i) => Number(values[i])),
      safe.map((i) => expected[i]!),
      (n) => hashKey('bigint', n),
    );
  });

  it('integer: hashint4extended = hashInt4Extended and hashKey("integer", …)', async () => {
    const r = randomTools(0x5348_0004n);
    const values = powerEdges(31, BigInt(INT32_MIN), BigInt(INT32_MAX)).map(Number);
    for (let i = 0; i < 8_000; i++) values.push(r.int32());
    for (let i = 0; i < 8_000; i++) values.push(Number(r.anyMagnitude(32)));
    expect(values.length).toBeGreaterThanOrEqual(10_000);
    expect(values.every((v) => v >= INT32_MIN && v <= INT32_MAX)).toBe(true);

    const expected = await dbHashes('hashint4extended(v, 0)', 'integer[]', values);
    expectParity('hashInt4Extended', values, expected, hashInt4Extended);
    expectParity('hashKey(integer, number)', values, expected, (v) => hashKey('integer', v));
    expectParity('hashKey(integer, bigint)', values, expected, (v) => hashKey('integer', BigInt(v)));
  });

  it('smallint: hashint2extended = hashKey("smallint", …) on every one of the 65,536 values', async () => {
    const values: number[] = [];
    for (let v = -32768; v <= 32767; v++) values.push(v);

    const expected = await dbHashes('hashint2extended(v, 0)', 'smallint[]', values);
    expectParity('hashKey(smallint, number)', values, expected, (v) => hashKey('smallint', v));
    expectParity('hashKey(smallint, bigint)', values, expected, (v) => hashKey('smallint', BigInt(v)));
  });

  it('the integer families agree on values that fit the narrower type, in the database and in the port', async () => {
    // PostgreSQL folds int8's high half so that int2, int4 and int8 hash a value alike (cross-type hash joins rely
    // on it); a router that hashes an integer key as bigint must land on the same shard.
    const { rows } = await client.query<{ same24: boolean; same48: boolean }>(
      `select bool_and(hashint2extended(v::smallint, 0) = hashint4extended(v, 0)) filter (where v between -32768 and 32767) as same24,
              bool_and(hashint4extended(v, 0) = hashint8extended(v::bigint, 0)) as same48
         from unnest($1::int[]) v`,
      [[-2147483648, -65536, -32769, -32768, -1, 0, 1, 32767, 32768, 65535, 2147483647]],
    );
    expect(rows[0]).toEqual({ same24: true, same48: true });
    for (const v of [-2147483648, -65536, -1, 0, 1, 65535, 2147483647]) {
      expect(hashKey('integer', v), String(v)).toBe(hashKey('bigint', v));
      expect(hashKey('integer', v), String(v)).toBe(hashKey('bigint', BigInt(v)));
    }
  });

  it('text: hashtextextended = hashTextExtended and hashKey("text", …), every tail length, multi-byte, long', async () => {
    const r = randomTools(0x5348_7478n);
    const values: string[] = ['', 'a', 'A', 'z', '0', ' ', '~', "'", '"', '\\', '\n', '\t', '\r\n', 'é', '表', '🎉', 'ÿ', '\u007f', '\u0080', '\u07ff', '\u0800', '\uffff', '\u{10ffff}'];
    // Every length 0..40 (all tail lengths 0..11 of the 12-byte loop, 0..3 blocks), in 1-, 2-, 3- and 4-byte characters.
    for (let len = 0; len <= 40; len++) {
      values.push('x'.repeat(len));
      values.push(Array.from({ length: len }, (_, i) => String.fromCharCode(33 + ((i * 7) % 94))).join(''));
      values.push('é'.repeat(len));
      values.push('表'.repeat(len));
      values.push('🎉'.repeat(len));
      // A byte length of exactly `len` made of mixed widths: a 4-, 3- and 2-byte character then ASCII.
      if (len >= 9) values.push(`🎉表é${'q'.repeat(len - 9)}`);
    }
    values.push(
      'e\u0301', // e + combining acute: not the same bytes as 'é'
      'é',
      'Å', // A + combining ring
      'n\u0303o\u0308\u0327',
      '👩‍👩‍👧‍👦', // ZWJ sequence
      '🇩🇪🇯🇵',
      'mixed: aé表🎉\u0301z',
      "it's a \"quoted\" \\back\\slash\\ and {braces}, commas, NULL",
      'NULL',
      '{}',
      '{"a","b"}',
      'line1\nline2\r\nline3\ttab',
      '  leading and trailing spaces  ',
      '\u00a0non-breaking\u00a0',
      '\u200bzero-width',
      '\ufeffBOM',
    );
    // Long strings, 1-10 KB, including multi-byte ones.
    for (let i = 0; i < 40; i++) {
      const len = 1024 + r.below(9 * 1024);
      const alphabet = ['a', 'é', '表', '🎉', "'", '\\', '\n'];
      let s = '';
      while (Buffer.byteLength(s) < len) s += alphabet[r.below(i % 2 === 0 ? 1 : alphabet.length)]!;
      values.push(s);
    }
    // Random strings of 0..64 code points from ASCII, Latin-1/2-byte, BMP 3-byte (no surrogates) and astral planes.
    const codePoint = (): number => {
      switch (r.below(4)) {
        case 0:
          return 1 + r.below(0x7f);
        case 1:
          return 0x80 + r.below(0x800 - 0x80);
        case 2: {
          const cp = 0x800 + r.below(0x10000 - 0x800 - 0x800);
          return cp >= 0xd800 ? cp + 0x800 : cp; // skip the surrogate block
        }
        default:
          return 0x10000 + r.below(0x110000 - 0x10000);
      }
    };
    for (let i = 0; i < 12_000; i++) {
      const len = r.below(65);
      const ascii = r.below(3) === 0;
      let s = '';
      for (let j = 0; j < len; j++) s += String.fromCodePoint(ascii ? 32 + r.below(95) : codePoint());
      values.push(s);
    }
    expect(values.length).toBeGreaterThanOrEqual(10_000);
    expect(values.some((v) => v.includes('\u0000'))).toBe(false);

    // The database must have received exactly the strings we hashed: check the byte lengths too.
    const { rows } = await client.query<{ d: string; c: string; u: string; n: number }>(
      `select hashtextextended(v, 0)::text as d,
              hashtextextended(v collate "C", 0)::text as c,
              hashtextextended(v collate pg_c_utf8, 0)::text as u,
              octet_length(v) as n
         from unnest($1::text[]) with ordinality as u(v, i) order by i`,
      [values],
    );
    expect(rows).toHaveLength(values.length);
    const lengthMismatches = values.filter((v, i) => Buffer.byteLength(v, 'utf8') !== rows[i]!.n).slice(0, 5);
    expect(lengthMismatches.map(showText), 'strings that did not reach the database intact').toEqual([]);

    const expected = rows.map((row) => BigInt(row.d));
    expectParity('hashTextExtended', values, expected, hashTextExtended, showText);
    expectParity('hashKey(text, string)', values, expected, (v) => hashKey('text', v), showText);
    expectParity('hashBytesExtended(UTF-8 bytes)', values, expected, (v) => hashBytesExtended(Buffer.from(v, 'utf8')), showText);
    // Deterministic collations all hash the bytes: the default, "C" and pg_c_utf8 agree.
    expectParity('hashtextextended under collate "C"', values, rows.map((row) => BigInt(row.c)), hashTextExtended, showText);
    expectParity('hashtextextended under pg_c_utf8', values, rows.map((row) => BigInt(row.u)), hashTextExtended, showText);
  });

  it('bytes: hashBytesExtended matches on every byte length 0..100 with high bytes in every lane', async () => {
    // Text must be valid UTF-8, so high bytes come as 'ÿ' (0xC3 0xBF) pairs, shifted by one ASCII byte
    // or not: every lane of a 12-byte block and every tail length holds a byte >= 0x80 somewhere.
    const values: string[] = [];
    for (let len = 0; len <= 100; len++) {
      for (let shift = 0; shift < 2; shift++) {
        let s = shift ? 'a' : '';
        while (Buffer.byteLength(s) + 2 <= len) s += 'ÿ';
        while (Buffer.byteLength(s) < len) s += 'b';
        values.push(s);
      }
    }
    const expected = await dbHashes('hashtextextended(v, 0)', 'text[]', values);
    expectParity('hashBytesExtended on high bytes in every lane', values, expected, (v) => hashBytesExtended(Buffer.from(v, 'utf8')), showText);
  });

  it('uuid: uuid_hash_extended = hashUuidExtended and hashKey("uuid", …)', async () => {
    const r = randomTools(0x5348_7575n);
    const hex = (n: bigint, digits: number): string => n.toString(16).padStart(digits, '0');
    const format = (hi: bigint, lo: bigint): string => {
      const h = hex(hi, 16) + hex(lo, 16);
      return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
    };
    const values: string[] = [
      '00000000-0000-0000-0000-000000000000',
      'ffffffff-ffff-ffff-ffff-ffffffffffff',
      'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF',
      '00000000-0000-0000-0000-000000000001',
      '80000000-0000-0000-0000-000000000000',
      '7fffffff-ffff-ffff-ffff-ffffffffffff',
      '01234567-89ab-cdef-0123-456789abcdef',
      'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11',
      'a0eebc999c0b4ef8bb6d6bb9bd380a11', // no dashes: PostgreSQL accepts it too
      'A0EEBC999C0B4EF8BB6D6BB9BD380A11',
    ];
    // Each single byte set to 0xff, the others zero: every lane of the byte loop.
    for (let i = 0; i < 16; i++) values.push(format(i < 8 ? 0xffn << BigInt(8 * (7 - i)) : 0n, i >= 8 ? 0xffn << BigInt(8 * (15 - i)) : 0n));
    for (let i = 0; i < 12_000; i++) {
      let hi = r.next();
      let lo = r.next();
      if (i % 2 === 0) {
        // Version 4, RFC 4122 variant.
        hi = (hi & ~0xf000n) | 0x4000n;
        lo = (lo & ~(0xc0n << 56n)) | (0x80n << 56n);
      }
      const u = format(hi, lo);
      values.push(i % 5 === 0 ? u.toUpperCase() : u);
    }
    expect(values.length).toBeGreaterThanOrEqual(10_000);

    const expected = await dbHashes('uuid_hash_extended(v::uuid, 0)', 'text[]', values);
    expectParity('hashUuidExtended', values, expected, hashUuidExtended);
    expectParity('hashKey(uuid, string)', values, expected, (v) => hashKey('uuid', v));
  });

  it('hashKey uses, for every key type, the function sqlHashFunction names (spot check through the database)', async () => {
    const samples: Array<[KeyType, string, unknown]> = [
      ['smallint', '-12345', -12345],
      ['integer', '2147483647', 2147483647],
      ['bigint', '-9223372036854775808', -(2n ** 63n)],
      ['text', 'héllo 🎉', 'héllo 🎉'],
      ['uuid', '6ba7b810-9dad-11d1-80b4-00c04fd430c8', '6BA7B810-9DAD-11D1-80B4-00C04FD430C8'],
    ];
    for (const [type, literal, key] of samples) {
      const { rows } = await client.query<{ h: string }>(`select ${sqlHashFunction(type)}($1::${type}, 0)::text as h`, [literal]);
      expect(hashKey(type, key), `${type} ${literal}`).toBe(BigInt(rows[0]!.h));
    }
  });
  it('date, timestamp, timestamptz: hashdateextended, timestamp_hash_extended, timestamptz_hash_extended = hashKey(…) of their canonical text', async () => {
    const r = randomTools(0x5348_0071n);
    // Years 1 to 9999: days −719,162 … 2,932,896 since 1970; microseconds likewise.
    const days: number[] = [-719_162, 2_932_896, -1, 0, 1, 10_956, 10_957, 10_958];
    for (let i = 0; i < 10_000; i++) days.push(-719_162 + r.below(2_932_896 + 719_162 + 1));
    const dates = days.map((d) => normalizeKey('date', new Date(d * 86_400_000).toISOString().slice(0, 10)) as string);
    expectParity('hashKey(date, …)', dates, await dbHashes('hashdateextended(v, 0)', 'date[]', dates), (v) => hashKey('date', v), showText);

    const lo = -62_135_596_800_000_000n;
    const span = 253_402_300_799_999_999n - lo + 1n;
    const micros: bigint[] = [lo, lo + span - 1n, 0n, -1n, 1n, 946_684_800_000_000n, 946_684_799_999_999n];
    for (let i = 0; i < 10_000; i++) micros.push(lo + (r.next() % span));
    // Canonical text through timeKeyValue's own parse: every sub-second digit kept.
    const text = (us: bigint, zone: boolean): string => formatTimestamp(us, zone);
    const plain = micros.map((us) => text(us, false));
    const zoned = micros.map((us) => text(us, true));
    expectParity('hashKey(timestamp, …)', plain, await dbHashes('timestamp_hash_extended(v, 0)', 'timestamp[]', plain), (v) => hashKey('timestamp', v), showText);
    expectParity('hashKey(timestamptz, …)', zoned, await dbHashes('timestamptz_hash_extended(v, 0)', 'timestamptz[]', zoned), (v) => hashKey('timestamptz', v), showText);
    // The same instants written with another offset hash the same.
    const shifted = micros.slice(0, 2_000).filter((us) => us > lo + 36_000_000_000n).map((us) => `${text(us - 5n * 3_600_000_000n, false).replace(' ', 'T')}-05:00`);
    expectParity('hashKey(timestamptz, -05:00)', shifted, await dbHashes('timestamptz_hash_extended(v, 0)', 'timestamptz[]', shifted), (v) => hashKey('timestamptz', v), showText);
    expect(sqlHashFunction('timestamptz')).toBe('timestamptz_hash_extended');
  });
});
