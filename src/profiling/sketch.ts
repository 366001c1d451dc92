/**
 * Per-key counts in fixed memory, whatever the number of distinct keys: a count-min sketch (every
 * key's count, overestimated by at most ε·N with probability 1 − δ, ε = e / width, δ = e^−depth, N the
 * total counted) and a space-saving list of the top keys (every key counted more than N / capacity is
 * in it; each count an overestimate by at most its recorded error). A heavy hitter's reported count is
 * the smaller of the two overestimates. Keys longer than `maxKeyLength` are kept as a prefix and a hash,
 * so that the list's memory is bounded too.
 */
import { hash32 } from '../backup/stats.js';

export interface SketchOptions {
  /** Counters per row: ε = e / width. */
  width?: number;
  /** Rows (independent hashes): δ = e^−depth. */
  depth?: number;
  /** Keys the heavy-hitter list holds. */
  capacity?: number;
  /** Characters of a key kept in the heavy-hitter list. */
  maxKeyLength?: number;
}

export interface HeavyHitterCount {
  key: string;
  /** An overestimate: the smaller of the sketch's and the list's. */
  count: number;
  /** At least this many (the list's count minus its error). */
  lowerBound: number;
}

export const DEFAULT_SKETCH: Required<SketchOptions> = { width: 8192, depth: 5, capacity: 256, maxKeyLength: 128 };

/** Bytes a heavy-hitter entry takes at most: the key (UTF-16), its counts and the map's and heap's share. */
const ENTRY_OVERHEAD = 96;

interface Entry {
  key: string;
  count: number;
  error: number;
  /** Its position in the heap. */
  at: number;
}

export class KeyCounter {
  readonly width: number;
  readonly depth: number;
  readonly capacity: number;
  readonly maxKeyLength: number;
  private readonly counters: Float64Array;
  private readonly entries = new Map<string, Entry>();
  /** Min-heap of the list's entries by count: the root is the one space-saving replaces. */
  private readonly heap: Entry[] = [];
  private n = 0;

  constructor(options: SketchOptions = {}) {
    const o = { ...DEFAULT_SKETCH, ...options };
    for (const [k, v] of Object.entries(o)) if (!Number.isSafeInteger(v) || v < 1) throw new RangeError(`sketch ${k}: expected a whole number ≥ 1, got ${v}`);
    this.width = o.width;
    this.depth = o.depth;
    this.capacity = o.capacity;
    this.maxKeyLength = o.maxKeyLength;
    this.counters = new Float64Array(this.width * this.depth);
  }

  /** Total of the counts added (N). */
  get total(): number {
    return this.n;
  }

  /** ε·N: the sketch's overestimate bound (holds for each key with probability 1 − e^−depth). */
  get errorBound(): number {
    return (Math.E / this.width) * this.n;
  }

  /** Upper bound of the memory held, in bytes: fixed at construction. */
  bytes(): number {
    return this.counters.byteLength + this.capacity * (ENTRY_OVERHEAD + 2 * (this.maxKeyLength + 9));
  }

  private listKey(key: string): string {
    return key.length <= this.maxKeyLength ? key : `${key.slice(0, this.maxKeyLength)}#${hash32(key).toString(16)}`;
  }

  /** The key's smallest counter after adding `count` to each of its counters (Kirsch–Mitzenmacher: row i uses h1 + i·h2). */
  private touch(key: string, count: number): number {
    const h1 = hash32(key);
    const h2 = hash32(key, 0x9747b28c) | 1;
    let min = Infinity;
    for (let i = 0; i < this.depth; i++) {
      const at = i * this.width + (((h1 + Math.imul(i, h2)) >>> 0) % this.width);
      const v = (this.counters[at]! += count);
      if (v < min) min = v;
    }
    return min;
  }

  add(key: string, count = 1): void {
    if (!(count > 0) || !Number.isFinite(count)) return;
    this.n += count;
    this.touch(key, count);
    const k = this.listKey(key);
    const entry = this.entries.get(k);
    if (entry) {
      entry.count += count;
      this.siftDown(entry.at);
    } else if (this.heap.length < this.capacity) {
      const e: Entry = { key: k, count, error: 0, at: this.heap.length };
      this.heap.push(e);
      this.entries.set(k, e);
      this.siftUp(e.at);
    } else {
      // Space-saving: the least counted key gives its place; the newcomer inherits its count as error.
      const min = this.heap[0]!;
      this.entries.delete(min.key);
      const e: Entry = { key: k, count: min.count + count, error: min.count, at: 0 };
      this.heap[0] = e;
      this.entries.set(k, e);
      this.siftDown(0);
    }
  }

  /**
   * Adds another counter's counts (the same width, depth and capacity): the sketches add up cell by cell;
   * the lists combine (a key missing from one list counted at that list's least count, as space-saving
   * would have) and keep the `capacity` largest, so that the merged list keeps both lists' guarantee.
   */
  merge(other: KeyCounter): void {
    if (other.width !== this.width || other.depth !== this.depth || other.capacity !== this.capacity) {
      throw new RangeError(`cannot merge a ${other.width}×${other.depth} sketch of ${other.capacity} keys into a ${this.width}×${this.depth} one of ${this.capacity}`);
    }
    for (let i = 0; i < this.counters.length; i++) this.counters[i]! += other.counters[i]!;
    const floor = (c: KeyCounter) => (c.heap.length < c.capacity ? 0 : c.heap[0]!.count);
    const [mine, theirs] = [floor(this), floor(other)];
    const combined = new Map<string, { count: number; error: number }>();
    for (const e of this.heap) combined.set(e.key, { count: e.count + (other.entries.get(e.key) ? 0 : theirs), error: e.error + (other.entries.get(e.key) ? 0 : theirs) });
    for (const e of other.heap) {
      const c = combined.get(e.key);
      if (c && this.entries.has(e.key)) {
        c.count += e.count;
        c.error += e.error;
      } else combined.set(e.key, { count: e.count + mine, error: e.error + mine });
    }
    this.n += other.n;
    this.entries.clear();
    this.heap.length = 0;
    const kept = [...combined].sort((a, b) => b[1].count - a[1].count).slice(0, this.capacity);
    for (const [key, c] of kept) {
      const e: Entry = { key, count: c.count, error: c.error, at: this.heap.length };
      this.heap.push(e);
      this.entries.set(key, e);
      this.siftUp(e.at);
    }
  }

  /** The key's count, overestimated by at most errorBound (probability 1 − e^−depth). */
  estimate(key: string): number {
    const min = this.touch(key, 0);
    const entry = this.entries.get(this.listKey(key));
    return entry ? Math.min(min, entry.count) : min;
  }

  /** The `n` most counted keys, most first. */
  top(n = this.capacity): HeavyHitterCount[] {
    return [...this.heap]
      .map((e) => ({ key: e.key, count: Math.min(e.count, this.estimate(e.key)), lowerBound: e.count - e.error }))
      .sort((a, b) => b.count - a.count || a.key.localeCompare(b.key))
      .slice(0, n);
  }

  /** Keys in the list: at most `capacity`. */
  get listed(): number {
    return this.entries.size;
  }

  private swap(i: number, j: number): void {
    const a = this.heap[i]!;
    const b = this.heap[j]!;
    this.heap[i] = b;
    this.heap[j] = a;
    b.at = i;
    a.at = j;
  }

  private siftUp(i: number): void {
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (this.heap[parent]!.count <= this.heap[i]!.count) return;
      this.swap(i, parent);
      i = parent;
    }
  }

  private siftDown(i: number): void {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let least = i;
      if (l < this.heap.length && this.heap[l]!.count < this.heap[least]!.count) least = l;
      if (r < this.heap.length && this.heap[r]!.count < this.heap[least]!.count) least = r;
      if (least === i) return;
      this.swap(i, least);
      i = least;
    }
  }
}
