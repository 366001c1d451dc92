import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { Client, Connection } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable, moveResult, startMove, startSplit, type ShardcastClientOptions } from '../../client/index.js';
import { NodePools } from '../../src/catalog/node-pools.js';
import { createRouter, type Router } from '../../src/router/router.js';
import { movementProgressQuery } from '../../workflows/messages.js';
import { adminQuery, createTestCatalog, expectNoMovementLeftovers, fleet, startTestWorker, startWorkerProcess, type TestCatalog, type TestWorker, uniqueName, until } from '../helpers/fleet.js';

let catalog: TestCatalog;
let setupWorker: TestWorker;
let router: Router;
let client: Client;
let connection: Connection;
const pools = new NodePools();
const workers: ChildProcessWithoutNullStreams[] = [];
const taskQueue = uniqueName('kill');

beforeAll(async () => {
  catalog = await createTestCatalog('kill');
  setupWorker = await startTestWorker(catalog.catalogUrl);
  await createDistributedTable(setupWorker.options, { name: 'counters', columns: 'id bigint primary key, n bigint not null default 0', shardKey: 'id', shardCount: 3 });
  await setupWorker.close();
  router = await createRouter({ catalogUrl: catalog.catalogUrl });
  for (let id = 1; id <= 300; id++) await router.forKey('counters', id).query('insert into counters values ($1, 0)', [id]);
  connection = await Connection.connect({ address: fleet().temporalAddress });
  client = new Client({ connection });
});

afterAll(async () => {
  for (const w of workers) if (w.exitCode === null) w.kill('SIGKILL');
  await router?.close();
  await pools.end();
  await connection?.close();
  await catalog?.close();
});

/** `shardcast worker` in its own process, on this test's task queue, with the failpoints given. */
async function startWorker(failpoints = ''): Promise<ChildProcessWithoutNullStreams> {
  const { child } = await startWorkerProcess(catalog.catalogUrl, taskQueue, { SHARDCAST_FAILPOINTS: failpoints });
  workers.push(child);
  return child;
}

function kill(child: ChildProcessWithoutNullStreams): Promise<void> {
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

/** Three writers incrementing the keys' counters through the router until stopped; they count what was acknowledged. */
function startWriters(keys: number[]): { stop(): Promise<{ acknowledged: number; errors: unknown[] }> } {
  let acknowledged = 0;
  let stop = false;
  const errors: unknown[] = [];
  const writers = Array.from({ length: 3 }, async (_, w) => {
    for (let i = w; !stop; i += 3) {
      try {
        await router.forKey('counters', keys[i % keys.length]!).query('update counters set n = n + 1 where id = $1', [keys[i % keys.length]!]);
        acknowledged++;
      } catch (err) {
        errors.push(err);
      }
    }
  });
  return {
    async stop() {
      stop = true;
      await Promise.all(writers);
      return { acknowledged, errors };
    },
  };
}

describe('a movement survives its worker being killed', () => {
  it('SIGKILL during copy and again in the middle of the cutover: a new worker finishes, no write lost or doubled', async () => {
    const { rows } = await catalog.pool.query<{ id: number; node: string }>(
      `select s.id::int as id, n.name as node from shardcast.shards s join shardcast.placements p on p.shard_id = s.id
         join shardcast.nodes n on n.id = p.node_id order by s.id limit 1`,
    );
    const shard = rows[0]!;
    const target = ['node-1', 'node-2', 'node-3'].find((n) => n !== shard.node)!;
    const keys = [...Array(300).keys()].map((i) => i + 1).filter((k) => router.forKey('counters', k).route().shardId === shard.id);

    const writers = startWriters(keys);

    let worker = await startWorker('cutover.after-prepare=sleep:60000');
    const options: ShardcastClientOptions = { client, taskQueue, workflowIdPrefix: `${taskQueue}-` };
    const handle = await startMove(options, { shardId: shard.id, targetNode: target, graceSeconds: 0, pollSeconds: 0.5 });
    await until('copy', async () => ['copy', 'catch-up'].includes((await handle.query(movementProgressQuery)).phase));
    await kill(worker); // during copy
    worker = await startWorker('cutover.after-prepare=sleep:60000');
    // The cutover prepares both sides, then the failpoint holds it there: kill it in the middle.
    await until('both sides prepared', async () => {
      const prepared = await catalog.pool.query("select 1 from pg_prepared_xacts where gid like 'sc\\_mv\\_%' and database = current_database()");
      return prepared.rowCount === 1;
    });
    await kill(worker);
    // Writers are blocked by the prepared source transaction's lock meanwhile; a new worker retries the
    // cutover once the dead attempt's heartbeat times out, finds both sides prepared and commits them.
    worker = await startWorker();
    const result = await moveResult(handle);
    const { acknowledged, errors } = await writers.stop();
    await kill(worker);

    expect(errors).toEqual([]);
    expect(result.target).toBe(target);
    const schema = (await catalog.pool.query<{ s: string }>('select schema_name as s from shardcast.shards where id = $1', [shard.id])).rows[0]!.s;
    const total = await adminQuery(catalog.nodeUrl(target), `select sum(n)::int as total from ${schema}.counters`);
    expect(total.rows[0].total).toBe(acknowledged);
    await expectNoMovementLeftovers(pools, catalog.nodes);
    const prepared = await catalog.pool.query("select gid from pg_prepared_xacts where gid like 'sc\\_mv\\_%' and database = current_database()");
    expect(prepared.rows).toEqual([]);
  }, 180_000);

  it('a split survives SIGKILL while applying changes and in the middle of its cutover', async () => {
    const { rows } = await catalog.pool.query<{ id: number; node: string }>(
      `select s.id::int as id, n.name as node from shardcast.shards s join shardcast.placements p on p.shard_id = s.id
         join shardcast.nodes n on n.id = p.node_id order by s.id offset 1 limit 1`,
    );
    const shard = rows[0]!;
    const others = ['node-1', 'node-2', 'node-3'].filter((n) => n !== shard.node);
    const keys = [...Array(300).keys()].map((i) => i + 1).filter((k) => router.forKey('counters', k).route().shardId === shard.id);
    const before = await router.all<{ total: number }>('select coalesce(sum(n), 0)::int as total from counters where id = any($1::bigint[])', [keys]);
    const base = before.rows.reduce((a, r) => a + r.total, 0);

    const writers = startWriters(keys);

    let worker = await startWorker('cutover.after-prepare=sleep:60000');
    const options: ShardcastClientOptions = { client, taskQueue, workflowIdPrefix: `${taskQueue}-` };
    const handle = await startSplit(options, { shardId: shard.id, targetNodes: [others[0]!, others[1]!], graceSeconds: 0, pollSeconds: 0.5 });
    await until('copy and apply', async () => ['copy', 'catch-up'].includes((await handle.query(movementProgressQuery)).phase));
    await kill(worker); // while it copies or applies the writers' changes
    worker = await startWorker('cutover.after-prepare=sleep:60000');
    await until('sources and catalog prepared', async () => {
      const prepared = await catalog.pool.query("select 1 from pg_prepared_xacts where gid like 'sc\\_mv\\_%' and database = current_database()");
      return prepared.rowCount === 1;
    });
    await kill(worker);
    worker = await startWorker();
    const result = await moveResult(handle);
    const { acknowledged, errors } = await writers.stop();
    await kill(worker);

    expect(errors).toEqual([]);
    expect(result.shards).toHaveLength(2);
    const after = await router.all<{ total: number; rows: number }>('select coalesce(sum(n), 0)::int as total, count(*)::int as rows from counters where id = any($1::bigint[])', [keys]);
    expect(after.rows.reduce((a, r) => a + r.total, 0)).toBe(base + acknowledged);
    expect(after.rows.reduce((a, r) => a + r.rows, 0)).toBe(keys.length);
    await expectNoMovementLeftovers(pools, catalog.nodes);
    const prepared = await catalog.pool.query("select gid from pg_prepared_xacts where gid like 'sc\\_mv\\_%' and database = current_database()");
    expect(prepared.rows).toEqual([]);
  }, 180_000);
});
