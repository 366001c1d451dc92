import path from 'node:path';
import { ActivityFailure, ApplicationFailure, WorkflowFailedError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable, createTableWorkflowId } from '../../client/index.js';
import { addNode } from '../../src/catalog/nodes.js';
import { freePort, PostgresServer } from '../../src/fleet/postgres-server.js';
import { SA_PHASE } from '../../src/search-attributes.js';
import { adminQuery, createTestCatalog, fleet, startTestWorker, uniqueName, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

let catalog: TestCatalog;
let worker: TestWorker;
/** A node of this test's own, so stopping it disturbs no other test. */
let doomed: PostgresServer;

beforeAll(async () => {
  catalog = await createTestCatalog('comp');
  worker = await startTestWorker(catalog.catalogUrl, { maximumAttempts: 3, initialIntervalMs: 200 });
  doomed = new PostgresServer({
    name: 'doomed',
    dataDir: path.join(fleet().baseDir, uniqueName('doomed')),
    port: await freePort(),
    user: 'postgres',
    password: fleet().password,
  });
  await doomed.start();
  await doomed.ensureDatabase('shardcast');
  await addNode(catalog.pool, { name: 'node-doomed', dsn: doomed.url('shardcast') });
});

afterAll(async () => {
  await doomed?.stop();
  await worker?.close();
  await catalog?.close();
});

async function shardSchemas(url: string): Promise<string[]> {
  const { rows } = await adminQuery(url, `select nspname::text as s from pg_namespace where nspname like 'sc\\_s%' order by 1`);
  return rows.map((r: { s: string }) => r.s);
}

describe('table creation when a node is down', () => {
  it('retries, then compensates: nothing is left on the other nodes or in the catalog', async () => {
    await doomed.stop(); // for real: the postmaster is shut down
    const spec = {
      name: 'ledger',
      columns: 'id bigint primary key, amount numeric',
      shardKey: 'id',
      shardCount: 6,
      nodes: ['node-1', 'node-2', 'node-doomed'],
    };
    const handle = await worker.client.workflow.start('createDistributedTable', {
      taskQueue: worker.taskQueue,
      workflowId: createTableWorkflowId('ledger', worker.options.workflowIdPrefix),
      args: [{ spec, nodeRetry: { maximumAttempts: 3, initialIntervalMs: 200 } }],
    });
    const failure = await handle.result().then(
      () => undefined,
      (err: unknown) => err,
    );

    // The whole chain: workflow → TableCreationFailed → NodeFailed → activity → NodeUnavailableError.
    expect(failure).toBeInstanceOf(WorkflowFailedError);
    const top = (failure as WorkflowFailedError).cause;
    expect(top).toBeInstanceOf(ApplicationFailure);
    expect((top as ApplicationFailure).type).toBe('TableCreationFailed');
    expect((top as ApplicationFailure).message).toMatch(/create table ledger failed and was undone: node "node-doomed": cannot connect/);
    const nodeFailed = top!.cause as ApplicationFailure;
    expect(nodeFailed).toBeInstanceOf(ApplicationFailure);
    expect(nodeFailed.type).toBe('NodeFailed');
    expect(nodeFailed.message).toMatch(/^node node-doomed failed for good/);
    const activity = nodeFailed.cause as ActivityFailure;
    expect(activity).toBeInstanceOf(ActivityFailure);
    expect(activity.activityType).toBe('createTableOnNode');
    const root = activity.cause as ApplicationFailure;
    expect(root).toBeInstanceOf(ApplicationFailure);
    expect(root.type).toBe('NodeUnavailableError');
    expect(root.nonRetryable).toBe(false);

    // It retried the configured number of times before giving up.
    const history = await handle.fetchHistory();
    const failedAttempt = history.events!.find(
      (e) => e.activityTaskFailedEventAttributes && JSON.stringify(e).includes('node-doomed'),
    );
    expect(failedAttempt).toBeDefined();
    const started = history.events!.filter((e) => e.activityTaskStartedEventAttributes);
    expect(Math.max(...started.map((e) => Number(e.activityTaskStartedEventAttributes!.attempt)))).toBe(3);

    // Compensation removed what was created on the healthy nodes, and the catalog rows.
    expect(await shardSchemas(catalog.nodeUrl('node-1'))).toEqual([]);
    expect(await shardSchemas(catalog.nodeUrl('node-2'))).toEqual([]);
    const { rows } = await catalog.pool.query(
      `select (select count(*)::int from shardcast.distributed_tables) as t, (select count(*)::int from shardcast.colocation_groups) as g,
              (select count(*)::int from shardcast.shards) as s, (select count(*)::int from shardcast.placements) as p`,
    );
    expect(rows[0]).toEqual({ t: 0, g: 0, s: 0, p: 0 });
    const description = await handle.describe();
    expect(description.typedSearchAttributes.get(SA_PHASE)).toBe('failed');

    // The node comes back with nothing on it either.
    await doomed.start();
    expect(await shardSchemas(doomed.url('shardcast'))).toEqual([]);
  });

  it('the same table can be created once the node is back', async () => {
    const result = await createDistributedTable(worker.options, {
      name: 'ledger',
      columns: 'id bigint primary key, amount numeric',
      shardKey: 'id',
      shardCount: 6,
      nodes: ['node-1', 'node-2', 'node-doomed'],
    });
    expect(result.nodes).toEqual(['node-1', 'node-2', 'node-doomed']);
    expect(await shardSchemas(doomed.url('shardcast'))).toHaveLength(2);
  });
});
