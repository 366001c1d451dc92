import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable } from '../../client/index.js';
import { exportBackup, shardcastTables } from '../../src/backup/export.js';
import { NodePools } from '../../src/catalog/node-pools.js';
import { addNode, setNodeCapacity } from '../../src/catalog/nodes.js';
import { freePort, PostgresServer } from '../../src/fleet/postgres-server.js';
import type { Advice, CandidateReport } from '../../src/profiling/advisor.js';
import type { LayoutProjection } from '../../src/profiling/projection.js';
import { quoteIdent } from '../../src/sql/ident.js';
import { createTestCatalog, fleet, runCli, startTestWorker, uniqueName, type TestCatalog, type TestWorker } from '../helpers/fleet.js';
import { writeShardForecasts } from '../helpers/forecasts.js';
import { joinWorkload } from '../helpers/workloads.js';

/**
 * `shardcast advise` on a real distributed table: orders sharded on id today, a query log whose
 * workload is built around customer_id (lookups by customer, joins to customers on it). The advisor
 * reads every shard's pg_stats through the catalog's placements, or a backup's manifest.
 */
const ROWS = 20_000;
const CUSTOMERS = 2_000;

let catalog: TestCatalog;
let worker: TestWorker;
let dir: string;
let logFile: string;

function cli(args: string[]): ReturnType<typeof runCli> {
  return runCli(args, { SHARDCAST_CATALOG_URL: catalog.catalogUrl });
}

/** A pg_stat_statements export as CSV: quoted queries, calls. */
function csv(queries: Array<{ query: string; calls: number }>): string {
  return ['userid,dbid,queryid,query,calls', ...queries.map((q, i) => `10,5,${i},"${q.query.replace(/"/g, '""')}",${q.calls}`)].join('\n');
}

beforeAll(async () => {
  catalog = await createTestCatalog('advise');
  worker = await startTestWorker(catalog.catalogUrl);
  await createDistributedTable(worker.options, { name: 'customers', columns: 'id bigint primary key, name text', shardKey: 'id', shardCount: 4 });
  await createDistributedTable(worker.options, { name: 'orders', columns: 'id bigint primary key, customer_id bigint not null, created_at timestamptz not null, total int', shardKey: 'id', shardCount: 4 });
  // Each shard gets the rows whose id hashes into its range, in id order: created_at grows with id.
  const { rows: shards } = await catalog.pool.query<{ schema: string; dsn: string; min: string; max: string }>(
    `select s.schema_name as schema, n.dsn, s.hash_min::text as min, s.hash_max::text as max
       from shardcast.shards s join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id
       join shardcast.distributed_tables t on t.group_id = s.group_id where t.name = 'orders'`,
  );
  const pools = new NodePools();
  try {
    for (const s of shards) {
      await pools.get(s.dsn).query(
        `insert into ${quoteIdent(s.schema)}.orders
         select i, (i * 7919) % ${CUSTOMERS}, timestamptz '2026-01-01 00:00:00+00' + make_interval(secs => i * 60), i % 500
           from generate_series(1, ${ROWS}) i where hashint8extended(i::bigint, 0) between $1::bigint and $2::bigint order by i`,
        [s.min, s.max],
      );
    }
  } finally {
    await pools.end();
  }
  dir = mkdtempSync(path.join(tmpdir(), 'sc-advise-'));
  logFile = path.join(dir, 'pg_stat_statements.csv');
  writeFileSync(logFile, csv(joinWorkload().queries));
}, 180_000);

afterAll(async () => {
  await worker?.close();
  await catalog?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const find = (advice: Advice, key: string, method: string): CandidateReport => advice.candidates.find((c) => c.key.join() === key && c.method === method)!;

describe('shardcast advise', () => {
  it('on the live table: pg_stats of every shard, the current key marked, the join key that co-locates recommended', { timeout: 120_000 }, async () => {
    const run = await cli(['advise', 'orders', '--query-log', logFile, '--analyze', '--json']);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const advice = JSON.parse(run.stdout) as Advice & { statisticsSource: string };
    expect(advice).toMatchObject({ table: 'orders', shardCount: 4, calls: 11_500, unparsed: 0, statisticsSource: 'pg_stats on its 4 shard(s)' });
    const best = advice.candidates[0]!;
    expect({ key: best.key, method: best.method }).toEqual({ key: ['customer_id'], method: 'hash' });
    expect(best.joins).toMatchObject({ percent: 100, with: ['customers.id'] });
    // customer_id: ~2000 distinct values (pg_stats' estimate, a count per shard: the largest), none dominant.
    expect(best.cardinality).toBeGreaterThan(CUSTOMERS * 0.8);
    expect(best.cardinality).toBeLessThanOrEqual(CUSTOMERS * 1.1);
    const id = find(advice, 'id', 'hash');
    expect(id.current).toBe(true);
    expect(id.cardinality).toBeGreaterThan(ROWS * 0.9); // n_distinct −1 on each shard: the whole table's rows
    expect(id.joins.percent).toBe(0);
    // Inserted in order on every shard: created_at is monotonic by pg_stats' correlation.
    expect(find(advice, 'created_at', 'range').monotonicity).toMatchObject({ type: 'monotonic', source: 'pg_stats correlation' });
    expect(find(advice, 'customer_id', 'hash').monotonicity.type).toBe('not monotonic');

    const text = await cli(['advise', 'orders', '--query-log', logFile, '--top', '3']);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^orders: 11500 calls in 6 template\(s\); judged for 4 shards; key statistics from pg_stats on its 4 shard\(s\)/);
    expect(text.stdout).toMatch(/\n1\s+customer_id\s+hash\s/);
    expect(text.stdout).toMatch(/id \(current\)/);
    expect(text.stdout).toMatch(/joins co-located: all 3000 join calls/);
  });

  it('from a backup: the manifest\'s key statistics', { timeout: 120_000 }, async () => {
    const pools = new NodePools();
    const backup = path.join(dir, 'backup');
    try {
      await exportBackup(await shardcastTables(catalog.pool, pools, 'orders'), backup);
    } finally {
      await pools.end();
    }
    const run = await cli(['advise', 'orders', '--query-log', logFile, '--backup', backup, '--json']);
    expect(run.stderr).toBe('');
    const advice = JSON.parse(run.stdout) as Advice & { statisticsSource: string };
    expect(advice.statisticsSource).toBe(`the backup ${backup}`);
    expect(advice.candidates[0]).toMatchObject({ key: ['customer_id'], method: 'hash' });
    expect(Math.abs(advice.candidates[0]!.cardinality! - CUSTOMERS) / CUSTOMERS).toBeLessThan(0.05); // HyperLogLog
    expect(find(advice, 'id', 'hash').current).toBe(true);
  });

  it('--compare: the current layout on its own forecasts beside the best candidates, projected over the horizon', { timeout: 120_000 }, async () => {
    const { rows: shards } = await catalog.pool.query<{ id: number; table: string; node: string }>(
      `select s.id::int, t.name as table, n.name as node from shardcast.shards s join shardcast.placements p on p.shard_id = s.id
         join shardcast.nodes n on n.id = p.node_id join shardcast.distributed_tables t on t.group_id = s.group_id
        where t.name in ('orders', 'customers') order by t.name desc, s.id`,
    );
    const nodes = [...new Set(shards.map((s) => s.node))];
    for (const n of nodes) await setNodeCapacity(catalog.pool, n, 1000);
    // orders' shards rise 100 → 210 over the hour; customers' stay at 20 (the other load on the nodes).
    const isOrders = shards.map((s) => s.table === 'orders');
    await writeShardForecasts(catalog.pool, shards.map((s) => s.id), (k, step) => (isOrders[k] ? 100 + 10 * step : 20));
    const run = await cli(['advise', 'orders', '--query-log', logFile, '--analyze', '--compare', '--json']);
    expect(run.stderr).toBe('');
    const advice = JSON.parse(run.stdout) as Advice & { projections: LayoutProjection[]; bound: string };
    expect(advice.bound).toBe('upper95');
    const [current, ...candidates] = advice.projections;
    expect(current).toMatchObject({ key: ['id'], method: 'hash', current: true, shardCount: 4 });
    // The current layout: each node carries its shards' forecasts at the 95% bound (writeShardForecasts: 1.05 × the point).
    for (const n of nodes) {
      const expected = Array.from({ length: 12 }, (_, step) => 1.05 * shards.filter((s) => s.node === n).reduce((a, s) => a + (s.table === 'orders' ? 100 + 10 * step : 20), 0));
      current!.nodeLoad[n]!.forEach((v, t) => expect(v).toBeCloseTo(expected[t]!, 6));
    }
    const busiest = Math.max(...nodes.map((n) => current!.nodeLoad[n]![11]!));
    expect(current!.maxUtilisation).toBeCloseTo(busiest / 1000, 6);
    expect(current!.peak.step).toBe(12);
    // The best candidates, the key the workload is built around first: fewer calls cross shards than under id.
    expect(candidates.length).toBe(3);
    expect(candidates[0]).toMatchObject({ key: ['customer_id'], method: 'hash', current: false, shardCount: 4 });
    expect(candidates[0]!.crossShardPercent).toBeLessThan(current!.crossShardPercent);
    // Every projection carries the same total: orders' load redistributed, customers' kept.
    const total = (p: LayoutProjection) => Object.values(p.nodeLoad).reduce((a, loads) => a + loads[11]!, 0);
    for (const c of candidates) expect(total(c)).toBeCloseTo(total(current!), 6);

    const text = await cli(['advise', 'orders', '--query-log', logFile, '--analyze', '--compare', '--top', '2']);
    expect(text.code).toBe(0);
    console.log(text.stdout.slice(text.stdout.indexOf('\nprojected')));
    expect(text.stdout).toMatch(/projected over the next 60 min from \S+ \(the forecasts' upper95 bound; other tables' load kept where it is\)/);
    expect(text.stdout).toMatch(/^hash on id \(current\)\s+4\s+/m);
    expect(text.stdout).toMatch(/^hash on customer_id\s+4\s+/m);
    const refused = await cli(['advise', 'orders', '--query-log', logFile, '--compare', '--backup', path.join(dir, 'backup')]);
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim()).toBe("shardcast: error: --compare projects the live table's forecasts, not a backup: leave out --backup");
  });

  it('a node that is down: one line naming it, exit 1', { timeout: 180_000 }, async () => {
    const fragile = new PostgresServer({ name: 'fragile', dataDir: path.join(fleet().baseDir, uniqueName('fragile')), port: await freePort(), user: 'postgres', password: fleet().password });
    try {
      await fragile.start();
      await fragile.ensureDatabase('shardcast');
      await addNode(catalog.pool, { name: 'node-fragile', dsn: fragile.url('shardcast') });
      await createDistributedTable(worker.options, { name: 'lonely', columns: 'id bigint primary key, v int', shardKey: 'id', shardCount: 2, nodes: ['node-fragile'] });
      writeFileSync(path.join(dir, 'lonely.csv'), csv([{ query: 'select * from lonely where v = $1', calls: 3 }]));
      await fragile.stop(); // for real: the node's postmaster shuts down
      const run = await cli(['advise', 'lonely', '--query-log', path.join(dir, 'lonely.csv'), '--analyze']);
      expect(run.code).toBe(1);
      expect(run.stdout).toBe('');
      expect(run.stderr.trim().split('\n')).toHaveLength(1);
      expect(run.stderr).toMatch(/^shardcast: error: node "node-fragile": cannot read the columns of table "lonely" on shard \d+: connect ECONNREFUSED/);
    } finally {
      await fragile.stop();
    }
  });

  it('bad input: one line, exit 1', { timeout: 60_000 }, async () => {
    const cases: Array<[string[], RegExp]> = [
      [['advise', 'orders'], /--query-log FILE is required/],
      [['advise', 'nope', '--query-log', logFile], /unknown distributed table "nope" \(there are: customers, (lonely, )?orders\)/],
      [['advise', 'orders', '--query-log', path.join(dir, 'missing.csv')], /--query-log .*missing\.csv: no such file/],
      [['advise', 'customers', '--query-log', logFile, '--backup', path.join(dir, 'backup')], /no table "customers" in the backup/],
      [['advise', 'orders', '--query-log', logFile, '--shards', '0'], /--shards.*expected a whole number of shards from 1 to 4096/],
    ];
    writeFileSync(path.join(dir, 'other.csv'), csv([{ query: 'select 1 from elsewhere', calls: 3 }]));
    cases.push([['advise', 'orders', '--query-log', path.join(dir, 'other.csv')], /no statement of the log touches "orders"/]);
    for (const [args, message] of cases) {
      const run = await cli(args);
      expect(run.code, args.join(' ')).toBe(1);
      expect(run.stdout).toBe('');
      expect(run.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
      expect(run.stderr).toMatch(message);
    }
  });
});
