/**
 * k-means (Lloyd's iterations) with k-means++ seeding from a seeded generator: the same points, k
 * and seed give the same clusters. Written here rather than taken from npm: the points are a table's
 * shards (tens to thousands, a handful of features), and the callers need exact control of ties and
 * degenerate inputs, which the libraries either throw on or leave to chance.
 */
import { uniforms } from '../forecasting/random.js';

export interface KMeansResult {
  /** The cluster of each point, 0 … k-1. */
  assignment: number[];
  centroids: number[][];
  /** Sum of squared distances of the points to their centroids. */
  inertia: number;
}

const MAX_ITERATIONS = 100;

function distance2(a: readonly number[], b: readonly number[]): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d += (a[i]! - b[i]!) ** 2;
  return d;
}

/** The nearest centroid (the lowest index among equals) and its squared distance. */
function nearest(point: readonly number[], centroids: readonly number[][]): [number, number] {
  let best = 0;
  let bestD = Infinity;
  centroids.forEach((c, j) => {
    const d = distance2(point, c);
    if (d < bestD) [best, bestD] = [j, d];
  });
  return [best, bestD];
}

/** k-means++: the first centre uniformly, each next one with probability proportional to its squared distance to the nearest chosen. */
function seedCentroids(points: readonly number[][], k: number, random: () => number): number[][] {
  const centroids = [[...points[Math.floor(random() * points.length)]!]];
  while (centroids.length < k) {
    const d = points.map((p) => nearest(p, centroids)[1]);
    const total = d.reduce((a, b) => a + b, 0);
    let pick = d.findIndex((x) => x > 0); // with no distance left, the first point not yet a centre
    if (total > 0) {
      let r = random() * total;
      for (let i = 0; i < d.length; i++) {
        if (d[i]! <= 0) continue;
        pick = i;
        r -= d[i]!;
        if (r < 0) break;
      }
    }
    centroids.push([...points[Math.max(0, pick)]!]);
  }
  return centroids;
}

function lloyd(points: readonly number[][], centroids: number[][]): KMeansResult {
  const dims = points[0]!.length;
  let assignment = points.map(() => -1);
  for (let iteration = 0; iteration < MAX_ITERATIONS; iteration++) {
    const next = points.map((p) => nearest(p, centroids)[0]);
    // A cluster left empty takes the point farthest from its centroid (the first of equals), so k stays k.
    const sizes = centroids.map((_, j) => next.filter((c) => c === j).length);
    for (let j = 0; j < centroids.length; j++) {
      if (sizes[j]! > 0) continue;
      let far = -1;
      let farD = -1;
      points.forEach((p, i) => {
        const d = distance2(p, centroids[next[i]!]!);
        if (d > farD && sizes[next[i]!]! > 1) [far, farD] = [i, d];
      });
      if (far < 0) continue;
      sizes[next[far]!]!--;
      next[far] = j;
      sizes[j] = 1;
    }
    const changed = next.some((c, i) => c !== assignment[i]);
    assignment = next;
    for (let j = 0; j < centroids.length; j++) {
      const members = points.filter((_, i) => assignment[i] === j);
      if (members.length === 0) continue;
      centroids[j] = Array.from({ length: dims }, (_, d) => members.reduce((s, p) => s + p[d]!, 0) / members.length);
    }
    if (!changed) break;
  }
  const inertia = points.reduce((s, p, i) => s + distance2(p, centroids[assignment[i]!]!), 0);
  return { assignment, centroids, inertia };
}

/**
 * The best of `restarts` seeded runs (lowest inertia, the earliest among equals). `k` must not exceed
 * the number of distinct points; the callers reduce it first.
 */
export function kmeans(points: readonly number[][], k: number, options: { seed?: number; restarts?: number } = {}): KMeansResult {
  if (points.length === 0) return { assignment: [], centroids: [], inertia: 0 };
  if (k < 1 || k > distinctPoints(points)) throw new RangeError(`k-means: k = ${k} with ${distinctPoints(points)} distinct point(s)`);
  const random = uniforms(options.seed ?? 1);
  let best: KMeansResult | undefined;
  for (let r = 0; r < (options.restarts ?? 8); r++) {
    const result = lloyd(points, seedCentroids(points, k, random));
    if (!best || result.inertia < best.inertia - 1e-12) best = result;
  }
  return best!;
}

/** How many different points there are (exactly equal coordinates are one). */
export function distinctPoints(points: readonly number[][]): number {
  return new Set(points.map((p) => p.join(','))).size;
}
