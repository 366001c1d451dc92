import type pg from 'pg';
import { InvalidInputError, NotFoundError, sqlState } from '../errors.js';
import { failpoint } from '../failpoints.js';
import { quoteIdent } from '../sql/ident.js';
import { inTransaction } from '../sql/transaction.js';
import type { NodePools } from './node-pools.js';
import { getNode, type Queryable } from './nodes.js';

/**
 * Dropping a distributed table (`shardcast tables drop`, workflow dropDistributedTable):
 *
 * 1. `tableDropPlan`: the table (active, or 'dropping' from an earlier run that did not finish), its
 *    group's shards and nodes; refused while a movement of any of the group's shards runs.
 * 2. (the workflow's approval gate, as for movements)
 * 3. `beginTableDrop`: under the group's row lock, the movement check again and the table set
 *    'dropping': routers and the planner stop seeing it; new movements of the group are refused.
 * 4. `dropTableOnShardNode`, per node: the table dropped in every shard schema the catalog places
 *    there; when it was the group's last table, the (then empty) schemas too.
 * 5. `unregisterDroppedTable`: its catalog row; when it was the last, the group's shards and group.
 *
 * Colocation: dropping one table of a group drops that table only; the group, its shards and the
 * other tables stay. Every step is safe to repeat. Once 'dropping', there is no way back: a failed
 * run leaves the table 'dropping', and running the drop again finishes it.
 */

export interface TableDropPlan {
  tableId: number;
  table: string;
  groupId: number;
  group: string;
  /** The group's other tables stay (and so do its shards and schemas). */
  otherTables: string[];
  shards: number;
  nodes: Array<{ id: number; name: string }>;
  /** Bytes of the table in all its shards (for the approval policy's size threshold). */
  bytes: number;
}

/** The running movement of any shard of the group, as "shard 3 is being moved by movement m (workflow w)", or undefined. */
async function runningMovementOfGroup(db: Queryable, groupId: number): Promise<string | undefined> {
  const { rows } = await db.query<{ id: string; shard_id: number; workflow_id: string | null }>(
    `select m.id, s::int as shard_id, m.workflow_id from shardcast.movements m, unnest(array_prepend(m.shard_id, m.other_shard_ids)) s
      where m.state = 'running' and s in (select id from shardcast.shards where group_id = $1) limit 1`,
    [groupId],
  );
  const m = rows[0];
  return m ? `shard ${m.shard_id} is being moved by movement ${m.id}${m.workflow_id ? ` (workflow ${m.workflow_id})` : ''}` : undefined;
}

async function tableRow(db: Queryable, table: string): Promise<{ id: number; group_id: number; group_name: string; state: string } | undefined> {
  const { rows } = await db.query<{ id: number; group_id: number; group_name: string; state: string }>(
    `select t.id::int, t.group_id::int, g.name as group_name, t.state from shardcast.distributed_tables t join shardcast.colocation_groups g on g.id = t.group_id where t.name = $1`,
    [table],
  );
  return rows[0];
}

/** What dropping `table` takes; NotFoundError for an unknown table, InvalidInputError while a movement of its group runs. */
export async function tableDropPlan(db: Queryable, pools: NodePools | undefined, table: string): Promise<TableDropPlan> {
  const row = await tableRow(db, table);
  if (!row || row.state === 'creating') throw new NotFoundError(`unknown distributed table "${table}"`);
  const moving = await runningMovementOfGroup(db, row.group_id);
  if (moving) throw new InvalidInputError(`table "${table}" cannot be dropped now: ${moving}; wait for it, or cancel it`);
  const others = await db.query<{ name: string }>('select name from shardcast.distributed_tables where group_id = $1 and id <> $2 order by id', [row.group_id, row.id]);
  const { rows: placed } = await db.query<{ shard_id: number; schema: string; node_id: number; node: string }>(
    `select s.id::int as shard_id, s.schema_name as schema, n.id::int as node_id, n.name as node
       from shardcast.shards s join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id
      where s.group_id = $1 order by s.id`,
    [row.group_id],
  );
  const nodes = [...new Map(placed.map((p) => [p.node_id, { id: p.node_id, name: p.node }])).values()];
  let bytes = 0;
  if (pools) {
    for (const node of nodes) {
      const record = await getNode(db, node.id);
      const relations = placed.filter((p) => p.node_id === node.id).map((p) => `${quoteIdent(p.schema)}.${quoteIdent(table)}`);
      const { rows } = await pools
        .get(record.dsn)
        .query<{ bytes: string }>('select coalesce(sum(pg_total_relation_size(to_regclass(r))), 0)::bigint::text as bytes from unnest($1::text[]) r', [relations]);
      bytes += Number(rows[0]!.bytes);
    }
  }
  return { tableId: row.id, table, groupId: row.group_id, group: row.group_name, otherTables: others.rows.map((r) => r.name), shards: placed.length, nodes, bytes };
}

/**
 * The point of no return: under the group's row lock (movement leases take it too), no movement of
 * the group runs, and the table becomes 'dropping'. Safe to repeat.
 */
export async function beginTableDrop(pool: pg.Pool, tableId: number): Promise<{ mapVersion: number }> {
  return inTransaction(pool, async (client) => {
    const { rows } = await client.query<{ name: string; group_id: number; state: string }>(
      'select name, group_id::int, state from shardcast.distributed_tables where id = $1',
      [tableId],
    );
    const row = rows[0];
    if (!row) throw new NotFoundError(`distributed table #${tableId} no longer exists`);
    await client.query('select 1 from shardcast.colocation_groups where id = $1 for update', [row.group_id]);
    if (row.state !== 'dropping') {
      const moving = await runningMovementOfGroup(client, row.group_id);
      if (moving) throw new InvalidInputError(`table "${row.name}" cannot be dropped now: ${moving}; wait for it, or cancel it`);
      await client.query("update shardcast.distributed_tables set state = 'dropping' where id = $1", [tableId]);
    }
    const v = await client.query<{ version: string }>('select version::text from shardcast.map_version');
    return { mapVersion: Number(v.rows[0]!.version) };
  });
}

/**
 * On one node: the table dropped from every shard schema of its group the catalog places there; when
 * no other table of the group is left, each schema too (without cascade: a schema that still holds
 * anything else is left, and reported). Names come from the catalog, never from the workflow. Safe to repeat.
 */
export async function dropTableOnShardNode(pool: pg.Pool, pools: NodePools, tableId: number, nodeId: number): Promise<{ schemasLeft: string[] }> {
  const { rows } = await pool.query<{ name: string; group_id: number; state: string; last: boolean }>(
    `select t.name, t.group_id::int, t.state,
            not exists (select 1 from shardcast.distributed_tables o where o.group_id = t.group_id and o.id <> t.id) as last
       from shardcast.distributed_tables t where t.id = $1`,
    [tableId],
  );
  const table = rows[0];
  if (!table) return { schemasLeft: [] }; // already unregistered: every node was done before
  if (table.state !== 'dropping') throw new InvalidInputError(`table "${table.name}" is ${table.state}, not being dropped`);
  const { rows: shards } = await pool.query<{ schema: string }>(
    'select s.schema_name as schema from shardcast.shards s join shardcast.placements p on p.shard_id = s.id where s.group_id = $1 and p.node_id = $2 order by s.id',
    [table.group_id, nodeId],
  );
  const node = await getNode(pool, nodeId);
  const left: string[] = [];
  await inTransaction(pools.get(node.dsn), async (client) => {
    for (const { schema } of shards) {
      await client.query(`drop table if exists ${quoteIdent(schema)}.${quoteIdent(table.name)}`);
      if (!table.last) continue;
      await client.query('savepoint drop_schema');
      try {
        await client.query(`drop schema if exists ${quoteIdent(schema)}`);
      } catch (err) {
        if (sqlState(err) !== '2BP01') throw err; // dependent objects: not ours to drop
        await client.query('rollback to savepoint drop_schema');
        left.push(schema);
      }
    }
  });
  await failpoint('drop-table.after-node'); // tests: the reply lost after the work
  return { schemasLeft: left };
}

/** The catalog rows: the table's, and when it was the group's last table, the group's shards, placements and group. Safe to repeat. */
export async function unregisterDroppedTable(pool: pg.Pool, tableId: number): Promise<{ groupDropped: boolean; mapVersion: number }> {
  const result = await inTransaction(pool, async (client) => {
    const { rows } = await client.query<{ group_id: number; state: string; name: string }>('select group_id::int, state, name from shardcast.distributed_tables where id = $1 for update', [tableId]);
    const row = rows[0];
    let groupDropped = false;
    if (row) {
      if (row.state !== 'dropping') throw new InvalidInputError(`table "${row.name}" is ${row.state}, not being dropped`);
      await client.query('delete from shardcast.distributed_tables where id = $1', [tableId]);
      const others = await client.query('select 1 from shardcast.distributed_tables where group_id = $1 limit 1', [row.group_id]);
      if (others.rowCount === 0) {
        await client.query('delete from shardcast.shards where group_id = $1', [row.group_id]); // placements cascade
        await client.query('delete from shardcast.colocation_groups where id = $1', [row.group_id]);
        groupDropped = true;
      }
    }
    const v = await client.query<{ version: string }>('select version::text from shardcast.map_version');
    return { groupDropped, mapVersion: Number(v.rows[0]!.version) };
  });
  await failpoint('drop-table.after-unregister'); // tests: the reply lost after the commit
  return result;
}
