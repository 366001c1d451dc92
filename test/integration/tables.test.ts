import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable, createTableWorkflowId } from '../../client/index.js';
import { AlreadyExistsError, InvalidInputError, NotFoundError } from '../../src/errors.js';
import { listShards, listTables } from '../../src/catalog/tables.js';
import { SA_OPERATION, SA_PHASE, SA_TABLE } from '../../src/search-attributes.js';
import { adminQuery, createTestCatalog, startTestWorker, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

let catalog: TestCatalog;
let worker: TestWorker;

beforeAll(async () => {
  catalog = await createTestCatalog('tables');
  worker = await startTestWorker(catalog.catalogUrl);
});

afterAll(async () => {
  await worker?.close();
  await catalog?.close();
});

/** Every shard schema (sc_s*) and its tables as each node itself reports them. */
async function schemasOnNodes(): Promise<Map<string, Map<string, string[]>>> {
  const result = new Map<string, Map<string, string[]>>();
  for (const node of catalog.nodes) {
    const { rows } = await adminQuery(
      catalog.nodeUrl(node.name),
      `select n.nspname as schema, coalesce(array_agg(c.relname::text order by c.relname) filter (where c.relname is not null), '{}') as tables
         from pg_namespace n left join pg_class c on c.relnamespace = n.oid and c.relkind = 'r'
        where n.nspname like 'sc\\_s%' group by n.nspname`,
    );
    result.set(node.name, new Map(rows.map((r: { schema: string; tables: string[] }) => [r.schema, r.tables])));
  }
  return result;
}

async function catalogCounts(): Promise<Record<string, number>> {
  const { rows } = await catalog.pool.query(
    `select (select count(*)::int from shardcast.distributed_tables) as tables,
            (select count(*)::int from shardcast.colocation_groups) as groups,
            (select count(*)::int from shardcast.shards) as shards,
            (select count(*)::int from shardcast.placements) as placements`,
  );
  return rows[0];
}

describe('distributed table creation (Temporal workflow)', () => {
  it('creates one schema per shard on the node the catalog names, and nowhere else', async () => {
    const result = await createDistributedTable(worker.options, {
      name: 'orders',
      columns: 'id bigint not null, customer_id bigint not null, total numeric(12,2), primary key (customer_id, id)',
      shardKey: 'customer_id',
      shardCount: 6,
    });
    expect(result).toMatchObject({ table: 'orders', shards: 6, newGroup: true, nodes: ['node-1', 'node-2', 'node-3'] });

    const shards = await listShards(catalog.pool, { table: 'orders' });
    expect(shards).toHaveLength(6);
    const onNodes = await schemasOnNodes();
    for (const shard of shards) {
      expect(onNodes.get(shard.node)?.get(shard.schema), `${shard.schema} on ${shard.node}`).toEqual(['orders']);
      for (const other of catalog.nodes.filter((n) => n.name !== shard.node)) {
        expect(onNodes.get(other.name)?.has(shard.schema), `${shard.schema} must not be on ${other.name}`).toBe(false);
      }
    }
    // Two shards per node: spread evenly.
    const perNode = shards.reduce<Record<string, number>>((acc, s) => ({ ...acc, [s.node]: (acc[s.node] ?? 0) + 1 }), {});
    expect(perNode).toEqual({ 'node-1': 2, 'node-2': 2, 'node-3': 2 });
    // The hash ranges tile the whole 64-bit space.
    const { rows } = await catalog.pool.query(
      `select hash_min::text, hash_max::text from shardcast.shards s join shardcast.distributed_tables t on t.group_id = s.group_id
        where t.name = 'orders' order by s.hash_min`,
    );
    expect(rows[0].hash_min).toBe('-9223372036854775808');
    expect(rows.at(-1).hash_max).toBe('9223372036854775807');
    for (let i = 1; i < rows.length; i++) expect(BigInt(rows[i].hash_min)).toBe(BigInt(rows[i - 1].hash_max) + 1n);
  });

  it('is readable in Temporal: search attributes, summary, phase', async () => {
    const handle = worker.client.workflow.getHandle(createTableWorkflowId('orders', worker.options.workflowIdPrefix));
    const description = await handle.describe();
    expect(description.status.name).toBe('COMPLETED');
    expect(description.typedSearchAttributes.get(SA_TABLE)).toBe('orders');
    expect(description.typedSearchAttributes.get(SA_OPERATION)).toBe('create-table');
    expect(description.typedSearchAttributes.get(SA_PHASE)).toBe('done');
    expect(await description.staticSummary()).toBe('create table orders (hash, 6 shard(s), key customer_id)');
  });

  it('adds a table to an existing colocation group in every shard of the group', async () => {
    const result = await createDistributedTable(worker.options, {
      name: 'order_items',
      columns: 'order_id bigint not null, customer_id bigint not null, sku text, qty int',
      shardKey: 'customer_id',
      colocateWith: 'orders',
    });
    expect(result).toMatchObject({ table: 'order_items', group: 'orders', newGroup: false, shards: 6 });
    const onNodes = await schemasOnNodes();
    for (const shard of await listShards(catalog.pool, { table: 'orders' })) {
      expect(onNodes.get(shard.node)?.get(shard.schema)).toEqual(['order_items', 'orders']);
    }
  });

  it('creates a range-sharded table from bounds', async () => {
    const result = await createDistributedTable(worker.options, {
      name: 'events',
      columns: 'tenant int not null, at timestamptz not null default now(), payload jsonb',
      shardKey: 'tenant',
      method: 'range',
      rangeBounds: ['0', '1000', '5000', '100000'],
      nodes: ['node-2', 'node-3'],
    });
    expect(result).toMatchObject({ shards: 3, nodes: ['node-2', 'node-3'] });
    const shards = await listShards(catalog.pool, { table: 'events' });
    expect(shards.map((s) => s.range)).toEqual(['[0, 1000)', '[1000, 5000)', '[5000, 100000)']);
    expect(shards.map((s) => s.node)).toEqual(['node-2', 'node-3', 'node-2']);
  });

  it('refuses bad input with a clear error and changes nothing', async () => {
    const before = await catalogCounts();
    const schemasBefore = await schemasOnNodes();
    const base = { columns: 'id bigint primary key', shardKey: 'id' };
    const cases: Array<[Parameters<typeof createDistributedTable>[1], RegExp, new (...args: never[]) => Error]> = [
      [{ ...base, name: 'bad"name' }, /table name "bad\\"name" is not allowed/, InvalidInputError],
      [{ ...base, name: 'x;drop_table' }, /table name "x;drop_table" is not allowed/, InvalidInputError],
      [{ ...base, name: 'tablé' }, /table name "tablé" is not allowed/, InvalidInputError],
      [{ ...base, name: 'ok_name', shardKey: 'i"d' }, /shard key column name "i\\"d" is not allowed/, InvalidInputError],
      [{ ...base, name: 'ok_name', shardKey: 'missing' }, /shard key column "missing" is not among its columns/, InvalidInputError],
      [{ ...base, name: 'ok_name', columns: 'id bigint); drop table shardcast.nodes; --' }, /invalid column definitions/, InvalidInputError],
      [{ ...base, name: 'ok_name', columns: 'id jsonb' }, /has type jsonb; supported are/, InvalidInputError],
      [{ ...base, name: 'ok_name', shardCount: 0 }, /shard count must be an integer from 1/, InvalidInputError],
      [{ ...base, name: 'ok_name', method: 'range', rangeBounds: ['10', '5'] }, /strictly ascending/, InvalidInputError],
      [{ ...base, name: 'ok_name', method: 'range', rangeBounds: ['a', 'b'] }, /range bound "a": expected an integer key/, InvalidInputError],
      [{ ...base, name: 'ok_name', colocateWith: 'no_such_table' }, /"no_such_table" \(to colocate with\) does not exist/, NotFoundError],
      [{ ...base, name: 'ok_name', columns: 'id text', colocateWith: 'orders' }, /is text but the colocation group of "orders" is keyed by bigint/, InvalidInputError],
      [{ ...base, name: 'ok_name', nodes: ['node-9'] }, /node "node-9" does not exist/, InvalidInputError],
      [{ ...base, name: 'orders' }, /table "orders" already exists/, AlreadyExistsError],
    ];
    for (const [spec, message, type] of cases) {
      const attempt = createDistributedTable(worker.options, spec);
      await expect(attempt, JSON.stringify(spec)).rejects.toThrow(message);
      await expect(attempt).rejects.toBeInstanceOf(type);
    }
    expect(await catalogCounts()).toEqual(before);
    expect(await schemasOnNodes()).toEqual(schemasBefore);
    // The injected statement never ran.
    const { rows } = await catalog.pool.query('select count(*)::int as n from shardcast.nodes');
    expect(rows[0].n).toBe(3);
    expect((await listTables(catalog.pool)).map((t) => t.name)).toEqual(['events', 'order_items', 'orders']);
  });
});
