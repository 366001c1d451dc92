import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable, rebalanceWorkflowId } from '../../client/index.js';
import { setNodeCapacity } from '../../src/catalog/nodes.js';
import { storedPlans } from '../../src/planning/store.js';
import type { RebalanceInput, RebalanceResult } from '../../workflows/messages.js';
import { writeShardForecasts } from '../helpers/forecasts.js';
import { adminQuery, createTestCatalog, shardPlacements, startTestWorker, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

/**
 * A shard that alone needs four pieces: the planner plans one split into four, and the rebalance
 * workflow carries it out as successive halvings (the movement engine splits in two): the shard
 * halved, then both halves halved side by side, each piece on the node the plan chose.
 */

let catalog: TestCatalog;
let worker: TestWorker;
const ROWS = 4000;

beforeAll(async () => {
  catalog = await createTestCatalog('rsplit');
  worker = await startTestWorker(catalog.catalogUrl);
  for (const n of catalog.nodes) await setNodeCapacity(catalog.pool, n.name, 1000);
  await createDistributedTable(worker.options, { name: 'wide', columns: 'id bigint primary key, n bigint not null default 0', shardKey: 'id', shardCount: 1, nodes: ['node-1'] });
  const [only] = await shards();
  await adminQuery(catalog.nodeUrl('node-1'), `insert into ${only!.schema}.wide select g, 0 from generate_series(1, ${ROWS}) g`);
}, 120_000);

afterAll(async () => {
  await worker?.close();
  await catalog?.close();
});

const shards = () => shardPlacements(catalog.pool);

describe('rebalance: a split into more than two pieces', () => {
  it('is carried out as successive halvings onto the planned nodes, every row still there once', { timeout: 300_000 }, async () => {
    const [only] = await shards();
    // 1000 load units (1050 at the 95% bound) on one shard: more than the 700 any node takes at 70%,
    // and more than two pieces of 42% of a node each: four pieces of about 262. (While it is copied,
    // each target carries 30% of its load as copy load: a much hotter shard has no room here.)
    await writeShardForecasts(catalog.pool, [only!.id], () => 1000);
    const input: RebalanceInput = { dryRun: false, trigger: 'operator', movement: { graceSeconds: 0, pollSeconds: 0.3, maxMovesPerNode: 4 }, workflowIdPrefix: `${worker.taskQueue}-` };
    const result = (await worker.client.workflow.execute('rebalance', { taskQueue: worker.taskQueue, workflowId: rebalanceWorkflowId(`${worker.taskQueue}-`), args: [input] })) as RebalanceResult;
    const [plan] = await storedPlans(catalog.pool);
    const split = plan!.plan.actions.find((a) => a.kind === 'split');
    expect(split, JSON.stringify(plan!.plan.notes)).toBeDefined();
    const pieceNodes = (split as { pieceNodeIds: number[] }).pieceNodeIds;
    expect(pieceNodes).toHaveLength(4);
    const outcome = result.actions.find((a) => a.id === split!.id)!;
    expect(outcome.state, outcome.outcome).toBe('done');
    expect(outcome.outcome).toMatch(/^split shard \d+ into 4 by halvings: /);
    // Three split workflows: the shard, then its two halves.
    expect(outcome.workflowId!.split(',')).toHaveLength(3);

    const after = await shards();
    expect(after).toHaveLength(4);
    expect(after.map((s) => s.id)).not.toContain(only!.id);
    // In key order, each piece on the node the plan chose for it.
    const { rows: ordered } = await catalog.pool.query<{ node_id: number }>(
      `select p.node_id::int from shardcast.shards s join shardcast.placements p on p.shard_id = s.id order by s.hash_min`,
    );
    expect(ordered.map((r) => r.node_id)).toEqual(pieceNodes);
    let total = 0;
    const seen = new Set<number>();
    for (const s of after) {
      const { rows } = await adminQuery(catalog.nodeUrl(s.node), `select id::int from ${s.schema}.wide`);
      total += rows.length;
      for (const r of rows) seen.add(r.id as number);
    }
    expect(total).toBe(ROWS);
    expect(seen.size).toBe(ROWS);
  });
});
