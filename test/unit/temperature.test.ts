import { describe, expect, it } from 'vitest';
import { distinctPoints, kmeans } from '../../src/profiling/kmeans.js';
import { accessFeatures, classifyShards, featureVectors, type TemperatureFeatures } from '../../src/profiling/temperature.js';
import { uniforms } from '../../src/forecasting/random.js';

/** A shard whose rates are all about `rate` accesses/s (±5%), flat, with a forecast peak of 2 × rate. */
function shard(rate: number, random: () => number): TemperatureFeatures {
  const r = rate * (0.95 + 0.1 * random());
  return { recentRate: r, meanRate: r, peakRate: r * 1.5, trend: 0, forecastPeak: rate * 2 };
}

const MINUTE = 60_000;

describe('k-means', () => {
  it('finds three separated groups, the same way every time', () => {
    const random = uniforms(7);
    const points = [0, 10, 20].flatMap((c) => Array.from({ length: 5 }, () => [c + random(), c - random()]));
    const a = kmeans(points, 3, { seed: 3 });
    const b = kmeans(points, 3, { seed: 3 });
    expect(b).toEqual(a);
    for (let g = 0; g < 3; g++) expect(new Set(a.assignment.slice(g * 5, g * 5 + 5)).size).toBe(1);
    expect(new Set(a.assignment).size).toBe(3);
    expect(a.inertia).toBeLessThan(15 * 2);
  });

  it('refuses k above the distinct points; counts equal points once', () => {
    expect(distinctPoints([[1, 2], [1, 2], [3, 4]])).toBe(2);
    expect(() => kmeans([[1], [1], [2]], 3)).toThrow(/k = 3 with 2 distinct/);
    expect(kmeans([], 3)).toEqual({ assignment: [], centroids: [], inertia: 0 });
    // Duplicates among distinct points: each cluster gets a point, none is left empty.
    const r = kmeans([[0], [0], [0], [0], [5], [9]], 3, { seed: 1 });
    expect(r.assignment.slice(0, 4)).toEqual([r.assignment[0], r.assignment[0], r.assignment[0], r.assignment[0]]);
    expect(new Set(r.assignment).size).toBe(3);
  });
});

describe('access features', () => {
  const start = Date.UTC(2026, 0, 1, 0, 0);

  it('a flat 60 accesses a minute for two hours: 1/s recent, mean and peak, no trend', () => {
    const counts = new Map(Array.from({ length: 120 }, (_, i) => [start + i * MINUTE, 60]));
    const f = accessFeatures(counts, start, start + 120 * MINUTE);
    expect(f.recentRate).toBeCloseTo(1, 1);
    expect(f.meanRate).toBeCloseTo(1, 5);
    expect(f.peakRate).toBe(1);
    expect(Math.abs(f.trend)).toBeLessThan(0.02);
  });

  it('a rate rising by 1/s each hour has a trend of about 1/s per hour; the busiest minute is the peak', () => {
    const counts = new Map(Array.from({ length: 180 }, (_, i) => [start + i * MINUTE, Math.round((i / 60) * 60)]));
    counts.set(start + 30 * MINUTE, 600);
    const f = accessFeatures(counts, start, start + 179 * MINUTE + 30_000);
    expect(f.trend).toBeGreaterThan(0.9);
    expect(f.trend).toBeLessThan(1.1);
    expect(f.peakRate).toBe(10);
    expect(f.recentRate).toBeGreaterThan(f.meanRate);
  });

  it('no accesses, or one minute observed: zeros and finite numbers', () => {
    expect(accessFeatures(new Map(), start, start + 24 * 60 * MINUTE)).toEqual({ recentRate: 0, meanRate: 0, peakRate: 0, trend: 0 });
    const one = accessFeatures(new Map([[start, 30]]), start, start + 10_000);
    expect(Object.values(one).every(Number.isFinite)).toBe(true);
    expect(one).toMatchObject({ peakRate: 0.5, trend: 0 });
  });
});

describe('hot, warm and cold by clustering', () => {
  const groups = (random: () => number): TemperatureFeatures[] => [
    ...[100, 120, 90].map((r) => shard(r, random)), // hot
    ...[5, 6, 4, 5].map((r) => shard(r, random)), // warm
    ...[0.01, 0.02, 0, 0.01, 0.03].map((r) => shard(r, random)), // cold
  ];
  const expected = [...Array(3).fill('hot'), ...Array(4).fill('warm'), ...Array(5).fill('cold')];

  it('three clear groups get the right classes, with or without the forecast', () => {
    const features = groups(uniforms(1));
    expect(classifyShards(features, { useForecast: true })).toEqual({ classes: expected, clusters: 3 });
    expect(classifyShards(features, { useForecast: false })).toEqual({ classes: expected, clusters: 3 });
  });

  it('deterministic: the same input gives the same classes; shards in another order keep theirs', () => {
    const features = groups(uniforms(2));
    const first = classifyShards(features, { useForecast: true });
    for (let i = 0; i < 5; i++) expect(classifyShards(features, { useForecast: true })).toEqual(first);
    const order = features.map((_, i) => i).reverse();
    const shuffled = classifyShards(order.map((i) => features[i]!), { useForecast: true });
    expect(order.map((i, j) => [i, shuffled.classes[j]]).sort((a, b) => (a[0] as number) - (b[0] as number)).map(([, c]) => c)).toEqual(first.classes);
  });

  it('the classes are relative: the same shape at a thousandth of the rates is classified the same', () => {
    const features = groups(uniforms(3)).map((f) => ({ ...f, recentRate: f.recentRate / 1000, meanRate: f.meanRate / 1000, peakRate: f.peakRate / 1000, forecastPeak: f.forecastPeak! / 1000 }));
    // log1p of accesses per hour: a logarithm down to about one access an hour.
    expect(classifyShards(features, { useForecast: true }).classes).toEqual(expected);
  });

  it('a hot trend or forecast counts: a shard quiet so far but forecast and trending far above the rest is not cold', () => {
    const random = uniforms(4);
    const features = groups(random);
    features.push({ recentRate: 50, meanRate: 1, peakRate: 60, trend: 40, forecastPeak: 400 });
    expect(classifyShards(features, { useForecast: true }).classes.at(-1)).not.toBe('cold');
  });

  it('degenerate inputs: none, one shard, all equal, two levels, rounding-level differences; never NaN', () => {
    expect(classifyShards([], { useForecast: true })).toEqual({ classes: [], clusters: 0 });
    const flat: TemperatureFeatures = { recentRate: 3, meanRate: 3, peakRate: 3, trend: 0, forecastPeak: null };
    expect(classifyShards([flat], { useForecast: false })).toEqual({ classes: ['warm'], clusters: 1 });
    expect(classifyShards(Array(8).fill(flat), { useForecast: false })).toEqual({ classes: Array(8).fill('warm'), clusters: 1 });
    const zero: TemperatureFeatures = { recentRate: 0, meanRate: 0, peakRate: 0, trend: 0, forecastPeak: null };
    expect(classifyShards(Array(4).fill(zero), { useForecast: false }).classes).toEqual(Array(4).fill('warm'));
    // Two levels: hot and cold, no warm.
    expect(classifyShards([zero, flat, zero, flat, flat], { useForecast: false })).toEqual({ classes: ['cold', 'hot', 'cold', 'hot', 'hot'], clusters: 2 });
    // Equal but for floating-point rounding: one class.
    const nearly = [0.1 + 0.2, 0.3, 0.30000000000000004].map((r) => ({ ...flat, recentRate: r, meanRate: r, peakRate: r }));
    expect(classifyShards(nearly, { useForecast: false }).classes).toEqual(['warm', 'warm', 'warm']);
    // Ties: equal shards always share a class.
    const tied = classifyShards([zero, zero, flat, flat, { ...flat, meanRate: 50, recentRate: 50, peakRate: 50 }], { useForecast: false });
    expect(tied).toEqual({ classes: ['cold', 'cold', 'warm', 'warm', 'hot'], clusters: 3 });
    // Non-finite features (a broken forecast row) are taken as 0, not carried into the distances.
    const broken = [zero, { ...flat, trend: NaN, forecastPeak: Infinity }, { ...flat, meanRate: 9 }];
    for (const v of featureVectors(broken, true).flat()) expect(Number.isFinite(v)).toBe(true);
    expect(classifyShards(broken, { useForecast: true }).classes.every((c) => ['hot', 'warm', 'cold'].includes(c))).toBe(true);
  });
});
