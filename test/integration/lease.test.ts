import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { acquireMovementLease, finishMovement, MovementInProgressError, NodeBusyError } from '../../src/movement/lease.js';
import { InvalidInputError } from '../../src/errors.js';
import { createTestCatalog, type TestCatalog } from '../helpers/fleet.js';

let catalog: TestCatalog;
let shards: number[];

beforeAll(async () => {
  catalog = await createTestCatalog('lease');
  // Shards need not hold tables for their leases: a group with five shard rows is enough here.
  const group = await catalog.pool.query<{ id: number }>("insert into shardcast.colocation_groups (name, method, key_type) values ('g', 'hash', 'bigint') returning id::int as id");
  const inserted = await catalog.pool.query<{ id: number }>(
    `insert into shardcast.shards (group_id, schema_name, hash_min, hash_max)
     select $1, 'lease_s' || g, g, g from generate_series(1, 5) g returning id::int as id`,
    [group.rows[0]!.id],
  );
  shards = inserted.rows.map((r) => r.id);
});

afterAll(async () => {
  await catalog?.close();
});

const node = (name: string): number => catalog.nodes.find((n) => n.name === name)!.id;

describe('movement lease', () => {
  it('allows one running movement per shard, names the holder, and is idempotent for the holder', async () => {
    const lease = { id: 'm1', operation: 'move' as const, shardId: shards[0]!, sourceNodeId: node('node-1'), targetNodeIds: [node('node-2')] };
    await acquireMovementLease(catalog.pool, lease, 10);
    await acquireMovementLease(catalog.pool, lease, 10); // the same activity, retried
    const second = acquireMovementLease(catalog.pool, { ...lease, id: 'm2', targetNodeIds: [node('node-3')] }, 10);
    await expect(second).rejects.toBeInstanceOf(MovementInProgressError);
    await expect(second).rejects.toThrow(`shard ${shards[0]} is already being moved by movement m1; wait for it, or cancel it`);
    await finishMovement(catalog.pool, 'm1', 'done');
    await acquireMovementLease(catalog.pool, { ...lease, id: 'm2' }, 10); // free again
    await finishMovement(catalog.pool, 'm2', 'cancelled');
    const { rows } = await catalog.pool.query('select id, state from shardcast.movements order by id');
    expect(rows).toEqual([
      { id: 'm1', state: 'done' },
      { id: 'm2', state: 'cancelled' },
    ]);
  });

  it('two leases for one shard at the same moment: exactly one wins', async () => {
    const attempts = await Promise.allSettled(
      ['r1', 'r2', 'r3', 'r4'].map((id) =>
        acquireMovementLease(catalog.pool, { id, operation: 'move', shardId: shards[1]!, sourceNodeId: node('node-1'), targetNodeIds: [node('node-2')] }, 10),
      ),
    );
    expect(attempts.filter((a) => a.status === 'fulfilled')).toHaveLength(1);
    for (const a of attempts.filter((x) => x.status === 'rejected')) expect((a as PromiseRejectedResult).reason).toBeInstanceOf(MovementInProgressError);
    const { rows } = await catalog.pool.query("select count(*)::int as n from shardcast.movements where shard_id = $1 and state = 'running'", [shards[1]]);
    expect(rows[0].n).toBe(1);
  });

  it('limits concurrent movements per node', async () => {
    await acquireMovementLease(catalog.pool, { id: 'c1', operation: 'move', shardId: shards[2]!, sourceNodeId: node('node-3'), targetNodeIds: [node('node-1')] }, 2);
    await acquireMovementLease(catalog.pool, { id: 'c2', operation: 'move', shardId: shards[3]!, sourceNodeId: node('node-3'), targetNodeIds: [node('node-2')] }, 2);
    const third = acquireMovementLease(catalog.pool, { id: 'c3', operation: 'split', shardId: shards[4]!, sourceNodeId: node('node-2'), targetNodeIds: [node('node-3'), node('node-1')] }, 2);
    await expect(third).rejects.toBeInstanceOf(NodeBusyError);
    await expect(third).rejects.toThrow(/^node node-\d already takes part in 2 running movement\(s\) \(limit 2\)$/);
    await finishMovement(catalog.pool, 'c1', 'failed');
    await expect(
      acquireMovementLease(catalog.pool, { id: 'c3', operation: 'split', shardId: shards[4]!, sourceNodeId: node('node-2'), targetNodeIds: [node('node-3'), node('node-1')] }, 2),
    ).rejects.toBeInstanceOf(NodeBusyError); // node-2 still has r-lease and c2
  });

  it('refuses a bad movement id before touching the catalog', async () => {
    await expect(
      acquireMovementLease(catalog.pool, { id: 'bad id', operation: 'move', shardId: shards[0]!, sourceNodeId: node('node-1'), targetNodeIds: [node('node-2')] }, 10),
    ).rejects.toBeInstanceOf(InvalidInputError);
  });
});
