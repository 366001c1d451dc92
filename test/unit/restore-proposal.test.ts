import { describe, expect, it } from 'vitest';
import type { ManifestTable } from '../../src/backup/manifest.js';
import type { KeyStats } from '../../src/backup/stats.js';
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
    // Even in rows: each range spans about the same number of quantiles (days here).
    const spans = p.rangeBounds!.slice(0, -1).map((b, i) => (Date.parse(p.rangeBounds![i + 1]!.replace(' ', 'T').replace('+00', 'Z')) - Date.parse(b.replace(' ', 'T').replace('+00', 'Z'))) / 86_400_000);
    const inner = spans.slice(0, -1);
    expect(Math.max(...inner) - Math.min(...inner)).toBeLessThanOrEqual(8);
    expect(p.rangeBounds!.at(-1)! > '2024-12-31').toBe(true);
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
