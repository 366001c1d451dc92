import { describe, expect, it } from 'vitest';
import { evenHashRanges } from '../../../src/catalog/keys.js';
import { hashTextExtended } from '../../../src/hashing.js';
import type { CandidateReport, ColumnStatistics, WorkloadProfile } from '../../../src/profiling/advisor.js';
import { projectCandidate, projectCurrent, type ProjectionContext } from '../../../src/profiling/projection.js';

/** A candidate as the advisor reports it: `reads` and `writes` as [calls, single%, multi%, scatter%]. */
function report(key: string, method: 'hash' | 'range', reads: [number, number, number, number], writes: [number, number, number, number], over: Partial<CandidateReport> = {}): CandidateReport {
  const d = ([calls, singleShard, multiShard, scatterGather]: [number, number, number, number]) => ({ calls, singleShard, multiShard, scatterGather });
  return {
    key: [key],
    method,
    score: 50,
    current: false,
    reads: d(reads),
    writes: { ...d(writes), withoutShardKey: 0 },
    shardKeyUpdates: { updateCalls: 0, changingKey: 0, percent: 0 },
    cardinality: 1000,
    mostCommon: [],
    monotonicity: { type: 'not monotonic', correlation: 0, source: 'pg_stats correlation' },
    joins: { calls: 0, colocated: 0, percent: 0, with: [] },
    reasons: [],
    ...over,
  };
}

const profile = (inserts: number): WorkloadProfile => ({
  table: 't',
  calls: 100 + inserts,
  unparsed: 0,
  templates: inserts > 0 ? [{ fingerprint: 'i', shape: 'insert', text: 'insert into t values ($1)', calls: inserts, features: { kind: 'insert' } as never }] : [],
});

/** Four shards of 25 load units (at every step but the last, 50) over two nodes of capacity 200. */
function context(over: Partial<ProjectionContext> = {}): ProjectionContext {
  const load = [25, 25, 50];
  return {
    currentShards: [
      { shardId: 1, node: 'n1', load },
      { shardId: 2, node: 'n1', load },
      { shardId: 3, node: 'n1', load },
      { shardId: 4, node: 'n2', load: [5, 5, 5] },
    ],
    nodes: [
      { name: 'n1', capacity: 200, otherLoad: [0, 0, 0], takesShards: true },
      { name: 'n2', capacity: 200, otherLoad: [10, 10, 10], takesShards: true },
    ],
    startsAt: '2026-12-02T12:00:00.000Z',
    stepSeconds: 300,
    ...over,
  };
}

describe('projection of the current configuration', () => {
  it('each shard on its own node with its own forecast: node loads, the peak step, max utilisation', () => {
    const p = projectCurrent(report('id', 'hash', [100, 100, 0, 0], [0, 0, 0, 0], { current: true }), context());
    expect(p.nodeLoad).toEqual({ n1: [75, 75, 150], n2: [15, 15, 15] });
    expect(p.maxUtilisation).toBeCloseTo(0.75);
    expect(p.peak).toEqual({ node: 'n1', step: 3, at: '2026-12-02T12:10:00.000Z', load: 150 });
    expect(p.shards.map((s) => s.node)).toEqual(['n1', 'n1', 'n1', 'n2']);
    expect(p.shards[0]!.share).toBeCloseTo(50 / 155);
    expect(p.current).toBe(true);
  });
});

describe('projection of a candidate', () => {
  it('an even key: equal shares, placed by utilisation (the node carrying other load gets fewer), cross-shard calls counted', () => {
    // 100 reads, half scatter-gather; 100 writes, all single-shard: 25% of the calls need more than one shard.
    const p = projectCandidate(report('id', 'hash', [100, 50, 0, 50], [100, 100, 0, 0]), profile(0), [], 4, context());
    expect(p.crossShardPercent).toBe(25);
    expect(p.shards.map((s) => s.share)).toEqual([0.25, 0.25, 0.25, 0.25]);
    const total = [80, 80, 155];
    expect(p.nodeLoad.n1!.map((v, t) => v + p.nodeLoad.n2![t]!)).toEqual(total.map((v) => v + 10));
    expect(p.shards.filter((s) => s.node === 'n1')).toHaveLength(2);
    expect(p.maxUtilisation).toBeCloseTo((10 + 155 / 2) / 200);
  });

  it('a key with a value holding half the rows: its shard carries it whole, is placed alone, and the max utilisation rises', () => {
    const stats: ColumnStatistics[] = [{ column: 'tenant', distinct: 100, nullFraction: 0, mostCommon: [{ value: '42', frequency: 0.5 }], correlation: 0 }];
    const hot = projectCandidate(report('tenant', 'hash', [100, 100, 0, 0], [0, 0, 0, 0]), profile(0), stats, 4, context());
    const h = hashTextExtended('42');
    const at = evenHashRanges(4).findIndex((r) => h >= r.min && h <= r.max);
    expect(hot.shards[at]!.share).toBeCloseTo(0.5 + 0.5 / 4);
    expect(hot.shards.filter((s) => s.node === hot.shards[at]!.node)).toHaveLength(1);
    const even = projectCandidate(report('id', 'hash', [100, 100, 0, 0], [0, 0, 0, 0]), profile(0), [], 4, context());
    expect(hot.maxUtilisation!).toBeGreaterThan(even.maxUtilisation!);
    expect(hot.peak.load).toBeCloseTo(0.625 * 155, 5);
  });

  it('a range on a monotonic key: every insert lands in the last range', () => {
    const monotonic = { monotonicity: { type: 'monotonic' as const, correlation: 1, source: 'pg_stats correlation' } };
    const p = projectCandidate(report('created_at', 'range', [0, 0, 0, 0], [100, 100, 0, 0], monotonic), profile(100), [], 4, context());
    expect(p.shards.map((s) => s.share)).toEqual([0, 0, 0, 1]);
    expect(p.notes).toContain('every insert lands in the last range (a monotonic key)');
    const hashed = projectCandidate(report('created_at', 'hash', [0, 0, 0, 0], [100, 100, 0, 0], monotonic), profile(100), [], 4, context());
    expect(hashed.shards.map((s) => s.share)).toEqual([0.25, 0.25, 0.25, 0.25]);
  });

  it('no node that can take shards: an error naming why', () => {
    const ctx = context({ nodes: context().nodes.map((n) => ({ ...n, takesShards: false })) });
    expect(() => projectCandidate(report('id', 'hash', [1, 100, 0, 0], [0, 0, 0, 0]), profile(0), [], 4, ctx)).toThrow('no active, reachable node');
  });
});
