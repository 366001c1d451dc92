/**
 * Counters to rates, and rates to buckets of the load clock's step (5 minutes; src/clock.ts). Pure functions over samples of one counter of
 * one object on one node, ordered by time.
 */

import { stepMs } from '../clock.js';

export interface CounterSample {
  /** Milliseconds since the epoch (fractional: the database keeps microseconds). */
  t: number;
  value: number;
  /** When the node's statistics last started from zero (restart or reset). */
  epoch: number;
}

export interface RateInterval {
  start: number;
  end: number;
  /** Per second. */
  rate: number;
}

/**
 * Rates between consecutive samples. A reset (the epoch moved, or the counter went down) is not a
 * negative rate nor a spike: when the reset time is known and inside the interval, the new value
 * counts from the reset; otherwise that one interval is left out (a gap, resampled as missing).
 */
export function counterRates(samples: readonly CounterSample[]): RateInterval[] {
  const out: RateInterval[] = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1]!;
    const b = samples[i]!;
    if (!(b.t > a.t) || !Number.isFinite(a.value) || !Number.isFinite(b.value)) continue;
    const reset = b.epoch !== a.epoch || b.value < a.value;
    if (!reset) {
      out.push({ start: a.t, end: b.t, rate: ((b.value - a.value) * 1000) / (b.t - a.t) });
    } else if (b.epoch > a.t && b.epoch < b.t) {
      out.push({ start: b.epoch, end: b.t, rate: (b.value * 1000) / (b.t - b.epoch) });
    }
  }
  return out;
}


/**
 * Time-weighted average rate per bucket [from + k·bucket, from + (k+1)·bucket). A bucket with no
 * interval overlapping it is null (missing), not zero.
 */
export function resample(intervals: readonly RateInterval[], from: number, to: number, bucketMs = stepMs()): Array<number | null> {
  const n = Math.max(0, Math.ceil((to - from) / bucketMs));
  const weight = new Float64Array(n);
  const sum = new Float64Array(n);
  for (const iv of intervals) {
    const first = Math.max(0, Math.floor((iv.start - from) / bucketMs));
    const last = Math.min(n - 1, Math.floor((iv.end - from) / bucketMs));
    for (let k = first; k <= last; k++) {
      const lo = Math.max(iv.start, from + k * bucketMs);
      const hi = Math.min(iv.end, from + (k + 1) * bucketMs);
      if (hi <= lo) continue;
      weight[k]! += hi - lo;
      sum[k]! += iv.rate * (hi - lo);
    }
  }
  return Array.from({ length: n }, (_, k) => (weight[k]! > 0 ? sum[k]! / weight[k]! : null));
}

/** Sum of several streams' buckets (e.g. one shard's table on the nodes it lived on): missing only where all are. */
export function addBuckets(series: ReadonlyArray<ReadonlyArray<number | null>>): Array<number | null> {
  const n = Math.max(0, ...series.map((s) => s.length));
  return Array.from({ length: n }, (_, k) => {
    let total: number | null = null;
    for (const s of series) {
      const v = s[k];
      if (v !== null && v !== undefined) total = (total ?? 0) + v;
    }
    return total;
  });
}

/**
 * Several streams of one subject (one table's counters on the nodes it lived on, or several tables'
 * or shards'), combined per bucket: the amount they add up to (rate × time, summed over streams)
 * over the time at least one of them covers. Streams that run side by side add their rates; streams
 * that follow one another (a shard moved: its source's counters, then its target's) give the average
 * over both, not the sum of two averages. Time no stream covers is missing; a bucket with none is null.
 * `minus`: rates subtracted within the covered time (never below zero), covering nothing themselves.
 */
export function combineStreams(
  streams: ReadonlyArray<readonly RateInterval[]>,
  from: number,
  to: number,
  bucketMs = stepMs(),
  minus: readonly RateInterval[] = [],
): Array<number | null> {
  const n = Math.max(0, Math.ceil((to - from) / bucketMs));
  const amount = new Float64Array(n);
  const add = (iv: RateInterval, sign: number): void => {
    const first = Math.max(0, Math.floor((iv.start - from) / bucketMs));
    const last = Math.min(n - 1, Math.floor((iv.end - from) / bucketMs));
    for (let k = first; k <= last; k++) {
      const lo = Math.max(iv.start, from + k * bucketMs);
      const hi = Math.min(iv.end, from + (k + 1) * bucketMs);
      if (hi > lo) amount[k]! += sign * iv.rate * (hi - lo);
    }
  };
  for (const stream of streams) for (const iv of stream) add(iv, 1);
  for (const iv of minus) add(iv, -1);
  // The union of the covered time, per bucket.
  const covered = new Float64Array(n);
  const spans = streams.flat().filter((iv) => iv.end > iv.start).sort((a, b) => a.start - b.start);
  let open: { start: number; end: number } | undefined;
  const close = (span: { start: number; end: number }): void => {
    const first = Math.max(0, Math.floor((span.start - from) / bucketMs));
    const last = Math.min(n - 1, Math.floor((span.end - from) / bucketMs));
    for (let k = first; k <= last; k++) {
      const lo = Math.max(span.start, from + k * bucketMs);
      const hi = Math.min(span.end, from + (k + 1) * bucketMs);
      if (hi > lo) covered[k]! += hi - lo;
    }
  };
  for (const iv of spans) {
    if (open && iv.start <= open.end) open.end = Math.max(open.end, iv.end);
    else {
      if (open) close(open);
      open = { start: iv.start, end: iv.end };
    }
  }
  if (open) close(open);
  return Array.from({ length: n }, (_, k) => (covered[k]! > 0 ? Math.max(0, amount[k]! / covered[k]!) : null));
}
