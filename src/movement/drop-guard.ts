import type { NodePools } from '../catalog/node-pools.js';
import { describeIdentity, readDatabaseIdentity, sameDatabase, type DatabaseIdentity, type NodeRecord, type Queryable } from '../catalog/nodes.js';
import { NodeUnavailableError, UnsafeDropError, errorMessage } from '../errors.js';
import { quoteIdent } from '../sql/ident.js';

interface Placement {
  shard_id: number;
  schema_name: string;
  node: string;
  dsn: string;
  system_identifier: string | null;
  database_oid: string | null;
}

async function liveIdentity(pools: NodePools, node: Pick<NodeRecord, 'name' | 'dsn'>): Promise<DatabaseIdentity> {
  try {
    return await readDatabaseIdentity(pools.get(node.dsn));
  } catch (err) {
    throw new NodeUnavailableError(node.name, `cannot read which database it is: ${errorMessage(err)}`, { cause: err });
  }
}

/**
 * Before a compensation or clean-up drops `schema` on `node`: reads which physical database the
 * node's DSN reaches now and refuses if the catalog places there the shard the schema belongs to
 * (`shardIds`) or a shard served by a schema of that name. Two node names for one database, or a
 * DSN edited to point elsewhere, then cannot make a drop hit a live shard. A placement whose node
 * does not answer, and has no recorded identity, cannot be told apart: that is retried.
 */
export async function assertSafeToDrop(catalog: Queryable, pools: NodePools, node: NodeRecord, schema: string, shardIds: readonly number[]): Promise<void> {
  const { rows } = await catalog.query<Placement>(
    `select s.id::int as shard_id, s.schema_name, n.name as node, n.dsn, n.system_identifier::text, n.database_oid::text
       from shardcast.shards s join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id
      where s.schema_name = $1 or s.id = any($2::bigint[])`,
    [schema, shardIds],
  );
  if (rows.length === 0) return;
  const here = await liveIdentity(pools, node);
  for (const placed of rows) {
    const identity =
      placed.system_identifier !== null && placed.database_oid !== null
        ? { systemIdentifier: placed.system_identifier, databaseOid: placed.database_oid }
        : await liveIdentity(pools, { name: placed.node, dsn: placed.dsn });
    if (sameDatabase(here, identity)) {
      throw new UnsafeDropError(
        node.name,
        schema,
        `it reaches the same database as node "${placed.node}" (${describeIdentity(here)}), where the catalog places shard ${placed.shard_id} (schema ${placed.schema_name})`,
      );
    }
  }
}

/** `drop schema … cascade` on the node, after assertSafeToDrop. */
export async function dropSchemaGuarded(catalog: Queryable, pools: NodePools, node: NodeRecord, schema: string, shardIds: readonly number[]): Promise<void> {
  await assertSafeToDrop(catalog, pools, node, schema, shardIds);
  await pools.get(node.dsn).query(`drop schema if exists ${quoteIdent(schema)} cascade`);
}
