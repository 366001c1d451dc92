/**
 * Key statistics of the columns that could be a shard key, gathered while the rows stream by, in
 * bounded memory whatever the table's size: a uniform reservoir sample (the quantiles), a
 * Misra–Gries summary (the heavy hitters, each count a lower bound off by at most `maxError`) and a
 * HyperLogLog sketch (the distinct estimate, ±1.6 % typical at 4096 registers). The shard proposal
 * reads them from the manifest: range bounds from the quantiles, hash when a few values do not
 * dominate, the number of distinct values as the limit of what sharding by the column can spread.
 */
import type { Data, RecordBatch } from 'apache-arrow';
import { uniforms } from '../forecasting/random.js';
import { canonicalText, formatDate, formatTimestamp, type ValueKind } from './values.js';

export const KEY_CANDIDATE_KINDS: readonly ValueKind[] = ['int16', 'int32', 'int64', 'text', 'uuid', 'date', 'timestamp', 'timestamptz'];
/** PostgreSQL types stored as text that can be a shard key (numeric, json and the rest cannot). */
export const TEXT_KEY_TYPES = ['text', 'varchar', 'bpchar'];

export interface HeavyHitter {
  value: string;
  /** Rows with the value, at least (Misra–Gries lower bound); at most count + maxError. */
  count: number;
  frequency: number;
}

export interface KeyStats {
  column: string;
  rows: number;
  nullFraction: number;
  distinctEstimate: number;
  min: string | null;
  max: string | null;
  /** 101 values: the 0th, 1st, …, 100th percentile of the sample (canonical text); empty without non-null values. */
  quantiles: string[];
  sampleSize: number;
  heavyHitters: HeavyHitter[];
  /** Bound of the heavy hitters' undercount. */
  maxError: number;
}

const SAMPLE_SIZE = 10_000;
const MG_COUNTERS = 256;
const HLL_BITS = 12;
const HLL_REGISTERS = 1 << HLL_BITS;
/** Heavy hitters reported: values seen in at least this share of rows (lower bound), at most this many. */
const HH_MIN_FREQUENCY = 0.005;
const HH_MAX = 20;

type SortKey = number | bigint | string;

/** FNV-1a (from `seed`) then murmur3's finalizer: a fast 32-bit string hash; other seeds give other hashes. */
export function hash32(s: string, seed = 0x811c9dc5): number {
  let h = seed;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  // murmur3 fmix32: spreads FNV's low-entropy high bits
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export class KeyStatsCollector {
  private rows = 0;
  private nulls = 0;
  private seen = 0;
  private readonly sample: SortKey[] = [];
  private readonly counters = new Map<string, number>();
  private decrements = 0;
  private readonly registers = new Uint8Array(HLL_REGISTERS);
  private min: SortKey | null = null;
  private max: SortKey | null = null;
  private readonly random = uniforms(0x5eed); // the same rows give the same sample

  constructor(
    readonly column: string,
    readonly kind: ValueKind,
  ) {}

  private sortKey(data: Data, i: number, text: string): SortKey {
    // Values at i: Arrow JS slices a sliced Data's value buffer (see canonicalText).
    const at = i;
    switch (this.kind) {
      case 'int16':
      case 'int32':
      case 'date':
        return (data.values as Int32Array)[at]!;
      case 'int64':
      case 'timestamp':
      case 'timestamptz':
        return (data.values as BigInt64Array)[at]!;
      default:
        return text;
    }
  }

  private keyText(key: SortKey): string {
    if (this.kind === 'date') return formatDate(key as number);
    if (this.kind === 'timestamp' || this.kind === 'timestamptz') return formatTimestamp(key as bigint, this.kind === 'timestamptz');
    return String(key);
  }

  add(data: Data, rows: number): void {
    for (let i = 0; i < rows; i++) {
      this.rows++;
      const text = canonicalText(this.kind, data, i);
      if (text === null) {
        this.nulls++;
        continue;
      }
      const key = this.sortKey(data, i, text);
      if (this.min === null || key < this.min) this.min = key;
      if (this.max === null || key > this.max) this.max = key;
      // Algorithm R
      this.seen++;
      if (this.sample.length < SAMPLE_SIZE) this.sample.push(key);
      else {
        const j = Math.floor(this.random() * this.seen);
        if (j < SAMPLE_SIZE) this.sample[j] = key;
      }
      // Misra–Gries
      const c = this.counters.get(text);
      if (c !== undefined) this.counters.set(text, c + 1);
      else if (this.counters.size < MG_COUNTERS) this.counters.set(text, 1);
      else {
        this.decrements++;
        for (const [k, v] of this.counters) {
          if (v <= 1) this.counters.delete(k);
          else this.counters.set(k, v - 1);
        }
      }
      // HyperLogLog
      const h = hash32(text);
      const r = h >>> (32 - HLL_BITS);
      const rest = (h << HLL_BITS) >>> 0;
      const rank = rest === 0 ? 32 - HLL_BITS + 1 : Math.clz32(rest) + 1;
      if (rank > this.registers[r]!) this.registers[r] = rank;
    }
  }

  private distinct(): number {
    let sum = 0;
    let zeros = 0;
    for (const v of this.registers) {
      sum += 2 ** -v;
      if (v === 0) zeros++;
    }
    const m = HLL_REGISTERS;
    const raw = ((0.7213 / (1 + 1.079 / m)) * m * m) / sum;
    const estimate = raw <= 2.5 * m && zeros > 0 ? m * Math.log(m / zeros) : raw;
    return Math.min(Math.round(estimate), this.rows - this.nulls);
  }

  result(): KeyStats {
    const sorted = [...this.sample].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const quantiles = sorted.length ? Array.from({ length: 101 }, (_, q) => this.keyText(sorted[Math.min(sorted.length - 1, Math.floor((q / 100) * (sorted.length - 1) + 0.5))]!)) : [];
    const nonNull = this.rows - this.nulls;
    const heavyHitters = [...this.counters]
      .filter(([, count]) => nonNull > 0 && count / this.rows >= HH_MIN_FREQUENCY)
      .sort((a, b) => b[1] - a[1])
      .slice(0, HH_MAX)
      .map(([value, count]) => ({ value, count, frequency: count / this.rows }));
    return {
      column: this.column,
      rows: this.rows,
      nullFraction: this.rows ? this.nulls / this.rows : 0,
      distinctEstimate: this.distinct(),
      min: this.min === null ? null : this.keyText(this.min),
      max: this.max === null ? null : this.keyText(this.max),
      quantiles,
      sampleSize: sorted.length,
      heavyHitters,
      maxError: this.decrements,
    };
  }
}

/** Feeds a batch to the collectors of its key-candidate columns (by column index). */
export function collectStats(collectors: Map<number, KeyStatsCollector>, batch: RecordBatch): void {
  for (const [index, collector] of collectors) collector.add(batch.data.children[index]!, batch.numRows);
}
