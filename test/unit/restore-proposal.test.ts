import { describe, expect, it } from 'vitest';
import type { ManifestTable } from '../../src/backup/manifest.js';
import type { KeyStats } from '../../src/backup/stats.js';
import { loadEvenBounds, predictGrowth, rangeForecasts } from '../../src/restore/growth.js';
import { proposeLayout } from '../../src/restore/proposal.js';
import { analyzeQueries, readQueryLog } from '../../src/restore/query-log.js';
import { parseWorkload } from '../../src/restore/workload.js';

function stats(column: string, quantiles: string[], distinct: number): KeyStats {
  return { column, rows: 1_000_000, nullFraction: 0, distinctEstimate: distinct, min: quantiles[0]!, max: quantiles.at(-1)!, quantiles, sampleSize: 10000, heavyHitters: [], maxError: 0 };
}

const day = (i: number) => new Date(Date.UTC(2024, 0, 1) + i * 86_400_000).toISOString().slice(0, 10);
/** events: a year of rows, evenly over time; 5000 tenants. */
const events: ManifestTable = {
  name: 'events',
  columns: [
    { name: 'id', pgType: 'bigint', arrow: 'int64', notNull: true, default: null },
    { name: 'tenant_id', pgType: 'integer', arrow: 'int32', notNull: true, default: null },
    { name: 'created_at', pgType: 'timestamp with time zone', arrow: 'timestamptz', notNull: true, default: null },
    { name: 'body', pgType: 'jsonb', arrow: 'text', notNull: false, default: null },
  ],
  primaryKey: ['id'],
  indexes: [],
  source: { kind: 'postgres', shards: 1, method: null, keyColumn: null },
  files: [{ path: 'events.arrow', bytes: 1, sha256: '0'.repeat(64), rows: 1_000_000, batches: 16 }],
  rows: 1_000_000,
  checksum: { algorithm: 'x', rows: 1_000_000, sum: '0' },
  keyStats: [
    stats('id', Array.from({ length: 101 }, (_, i) => String(1 + i * 10_000)), 1_000_000),
    stats('tenant_id', Array.from({ length: 101 }, (_, i) => String(i * 50)), 5000),
    stats('created_at', Array.from({ length: 101 }, (_, i) => `${day(Math.round(i * 3.65))} 00:00:00+00`), 900_000),
  ],
};
const nodes = [
  { name: 'n1', capacity: 1 },
  { name: 'n2', capacity: 1 },
  { name: 'n3', capacity: 1 },
];
const workload = parseWorkload('predicted_peak_qps: 4000\npredicted_data_volume: 200GB\ndata_retention_policy: 1 year\nrebalance_threshold: 20%\ngrowth_per_month: 5%\n', 'w.yaml');
const columns = events.columns.map((c) => c.name);

describe('query pattern analyzer', () => {
  it('counts equality, range and join use per column from a pg_stat_statements CSV, with the PostgreSQL parser', async () => {
    const csv = [
      'userid,dbid,queryid,query,calls,total_exec_time',
      '10,5,1,"select * from events where tenant_id = $1 and id = $2",900,12.5',
      '10,5,2,"select count(*) from events where created_at >= $1 and created_at < $2",50,80.1',
      '10,5,3,"select * from events e join tenants t on t.id = e.tenant_id where e.created_at between $1 and $2",30,5',
      '10,5,4,"update events set body = $1 where id in ($2, $3)",20,1',
      '10,5,5,"select * from other where tenant_id = $1",1000,1',
      '10,5,6,"select * from events where created_at > (now() -",7,1',
    ].join('\n');
    const a = await analyzeQueries(readQueryLog(csv, 'log.csv'), 'events', columns);
    expect(a).toMatchObject({ calls: 1000, reads: 980, writes: 20, unparsed: 7 });
    expect(a.columns.tenant_id).toEqual({ equality: 900, range: 0, join: 30 });
    expect(a.columns.created_at).toEqual({ equality: 0, range: 80, join: 0 });
    expect(a.columns.id).toEqual({ equality: 920, range: 0, join: 0 });
  });

  it('refuses a log without query and calls, naming the file', () => {
    expect(() => readQueryLog('a,b\n1,2\n', 'log.csv')).toThrow('log.csv: a pg_stat_statements export needs a header with the columns query and calls');
    expect(() => readQueryLog('[{"query": "select 1", "calls": "many"}]', 'log.json')).toThrow('log.json: [0]: calls: expected a number ≥ 0, got "many"');
    expect(() => readQueryLog('query,calls,rows\n"select 1",3,-1\n', 'log.csv')).toThrow('log.csv: line 2: rows: expected a number ≥ 0, got "-1"');
  });

  it('reads pg_stat_statements\' rows when the export has them (CSV or JSON), and leaves them out when it has not', () => {
    expect(readQueryLog('query,calls,rows\n"select 1",3,30\n"select 2",1,\n', 'log.csv')).toEqual([
      { query: 'select 1', calls: 3, rows: 30 },
      { query: 'select 2', calls: 1 },
    ]);
    expect(readQueryLog('[{"query": "select 1", "calls": 3, "rows": 30}, {"query": "select 2", "calls": 1}]', 'log.json')).toEqual([
      { query: 'select 1', calls: 3, rows: 30 },
      { query: 'select 2', calls: 1 },
    ]);
    expect(readQueryLog('query,calls\n"select 1",3\n', 'log.csv')).toEqual([{ query: 'select 1', calls: 3 }]);
  });
});

describe('workload description', () => {
  it('reads every field, units included', () => {
    expect(workload).toEqual({ predictedPeakQps: 4000, predictedDataVolume: 200e9, retentionDays: 365, retentionColumn: null, rebalanceThreshold: 0.2, growthPerMonth: 0.05, horizonMonths: 12 });
  });

  it('names the file and field of a bad value', () => {
    expect(() => parseWorkload('predicted_peak_qps: -5', 'w.yaml')).toThrow('w.yaml: predicted_peak_qps: expected a positive number of queries per second, got -5');
    expect(() => parseWorkload('{}', 'w.json')).toThrow('w.json: predicted_peak_qps: required');
    expect(() => parseWorkload('predicted_peak_qps: 10\npredicted_data_volume: lots', 'w.yaml')).toThrow('w.yaml: predicted_data_volume: expected bytes, or a size like "500GB" or "2 TiB", got "lots"');
    expect(() => parseWorkload('predicted_peak_qps: 10\ndata_retention_policy: 3 fortnights', 'w.yaml')).toThrow(/w\.yaml: data_retention_policy: expected a duration/);
    expect(() => parseWorkload('predicted_peak_qps: 10\nrebalance_threshold: 2', 'w.yaml')).toThrow(/w\.yaml: rebalance_threshold: expected a fraction in \(0, 1\]/);
    expect(() => parseWorkload('predicted_peak_qps: 10\ngrowth_per_month: -1%', 'w.yaml')).toThrow(/w\.yaml: growth_per_month: expected a fraction ≥ 0/);
    expect(() => parseWorkload('predicted_peak_qps: 10\npeak: 3', 'w.yaml')).toThrow('w.yaml: peak: unknown field');
    expect(() => parseWorkload('predicted_peak_qps: 10\nretention_column: Bad Name', 'w.yaml')).toThrow('w.yaml: retention_column: expected a column name, got "Bad Name"');
    expect(() => parseWorkload('predicted_peak_qps: [', 'w.yaml')).toThrow(/w\.yaml: not valid JSON or YAML/);
  });
});

describe('shard proposal', () => {
  const log = (entries: Array<[string, number]>) => analyzeQueries(entries.map(([query, calls]) => ({ query, calls })), 'events', columns);

  it('range-shards on the time column when time-range queries dominate, bounds from its quantiles', async () => {
    const analysis = await log([
      ['select * from events where created_at >= $1 and created_at < $2', 9000],
      ['select * from events where tenant_id = $1', 500],
    ]);
    const p = proposeLayout(events, { analysis, workload, nodes, bytes: 100e9 });
    expect(p).toMatchObject({ keyColumn: 'created_at', method: 'range' });
    expect(p.rangeBounds).toHaveLength(p.shardCount + 1);
    expect(p.rangeBounds![0]).toBe('2024-01-01 00:00:00+00');
    // The first bound is the exact minimum even when the sample missed it.
    const sampled = { ...events, keyStats: events.keyStats.map((s) => (s.column === 'created_at' ? { ...s, min: '2023-12-31 23:59:59+00' } : s)) };
    expect(proposeLayout(sampled, { analysis, workload, nodes, bytes: 100e9 }).rangeBounds![0]).toBe('2023-12-31 23:59:59+00');
    // Even in predicted load: 5%/month for 12 months lands at the top of the time key, so the year
    // the backup holds gets fewer ranges than shards, each as wide as the others (rows are even
    // over it), and the rest cover the time still to come, pre-created.
    const ranges = p.ranges!;
    expect(ranges).toHaveLength(p.shardCount);
    for (const r of ranges) expect(Math.abs(r.loadShare - 1 / p.shardCount)).toBeLessThan(0.01);
    expect(ranges.reduce((a, r) => a + r.rowsNow, 0)).toBeCloseTo(events.rows, -2);
    const spans = p.rangeBounds!.slice(0, -1).map((b, i) => (Date.parse(p.rangeBounds![i + 1]!.replace(' ', 'T').replace('+00', 'Z')) - Date.parse(b.replace(' ', 'T').replace('+00', 'Z'))) / 86_400_000);
    const held = spans.filter((_, i) => p.rangeBounds![i + 1]! <= '2024-12-31');
    expect(held.length).toBeGreaterThan(1);
    expect(held.length).toBeLessThan(p.shardCount);
    expect(Math.max(...held) - Math.min(...held)).toBeLessThanOrEqual(8);
    expect(ranges.at(-1)!.rowsNow).toBe(0);
    expect(ranges.at(-1)!.rowsAtHorizon).toBeGreaterThan(0);
    expect(p.rangeBounds!.at(-1)! > '2025-06-01').toBe(true);
    expect(p.growth).toMatchObject({ source: 'stated', pattern: 'append' });
    expect(p.reasons.join('\n')).toMatch(/even in predicted load \(0% writes; inserts at the top of the key\)/);
    expect(p.reasons.join('\n')).toMatch(/range: range predicates on created_at \(9000 calls\) outnumber equality \(0\)/);
  });

  it('hash-shards on the tenant id when tenant equality lookups dominate', async () => {
    const analysis = await log([
      ['select * from events where tenant_id = $1 order by created_at desc limit 20', 9000],
      ['select * from events where created_at > $1', 300],
    ]);
    const p = proposeLayout(events, { analysis, workload, nodes, bytes: 100e9 });
    expect(p).toMatchObject({ keyColumn: 'tenant_id', method: 'hash', rangeBounds: null });
    expect(p.shardCount % nodes.length).toBe(0);
    expect(new Set(p.shards.map((s) => s.node))).toEqual(new Set(['n1', 'n2', 'n3']));
  });

  it('proposes more shards when the peak QPS doubles, and places them by capacity', async () => {
    const analysis = await log([['select * from events where tenant_id = $1', 1000]]);
    const base = proposeLayout(events, { analysis, workload, nodes, bytes: 1e9 });
    const doubled = proposeLayout(events, { analysis, workload: { ...workload, predictedPeakQps: workload.predictedPeakQps * 2 }, nodes, bytes: 1e9 });
    expect(doubled.shardCount).toBeGreaterThan(base.shardCount);
    expect(doubled.shardCount).toBeGreaterThanOrEqual(2 * base.shardCount - nodes.length);
    const big = proposeLayout(events, { analysis, workload, nodes: [{ name: 'big', capacity: 2 }, { name: 'small', capacity: 1 }], bytes: 1e9 });
    const onBig = big.shards.filter((s) => s.node === 'big').length;
    expect(onBig).toBeGreaterThanOrEqual(2 * (big.shardCount - onBig) - 1);
  });

  it('keeps the operator\'s key, method and shard count, and refuses ones that cannot be', async () => {
    const analysis = await log([['select * from events where tenant_id = $1', 9000]]);
    const p = proposeLayout(events, { analysis, workload, nodes, bytes: 1e9, overrides: { keyColumn: 'id', method: 'range', shardCount: 5 } });
    expect(p).toMatchObject({ keyColumn: 'id', method: 'range', shardCount: 5 });
    expect(p.rangeBounds).toHaveLength(6);
    expect(p.reasons.slice(0, 2)).toEqual(['key id: chosen by the operator (--key)', 'range: chosen by the operator (--method)']);
    expect(p.reasons).toContain('shards: 5, chosen by the operator (--shards)');
    // Only the count given: the proposal's own key, and exactly that many hash shards (not rounded to the nodes).
    expect(proposeLayout(events, { analysis, workload, nodes, bytes: 1e9, overrides: { shardCount: 4 } })).toMatchObject({ keyColumn: 'tenant_id', method: 'hash', shardCount: 4 });
    expect(() => proposeLayout(events, { analysis, nodes, overrides: { keyColumn: 'nope' } })).toThrow('--key nope: not a column of events (candidates: id, tenant_id, created_at)');
    expect(() => proposeLayout(events, { analysis, nodes, overrides: { keyColumn: 'body' } })).toThrow(/--key body: its type cannot be a shard key/);
  });

  it('falls back to the primary key, hashed, without a query log', () => {
    const p = proposeLayout(events, { nodes, bytes: 1e9 });
    expect(p).toMatchObject({ keyColumn: 'id', method: 'hash', shardCount: 3 });
    expect(p.reasons[0]).toBe('key id: no query log, so the primary key');
  });
});

describe('data growth predictor', () => {
  const ids = stats('id', Array.from({ length: 101 }, (_, i) => String(1 + i * 10_000)), 1_000_000);

  it('measures rows per month from past manifests by least squares', () => {
    const g = predictGrowth(
      { at: '2024-07-01T00:00:00Z', rows: 1_000_000 },
      { kind: 'int64', stats: ids },
      [
        { at: '2024-01-02T00:00:00Z', rows: 400_000 },
        { at: '2024-04-01T00:00:00Z', rows: 700_000 },
        { at: '2024-09-01T00:00:00Z', rows: 5 }, // after the current backup: ignored
      ],
      { statedPerMonth: 0.5, horizonMonths: 6 },
    );
    expect(g.source).toBe('history');
    // 300k rows per 3 months (90 and 91 days; 30-day months): about 100k per month.
    expect(g.rowsPerMonth).toBeGreaterThan(95_000);
    expect(g.rowsPerMonth).toBeLessThan(103_000);
    expect(g.rowsAtHorizon).toBeCloseTo(1_000_000 + 6 * g.rowsPerMonth, 0);
    expect(g.reasons[0]).toMatch(/^growth: \d+ rows\/month from 3 manifests \(2024-01-02 to 2024-07-01\)/);
  });

  it('measures rows per month from the source cluster\'s collected row counts when there is no past manifest', () => {
    // Hourly counts over three days, 1,000 rows an hour (720,000 per 30-day month), with noise; one from the future is ignored.
    const hours = Array.from({ length: 72 }, (_, h) => ({ at: new Date(Date.UTC(2024, 6, 1) - (72 - h) * 3_600_000).toISOString(), rows: 900_000 + h * 1000 + (h % 2 ? 300 : -300) }));
    const metrics = [...hours, { at: '2024-07-05T00:00:00.000Z', rows: 1 }];
    const g = predictGrowth({ at: '2024-07-01T00:00:00Z', rows: 972_000 }, { kind: 'int64', stats: ids }, [], { statedPerMonth: 0.5, horizonMonths: 6, metrics });
    expect(g.source).toBe('metrics');
    expect(g.rowsPerMonth).toBeGreaterThan(715_000);
    expect(g.rowsPerMonth).toBeLessThan(725_000);
    expect(g.reasons[0]).toMatch(/^growth: \d+ rows\/month from the source cluster's collected row counts \(72 hours, 2024-06-28 to 2024-06-30\)/);
    // Past manifests come first; counts spanning less than a day give way to the stated growth.
    expect(predictGrowth({ at: '2024-07-01T00:00:00Z', rows: 972_000 }, { kind: 'int64' }, [{ at: '2024-06-01T00:00:00Z', rows: 500_000 }], { horizonMonths: 6, metrics }).source).toBe('history');
    const brief = predictGrowth({ at: '2024-07-01T00:00:00Z', rows: 972_000 }, { kind: 'int64' }, [], { statedPerMonth: 0.1, horizonMonths: 6, metrics: hours.slice(-12) });
    expect(brief.source).toBe('stated');
    expect(predictGrowth({ at: '2024-07-01T00:00:00Z', rows: 972_000 }, { kind: 'int64' }, [], { horizonMonths: 6, metrics: hours.slice(-12) }).reasons[0]).toMatch(
      /collected row counts span less than a day/,
    );
  });

  it('takes the stated growth, compounded, without history; none without either', () => {
    const stated = predictGrowth({ at: '', rows: 1000 }, { kind: 'int64', stats: ids }, [], { statedPerMonth: 0.1, horizonMonths: 12 });
    expect(stated.source).toBe('stated');
    expect(stated.rowsAtHorizon).toBeCloseTo(1000 * 1.1 ** 12, 6);
    expect(predictGrowth({ at: '', rows: 1000 }, { kind: 'int64' }, [], { horizonMonths: 12 })).toMatchObject({ source: 'none', rowsPerMonth: 0, rowsAtHorizon: 1000 });
  });

  it('sees an ever-increasing key (its old maximum is exceeded by the new rows) and a key whose rows spread', () => {
    const past = (max: string) => [{ at: '2024-01-01T00:00:00Z', rows: 600_000, keyMax: max }];
    // 40% of the rows were added since, and 40% of the quantiles lie above the old maximum (600,001).
    const rising = predictGrowth({ at: '2024-03-01T00:00:00Z', rows: 1_000_000 }, { kind: 'int64', stats: ids }, past('600001'), { horizonMonths: 6 });
    expect(rising.pattern).toBe('append');
    expect(rising.reasons.join('\n')).toMatch(/new rows land at the top of id: 40% of the rows lie above its maximum of 2024-01-01 \(600001\)/);
    // The old maximum was already near the top: the new rows went in between.
    expect(predictGrowth({ at: '2024-03-01T00:00:00Z', rows: 1_000_000 }, { kind: 'int64', stats: ids }, past('990001'), { horizonMonths: 6 }).pattern).toBe('spread');
  });

  it('cuts bounds even in predicted load: rows-even without growth; narrower at the top under append-heavy writes', () => {
    const none = predictGrowth({ at: '', rows: 1_000_000 }, { kind: 'int64', stats: ids }, [], { horizonMonths: 12 });
    const even = loadEvenBounds('int64', ids, 1_000_000, 4, none, '1250001', 0.5);
    expect(even).toEqual(['1', '250001', '500001', '750001', '1250001']);
    const growing = predictGrowth({ at: '', rows: 1_000_000 }, { kind: 'int64', stats: ids }, [], { statedPerMonth: 0.05, horizonMonths: 12 });
    const appended = { ...growing, pattern: 'append' as const };
    const heavy = loadEvenBounds('int64', ids, 1_000_000, 4, appended, '2000001', 0.9);
    const f = rangeForecasts('int64', ids, 1_000_000, heavy, appended, 0.9);
    for (const r of f) expect(Math.abs(r.loadShare - 0.25)).toBeLessThan(0.005);
    expect(f.reduce((a, r) => a + r.loadShare, 0)).toBeCloseTo(1, 9);
    expect(f.reduce((a, r) => a + r.rowsNow, 0)).toBeCloseTo(1_000_000, -1);
    // The inserts all go to the top: the existing rows need fewer ranges, and the last range holds none of them yet.
    expect(Number(heavy[3])).toBeGreaterThan(1_000_001);
    expect(f[3]!.rowsNow).toBe(0);
    expect(f[3]!.rowsPerMonth).toBeGreaterThan(0);
    expect(f[0]!.rowsPerMonth).toBe(0);
  });

  it('a proposal uses the past manifests: the growth they show sizes the layout', () => {
    const history = [{ at: '2023-07-01T00:00:00Z', rows: 100_000, keyStats: events.keyStats }];
    const p = proposeLayout(events, { nodes, bytes: 100e9, exportedAt: '2024-01-01T00:00:00Z', history, workload: { ...workload, growthPerMonth: 0 } });
    expect(p.growth.source).toBe('history');
    // 900k rows in 6 months (184 days): about 147k a month, 12 months ahead: about 2.76× the rows now.
    expect(p.growth.rowsAtHorizon / events.rows).toBeGreaterThan(2.7);
    expect(p.growth.rowsAtHorizon / events.rows).toBeLessThan(2.85);
    expect(p.reasons.join('\n')).toMatch(/data: 200\.0 GB × 2\.7\d = 55\d\.\d GB/);
    expect(p.reasons.join('\n')).toMatch(/load: 4000 qps at peak × 1\.00 growth/);
    // Without exportedAt the history cannot be placed in time: the stated growth (none here) is used.
    expect(proposeLayout(events, { nodes, bytes: 100e9, history, workload: { ...workload, growthPerMonth: 0 } }).growth.source).toBe('none');
  });
});
