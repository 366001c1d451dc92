import { execFile } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable, dropTableResult, moveResult, startDropTable, startMove } from '../../client/index.js';
import { InvalidInputError } from '../../src/errors.js';
import { failpointHits, resetFailpoints } from '../../src/failpoints.js';
import { dropTableProgressQuery } from '../../workflows/messages.js';
import { adminQuery, createTestCatalog, fleet, startTestWorker, until, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

let catalog: TestCatalog;
let worker: TestWorker;
const NO_APPROVAL = { approvalRequired: false };

beforeAll(async () => {
  catalog = await createTestCatalog('droptable');
  worker = await startTestWorker(catalog.catalogUrl);
});

afterAll(async () => {
  delete process.env.SHARDCAST_FAILPOINTS;
  await worker?.close();
  await catalog?.close();
});

/** Every shard schema and its tables, as the nodes themselves report them: "node-1:sc_s3" → ["orders"]. */
async function onNodes(): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  for (const node of catalog.nodes) {
    const { rows } = await adminQuery(
      catalog.nodeUrl(node.name),
      `select n.nspname as schema, coalesce(array_agg(c.relname::text order by c.relname) filter (where c.relname is not null), '{}') as tables
         from pg_namespace n left join pg_class c on c.relnamespace = n.oid and c.relkind = 'r'
        where n.nspname ~ '^sc_s[0-9]+$' group by n.nspname`,
    );
    for (const r of rows as Array<{ schema: string; tables: string[] }>) out[`${node.name}:${r.schema}`] = r.tables;
  }
  return out;
}

async function catalogOf(group: string): Promise<{ tables: string[]; shards: number; placements: number }> {
  const { rows } = await catalog.pool.query(
    `select array(select t.name from shardcast.distributed_tables t join shardcast.colocation_groups g on g.id = t.group_id where g.name = $1 order by t.name) as tables,
            (select count(*)::int from shardcast.shards s join shardcast.colocation_groups g on g.id = s.group_id where g.name = $1) as shards,
            (select count(*)::int from shardcast.placements p join shardcast.shards s on s.id = p.shard_id join shardcast.colocation_groups g on g.id = s.group_id where g.name = $1) as placements`,
    [group],
  );
  return rows[0];
}

async function stateOf(table: string): Promise<string | undefined> {
  const { rows } = await catalog.pool.query('select state from shardcast.distributed_tables where name = $1', [table]);
  return rows[0]?.state;
}

/** The CLI as a child process, awaited without blocking this process (its worker runs the workflow). */
function cli(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [path.resolve(import.meta.dirname, '../../bin/shardcast.js'), 'tables', 'drop', ...args],
      { encoding: 'utf8', timeout: 90_000, env: { ...process.env, SHARDCAST_CATALOG_URL: catalog.catalogUrl, SHARDCAST_TEMPORAL_ADDRESS: fleet().temporalAddress, SHARDCAST_TEMPORAL_TASK_QUEUE: worker.taskQueue } },
      (err, stdout, stderr) => resolve({ status: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }),
    );
  });
}

describe('tables drop', () => {
  it('drops one table of a colocation group everywhere, then the last one with its group; a lost reply at each step is retried safely', async () => {
    await createDistributedTable(worker.options, { name: 'orders', columns: 'id bigint not null, customer_id bigint not null, primary key (customer_id, id)', shardKey: 'customer_id', shardCount: 4 });
    await createDistributedTable(worker.options, {
      name: 'order_items',
      columns: 'order_id bigint not null, customer_id bigint not null, sku text not null, qty int, primary key (customer_id, order_id, sku)',
      shardKey: 'customer_id',
      colocateWith: 'orders',
    });
    const before = await onNodes();
    expect(Object.keys(before)).toHaveLength(4);
    for (const tables of Object.values(before)) expect(tables).toEqual(['order_items', 'orders']);

    // A lost reply after the node work and after the catalog rows: the retried activities find the work done.
    process.env.SHARDCAST_FAILPOINTS = 'drop-table.after-node=throw*1,drop-table.after-unregister=throw*1';
    resetFailpoints();
    const items = await dropTableResult(await startDropTable(worker.options, 'order_items', NO_APPROVAL));
    expect(failpointHits.get('drop-table.after-node')).toBeGreaterThanOrEqual(1);
    expect(failpointHits.get('drop-table.after-unregister')).toBe(1);
    delete process.env.SHARDCAST_FAILPOINTS;
    expect(items).toMatchObject({ table: 'order_items', group: 'orders', groupDropped: false, shards: 4, schemasLeft: [] });
    const afterItems = await onNodes();
    expect(Object.keys(afterItems).sort()).toEqual(Object.keys(before).sort());
    for (const tables of Object.values(afterItems)) expect(tables).toEqual(['orders']);
    expect(await catalogOf('orders')).toEqual({ tables: ['orders'], shards: 4, placements: 4 });

    const orders = await dropTableResult(await startDropTable(worker.options, 'orders', NO_APPROVAL));
    expect(orders).toMatchObject({ table: 'orders', groupDropped: true, shards: 4 });
    expect(await onNodes()).toEqual({});
    expect(await catalogOf('orders')).toEqual({ tables: [], shards: 0, placements: 0 });
  });

  it('waits at the approval gate: rejected changes nothing, approved drops', async () => {
    await createDistributedTable(worker.options, { name: 'tenants', columns: 'id bigint primary key', shardKey: 'id', shardCount: 2 });
    const before = await onNodes();
    const rejected = await startDropTable(worker.options, 'tenants', { approvalRequired: true });
    await until('waiting for approval', async () => (await rejected.query(dropTableProgressQuery)).phase === 'approval', 30_000, 200);
    expect(await stateOf('tenants')).toBe('active');
    await rejected.signal('reject');
    await expect(dropTableResult(rejected)).rejects.toThrow(/drop table tenants and its group tenants \(2 shard\(s\)\): rejected; nothing was changed/);
    expect(await stateOf('tenants')).toBe('active');
    expect(await onNodes()).toEqual(before);

    const approved = await startDropTable(worker.options, 'tenants', { approvalRequired: true });
    await until('waiting for approval', async () => (await approved.query(dropTableProgressQuery)).phase === 'approval', 30_000, 200);
    await approved.signal('approve');
    expect(await dropTableResult(approved)).toMatchObject({ table: 'tenants', groupDropped: true });
    expect(await stateOf('tenants')).toBeUndefined();
  });

  it('is refused while a shard of the group is being moved, and a table being dropped is not moved', async () => {
    await createDistributedTable(worker.options, { name: 'carts', columns: 'id bigint primary key, n int', shardKey: 'id', shardCount: 2 });
    const { rows } = await catalog.pool.query<{ id: number; node: string }>(
      "select s.id::int, n.name as node from shardcast.shards s join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id join shardcast.colocation_groups g on g.id = s.group_id where g.name = 'carts' order by s.id limit 1",
    );
    const shard = rows[0]!;
    const other = catalog.nodes.find((n) => n.name !== shard.node)!.name;
    const before = await onNodes();
    // Never close enough to cut over: the movement stays running until cancelled.
    const move = await startMove(worker.options, { shardId: shard.id, targetNode: other, pollSeconds: 0.2, catchUpLagBytes: -1, graceSeconds: 0 });
    await until('movement running', async () => (await catalog.pool.query("select 1 from shardcast.movements where shard_id = $1 and state = 'running'", [shard.id])).rowCount === 1, 30_000, 100);
    const refused = await startDropTable(worker.options, 'carts', NO_APPROVAL);
    const err = await dropTableResult(refused).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidInputError);
    expect((err as Error).message).toMatch(new RegExp(`^table "carts" cannot be dropped now: shard ${shard.id} is being moved by movement s${shard.id}_[0-9a-f]+ \\(workflow .*move-shard-${shard.id}\\); wait for it, or cancel it$`));
    expect(await stateOf('carts')).toBe('active');
    await move.cancel();
    await moveResult(move).catch(() => undefined);
    expect(await onNodes()).toEqual(before);

    // The other way round: while the table is 'dropping', a movement of its shards is refused at its lease.
    await catalog.pool.query("update shardcast.distributed_tables set state = 'dropping' where name = 'carts'");
    const blocked = await startMove(worker.options, { shardId: shard.id, targetNode: other, pollSeconds: 0.2, graceSeconds: 0 });
    await expect(moveResult(blocked)).rejects.toThrow(/table "carts" is being dropped: its shards are not moved/);
    // A drop left 'dropping' (say, its run failed on a node) is finished by running it again.
    expect(await dropTableResult(await startDropTable(worker.options, 'carts', NO_APPROVAL))).toMatchObject({ table: 'carts', groupDropped: true });
    expect(await stateOf('carts')).toBeUndefined();
  });

  it('CLI: an unknown table is one line and exit 1; without --yes off a terminal it refuses; with --yes it drops', async () => {
    const unknown = await cli(['nope', '--yes']);
    expect(unknown.status).toBe(1);
    expect(unknown.stderr.trim()).toBe('shardcast: error: unknown distributed table "nope"');
    await expect(worker.client.workflow.getHandle('drop-table-nope').describe()).rejects.toThrow(/not found/i);

    await createDistributedTable(worker.options, { name: 'events', columns: 'id bigint primary key', shardKey: 'id', shardCount: 2 });
    const before = await onNodes();
    const unconfirmed = await cli(['events']);
    expect(unconfirmed.status).toBe(1);
    expect(unconfirmed.stderr.trim()).toBe('shardcast: error: refusing to drop table events without --yes (no terminal to ask on)');
    expect(await stateOf('events')).toBe('active');
    expect(await onNodes()).toEqual(before);

    const dropped = await cli(['events', '--yes']);
    expect(dropped.status, dropped.stderr).toBe(0);
    expect(dropped.stdout).toMatch(/dropped events and its group events: 2 shard\(s\)/);
    expect(await stateOf('events')).toBeUndefined();
    await expect(dropTableResult(worker.client.workflow.getHandle('drop-table-events'))).resolves.toMatchObject({ table: 'events' });
  });
});
