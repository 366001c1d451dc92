import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable, rebalanceWorkflowId } from '../../client/index.js';
import { setNodeCapacity } from '../../src/catalog/nodes.js';
import { boundaryOf, rangeSplitPoints } from '../../src/movement/range-splits.js';
import { storedPlans } from '../../src/planning/store.js';
import type { RebalanceInput, RebalanceResult } from '../../workflows/messages.js';
import { writeShardForecasts } from '../helpers/forecasts.js';
import pg from 'pg';
import { adminQuery, createTestCatalog, shardPlacements, startTestWorker, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

/**
 * A range shard (a timestamptz key) that alone needs four pieces: the planner plans a split into
 * four, and the rebalance workflow cuts it at its rows' quartiles moved to the start of their days
 * (a range shard has no middle to cut at: before, such a split was refused for want of a key), every
 * row still there once, each day's rows in one piece.
 */

let catalog: TestCatalog;
let worker: TestWorker;
// 90 days from 2026-01-01, 40 rows a day, with the rows of the last 30 days four times as many.
const DAYS = 90;

beforeAll(async () => {
  catalog = await createTestCatalog('rrsplit');
  worker = await startTestWorker(catalog.catalogUrl);
  for (const n of catalog.nodes) await setNodeCapacity(catalog.pool, n.name, 1000);
  await createDistributedTable(worker.options, {
    name: 'events',
    columns: 'at timestamptz not null, n int not null, primary key (at, n)',
    shardKey: 'at',
    method: 'range',
    rangeBounds: ['2026-01-01', '2027-01-01'],
    nodes: ['node-1'],
  });
  const [only] = await shardPlacements(catalog.pool);
  await adminQuery(
    catalog.nodeUrl('node-1'),
    `insert into ${only!.schema}.events
     select timestamptz '2026-01-01 00:00:00+00' + d * interval '1 day' + (n * 9) * interval '1 minute' + interval '7 seconds', n
       from generate_series(0, ${DAYS - 1}) d, generate_series(0, 159) n where n < 40 or d >= ${DAYS - 30}`,
  );
}, 120_000);

afterAll(async () => {
  await worker?.close();
  await catalog?.close();
});

describe('range split points', () => {
  it('boundaryOf: a time key to the start of its day, else its hour, else itself; other keys as they are', () => {
    const tz = (s: string) => `${s}+00`;
    expect(boundaryOf('timestamptz', '2026-02-10 15:30:07+00', tz('2026-01-01 00:00:00'), tz('2027-01-01 00:00:00'))).toEqual({ at: tz('2026-02-10 00:00:00'), boundary: 'day' });
    expect(boundaryOf('timestamptz', '2026-02-10 15:30:07+00', tz('2026-02-10 03:00:00'), tz('2027-01-01 00:00:00'))).toEqual({ at: tz('2026-02-10 15:00:00'), boundary: 'hour' });
    expect(boundaryOf('timestamptz', '2026-02-10 15:30:07+00', tz('2026-02-10 15:10:00'), tz('2027-01-01 00:00:00'))).toEqual({ at: tz('2026-02-10 15:30:07'), boundary: 'key' });
    expect(boundaryOf('timestamp', '2026-02-10 15:30:07', '2026-01-01 00:00:00', '2027-01-01 00:00:00')).toEqual({ at: '2026-02-10 00:00:00', boundary: 'day' });
    expect(boundaryOf('bigint', '1234', '0', '10000')).toEqual({ at: '1234', boundary: 'key' });
    expect(boundaryOf('date', '2026-02-10', '2026-01-01', '2027-01-01')).toEqual({ at: '2026-02-10', boundary: 'key' });
  });

  it('rangeSplitPoints: the quartiles at day starts, with the rows each piece holds; too few distinct keys: none', async () => {
    const [only] = await shardPlacements(catalog.pool);
    const client = new pg.Client({ connectionString: catalog.nodeUrl('node-1') });
    await client.connect();
    try {
      const shard = { schema: only!.schema, table: 'events', keyColumn: 'at', keyType: 'timestamptz' as const, rangeMin: '2026-01-01 00:00:00+00', rangeMax: '2027-01-01 00:00:00+00' };
      const cut = await rangeSplitPoints(client, shard, 4);
      // 2,400 rows in the first 60 days, 4,800 in the last 30: the 1,800th, 3,600th and 5,400th rows are
      // on days 44, 67 and 78 (February 14, March 9 and 20), and the cuts at the start of those days.
      expect(cut).toEqual({
        points: ['2026-02-14 00:00:00+00', '2026-03-09 00:00:00+00', '2026-03-20 00:00:00+00'],
        shares: [1760 / 7200, (3520 - 1760) / 7200, (5280 - 3520) / 7200, (7200 - 5280) / 7200],
        boundaries: ['day', 'day', 'day'],
      });
      // More pieces than distinct keys: no cut.
      expect(await rangeSplitPoints(client, shard, 10_000)).toBeUndefined();
    } finally {
      await client.end();
    }
  });

  it('the rebalancer splits a hot range shard into four at those points, every row still there once', { timeout: 300_000 }, async () => {
    const [only] = await shardPlacements(catalog.pool);
    await writeShardForecasts(catalog.pool, [only!.id], () => 1000);
    const input: RebalanceInput = { dryRun: false, trigger: 'operator', movement: { graceSeconds: 0, pollSeconds: 0.3, maxMovesPerNode: 4 }, workflowIdPrefix: `${worker.taskQueue}-` };
    const result = (await worker.client.workflow.execute('rebalance', { taskQueue: worker.taskQueue, workflowId: rebalanceWorkflowId(`${worker.taskQueue}-`), args: [input] })) as RebalanceResult;
    const [plan] = await storedPlans(catalog.pool);
    const split = plan!.plan.actions.find((a) => a.kind === 'split');
    expect(split, JSON.stringify(plan!.plan.notes)).toBeDefined();
    const outcome = result.actions.find((a) => a.id === split!.id)!;
    expect(outcome.state, outcome.outcome).toBe('done');
    expect(outcome.outcome).toContain('cut at keys 2026-02-14 00:00:00+00 (the start of its day), 2026-03-09 00:00:00+00 (the start of its day), 2026-03-20 00:00:00+00 (the start of its day)');
    const { rows: ranges } = await catalog.pool.query<{ range_min: string; range_max: string; node: string; schema: string }>(
      `select s.range_min, s.range_max, n.name as node, s.schema_name as schema from shardcast.shards s join shardcast.placements p on p.shard_id = s.id
         join shardcast.nodes n on n.id = p.node_id order by s.range_min::timestamptz`,
    );
    expect(ranges.map((r) => [r.range_min, r.range_max])).toEqual([
      ['2026-01-01 00:00:00+00', '2026-02-14 00:00:00+00'],
      ['2026-02-14 00:00:00+00', '2026-03-09 00:00:00+00'],
      ['2026-03-09 00:00:00+00', '2026-03-20 00:00:00+00'],
      ['2026-03-20 00:00:00+00', '2027-01-01 00:00:00+00'],
    ]);
    let total = 0;
    const days = new Map<string, number>();
    for (const [i, s] of ranges.entries()) {
      const { rows } = await adminQuery(catalog.nodeUrl(s.node), `select ((at at time zone 'UTC')::date)::text as day, count(*)::int as n from ${s.schema}.events group by 1`);
      for (const r of rows as Array<{ day: string; n: number }>) {
        expect(days.has(r.day), `day ${r.day} in more than one piece`).toBe(false);
        days.set(r.day, i);
        total += r.n;
      }
    }
    expect(total).toBe(60 * 40 + 30 * 160);
    expect(days.size).toBe(DAYS);
  });
});
