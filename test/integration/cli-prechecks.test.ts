import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable } from '../../client/index.js';
import { setNodeState } from '../../src/catalog/nodes.js';
import { createTestCatalog, fleet, runCli, startTestWorker, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

/**
 * `split` and `merge` check their request against the catalog before a workflow starts, as `move`
 * does (rebalance.test.ts): bad input is one line on stderr and exit 1 — with `--no-wait` too — and no
 * run reaches Temporal, no lease the catalog.
 */

let catalog: TestCatalog;
let worker: TestWorker;
let shards: Array<{ id: number; node: string }>;

beforeAll(async () => {
  catalog = await createTestCatalog('prechk');
  worker = await startTestWorker(catalog.catalogUrl);
  await createDistributedTable(worker.options, { name: 'items', columns: 'id bigint primary key, v text', shardKey: 'id', shardCount: 4, nodes: ['node-1'] });
  await createDistributedTable(worker.options, { name: 'other', columns: 'id bigint primary key', shardKey: 'id', shardCount: 2, nodes: ['node-2'] });
  await setNodeState(catalog.pool, catalog.nodes.find((n) => n.name === 'node-3')!.id, 'standby', ['active']);
  const { rows } = await catalog.pool.query<{ id: number; node: string; grp: string }>(
    `select s.id::int as id, n.name as node, g.name as grp from shardcast.shards s join shardcast.colocation_groups g on g.id = s.group_id
       join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id order by s.group_id, s.hash_min`,
  );
  shards = rows;
}, 120_000);

afterAll(async () => {
  await worker?.close();
  await catalog?.close();
});

function cli(args: string[]): ReturnType<typeof runCli> {
  return runCli(args, { SHARDCAST_CATALOG_URL: catalog.catalogUrl, SHARDCAST_TEMPORAL_ADDRESS: fleet().temporalAddress, SHARDCAST_TEMPORAL_TASK_QUEUE: worker.taskQueue });
}

/** Runs on the worker's task queue (the CLI's runs go there), as Temporal's visibility lists them. */
async function runsOnQueue(): Promise<number> {
  const { count } = await worker.client.workflow.count(`TaskQueue = '${worker.taskQueue}'`);
  return count;
}

describe('movement requests are checked before a workflow starts', () => {
  it('split and merge: bad input is one line and exit 1, even with --no-wait; no run in Temporal, no lease', { timeout: 240_000 }, async () => {
    const [a, b, c] = shards.filter((s) => s.node === 'node-1');
    const [x] = shards.filter((s) => s.node === 'node-2');
    const runs = await runsOnQueue();
    expect(runs).toBeGreaterThanOrEqual(2); // the two create-table runs: the count sees this queue's runs
    const leases = (await catalog.pool.query('select count(*)::int as n from shardcast.movements')).rows[0].n as number;
    const cases: Array<[string[], RegExp]> = [
      [['split', '999999', '--to', 'node-1,node-2', '--no-wait'], /^shardcast: error: shard 999999 does not exist$/],
      [['split', String(a!.id), '--to', 'node-1,no-such-node', '--no-wait'], /^shardcast: error: node "no-such-node" does not exist$/],
      [['split', String(a!.id), '--to', 'node-1,node-3', '--no-wait'], /^shardcast: error: node node-3 is standby, not active: it cannot take shards$/],
      [['split', String(a!.id), '--to', 'node-1,node-2', '--at', 'middle', '--no-wait'], /^shardcast: error: split point "middle" must be a 64-bit hash value \(an integer\) for a hash-sharded table$/],
      [['split', String(a!.id), '--to', 'node-1,node-2', '--at', '0', '--no-wait'], new RegExp(`^shardcast: error: split point 0 is outside shard ${a!.id}'s hash range`)],
      [['merge', String(a!.id), '999999', '--no-wait'], /^shardcast: error: shard 999999 does not exist$/],
      [['merge', String(a!.id), String(a!.id), '--no-wait'], new RegExp(`^shardcast: error: cannot merge shard ${a!.id} with itself$`)],
      [['merge', String(a!.id), String(c!.id), '--no-wait'], new RegExp(`^shardcast: error: shards ${a!.id} and ${c!.id} are not adjacent: only neighbouring ranges can be merged$`)],
      [['merge', String(a!.id), String(x!.id), '--no-wait'], new RegExp(`^shardcast: error: shards ${a!.id} and ${x!.id} belong to different colocation groups and cannot be merged$`)],
      [['merge', String(a!.id), String(b!.id), '--to', 'no-such-node', '--no-wait'], /^shardcast: error: node "no-such-node" does not exist$/],
      [['merge', String(a!.id), String(b!.id), '--to', 'node-3', '--no-wait'], /^shardcast: error: node node-3 is standby, not active: it cannot take shards$/],
    ];
    for (const [args, message] of cases) {
      const r = await cli(args);
      const what = args.join(' ');
      expect(r.code, what).toBe(1);
      const lines = r.stderr.split('\n').filter((l) => l !== '');
      expect(lines, what).toHaveLength(1);
      expect(lines[0], what).toMatch(message);
      expect(r.stdout, what).toBe('');
    }
    expect((await catalog.pool.query('select count(*)::int as n from shardcast.movements')).rows[0].n).toBe(leases);
    expect(await runsOnQueue()).toBe(runs);
  });
});
