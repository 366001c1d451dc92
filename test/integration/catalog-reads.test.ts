import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shardLocations, recentMovements } from '../../src/catalog/movements.js';
import { schemaExists } from '../../src/catalog/shard-ddl.js';
import { catalogNow } from '../../src/catalog/startup.js';
import { registerTable, tableColumnsDdl, type RegisteredTable } from '../../src/catalog/tables.js';
import { NotFoundError } from '../../src/errors.js';
import { acquireMovementLease, catalogSwitchUntouched, finishMovement } from '../../src/movement/lease.js';
import { createTestCatalog, type TestCatalog } from '../helpers/fleet.js';

/** The catalog reads the CLI and the activities use instead of SQL of their own (src/catalog, src/movement/lease.ts). */
describe('catalog reads', () => {
  let catalog: TestCatalog;
  let table: RegisteredTable;

  beforeAll(async () => {
    catalog = await createTestCatalog('reads');
    table = await registerTable(catalog.pool, { name: 'orders', columns: 'id bigint primary key, total numeric', shardKey: 'id', method: 'hash', shardCount: 4 }, 'test');
  });
  afterAll(async () => {
    await catalog.close();
  });

  it('shardLocations: each shard with its group and node, by shard id; a shard that does not exist is left out', async () => {
    const [a, b] = [...table.shards].sort((x, y) => x.shardId - y.shardId);
    expect(await shardLocations(catalog.pool, [b!.shardId, a!.shardId, 999_999])).toEqual([
      { shardId: a!.shardId, group: table.groupName, node: a!.nodeName },
      { shardId: b!.shardId, group: table.groupName, node: b!.nodeName },
    ]);
    expect(await shardLocations(catalog.pool, [999_999])).toEqual([]);
  });

  it('tableColumnsDdl: the definitions as given; an unknown table is NotFoundError', async () => {
    expect(await tableColumnsDdl(catalog.pool, table.tableId)).toBe('id bigint primary key, total numeric');
    await expect(tableColumnsDdl(catalog.pool, 999_999)).rejects.toThrow(NotFoundError);
  });

  it('recentMovements and catalogSwitchUntouched: a leased movement, newest first, with its node names; its switch untouched while the shard is on its source', async () => {
    const shard = table.shards[0]!;
    const target = catalog.nodes.find((n) => n.id !== shard.nodeId)!;
    await acquireMovementLease(catalog.pool, { id: 'reads1', operation: 'move', shardId: shard.shardId, sourceNodeId: shard.nodeId, targetNodeIds: [target.id], workflowId: 'wf-reads1' }, 4);
    const [latest] = await recentMovements(catalog.pool, 10);
    expect(latest).toMatchObject({ id: 'reads1', operation: 'move', shard: shard.shardId, source: shard.nodeName, targets: target.name, state: 'running', workflowId: 'wf-reads1' });
    expect(latest!.startedAt).toBeInstanceOf(Date);
    expect(await catalogSwitchUntouched(catalog.pool, 'sc_mv_reads1', shard.shardId, shard.nodeId)).toBe(true);
    expect(await catalogSwitchUntouched(catalog.pool, 'sc_mv_reads1', shard.shardId, target.id)).toBe(false); // not placed there
    await finishMovement(catalog.pool, 'reads1', 'failed');
    expect((await recentMovements(catalog.pool, 1))[0]).toMatchObject({ id: 'reads1', state: 'failed' });
  });

  it('catalogNow is the catalog clock; schemaExists answers for the database asked', async () => {
    expect(Math.abs((await catalogNow(catalog.pool)).getTime() - Date.now())).toBeLessThan(60_000);
    expect(await schemaExists(catalog.pool, 'shardcast')).toBe(true);
    expect(await schemaExists(catalog.pool, 'no_such_schema')).toBe(false);
  });
});
