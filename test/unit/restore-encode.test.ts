import { Bool, Int16, Int32, Int64, makeData, TimestampMicrosecond, Utf8, vectorFromArray } from 'apache-arrow';
import { canonicalText } from '../../src/backup/values.js';
import { describe, expect, it } from 'vitest';
import { hashInt4Extended, hashInt8Extended } from '../../src/hashing.js';
import { writeNumeric } from '../../src/restore/copy-binary.js';
import { columnWriter, CopyBuffer } from '../../src/restore/copy-encoder.js';
import { RowRouter, type RestoreShard } from '../../src/restore/import.js';
import { parseTimestamp } from '../../src/sql/datetime.js';
import { rng } from '../helpers/random.js';

const MIN64 = -(2n ** 63n);
const MAX64 = 2n ** 63n - 1n;
const SAFE = 2n ** 53n;

/** Edge values around every boundary the encoder and the router treat apart, and random ones of every magnitude. */
function int64Cases(seed: number, count: number): bigint[] {
  const edges = [0n, 1n, -1n, 9n, 10n, -10n, 99n, 100n, 2n ** 31n - 1n, -(2n ** 31n), 2n ** 32n, -(2n ** 32n), 2n ** 32n - 1n];
  for (const d of [-1n, 0n, 1n]) edges.push(SAFE + d, -SAFE + d, MAX64 - (d + 1n), MIN64 + (d + 1n));
  const random = rng(seed);
  const out = [...edges];
  for (let i = 0; i < count; i++) {
    // A random sign and a random bit length, so that small and huge values are both common.
    const bits = BigInt(Math.floor(random() * 63));
    const v = BigInt(Math.floor(random() * 2 ** 31)) * 2n ** 32n + BigInt(Math.floor(random() * 2 ** 32));
    const m = v % (2n ** bits + 1n);
    out.push(random() < 0.5 ? -m : m);
  }
  return out;
}

function int64Data(values: bigint[]) {
  return makeData({ type: new Int64(), length: values.length, nullCount: 0, data: BigInt64Array.from(values) });
}

function encodeAll(writer: (out: CopyBuffer, i: number) => void, n: number): string[] {
  const out = new CopyBuffer();
  for (let i = 0; i < n; i++) {
    writer(out, i);
    out.byte(10);
  }
  return out.take().toString('utf8').split('\n').slice(0, n);
}

describe('COPY text of integer and time columns, without BigInt', () => {
  it('writes every int64 exactly, across ±2^53 and at the int64 limits', () => {
    const values = int64Cases(7, 20_000);
    expect(encodeAll(columnWriter('int64', int64Data(values)), values.length)).toEqual(values.map(String));
  });

  it('writes int16 and int32 columns exactly', () => {
    const ints = [0, 1, -1, 9, 10, 32767, -32768, 2147483647, -2147483648, 123456789, -987654321];
    const random = rng(3);
    for (let i = 0; i < 5000; i++) ints.push(Math.floor(random() * 2 ** 32) - 2 ** 31);
    const data32 = makeData({ type: new Int32(), length: ints.length, nullCount: 0, data: Int32Array.from(ints) });
    expect(encodeAll(columnWriter('int32', data32), ints.length)).toEqual(ints.map(String));
    const shorts = [0, -1, 1, 32767, -32768, 10, -10, 9999];
    const data16 = makeData({ type: new Int16(), length: shorts.length, nullCount: 0, data: Int16Array.from(shorts) });
    expect(encodeAll(columnWriter('int16', data16), shorts.length)).toEqual(shorts.map(String));
  });

  it('writes digits of every length', () => {
    const out = new CopyBuffer();
    const values: number[] = [];
    for (let p = 1; p <= 2 ** 53; p *= 10) values.push(p - 1, p, p + 1);
    values.push(2 ** 53, 2 ** 53 - 1, 4294967295, 4294967296);
    for (const v of values) {
      out.digits(v);
      out.byte(44);
    }
    expect(out.take().toString().split(',').slice(0, -1)).toEqual(values.map((v) => BigInt(v).toString()));
  });

  it('writes timestamps that PostgreSQL reads back to the same microsecond, infinities and far years included', () => {
    const random = rng(11);
    const micros: bigint[] = [0n, -1n, 1n, 86_400_000_000n, -86_400_000_000n, 1_000_000n, MAX64, MIN64, SAFE - 1n, -SAFE, SAFE];
    // 0001-01-01 to 9999-12-31, and some before 1970 with fractions.
    for (let i = 0; i < 20_000; i++) micros.push(BigInt(Math.floor((random() * 2 - 1) * 62_135_596_800)) * 1_000_000n + BigInt(Math.floor(random() * 1_000_000)));
    micros.push(253_402_300_800_000_000n + 5n); // 10000-01-01: past 9999, the general form
    for (const zone of [true, false]) {
      const data = makeData({ type: new TimestampMicrosecond(zone ? 'UTC' : null), length: micros.length, nullCount: 0, data: BigInt64Array.from(micros) });
      const texts = encodeAll(columnWriter(zone ? 'timestamptz' : 'timestamp', data), micros.length);
      texts.forEach((text, i) => expect(parseTimestamp(text, zone), text).toBe(micros[i]));
    }
  });
});

describe('sliced Arrow data (value buffers sliced, validity bitmaps and bool bits not)', () => {
  it('writes and reads each kind at the slice, NULLs included', () => {
    const cases = [
      { kind: 'text' as const, type: new Utf8(), values: ['a', null, 'b\tc', 'd', null, 'e\\f', 'g', 'h', null, 'i'], text: (v: unknown) => (v === null ? '\\N' : String(v).replace(/\\/g, '\\\\').replace(/\t/g, '\\t')) },
      { kind: 'int32' as const, type: new Int32(), values: [1, null, -3, 4, 5, null, 7, 8, 9, -10], text: (v: unknown) => (v === null ? '\\N' : String(v)) },
      { kind: 'bool' as const, type: new Bool(), values: [true, false, null, true, true, false, false, true, null, false, true], text: (v: unknown) => (v === null ? '\\N' : v ? 't' : 'f') },
    ];
    for (const c of cases) {
      const whole = vectorFromArray(c.values as never[], c.type as never).data[0]!;
      for (const [from, to] of [[0, c.values.length], [3, 9], [5, 7], [1, 10]] as const) {
        const data = whole.slice(from, to - from);
        const expected = c.values.slice(from, to);
        expect(encodeAll(columnWriter(c.kind, data), expected.length), `${c.kind} [${from}, ${to})`).toEqual(expected.map(c.text));
        expect(expected.map((_, i) => canonicalText(c.kind, data, i))).toEqual(expected.map((v) => (v === null ? null : c.kind === 'bool' ? (v ? 't' : 'f') : String(v))));
      }
    }
  });
});

describe('RowRouter on integer keys, without BigInt', () => {
  // Seven shards of uneven width over the whole int64 hash space, listed out of order.
  const bounds = [MIN64, -(2n ** 62n), -5n, 0n, 1n, 2n ** 40n, 2n ** 62n + 12345n];
  const shards: RestoreShard[] = bounds
    .map((min, i) => ({ shardId: 100 + i, schema: `s${i}`, nodeId: 1, hashMin: String(min), hashMax: String(i + 1 < bounds.length ? bounds[i + 1]! - 1n : MAX64) }))
    .reverse();
  const router = new RowRouter('t', 'hash', 'bigint', shards);
  /** The shard by the BigInt hash: the one whose range holds it. */
  const expected = (h: bigint) => shards.findIndex((s) => BigInt(s.hashMin!) <= h && h <= BigInt(s.hashMax!));

  it('routes int64 keys as hashint8extended does', () => {
    const values = int64Cases(5, 20_000);
    const data = int64Data(values);
    values.forEach((v, i) => expect(router.route('int64', data, i), String(v)).toBe(expected(hashInt8Extended(v))));
  });

  it('routes int32 and int16 keys as hashint4extended does', () => {
    const random = rng(9);
    const ints = [0, 1, -1, 2147483647, -2147483648];
    for (let i = 0; i < 20_000; i++) ints.push(Math.floor(random() * 2 ** 32) - 2 ** 31);
    const data = makeData({ type: new Int32(), length: ints.length, nullCount: 0, data: Int32Array.from(ints) });
    ints.forEach((v, i) => expect(router.route('int32', data, i), String(v)).toBe(expected(hashInt4Extended(v))));
    const shorts = [0, 1, -1, 32767, -32768, 4242];
    const data16 = makeData({ type: new Int16(), length: shorts.length, nullCount: 0, data: Int16Array.from(shorts) });
    shorts.forEach((v, i) => expect(router.route('int16', data16, i), String(v)).toBe(expected(hashInt4Extended(v))));
  });

  it('routes a sliced batch by its own offset', () => {
    const values = int64Cases(21, 1000);
    const data = int64Data(values).slice(100, 500);
    for (let i = 0; i < 500; i++) expect(router.route('int64', data, i)).toBe(expected(hashInt8Extended(values[100 + i]!)));
  });
});

describe('numeric in COPY binary (numeric_send form)', () => {
  /** ndigits, weight, sign, dscale and the base-10000 digits of one value. */
  function numeric(text: string): number[] {
    const out = new CopyBuffer();
    const bytes = Buffer.from(text);
    writeNumeric(out, bytes, 0, bytes.length);
    const b = out.take();
    expect(b.readInt32BE(0)).toBe(b.length - 4);
    const words: number[] = [];
    for (let at = 4; at < b.length; at += 2) words.push(at === 8 ? b.readUInt16BE(at) : b.readInt16BE(at));
    return words;
  }

  it('groups digits by four around the decimal point, strips zero groups, keeps the display scale', () => {
    expect(numeric('12345678901234.5678')).toEqual([5, 3, 0, 4, 12, 3456, 7890, 1234, 5678]);
    expect(numeric('-0.0001')).toEqual([1, -1, 0x4000, 4, 1]);
    expect(numeric('0.00001234')).toEqual([1, -2, 0, 8, 1234]);
    expect(numeric('100000000')).toEqual([1, 2, 0, 0, 1]);
    expect(numeric('1.50')).toEqual([2, 0, 0, 2, 1, 5000]);
    expect(numeric('007')).toEqual([1, 0, 0, 0, 7]);
    expect(numeric('0')).toEqual([0, 0, 0, 0]);
    expect(numeric('-0.00')).toEqual([0, 0, 0, 2]);
    expect(numeric('NaN')).toEqual([0, 0, 0xc000, 0]);
    expect(numeric('Infinity')).toEqual([0, 0, 0xd000, 0]);
    expect(numeric('-Infinity')).toEqual([0, 0, 0xf000, 0]);
  });

  it('refuses text PostgreSQL does not write for a numeric', () => {
    for (const bad of ['1e3', '', '-', '.5', '1.', ' 1', '1,5', '0x10', '1_000', 'nan', '-NaN', 'Inf']) {
      expect(() => numeric(bad), bad).toThrow(/is not PostgreSQL's text of a numeric value/);
    }
  });
});

describe('CopyBuffer lent to a writer', () => {
  const fill = (out: CopyBuffer, text: string) => {
    out.ensure(text.length);
    out.ascii(text);
  };

  it('never writes into lent bytes before reclaim(true), and writes into the same memory after it', () => {
    const out = new CopyBuffer();
    fill(out, 'first batch');
    const lent = out.lend();
    expect(lent.toString()).toBe('first batch');
    // Not reclaimed (the writer may hold it): the next bytes go to other memory.
    fill(out, 'SECOND');
    expect(lent.toString()).toBe('first batch');
    const second = out.lend();
    expect(second.buffer).not.toBe(lent.buffer);
    // Reclaimed while the writer still holds it: left to the writer, the next bytes go elsewhere again.
    out.reclaim(false);
    fill(out, 'third');
    expect(second.toString()).toBe('SECOND');
    const third = out.lend();
    // Released: the same memory is written again.
    out.reclaim(true);
    fill(out, 'fourth');
    expect(out.buf.buffer).toBe(third.buffer);
    expect(out.lend().toString()).toBe('fourth');
  });

  it('gives a released buffer to the next CopyBuffer made, and keeps no buffer of a batch of wide rows', () => {
    const a = new CopyBuffer();
    fill(a, 'x'.repeat(100_000));
    const memory = a.buf.buffer;
    a.lend();
    a.release();
    expect(a.buf.length).toBe(0);
    const b = new CopyBuffer();
    expect(b.buf.buffer).toBe(memory);
    b.ensure(9 << 20); // grows past what is kept
    const big = b.buf.buffer;
    b.release();
    expect(new CopyBuffer().buf.buffer).not.toBe(big);
  });
});
