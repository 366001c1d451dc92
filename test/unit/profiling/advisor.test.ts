import { describe, expect, it } from 'vitest';
import { adviseShardKey, profileQueryLog, statisticsFromKeyStats, statisticsFromPgStats, type AdvisorColumn } from '../../../src/profiling/advisor.js';
import { rowsPerCall } from '../../../src/profiling/projection.js';
import { WORKLOADS } from '../../helpers/workloads.js';

const columns: AdvisorColumn[] = [
  { name: 'id', type: 'integer' },
  { name: 'tenant_id', type: 'integer' },
  { name: 'at', type: 'time' },
  { name: 'note', type: 'other' },
];

async function advise(queries: Array<[string, number]>, options: Parameters<typeof adviseShardKey>[3] = { shardCount: 4 }) {
  const profile = await profileQueryLog(queries.map(([query, calls]) => ({ query, calls })), 't', columns.map((c) => c.name));
  return { profile, advice: adviseShardKey(profile, columns, [], options) };
}

describe('shard-key advisor', () => {
  for (const make of WORKLOADS) {
    const w = make();
    it(`${w.name}: recommends ${w.expected.method} on ${w.expected.key.join(', ')}`, async () => {
      const profile = await profileQueryLog(w.queries, w.table, w.columns.map((c) => c.name));
      expect(profile.unparsed).toBe(0);
      expect(profile.templates.length).toBeLessThan(10); // the constants are stripped: one template per shape
      // By calls alone, and as the command ranks (weighed by the cardinality model's rows as well).
      for (const rows of [undefined, rowsPerCall(profile, w.statistics, null)]) {
        const advice = adviseShardKey(profile, w.columns, w.statistics, { shardCount: 8, otherKeys: { customers: 'id' }, ...(rows ? { rowsPerCall: rows } : {}) });
        const best = advice.candidates[0]!;
        expect({ key: best.key, method: best.method }).toEqual(w.expected);
        expect(best.score).toBeGreaterThan(advice.candidates[1]!.score);
        expect(best.reasons.length).toBeGreaterThan(1);
      }
    });
  }

  it('the anchors\' figures: single / multi / scatter reads and writes, key updates, writes without the key, joins', async () => {
    const { advice, profile } = await advise([
      ['select * from t where tenant_id = 1', 50],
      ['select * from t where tenant_id in (1, 2)', 10],
      ['select * from t where tenant_id = any($1)', 10],
      ['select * from t where note = $1', 30],
      ["update t set tenant_id = 2 where id = 5 and tenant_id = 1", 5],
      ['update t set note = $1 where tenant_id = $2', 15],
      ['delete from t where id = $1', 10],
      ['insert into t (id, tenant_id) values ($1, $2)', 60],
      ['insert into t (id, tenant_id) values (1, 3), (2, 4)', 10],
      ['insert into t (id, note) values ($1, $2)', 10],
      ['select * from t join u on u.tenant_id = t.tenant_id where u.x = 1', 20],
      ['select * from other', 1000],
      ['select * from t where', 7],
    ]);
    expect(profile.calls).toBe(230);
    expect(profile.unparsed).toBe(7);
    const tenant = advice.candidates.find((c) => c.key.join() === 'tenant_id' && c.method === 'hash')!;
    // Reads: 50 single, 20 multi (IN of 2 < 4 shards, = any), 30 + 20 scatter (the join pins u.x, not the key).
    expect(tenant.reads).toEqual({ calls: 120, singleShard: 41.7, multiShard: 16.7, scatterGather: 41.7 });
    // Writes: 5 + 15 + 60 single, 10 multi (two rows, two tenants), 10 + 10 scatter (no key).
    expect(tenant.writes).toEqual({ calls: 110, singleShard: 72.7, multiShard: 9.1, scatterGather: 18.2, withoutShardKey: 18.2 });
    expect(tenant.shardKeyUpdates).toEqual({ updateCalls: 20, changingKey: 5, percent: 25 });
    expect(tenant.joins).toEqual({ calls: 20, colocated: 20, percent: 100, with: ['u.tenant_id'] });
    const id = advice.candidates.find((c) => c.key.join() === 'id' && c.method === 'hash')!;
    expect(id.joins.percent).toBe(0);
    expect(id.shardKeyUpdates.changingKey).toBe(0);
    // A join is co-located only with the other table's catalog key.
    const other = await advise([['select * from t join u on u.tenant_id = t.tenant_id', 1]], { shardCount: 4, otherKeys: { u: 'id' } });
    expect(other.advice.candidates.find((c) => c.key.join() === 'tenant_id')!.joins.percent).toBe(0);
  });

  it('a key pinned through a join is single-shard; an OR does not pin; a long IN list reaches every shard', async () => {
    const { advice } = await advise([
      ['select * from t join u on t.tenant_id = u.tid where u.tid = $1', 1],
      ['select * from t where tenant_id = $1 or id = $2', 1],
      ['select * from t where tenant_id in (1, 2, 3, 4, 5, 6)', 1],
    ]);
    const tenant = advice.candidates.find((c) => c.key.join() === 'tenant_id' && c.method === 'hash')!;
    expect(tenant.reads).toMatchObject({ singleShard: 33.3, multiShard: 0, scatterGather: 66.7 });
  });

  it('statistics: cardinality, skew and monotonicity from pg_stats and from the insert pattern', async () => {
    const { profile } = await advise([
      ['select * from t where tenant_id = $1', 10],
      ['select * from t where at > $1', 10],
      ['insert into t (id, tenant_id, at) values ($1, $2, now())', 10],
    ]);
    const stats = [
      statisticsFromPgStats('tenant_id', [
        { column: 'tenant_id', rows: 300, nullFraction: 0, nDistinct: 3, mostCommonValues: ['7', '8'], mostCommonFreqs: [0.5, 0.2], correlation: 0.1 },
        { column: 'tenant_id', rows: 100, nullFraction: 0.1, nDistinct: 2, mostCommonValues: ['7'], mostCommonFreqs: [0.3], correlation: -0.1 },
      ]),
      statisticsFromPgStats('id', [
        { column: 'id', rows: 300, nullFraction: 0, nDistinct: -1, mostCommonValues: null, mostCommonFreqs: null, correlation: 0.95 },
        { column: 'id', rows: 100, nullFraction: 0, nDistinct: -1, mostCommonValues: null, mostCommonFreqs: null, correlation: 0.85 },
      ]),
    ];
    expect(stats[0]).toMatchObject({ column: 'tenant_id', distinct: 3, nullFraction: 0.025, mostCommon: [{ value: '7' }, { value: '8' }] });
    expect(stats[0]!.mostCommon.map((m) => m.frequency)).toEqual([expect.closeTo(0.45, 9), expect.closeTo(0.15, 9)]);
    expect(stats[0]!.correlation).toBeCloseTo(0.05, 9);
    expect(stats[1]).toMatchObject({ distinct: 400 });
    // 2000 values over 20000 rows hashed by another column: each of 4 shards sees ~1887 of them.
    const spread = Array.from({ length: 4 }, () => ({ column: 'c', rows: 5000, nullFraction: 0, nDistinct: -1887 / 5000, mostCommonValues: null, mostCommonFreqs: null, correlation: null }));
    expect(statisticsFromPgStats('c', spread).distinct).toBeCloseTo(2000, -1);
    // The shard key: each value on one shard, the counts add up.
    expect(statisticsFromPgStats('c', spread, { shardKey: true }).distinct).toBe(4 * 1887);
    expect(stats[1]!.correlation).toBeCloseTo(0.925, 9);
    const advice = adviseShardKey(profile, columns, stats, { shardCount: 4 });
    const tenant = advice.candidates.find((c) => c.key.join() === 'tenant_id' && c.method === 'hash')!;
    expect(tenant).toMatchObject({ cardinality: 3, monotonicity: { type: 'not monotonic' } });
    expect(tenant.reasons.join('\n')).toMatch(/only ~3 distinct values for 4 shards/);
    expect(tenant.reasons.join('\n')).toMatch(/skew: one value holds 45% of the rows/);
    const at = advice.candidates.find((c) => c.key.join() === 'at' && c.method === 'range')!;
    expect(at.monotonicity).toMatchObject({ type: 'monotonic', source: 'inserts take it from the clock or a sequence' });
    expect(at.reasons.join('\n')).toMatch(/every insert lands in the last range/);
    expect(
      statisticsFromKeyStats({ column: 'c', rows: 10, nullFraction: 0, distinctEstimate: 4, min: '1', max: '4', quantiles: [], sampleSize: 10, heavyHitters: [{ value: '1', count: 5, frequency: 0.5 }], maxError: 0 }),
    ).toEqual({ column: 'c', distinct: 4, nullFraction: 0, mostCommon: [{ value: '1', frequency: 0.5 }], correlation: null });
  });

  it('with rows per call (the log\'s, or the cardinality model\'s estimate), a key that keeps the heavy queries on one shard ranks up', async () => {
    // Many one-row lookups by id; a few tenant scans of 5,000 rows each.
    const log = [
      { query: 'select note from t where id = 1', calls: 1000, rows: 1000 },
      { query: 'select note from t where tenant_id = 5', calls: 100, rows: 500_000 },
    ];
    const profile = await profileQueryLog(log, 't', columns.map((c) => c.name));
    const top = (options: Parameters<typeof adviseShardKey>[3]) => adviseShardKey(profile, columns, [], options).candidates[0]!;
    // By calls alone, id: 91% of the calls single-shard.
    expect(top({ shardCount: 4 }).key).toEqual(['id']);
    const weighed = top({ shardCount: 4, rowsPerCall: rowsPerCall(profile, [], null) });
    expect(weighed.key).toEqual(['tenant_id']);
    expect(weighed.reasons).toContain('by rows (each call weighed by the rows it returns or changes, the log\'s or the cardinality model\'s estimate): 99.6% single-shard, 0.4% scatter-gather');
    // Half by calls (9% single-shard), half by work (99.6%).
    expect(weighed.score).toBeCloseTo(100 * (100 / 1100 + (100 * 5001) / (100 * 5001 + 1000 * 2)) / 2, 0);
  });

  it('marks the current key, and lists it even when no query uses it', async () => {
    const { advice } = await advise([['select * from t where tenant_id = $1', 10]], { shardCount: 4, current: { key: 'id', method: 'hash' } });
    expect(advice.candidates.map((c) => `${c.method} ${c.key.join()}${c.current ? ' (current)' : ''}`)).toEqual(['hash tenant_id', 'range tenant_id', 'hash id (current)']);
  });
});
