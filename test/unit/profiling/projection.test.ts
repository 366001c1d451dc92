import { describe, expect, it } from 'vitest';
import { evenHashRanges } from '../../../src/catalog/keys.js';
import { hashTextExtended } from '../../../src/hashing.js';
import { adviseShardKey, profileQueryLog, type AdvisorColumn, type CandidateReport, type ColumnStatistics, type WorkloadProfile } from '../../../src/profiling/advisor.js';
import { projectCandidate, projectCurrent, rowsPerCall, type ProjectionContext } from '../../../src/profiling/projection.js';

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

const noWorkload: WorkloadProfile = { table: 't', calls: 0, unparsed: 0, templates: [] };

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

/** The workload: lookups by tenant, inserts stamped with the clock, and time-range reads; `rows` as pg_stat_statements gives them. */
async function workload(rows?: { lookups: number; ranges: number }) {
  const queries = [
    { query: 'select * from t where tenant = 7', calls: 100, ...(rows ? { rows: rows.lookups } : {}) },
    { query: "insert into t (id, tenant, created_at, v) values (1, 7, now(), 'x')", calls: 100, ...(rows ? { rows: 100 } : {}) },
    { query: "select * from t where created_at > '2026-01-01'", calls: 50, ...(rows ? { rows: rows.ranges } : {}) },
  ];
  const profile = await profileQueryLog(queries, 't', columns.map((c) => c.name));
  return { profile, candidate: (statistics: ColumnStatistics[], key: string, method: 'hash' | 'range') => adviseShardKey(profile, columns, statistics, { shardCount: 4 }).candidates.find((c) => c.key.join() === key && c.method === method)! };
}

const columns: AdvisorColumn[] = [
  { name: 'id', type: 'integer' },
  { name: 'tenant', type: 'integer' },
  { name: 'created_at', type: 'time' },
  { name: 'v', type: 'text' },
];
const tenantStats = (top: number): ColumnStatistics[] => [{ column: 'tenant', distinct: 100, nullFraction: 0, mostCommon: top > 0 ? [{ value: '42', frequency: top }] : [], correlation: 0 }];

describe('projection of a candidate', () => {
  it('an even key: equal shares, placed by utilisation (the node carrying other load gets fewer), cross-shard calls counted', async () => {
    const { profile, candidate } = await workload();
    // Hash on tenant: lookups and inserts single-shard, the 50 range reads scatter-gather: 20% of 250 calls.
    const p = projectCandidate(candidate(tenantStats(0), 'tenant', 'hash'), profile, tenantStats(0), 4, context());
    expect(p.crossShardPercent).toBe(20);
    expect(p.shards.map((s) => s.share)).toEqual([0.25, 0.25, 0.25, 0.25]);
    const total = [80, 80, 155];
    expect(p.nodeLoad.n1!.map((v, t) => v + p.nodeLoad.n2![t]!)).toEqual(total.map((v) => v + 10));
    expect(p.shards.filter((s) => s.node === 'n1')).toHaveLength(2);
    expect(p.maxUtilisation).toBeCloseTo((10 + 155 / 2) / 200);
  });

  it('a key with a value holding half the rows: its shard carries it whole, is placed alone, and the max utilisation rises', async () => {
    const { profile, candidate } = await workload();
    const stats = tenantStats(0.5);
    // Four empty nodes: each shard gets one.
    const four = context({ nodes: ['n1', 'n2', 'n3', 'n4'].map((name) => ({ name, capacity: 200, otherLoad: [0, 0, 0], takesShards: true })) });
    const hot = projectCandidate(candidate(stats, 'tenant', 'hash'), profile, stats, 4, four);
    const h = hashTextExtended('42');
    const at = evenHashRanges(4).findIndex((r) => h >= r.min && h <= r.max);
    // Lookups and inserts (200 of 250) by rows: 0.5 + 0.5/4 on its shard; the range reads evenly.
    expect(hot.shards[at]!.share).toBeCloseTo((200 * 0.625 + 50 / 4) / 250);
    expect(hot.shards.filter((s) => s.node === hot.shards[at]!.node)).toHaveLength(1);
    const even = projectCandidate(candidate(tenantStats(0), 'tenant', 'hash'), profile, tenantStats(0), 4, four);
    expect(even.maxUtilisation!).toBeCloseTo((0.25 * 155) / 200);
    expect(hot.maxUtilisation!).toBeCloseTo((hot.shards[at]!.share * 155) / 200);
    expect(hot.peak.load).toBeCloseTo(hot.shards[at]!.share * 155, 5);
  });

  it('a range on a key inserts take from the clock: every insert lands in the last range; hashed, they spread', async () => {
    const { profile, candidate } = await workload();
    const range = projectCandidate(candidate([], 'created_at', 'range'), profile, [], 4, context());
    // The lookups by tenant scatter (100), the range reads reach some shards (50): evenly; the 100 inserts: the last.
    expect(range.shards.map((s) => s.share)).toEqual([150 / 4 / 250, 150 / 4 / 250, 150 / 4 / 250, (100 + 150 / 4) / 250]);
    expect(range.notes).toContain('every insert lands in the last range (a monotonic key)');
    const hashed = projectCandidate(candidate([], 'created_at', 'hash'), profile, [], 4, context());
    expect(hashed.shards.map((s) => s.share)).toEqual([0.25, 0.25, 0.25, 0.25]);
  });

  it('weighs each template by the rows it returns when the log gives them: scans that read much count for more', async () => {
    const stats = tenantStats(0.5);
    const byCalls = await workload();
    const byRows = await workload({ lookups: 1_000, ranges: 50_000 });
    expect(byRows.profile.templates.map((t) => t.rows)).toEqual([1_000, 100, 50_000]);
    const a = projectCandidate(byCalls.candidate(stats, 'tenant', 'hash'), byCalls.profile, stats, 4, context());
    const b = projectCandidate(byRows.candidate(stats, 'tenant', 'hash'), byRows.profile, stats, 4, context());
    // By rows the scatter-gather range reads are most of the work, spread evenly: the hot tenant's shard matters less.
    const weights = { single: 100 + 1_000 + 100 + 100, spread: 50 + 50_000 };
    expect(Math.max(...b.shards.map((s) => s.share))).toBeCloseTo((weights.single * 0.625 + weights.spread / 4) / (weights.single + weights.spread));
    expect(Math.max(...b.shards.map((s) => s.share))).toBeLessThan(Math.max(...a.shards.map((s) => s.share)));
    expect(b.notes).toContain("calls weighed by the rows they return or change (the log's rows)");
    expect(a.notes).not.toContain("calls weighed by the rows they return or change (the log's rows)");
  });

  it('no node that can take shards: an error naming why', () => {
    const ctx = context({ nodes: context().nodes.map((n) => ({ ...n, takesShards: false })) });
    expect(() => projectCandidate(report('id', 'hash', [1, 100, 0, 0], [0, 0, 0, 0]), noWorkload, [], 4, ctx)).toThrow('no active, reachable node');
  });
});

describe('rows per call, for weighing templates', () => {
  it('the log\'s rows where it has them; the cardinality model from the key statistics elsewhere; an insert its VALUES rows', async () => {
    const queries = [
      { query: 'select * from t where tenant = 7', calls: 10 },
      { query: 'select * from t where v = $1', calls: 10 },
      { query: "insert into t (id, tenant, created_at, v) values (1, 7, now(), 'x'), (2, 7, now(), 'y')", calls: 5 },
    ];
    const profile = await profileQueryLog(queries, 't', columns.map((c) => c.name));
    // 100,000 rows; 100 tenants (1,000 rows each); v unknown: PostgreSQL's default equality selectivity (0.5%).
    const stats: ColumnStatistics[] = [{ column: 'tenant', distinct: 100, nullFraction: 0, mostCommon: [], correlation: null }];
    const cost = rowsPerCall(profile, stats, 100_000);
    const [byTenant, byV, insert] = ['tenant', 'v', 'insert'].map((k) => profile.templates.find((t) => t.text.includes(k === 'insert' ? 'insert' : `${k} =`))!);
    expect(cost(byTenant!)).toBeCloseTo(1_000, -1);
    expect(cost(byV!)).toBeCloseTo(500, -1);
    expect(cost(insert!)).toBe(2);
    // With the log's rows: those, and the model learns from them for the template.
    const logged = await profileQueryLog([{ ...queries[0]!, rows: 30 }, queries[1]!], 't', columns.map((c) => c.name));
    const learned = rowsPerCall(logged, stats, 100_000);
    expect(learned(logged.templates.find((t) => t.rows !== undefined)!)).toBe(3);
    // A weighed projection says so.
    const { candidate } = await workload();
    const p = projectCandidate(candidate(stats, 'tenant', 'hash'), profile, stats, 4, context(), cost);
    expect(p.notes).toContain("calls weighed by the rows they return or change (the cardinality model's estimate where the log has none)");
  });
});
