import { DEFAULT_GOVERNOR } from '../../src/movement/governor.js';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { temporal } from '@temporalio/proto';
import { Client, Connection } from '@temporalio/client';
import type { DataConverter } from '@temporalio/common';
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import pg from 'pg';
import { expect, inject } from 'vitest';
import { migrate } from '../../src/catalog/migrate.js';
import type { NodePools } from '../../src/catalog/node-pools.js';
import type { ProvisionerConfig } from '../../src/planning/provisioner.js';
import { ensureNodes, type NodeRecord } from '../../src/catalog/nodes.js';
import { movementLeftovers } from '../../src/movement/replication.js';
import { quoteIdent } from '../../src/sql/ident.js';
import { startControlWorker, type RunningWorker } from '../../workers/control.js';
import type { ShardcastClientOptions } from '../../client/index.js';
import type { TestFleet } from './global-setup.js';

/** This test worker's own fleet (global-setup starts one per worker). */
export function fleet(): TestFleet {
  const fleets = inject('fleets');
  const id = Number(process.env.VITEST_POOL_ID ?? '1');
  return fleets[(Number.isInteger(id) && id >= 1 ? id - 1 : 0) % fleets.length]!;
}

export function uniqueName(prefix: string): string {
  return `${prefix}_${randomBytes(4).toString('hex')}`;
}

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/** Every shard of the catalog with its schema and the node it is placed on, by id. */
export async function shardPlacements(db: Pick<pg.Pool, 'query'>): Promise<Array<{ id: number; schema: string; node: string }>> {
  const { rows } = await db.query<{ id: number; schema: string; node: string }>(
    `select s.id::int as id, s.schema_name as schema, n.name as node from shardcast.shards s join shardcast.placements p on p.shard_id = s.id
       join shardcast.nodes n on n.id = p.node_id order by s.id`,
  );
  return rows;
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
  /** Payload codecs of the worker and its client (encryption tests). */
  dataConverter?: DataConverter,
  /** Where scale-out's nodes come from (planning.provisioner). */
  provisioner?: ProvisionerConfig,
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
    dataConverter,
    // The suite runs its files side by side on few cores: a governor pacing every test's copy against
    // that load would only make the suite slow. Its own tests turn it on per movement (governor.test.ts),
    // and worker processes (startWorkerProcess) run at the configuration's default, on.
    governor: { ...DEFAULT_GOVERNOR, enabled: false },
    provisioner,
  });
  const connection = await Connection.connect({ address: f.temporalAddress });
  const client = new Client({ connection, namespace: 'default', ...(dataConverter ? { dataConverter } : {}) });
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

/** The catalog's `index`-th shard (by id): its id and schema. */
export async function shardByIndex(catalog: TestCatalog, index: number): Promise<{ id: number; schema: string }> {
  const { rows } = await catalog.pool.query<{ id: number; schema: string }>('select id::int as id, schema_name as schema from shardcast.shards order by id');
  return rows[index]!;
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


/** Where replay.test.ts finds the recorded histories it replays against the current workflow code. */
export const HISTORIES = path.resolve(import.meta.dirname, '../fixtures/histories');

/**
 * With SHARDCAST_RECORD_HISTORIES=1, saves the workflow's history (as it is now: a running
 * workflow's too) to HISTORIES as `NAME.binpb`; replay.test.ts replays every file there, so a change
 * to workflow code that breaks the replay of a recorded run fails the tests. Binary protobuf: the
 * SDK's JSON reader trips over two copies of protobufjs in this install.
 */
export async function recordHistory(client: Client, workflowId: string, name: string): Promise<void> {
  const history = await client.workflow.getHandle(workflowId).fetchHistory();
  const bytes = temporal.api.history.v1.History.encode(history).finish();
  // No credential in Temporal's history: every workflow a test records is checked, recorded or not.
  expectNoCredentials(Buffer.from(bytes), `the history of ${workflowId}`);
  if (process.env.SHARDCAST_RECORD_HISTORIES !== '1') return;
  mkdirSync(HISTORIES, { recursive: true });
  writeFileSync(path.join(HISTORIES, `${name}.binpb`), bytes);
}

/** Fails when the bytes hold a connection URL or the test fleet's password. */
export function expectNoCredentials(bytes: Buffer, what: string): void {
  const text = bytes.toString('latin1');
  const url = /postgres(ql)?:\/\/[^\s"]*/.exec(text);
  if (url) throw new Error(`${what} holds a connection URL: ${url[0].replace(/:[^:@/]*@/, ':***@')}`);
  if (text.includes(fleet().password)) throw new Error(`${what} holds the test fleet's password`);
}

/**
 * `shardcast worker` in a process of its own on `taskQueue`, against the catalog: a second worker
 * as deployed, with its own identity (`pid@host`). Resolves once it is ready; `stop` ends it with
 * SIGTERM (the worker shuts down in order), SIGKILL after 20 s.
 */
export async function startWorkerProcess(catalogUrl: string, taskQueue: string, env: Record<string, string> = {}): Promise<{ child: ChildProcessWithoutNullStreams; output(): string; stop(): Promise<void> }> {
  const root = path.resolve(import.meta.dirname, '../..');
  const child = spawn(process.execPath, [path.join(root, 'bin/shardcast.js'), 'worker'], {
    cwd: root,
    env: { ...process.env, SHARDCAST_CATALOG_URL: catalogUrl, SHARDCAST_TEMPORAL_ADDRESS: fleet().temporalAddress, SHARDCAST_TEMPORAL_TASK_QUEUE: taskQueue, SHARDCAST_METRICS_PORT: '0', ...env },
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(timer);
  };
  try {
    await until('the worker process', async () => {
      if (child.exitCode !== null) throw new Error(`worker exited: ${out}`);
      return out.includes('shardcast: ready');
    }, 60_000, 100);
  } catch (err) {
    await stop();
    throw err;
  }
  return { child, output: () => out, stop };
}

/** The `shardcast` command (bin/shardcast.js), run to its end with `env` added to the test's environment. */
export function runCli(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const cli = path.resolve(import.meta.dirname, '../../bin/shardcast.js');
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cli, ...args], { env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/**
 * Waits until no workflow of `taskQueue` is running (a move's fenced-copy drop runs on after the move
 * returns): for tests that stop their own servers, which must not pull them from under a running activity.
 */
export async function waitForIdleTaskQueue(client: Client, taskQueue: string, timeoutMs = 60_000): Promise<void> {
  await until(
    `no running workflow on ${taskQueue}`,
    async () => {
      for await (const _ of client.workflow.list({ query: `TaskQueue = '${taskQueue}' AND ExecutionStatus = 'Running'` })) return false;
      return true;
    },
    timeoutMs,
    250,
  );
}
