import path from 'node:path';
import { WorkflowFailedError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable, moveResult, startMove } from '../../client/index.js';
import { NodePools } from '../../src/catalog/node-pools.js';
import { addNode, type NodeRecord } from '../../src/catalog/nodes.js';
import { freePort, PostgresServer } from '../../src/fleet/postgres-server.js';
import { movementLeftovers } from '../../src/movement/replication.js';
import { SA_PHASE } from '../../src/search-attributes.js';
import { movementProgressQuery } from '../../workflows/messages.js';
import { adminQuery, createTestCatalog, expectNoMovementLeftovers, fleet, startTestWorker, type TestCatalog, type TestWorker, uniqueName, until } from '../helpers/fleet.js';

let catalog: TestCatalog;
let worker: TestWorker;
/** The target: a node of this test's own, so stopping it disturbs no other test. */
let fragile: PostgresServer;
let fragileNode: NodeRecord;
const pools = new NodePools();

beforeAll(async () => {
  catalog = await createTestCatalog('down');
  worker = await startTestWorker(catalog.catalogUrl);
  fragile = new PostgresServer({ name: 'fragile', dataDir: path.join(fleet().baseDir, uniqueName('fragile')), port: await freePort(), user: 'postgres', password: fleet().password });
  await fragile.start();
  await fragile.ensureDatabase('shardcast');
  fragileNode = await addNode(catalog.pool, { name: 'node-fragile', dsn: fragile.url('shardcast') });
  await createDistributedTable(worker.options, { name: 'events', columns: 'id bigint primary key, body text', shardKey: 'id', shardCount: 1, nodes: ['node-1'] });
});

afterAll(async () => {
  await pools.end();
  await fragile?.stop();
  await worker?.close();
  await catalog?.close();
});

const digest = `select count(*)::int as n, md5(string_agg(md5(t::text), '' order by md5(t::text))) as d from events t`;

async function phaseOf(handle: Awaited<ReturnType<typeof startMove>>): Promise<string> {
  return (await handle.query(movementProgressQuery)).phase;
}


describe('a movement whose target goes down during the copy', () => {
  it('retries, then compensates: the source intact and clean at once, the target clean once it is back', async () => {
    const { rows: shards } = await catalog.pool.query<{ id: number; schema: string }>('select id::int as id, schema_name as schema from shardcast.shards');
    const shard = shards[0]!;
    const sourceUrl = catalog.nodeUrl('node-1');
    // Large enough that the copy is still running when the target stops.
    await adminQuery(sourceUrl, `insert into ${shard.schema}.events select g, repeat(md5(g::text), 8) from generate_series(1, 600000) g`);
    const before = (await adminQuery(sourceUrl, digest.replace('from events', `from ${shard.schema}.events`))).rows[0];

    const handle = await startMove(worker.options, {
      shardId: shard.id,
      targetNode: 'node-fragile',
      pollSeconds: 0.2,
      retry: { maximumAttempts: 3, initialIntervalMs: 200, maximumIntervalMs: 1000 },
    });
    await until('the copy', async () => (await phaseOf(handle)) === 'copy' && (await handle.query(movementProgressQuery)).tables > 0);
    await fragile.stop(); // for real: the target's postmaster shuts down mid-copy

    // The steps fail for good; compensation cleans the source at once, while the target stays down.
    await until('compensation', async () => (await phaseOf(handle)) === 'compensate');
    const node1 = catalog.nodes.find((n) => n.name === 'node-1')!;
    await until('a clean source', async () => {
      const left = await movementLeftovers(pools, node1);
      return left.slots.length === 0 && left.publications.length === 0;
    });
    const during = (await adminQuery(sourceUrl, digest.replace('from events', `from ${shard.schema}.events`))).rows[0];
    expect(during).toEqual(before);

    await fragile.start();
    await expect(handle.result()).rejects.toBeInstanceOf(WorkflowFailedError);
    expect((await handle.describe()).typedSearchAttributes.get(SA_PHASE)).toBe('failed');
    // One line, in the workflow's failure (the Temporal UI) and in what the CLI prints: what, where, why, undone.
    const line = new RegExp(`^move shard ${shard.id} of events: node-1 → node-fragile failed in copy: node "node-fragile": unreachable \\((connection refused|server shut down)\\); undone$`);
    const failure = await handle.result().catch((err: WorkflowFailedError) => err.cause);
    expect(failure?.message).toMatch(line);
    await expect(moveResult(handle)).rejects.toThrow(line);

    // Source exactly as it was, still placed there and writable; nothing on the target; nothing leaked anywhere.
    const { rows: placed } = await catalog.pool.query<{ node: string }>(
      'select n.name as node from shardcast.placements p join shardcast.nodes n on n.id = p.node_id where p.shard_id = $1',
      [shard.id],
    );
    expect(placed).toEqual([{ node: 'node-1' }]);
    expect((await adminQuery(sourceUrl, digest.replace('from events', `from ${shard.schema}.events`))).rows[0]).toEqual(before);
    await adminQuery(sourceUrl, `insert into ${shard.schema}.events values (0, 'still writable')`);
    const onTarget = await adminQuery(fragile.url('shardcast'), "select nspname::text as s from pg_namespace where nspname like 'sc\\_s%'");
    expect(onTarget.rows).toEqual([]);
    await expectNoMovementLeftovers(pools, [...catalog.nodes, fragileNode]);
  });
});
