import type pg from 'pg';
import { InvalidShardKeyError, KeyOutOfRangeError, UnknownTableError } from '../errors.js';
import { compareKeys, hashKey, normalizeKey, type KeyType } from '../catalog/keys.js';
import type { ShardMethod } from '../catalog/tables.js';

export interface RoutedTable {
  name: string;
  groupId: number;
  keyColumn: string;
  keyType: KeyType;
  method: ShardMethod;
}

export interface ShardRoute {
  shardId: number;
  schema: string;
  groupId: number;
  nodeId: number;
  nodeName: string;
  dsn: string;
  hashMin?: bigint;
  hashMax?: bigint;
  rangeMin?: bigint | string;
  rangeMax?: bigint | string;
}

/** An immutable snapshot of the catalog's shard map at one map_version. */
export class ShardMap {
  constructor(
    readonly version: number,
    readonly tables: ReadonlyMap<string, RoutedTable>,
    /** Per colocation group, its shards ordered by hash or range start. */
    readonly groups: ReadonlyMap<number, readonly ShardRoute[]>,
  ) {}

  table(name: string): RoutedTable {
    const table = this.tables.get(name);
    if (!table) throw new UnknownTableError(name);
    return table;
  }

  /** The shard that holds `key` of `table`; errors name the table and what is wrong with the key. */
  route(tableName: string, key: unknown): ShardRoute {
    const table = this.table(tableName);
    const shards = this.groups.get(table.groupId) ?? [];
    if (table.method === 'hash') {
      let hash: bigint;
      try {
        hash = hashKey(table.keyType, key);
      } catch (err) {
        throw new InvalidShardKeyError(table.name, (err as Error).message, { cause: err });
      }
      // First shard whose upper bound is at or above the hash.
      let lo = 0;
      let hi = shards.length - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (shards[mid]!.hashMax! < hash) lo = mid + 1;
        else hi = mid;
      }
      const shard = shards[lo];
      if (!shard || shard.hashMin! > hash || shard.hashMax! < hash) throw new KeyOutOfRangeError(table.name, key);
      return shard;
    }
    let value: bigint | string;
    try {
      value = normalizeKey(table.keyType, key);
    } catch (err) {
      throw new InvalidShardKeyError(table.name, (err as Error).message, { cause: err });
    }
    // Last shard whose lower bound is at or below the key.
    let lo = 0;
    let hi = shards.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (compareKeys(table.keyType, shards[mid]!.rangeMin!, value) <= 0) {
        found = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    const shard = shards[found];
    if (!shard || compareKeys(table.keyType, value, shard.rangeMax!) >= 0) throw new KeyOutOfRangeError(table.name, key);
    return shard;
  }

  shardsOf(tableName: string): readonly ShardRoute[] {
    return this.groups.get(this.table(tableName).groupId) ?? [];
  }

  dsns(): Set<string> {
    const dsns = new Set<string>();
    for (const shards of this.groups.values()) for (const s of shards) dsns.add(s.dsn);
    return dsns;
  }
}

/**
 * Reads the whole map in one repeatable-read transaction, so version and rows agree. Node DSNs come
 * from shardcast.node_endpoints, without credentials: each route's DSN gets `credentials` (the
 * router's own user and password) instead.
 */
export async function loadShardMap(client: pg.ClientBase, credentials: NodeCredentials): Promise<ShardMap> {
  await client.query('begin isolation level repeatable read read only');
  try {
    const version = await client.query<{ version: string }>('select version::text as version from shardcast.map_version');
    const tables = await client.query<{ name: string; group_id: number; key_column: string; key_type: KeyType; method: ShardMethod }>(
      `select t.name, t.group_id::int as group_id, t.key_column, t.key_type, g.method
         from shardcast.distributed_tables t join shardcast.colocation_groups g on g.id = t.group_id
        where t.state = 'active'`,
    );
    const shards = await client.query<{
      shard_id: number;
      schema_name: string;
      group_id: number;
      node_id: number;
      node_name: string;
      dsn: string;
      hash_min: string | null;
      hash_max: string | null;
      range_min: string | null;
      range_max: string | null;
      key_type: KeyType;
    }>(
      `select s.id::int as shard_id, s.schema_name, s.group_id::int as group_id, n.id::int as node_id, n.name as node_name, n.dsn,
              s.hash_min::text, s.hash_max::text, s.range_min, s.range_max, g.key_type
         from shardcast.shards s
         join shardcast.colocation_groups g on g.id = s.group_id
         join shardcast.placements p on p.shard_id = s.id
         join shardcast.node_endpoints n on n.id = p.node_id
        where exists (select 1 from shardcast.distributed_tables t where t.group_id = s.group_id and t.state = 'active')`,
    );
    await client.query('commit');
    const tableMap = new Map<string, RoutedTable>();
    for (const t of tables.rows) {
      tableMap.set(t.name, { name: t.name, groupId: t.group_id, keyColumn: t.key_column, keyType: t.key_type, method: t.method });
    }
    const groups = new Map<number, ShardRoute[]>();
    for (const s of shards.rows) {
      const route: ShardRoute = { shardId: s.shard_id, schema: s.schema_name, groupId: s.group_id, nodeId: s.node_id, nodeName: s.node_name, dsn: withCredentials(s.dsn, credentials) };
      if (s.hash_min !== null) {
        route.hashMin = BigInt(s.hash_min);
        route.hashMax = BigInt(s.hash_max!);
      } else {
        route.rangeMin = normalizeKey(s.key_type, s.range_min);
        route.rangeMax = normalizeKey(s.key_type, s.range_max);
      }
      let list = groups.get(s.group_id);
      if (!list) groups.set(s.group_id, (list = []));
      list.push(route);
    }
    for (const [groupId, list] of groups) {
      const keyType = shards.rows.find((r) => r.group_id === groupId)!.key_type;
      list.sort((a, b) =>
        a.hashMin !== undefined ? (a.hashMin < b.hashMin! ? -1 : a.hashMin > b.hashMin! ? 1 : 0) : compareKeys(keyType, a.rangeMin!, b.rangeMin!),
      );
    }
    return new ShardMap(Number(version.rows[0]!.version), tableMap, groups);
  } catch (err) {
    await client.query('rollback').catch(() => undefined);
    throw err;
  }
}

/** The user and password a router connects to the nodes with. */
export interface NodeCredentials {
  user: string;
  password: string;
}

/** A credential-free node DSN with the router's user and password written in. */
export function withCredentials(dsn: string, credentials: NodeCredentials): string {
  const url = new URL(dsn);
  // The view leaves none of these; a parameter would override the URL's user and password in pg.
  for (const p of ['user', 'password', 'passfile', 'passwordenv']) url.searchParams.delete(p);
  // Empty: left to pg's defaults (PGUSER, PGPASSWORD), as for a catalog URL without them.
  url.username = credentials.user === '' ? '' : encodeURIComponent(credentials.user);
  url.password = credentials.password === '' ? '' : encodeURIComponent(credentials.password);
  return url.toString();
}
