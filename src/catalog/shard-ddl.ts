import type pg from 'pg';
import { NodeUnavailableError, errorMessage } from '../errors.js';
import { quoteIdent, singleStatement } from '../sql/ident.js';
import { grantShardSchemas } from './app-role.js';
import type { NodePools } from './node-pools.js';
import type { NodeRecord } from './nodes.js';
import { shardTableDdl } from './tables.js';

/** A lost, refused or timed-out connection, or a server going down (retryable): the node, not the statement. */
export function isConnectionError(err: unknown): boolean {
  const code = (err as { code?: string }).code ?? '';
  return (
    ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND', 'EPIPE'].includes(code) ||
    code.startsWith('08') || // connection exception
    code.startsWith('57P') || // operator intervention: admin/crash shutdown, cannot connect now
    /Connection terminated|connection timeout|timeout exceeded when trying to connect/i.test(errorMessage(err))
  );
}

async function onNode<T>(pools: NodePools, node: NodeRecord, work: (client: import('pg').PoolClient) => Promise<T>): Promise<T> {
  let client: import('pg').PoolClient;
  try {
    client = await pools.get(node.dsn).connect();
  } catch (err) {
    throw new NodeUnavailableError(node.name, `cannot connect: ${errorMessage(err)}`, { cause: err });
  }
  let broken = false;
  try {
    return await work(client);
  } catch (err) {
    if (isConnectionError(err)) {
      broken = true;
      throw new NodeUnavailableError(node.name, errorMessage(err), { cause: err });
    }
    throw err;
  } finally {
    client.release(broken);
  }
}

/**
 * Creates the table in each of the given shard schemas on one node, in one transaction: either every
 * shard of the node has it or none does. Safe to repeat.
 */
export async function createTableOnNode(
  pools: NodePools,
  node: NodeRecord,
  table: { name: string; columns: string },
  schemas: string[],
): Promise<void> {
  await onNode(pools, node, async (client) => {
    await client.query('begin');
    try {
      for (const schema of schemas) {
        await client.query(`create schema if not exists ${quoteIdent(schema)}`);
        await client.query(singleStatement(shardTableDdl(schema, table.name, table.columns)));
      }
      // The application role's rights on the new schemas and tables, in the same transaction.
      await grantShardSchemas(client, schemas);
      await client.query('commit');
    } catch (err) {
      await client.query('rollback').catch(() => undefined);
      throw err;
    }
  });
}

/** Compensation of createTableOnNode: drops the table, and the schemas when the table created them. */
export async function dropTableOnNode(
  pools: NodePools,
  node: NodeRecord,
  table: { name: string },
  schemas: string[],
  dropSchemas: boolean,
): Promise<void> {
  await onNode(pools, node, async (client) => {
    await client.query('begin');
    try {
      for (const schema of schemas) {
        await client.query(`drop table if exists ${quoteIdent(schema)}.${quoteIdent(table.name)}`);
        // Without cascade: a schema that holds anything else is not ours to drop.
        if (dropSchemas) await client.query(`drop schema if exists ${quoteIdent(schema)}`);
      }
      await client.query('commit');
    } catch (err) {
      await client.query('rollback').catch(() => undefined);
      throw err;
    }
  });
}

/** Whether `schema` is there on the database `db` queries (a node, or the catalog). */
export async function schemaExists(db: Pick<pg.Pool, 'query'>, schema: string): Promise<boolean> {
  const { rowCount } = await db.query('select 1 from pg_namespace where nspname = $1', [schema]);
  return (rowCount ?? 0) > 0;
}
