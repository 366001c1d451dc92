import { describe, expect, it } from 'vitest';
import { KeyCounter } from '../../../src/profiling/sketch.js';

describe('KeyCounter: count-min sketch and space-saving heavy hitters', () => {
  it('1 million distinct keys: memory stays fixed (≤ 1 MiB) and the planted heavy hitters are found within the error bound', () => {
    const counter = new KeyCounter();
    const bytes = counter.bytes();
    expect(bytes).toBeLessThanOrEqual(1024 * 1024);
    const heavy = Array.from({ length: 10 }, (_, i) => `tenant-${i}`);
    const truth = new Map(heavy.map((k, i) => [k, 0 * i]));
    for (let i = 0; i < 1_000_000; i++) {
      counter.add(`key-${i}`);
      // Every 5th step, one of the heavy keys (tenant-0 the most, tenant-9 the least).
      if (i % 5 === 0) {
        const k = heavy[Math.min(9, Math.floor(-Math.log2(1 - ((i / 5) % 1024) / 1024)))]!;
        counter.add(k);
        truth.set(k, truth.get(k)! + 1);
      }
      if (i === 500_000) expect(counter.bytes()).toBe(bytes);
    }
    expect(counter.bytes()).toBe(bytes);
    expect(counter.listed).toBeLessThanOrEqual(counter.capacity);
    const n = counter.total;
    expect(n).toBe(1_000_000 + [...truth.values()].reduce((a, b) => a + b, 0));
    // Every key above N / capacity must be in the list, and the sketch's bound holds for it.
    const top = counter.top(20);
    for (const [k, c] of truth) {
      if (c <= n / counter.capacity) continue;
      const hit = top.find((t) => t.key === k);
      expect(hit, k).toBeDefined();
      expect(hit!.count).toBeGreaterThanOrEqual(c);
      expect(hit!.count - c).toBeLessThanOrEqual(counter.errorBound);
      expect(hit!.lowerBound).toBeLessThanOrEqual(c);
    }
    // The top of the list is the planted keys, in order of their true counts.
    const planted = [...truth].filter(([, c]) => c > n / counter.capacity).sort((a, b) => b[1] - a[1]).map(([k]) => k);
    expect(planted.length).toBeGreaterThanOrEqual(5);
    expect(top.slice(0, planted.length).map((t) => t.key)).toEqual(planted);
    // Point queries of light keys: never under, over by more than ε·N for at most δ of them (δ = e^-5 < 1 %; 2 % allowed).
    let over = 0;
    for (let i = 0; i < 10_000; i++) {
      const e = counter.estimate(`key-${i * 97}`);
      expect(e).toBeGreaterThanOrEqual(1);
      if (e - 1 > counter.errorBound) over++;
    }
    expect(over / 10_000).toBeLessThan(0.02);
  });

  it('merges: two routers\' counters add up to one that saw both streams, within the same bounds', () => {
    const a = new KeyCounter({ capacity: 32 });
    const b = new KeyCounter({ capacity: 32 });
    const truth = new Map<string, number>();
    for (let i = 0; i < 50_000; i++) {
      const key = i % 4 === 0 ? `hot-${i % 5}` : `cold-${i}`;
      (i % 3 === 0 ? a : b).add(key);
      truth.set(key, (truth.get(key) ?? 0) + 1);
    }
    a.merge(b);
    expect(a.total).toBe(50_000);
    expect(a.listed).toBeLessThanOrEqual(32);
    const top = a.top(5);
    expect(top.map((t) => t.key).sort()).toEqual(['hot-0', 'hot-1', 'hot-2', 'hot-3', 'hot-4']);
    for (const t of top) {
      expect(t.count).toBeGreaterThanOrEqual(truth.get(t.key)!);
      expect(t.count - truth.get(t.key)!).toBeLessThanOrEqual(a.errorBound);
      expect(t.lowerBound).toBeLessThanOrEqual(truth.get(t.key)!);
    }
    expect(a.estimate('cold-1')).toBeGreaterThanOrEqual(1);
    expect(() => a.merge(new KeyCounter({ width: 16 }))).toThrow(/cannot merge/);
  });

  it('weighted counts, long keys kept bounded, and bad options refused', () => {
    const c = new KeyCounter({ width: 64, depth: 3, capacity: 2, maxKeyLength: 8 });
    c.add('a', 5);
    c.add('b', 2);
    c.add('c', 1); // replaces b: count 3, error 2
    expect(c.top().map((t) => [t.key, t.lowerBound])).toEqual([['a', 5], ['c', 1]]);
    const long = 'x'.repeat(1000);
    c.add(long, 10);
    expect(c.top(1)[0]!.key.length).toBeLessThan(20);
    expect(c.estimate(long)).toBeGreaterThanOrEqual(10);
    c.add('z', 0);
    c.add('z', Number.NaN);
    expect(c.total).toBe(18);
    expect(() => new KeyCounter({ width: 0 })).toThrow(/width/);
  });
});
