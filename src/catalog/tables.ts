import type pg from 'pg';
import { AlreadyExistsError, InvalidInputError, NotFoundError, errorMessage } from '../errors.js';
import { quoteIdent, singleStatement, validateIdentifier } from '../sql/ident.js';
import { inTransaction } from '../sql/transaction.js';
import { compareKeys, evenHashRanges, keyToText, keyTypeOf, normalizeKey, SUPPORTED_KEY_TYPES, type KeyType } from './keys.js';
import { MAX_SHARDS_PER_TABLE } from './limits.js';
import type { Queryable } from './nodes.js';

export type ShardMethod = 'hash' | 'range';

/** What an operator asks for when distributing a table. */
export interface TableSpec {
  name: string;
  /** Column and constraint definitions, as inside `create table t ( … )`. */
  columns: string;
  shardKey: string;
  /** A new colocation group (default: hash) … */
  method?: ShardMethod;
  shardCount?: number;
  /** range method: ascending bounds b0 < b1 < … < bn, giving shards [b0,b1), …, [bn-1,bn). */
  rangeBounds?: string[];
  /** … or the existing table whose colocation group (shards, boundaries, nodes) this one joins. */
  colocateWith?: string;
  /** Nodes that get the new group's shards, round-robin (default: every active node). */
  nodes?: string[];
}

export { MAX_SHARDS_PER_TABLE };

/** Checks everything that can be checked without a database. */
export function validateTableSpec(spec: TableSpec): void {
  validateIdentifier('table', spec.name);
  validateIdentifier('shard key column', spec.shardKey);
  if (typeof spec.columns !== 'string' || spec.columns.trim() === '') {
    throw new InvalidInputError(`table "${spec.name}": column definitions are required`);
  }
  if (spec.colocateWith !== undefined) {
    validateIdentifier('colocation table', spec.colocateWith);
    if (spec.method !== undefined || spec.shardCount !== undefined || spec.rangeBounds !== undefined || spec.nodes !== undefined) {
      throw new InvalidInputError(
        `table "${spec.name}": a table colocated with "${spec.colocateWith}" takes that group's method, shards and nodes; do not give method, shard count, bounds or nodes`,
      );
    }
    return;
  }
  const method = spec.method ?? 'hash';
  if (method !== 'hash' && method !== 'range') {
    throw new InvalidInputError(`table "${spec.name}": method must be hash or range, got ${JSON.stringify(method)}`);
  }
  if (method === 'hash') {
    if (spec.rangeBounds !== undefined) throw new InvalidInputError(`table "${spec.name}": range bounds are for the range method`);
    const count = spec.shardCount ?? 8;
    if (!Number.isInteger(count) || count < 1 || count > MAX_SHARDS_PER_TABLE) {
      throw new InvalidInputError(`table "${spec.name}": shard count must be an integer from 1 to ${MAX_SHARDS_PER_TABLE}, got ${spec.shardCount}`);
    }
  } else {
    if (spec.shardCount !== undefined) throw new InvalidInputError(`table "${spec.name}": the range method takes bounds, not a shard count`);
    if (!Array.isArray(spec.rangeBounds) || spec.rangeBounds.length < 2) {
      throw new InvalidInputError(`table "${spec.name}": the range method needs at least two bounds (b0 < b1 < …)`);
    }
    if (spec.rangeBounds.length - 1 > MAX_SHARDS_PER_TABLE) {
      throw new InvalidInputError(`table "${spec.name}": at most ${MAX_SHARDS_PER_TABLE} ranges`);
    }
  }
  for (const node of spec.nodes ?? []) {
    if (typeof node !== 'string' || !/^[a-z][a-z0-9_-]{0,62}$/.test(node)) throw new InvalidInputError(`unknown node name ${JSON.stringify(node)}`);
  }
}

/** Canonical, ordered range bounds for the key type; throws when they are not strictly ascending. */
export function parseRangeBounds(table: string, type: KeyType, bounds: string[]): string[] {
  const values = bounds.map((b) => {
    try {
      return normalizeKey(type, type === 'text' || type === 'uuid' ? b : b.trim());
    } catch (err) {
      throw new InvalidInputError(`table "${table}": range bound ${JSON.stringify(b)}: ${errorMessage(err)}`);
    }
  });
  for (let i = 1; i < values.length; i++) {
    if (compareKeys(type, values[i - 1]!, values[i]!) >= 0) {
      throw new InvalidInputError(`table "${table}": range bounds must be strictly ascending (${bounds[i - 1]} is not below ${bounds[i]})`);
    }
  }
  return values.map(keyToText);
}

/**
 * Checks the column definitions with PostgreSQL itself, inside a transaction that is rolled back:
 * they must form one valid `create table` and contain the shard key with a type we can route.
 */
export async function inspectColumns(client: pg.ClientBase, spec: TableSpec): Promise<KeyType> {
  await client.query('begin');
  try {
    try {
      // Extended protocol: exactly one statement, so the text cannot smuggle in a second one.
      await client.query(singleStatement(`create temporary table sc_validate_columns (${spec.columns}) on commit drop`));
    } catch (err) {
      throw new InvalidInputError(`table "${spec.name}": invalid column definitions: ${errorMessage(err)}`, { cause: err });
    }
    const { rows } = await client.query<{ type: string }>(
      `select format_type(a.atttypid, a.atttypmod) as type
         from pg_attribute a
        where a.attrelid = 'pg_temp.sc_validate_columns'::regclass and a.attname = $1 and a.attnum > 0 and not a.attisdropped`,
      [spec.shardKey],
    );
    if (!rows[0]) throw new InvalidInputError(`table "${spec.name}": shard key column "${spec.shardKey}" is not among its columns`);
    const keyType = keyTypeOf(rows[0].type);
    if (!keyType) {
      throw new InvalidInputError(
        `table "${spec.name}": shard key column "${spec.shardKey}" has type ${rows[0].type}; supported are ${SUPPORTED_KEY_TYPES} (timestamps of full precision)`,
      );
    }
    return keyType;
  } finally {
    await client.query('rollback');
  }
}

export interface ShardPlacement {
  shardId: number;
  schema: string;
  nodeId: number;
  nodeName: string;
}

export interface RegisteredTable {
  tableId: number;
  name: string;
  groupId: number;
  groupName: string;
  /** True when this table created its colocation group (and so its shard schemas). */
  newGroup: boolean;
  method: ShardMethod;
  keyType: KeyType;
  shards: ShardPlacement[];
  /** Nodes that hold at least one shard of the group: where the table must be created. */
  nodeIds: number[];
}

/**
 * Records a new distributed table in the catalog in state `creating` (invisible to routers): its
 * colocation group, shards and placements when it starts a group. Idempotent for the same `createdBy`.
 */
export async function registerTable(pool: pg.Pool, spec: TableSpec, createdBy: string): Promise<RegisteredTable> {
  validateTableSpec(spec);
  const client = await pool.connect();
  try {
    const existing = await client.query<{ id: number; created_by: string | null }>(
      'select id::int as id, created_by from shardcast.distributed_tables where name = $1',
      [spec.name],
    );
    if (existing.rows[0]) {
      if (existing.rows[0].created_by === createdBy) return await describeRegisteredTable(client, existing.rows[0].id);
      throw new AlreadyExistsError(`table "${spec.name}" already exists`);
    }
    const keyType = await inspectColumns(client, spec);
    await client.query('begin');
    try {
      let groupId: number;
      let newGroup = false;
      if (spec.colocateWith) {
        const group = await client.query<{ group_id: number; key_type: KeyType; state: string }>(
          `select t.group_id::int as group_id, g.key_type, t.state
             from shardcast.distributed_tables t join shardcast.colocation_groups g on g.id = t.group_id
            where t.name = $1 for share of g`,
          [spec.colocateWith],
        );
        const row = group.rows[0];
        if (!row || row.state !== 'active') throw new NotFoundError(`table "${spec.colocateWith}" (to colocate with) does not exist`);
        if (row.key_type !== keyType) {
          throw new InvalidInputError(
            `table "${spec.name}": shard key "${spec.shardKey}" is ${keyType} but the colocation group of "${spec.colocateWith}" is keyed by ${row.key_type}`,
          );
        }
        groupId = row.group_id;
      } else {
        newGroup = true;
        const method = spec.method ?? 'hash';
        const nodes = await placementNodes(client, spec);
        const inserted = await client.query<{ id: number }>(
          `insert into shardcast.colocation_groups (name, method, key_type) values ($1, $2, $3) returning id::int as id`,
          [spec.name, method, keyType],
        );
        groupId = inserted.rows[0]!.id;
        await insertShards(client, groupId, method, keyType, spec, nodes);
      }
      const table = await client.query<{ id: number }>(
        `insert into shardcast.distributed_tables (name, group_id, key_column, key_type, columns_ddl, state, created_by)
         values ($1, $2, $3, $4, $5, 'creating', $6) returning id::int as id`,
        [spec.name, groupId, spec.shardKey, keyType, spec.columns, createdBy],
      );
      await client.query('commit');
      const registered = await describeRegisteredTable(client, table.rows[0]!.id);
      return { ...registered, newGroup };
    } catch (err) {
      await client.query('rollback');
      if ((err as { code?: string }).code === '23505') throw new AlreadyExistsError(`table "${spec.name}" already exists`);
      throw err;
    }
  } finally {
    client.release();
  }
}

async function placementNodes(client: pg.ClientBase, spec: TableSpec): Promise<Array<{ id: number; name: string }>> {
  const { rows } = await client.query<{ id: number; name: string }>(
    `select id::int as id, name from shardcast.nodes where state = 'active' order by name`,
  );
  if (spec.nodes && spec.nodes.length > 0) {
    const byName = new Map(rows.map((r) => [r.name, r]));
    return spec.nodes.map((name) => {
      const node = byName.get(name);
      if (!node) throw new InvalidInputError(`node "${name}" does not exist or is not active`);
      return node;
    });
  }
  if (rows.length === 0) throw new InvalidInputError('there is no active node to place shards on: add one with `shardcast nodes add`');
  return rows;
}

async function insertShards(
  client: pg.ClientBase,
  groupId: number,
  method: ShardMethod,
  keyType: KeyType,
  spec: TableSpec,
  nodes: Array<{ id: number }>,
): Promise<void> {
  const hashMin: Array<string | null> = [];
  const hashMax: Array<string | null> = [];
  const rangeMin: Array<string | null> = [];
  const rangeMax: Array<string | null> = [];
  if (method === 'hash') {
    for (const r of evenHashRanges(spec.shardCount ?? 8)) {
      hashMin.push(r.min.toString());
      hashMax.push(r.max.toString());
      rangeMin.push(null);
      rangeMax.push(null);
    }
  } else {
    const bounds = parseRangeBounds(spec.name, keyType, spec.rangeBounds ?? []);
    for (let i = 0; i + 1 < bounds.length; i++) {
      hashMin.push(null);
      hashMax.push(null);
      rangeMin.push(bounds[i]!);
      rangeMax.push(bounds[i + 1]!);
    }
  }
  const nodeIds = hashMin.map((_, i) => nodes[i % nodes.length]!.id);
  await client.query(
    `with planned as (
       select nextval(pg_get_serial_sequence('shardcast.shards', 'id')) as id, ord
         from generate_series(1, $2::int) as ord),
     shards as (
       insert into shardcast.shards (id, group_id, schema_name, hash_min, hash_max, range_min, range_max)
       overriding system value
       select p.id, $1, 'sc_s' || p.id, ($3::bigint[])[p.ord], ($4::bigint[])[p.ord], ($5::text[])[p.ord], ($6::text[])[p.ord]
         from planned p
       returning id)
     insert into shardcast.placements (shard_id, node_id)
     select p.id, ($7::bigint[])[p.ord] from planned p`,
    [groupId, hashMin.length, hashMin, hashMax, rangeMin, rangeMax, nodeIds],
  );
}

/** A registered table's column and constraint definitions, as given at creation (`--columns`). */
export async function tableColumnsDdl(db: Queryable, tableId: number): Promise<string> {
  const { rows } = await db.query<{ columns_ddl: string }>('select columns_ddl from shardcast.distributed_tables where id = $1', [tableId]);
  if (!rows[0]) throw new NotFoundError(`table #${tableId} does not exist`);
  return rows[0].columns_ddl;
}

export async function describeRegisteredTable(db: Queryable, tableId: number): Promise<RegisteredTable> {
  const table = await db.query<{
    id: number;
    name: string;
    group_id: number;
    group_name: string;
    method: ShardMethod;
    key_type: KeyType;
    first_table: boolean;
  }>(
    `select t.id::int as id, t.name, t.group_id::int as group_id, g.name as group_name, g.method, g.key_type,
            not exists (select 1 from shardcast.distributed_tables o where o.group_id = t.group_id and o.id < t.id) as first_table
       from shardcast.distributed_tables t join shardcast.colocation_groups g on g.id = t.group_id
      where t.id = $1`,
    [tableId],
  );
  const row = table.rows[0];
  if (!row) throw new NotFoundError(`table #${tableId} does not exist`);
  const shards = await db.query<ShardPlacement>(
    `select s.id::int as "shardId", s.schema_name as schema, n.id::int as "nodeId", n.name as "nodeName"
       from shardcast.shards s join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id
      where s.group_id = $1 order by s.id`,
    [row.group_id],
  );
  return {
    tableId: row.id,
    name: row.name,
    groupId: row.group_id,
    groupName: row.group_name,
    newGroup: row.first_table,
    method: row.method,
    keyType: row.key_type,
    shards: shards.rows,
    nodeIds: [...new Set(shards.rows.map((s) => s.nodeId))].sort((a, b) => a - b),
  };
}

/** Makes a created table visible to routers (the map change bumps map_version and notifies). */
export async function activateTable(db: Queryable, tableId: number): Promise<void> {
  await db.query(`update shardcast.distributed_tables set state = 'active' where id = $1 and state = 'creating'`, [tableId]);
}

/** Compensation: removes a table still `creating`, and its group's shards when it created the group. */
export async function unregisterTable(pool: pg.Pool, tableId: number): Promise<void> {
  await inTransaction(pool, async (client) => {
    const { rows } = await client.query<{ group_id: number; state: string }>(
      'select group_id::int as group_id, state from shardcast.distributed_tables where id = $1 for update',
      [tableId],
    );
    const row = rows[0];
    if (!row) return;
    if (row.state !== 'creating') throw new InvalidInputError(`table #${tableId} is active; it is not removed by compensation`);
    await client.query('delete from shardcast.distributed_tables where id = $1', [tableId]);
    const others = await client.query('select 1 from shardcast.distributed_tables where group_id = $1 limit 1', [row.group_id]);
    if (others.rowCount === 0) {
      await client.query('delete from shardcast.shards where group_id = $1', [row.group_id]);
      await client.query('delete from shardcast.colocation_groups where id = $1', [row.group_id]);
    }
  });
}

export interface TableInfo {
  name: string;
  group: string;
  method: ShardMethod;
  keyColumn: string;
  keyType: KeyType;
  state: string;
  shards: number;
  nodes: number;
}

export async function listTables(db: Queryable): Promise<TableInfo[]> {
  const { rows } = await db.query<TableInfo>(
    `select t.name, g.name as "group", g.method, t.key_column as "keyColumn", t.key_type as "keyType", t.state,
            (select count(*)::int from shardcast.shards s where s.group_id = g.id) as shards,
            (select count(distinct p.node_id)::int from shardcast.shards s join shardcast.placements p on p.shard_id = s.id
              where s.group_id = g.id) as nodes
       from shardcast.distributed_tables t join shardcast.colocation_groups g on g.id = t.group_id
      order by t.name`,
  );
  return rows;
}

export interface ShardInfo {
  shardId: number;
  schema: string;
  group: string;
  tables: string[];
  node: string;
  range: string;
}

export async function listShards(db: Queryable, options: { table?: string; node?: string } = {}): Promise<ShardInfo[]> {
  if (options.table) {
    const t = await db.query('select 1 from shardcast.distributed_tables where name = $1', [options.table]);
    if (t.rowCount === 0) throw new NotFoundError(`unknown distributed table "${options.table}"`);
  }
  const { rows } = await db.query<ShardInfo & { hash_min: string | null; hash_max: string | null; range_min: string | null; range_max: string | null }>(
    `select s.id::int as "shardId", s.schema_name as schema, g.name as "group", n.name as node,
            s.hash_min::text as hash_min, s.hash_max::text as hash_max, s.range_min, s.range_max,
            array(select t.name from shardcast.distributed_tables t where t.group_id = g.id order by t.id) as tables
       from shardcast.shards s
       join shardcast.colocation_groups g on g.id = s.group_id
       join shardcast.placements p on p.shard_id = s.id
       join shardcast.nodes n on n.id = p.node_id
      where ($1::text is null or exists (select 1 from shardcast.distributed_tables t where t.group_id = g.id and t.name = $1))
        and ($2::text is null or n.name = $2)
      order by s.id`,
    [options.table ?? null, options.node ?? null],
  );
  return rows.map(({ hash_min, hash_max, range_min, range_max, ...rest }) => ({
    ...rest,
    range: hash_min !== null ? `hash [${hash_min}, ${hash_max}]` : `[${range_min}, ${range_max})`,
  }));
}

export async function mapVersion(db: Queryable): Promise<number> {
  const { rows } = await db.query<{ version: string }>('select version::text from shardcast.map_version');
  return Number(rows[0]!.version);
}

/** `create table <schema>.<name> (<columns>)` for one shard. */
export function shardTableDdl(schema: string, table: string, columns: string): string {
  return `create table if not exists ${quoteIdent(schema)}.${quoteIdent(table)} (${columns})`;
}
