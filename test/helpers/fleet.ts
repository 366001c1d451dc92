import { randomBytes } from 'node:crypto';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import pg from 'pg';
import { expect, inject } from 'vitest';
import { migrate } from '../../src/catalog/migrate.js';
import type { NodePools } from '../../src/catalog/node-pools.js';
import { ensureNodes, type NodeRecord } from '../../src/catalog/nodes.js';
import { movementLeftovers } from '../../src/movement/replication.js';
import { quoteIdent } from '../../src/sql/ident.js';
import { startControlWorker, type RunningWorker } from '../../workers/control.js';
import type { ShardcastClientOptions } from '../../client/index.js';

export const fleet = () => inject('fleet');

export function uniqueName(prefix: string): string {
  return `${prefix}_${randomBytes(4).toString('hex')}`;
}

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

export async function adminQuery(url: string, sql: string, params: unknown[] = []): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await client.query(sql, params);
  } finally {
    await client.end();
  }
}

export interface TestCatalog {
  database: string;
  catalogUrl: string;
  pool: pg.Pool;
  nodes: NodeRecord[];
  /** The node's own database, as the catalog's DSN names it. */
  nodeUrl(name: string): string;
  close(): Promise<void>;
}

/**
 * A fresh catalog database for one test file, migrated, with the three fleet nodes registered —
 * each pointing at a database of the same name on its node, so shard schemas never collide.
 */
export async function createTestCatalog(prefix = 'cat'): Promise<TestCatalog> {
  const f = fleet();
  const database = uniqueName(prefix);
  await adminQuery(f.catalogAdminUrl, `create database ${quoteIdent(database)}`);
  await Promise.all(f.nodes.map((n) => adminQuery(n.adminUrl, `create database ${quoteIdent(database)}`)));
  const catalogUrl = withDatabase(f.catalogAdminUrl, database);
  const pool = new pg.Pool({ connectionString: catalogUrl, max: 4 });
  const client = await pool.connect();
  try {
    await migrate(client);
  } finally {
    client.release();
  }
  const nodes = await ensureNodes(
    pool,
    f.nodes.map((n, i) => ({ name: n.name, dsn: withDatabase(n.adminUrl, database), region: 'test', zone: `z${i + 1}` })),
  );
  return {
    database,
    catalogUrl,
    pool,
    nodes,
    nodeUrl: (name) => nodes.find((n) => n.name === name)!.dsn,
    close: () => pool.end(),
  };
}

let runtimeInstalled = false;

export interface TestWorker {
  taskQueue: string;
  client: Client;
  options: ShardcastClientOptions;
  worker: RunningWorker;
  close(): Promise<void>;
}

/** A worker on its own task queue against the test's catalog, with the run's one workflow bundle. */
export async function startTestWorker(
  catalogUrl: string,
  nodeRetry = { maximumAttempts: 3, initialIntervalMs: 200 },
  /** Default: a new queue of its own; given, a worker that takes over another's queue. */
  queue?: string,
): Promise<TestWorker> {
  if (!runtimeInstalled) {
    Runtime.install({ logger: new DefaultLogger('ERROR') });
    runtimeInstalled = true;
  }
  const f = fleet();
  const taskQueue = queue ?? uniqueName('tq');
  const nativeConnection = await NativeConnection.connect({ address: f.temporalAddress });
  const worker = await startControlWorker({
    connection: nativeConnection,
    namespace: 'default',
    taskQueue,
    catalogUrl,
    workflowBundle: { code: inject('workflowBundleCode') },
  });
  const connection = await Connection.connect({ address: f.temporalAddress });
  const client = new Client({ connection, namespace: 'default' });
  return {
    taskQueue,
    client,
    worker,
    options: { client, taskQueue, workflowIdPrefix: `${taskQueue}-`, nodeRetry },
    async close() {
      await worker.shutdown();
      await nativeConnection.close();
      await connection.close();
    },
  };
}

/** No replication slot, publication, subscription, prepared transaction or watermark of a movement on any of these nodes. */
export async function expectNoMovementLeftovers(pools: NodePools, nodes: readonly NodeRecord[]): Promise<void> {
  for (const node of nodes) {
    expect(await movementLeftovers(pools, node)).toEqual({ node: node.name, slots: [], publications: [], subscriptions: [], preparedTransactions: [], watermarks: [] });
  }
}

/** Polls `check` every `pollMs` until it holds; after `timeoutMs` throws, naming `what`. */
export async function until(what: string, check: () => Promise<boolean>, timeoutMs = 60_000, pollMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

