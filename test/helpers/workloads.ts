import type { AdvisorColumn, ColumnStatistics } from '../../src/profiling/advisor.js';
import type { LoggedQuery } from '../../src/restore/query-log.js';

/**
 * Generated workloads with a known best shard key, as pg_stat_statements would log them: each query
 * template spelled out with many different constants (the advisor must see through them), with the
 * key statistics a table built that way would have.
 */
export interface GeneratedWorkload {
  name: string;
  table: string;
  columns: AdvisorColumn[];
  queries: LoggedQuery[];
  statistics: ColumnStatistics[];
  expected: { key: string[]; method: 'hash' | 'range' };
}

/** A small deterministic generator (LCG), so that every run sees the same workload. */
function integers(seed: number): (below: number) => number {
  let s = seed >>> 0;
  return (below) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s % below;
  };
}

/** `calls` calls of a template, spread over `variants` texts with different constants. */
function spread(calls: number, variants: number, text: (i: number) => string): LoggedQuery[] {
  return Array.from({ length: variants }, (_, i) => ({ query: text(i), calls: Math.floor(calls / variants) + (i < calls % variants ? 1 : 0) }));
}

/** `name:type …` as the advisor's columns. */
const columnsOf = (spec: string): AdvisorColumn[] =>
  spec.split(' ').map((c) => {
    const [name, type] = c.split(':') as [string, AdvisorColumn['type']];
    return { name, type };
  });

const day = (n: number) => `2026-${String(1 + (n % 12)).padStart(2, '0')}-${String(1 + (n % 28)).padStart(2, '0')}`;

const stat = (column: string, distinct: number, top: number, correlation: number | null = null): ColumnStatistics => ({
  column,
  distinct,
  nullFraction: 0,
  mostCommon: top > 0 ? [{ value: 'v', frequency: top }] : [],
  correlation,
});

/** Tenant lookups dominate: every query names its tenant. Best: hash on tenant_id. */
export function tenantWorkload(seed = 1): GeneratedWorkload {
  const n = integers(seed);
  return {
    name: 'tenant-equality',
    table: 'events',
    columns: columnsOf('id:integer tenant_id:integer created_at:time kind:text payload:other'),
    queries: [
      ...spread(4000, 40, () => `select * from events where tenant_id = ${n(5000)} and created_at >= '${day(n(365))}' order by created_at desc limit 50`),
      ...spread(3000, 30, () => `select payload from events where tenant_id = ${n(5000)} and id = ${n(1e6)}`),
      ...spread(2000, 20, () => `insert into events (id, tenant_id, created_at, kind, payload) values (${n(1e6)}, ${n(5000)}, now(), 'click', '{}')`),
      ...spread(800, 8, () => `update events set kind = 'seen' where tenant_id = ${n(5000)} and id = ${n(1e6)}`),
      ...spread(200, 2, () => `select count(*) from events where kind = 'k${n(5)}'`),
    ],
    statistics: [stat('id', 1_000_000, 0, 0.99), stat('tenant_id', 5000, 0.002, 0.01), stat('created_at', 990_000, 0, 0.99), stat('kind', 5, 0.4, 0.1)],
    expected: { key: ['tenant_id'], method: 'hash' },
  };
}

/** Time-range scans dominate, inserts take the clock. Best: range on ts. */
export function timeRangeWorkload(seed = 2): GeneratedWorkload {
  const n = integers(seed);
  return {
    name: 'time-range',
    table: 'metrics',
    columns: columnsOf('id:integer device_id:integer ts:time value:other'),
    queries: [
      ...spread(6000, 60, () => {
        const d = n(300);
        return `select date_trunc('hour', ts), avg(value) from metrics where ts >= '${day(d)}' and ts < '${day(d + 1)}' group by 1`;
      }),
      ...spread(1500, 15, () => `select * from metrics where device_id = ${n(200)} and ts > '${day(n(300))}'`),
      ...spread(2000, 20, () => `insert into metrics (device_id, ts, value) values (${n(200)}, now(), ${n(100)}.5)`),
      ...spread(500, 5, () => `select * from metrics where id = ${n(1e6)}`),
    ],
    statistics: [stat('id', 2_000_000, 0, 0.98), stat('device_id', 200, 0.006, 0.02), stat('ts', 1_900_000, 0, 0.99)],
    expected: { key: ['ts'], method: 'range' },
  };
}

/** Orders joined to their customers: the join key co-locates. Best: hash on customer_id, not the more looked-up id. */
export function joinWorkload(seed = 3): GeneratedWorkload {
  const n = integers(seed);
  return {
    name: 'mixed-with-joins',
    table: 'orders',
    columns: columnsOf('id:integer customer_id:integer created_at:time total:other'),
    queries: [
      ...spread(3000, 30, () => `select o.id, o.total, c.name from orders o join customers c on o.customer_id = c.id where c.id = ${n(50_000)}`),
      ...spread(2500, 25, () => `select * from orders where customer_id = ${n(50_000)} order by created_at desc limit 10`),
      ...spread(3500, 35, () => `select * from orders where id = ${n(1e6)}`),
      ...spread(1500, 15, () => `insert into orders (id, customer_id, created_at, total) values (${n(1e6)}, ${n(50_000)}, now(), ${n(500)})`),
      ...spread(500, 5, () => `update orders set total = ${n(500)} where id = ${n(1e6)} and customer_id = ${n(50_000)}`),
      ...spread(500, 5, () => `select sum(total) from orders where created_at >= '${day(n(300))}'`),
    ],
    statistics: [stat('id', 1_000_000, 0, 0.99), stat('customer_id', 50_000, 0.0004, 0.05), stat('created_at', 990_000, 0, 0.99)],
    expected: { key: ['customer_id'], method: 'hash' },
  };
}

export const WORKLOADS = [tenantWorkload, timeRangeWorkload, joinWorkload];
