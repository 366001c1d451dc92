import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable, moveResult, startMove, startSplit, type ShardcastClientOptions } from '../../client/index.js';
import { NodePools } from '../../src/catalog/node-pools.js';
import { createRouter, type Router } from '../../src/router/router.js';
import { movementProgressQuery, type MoveShardResult } from '../../workflows/messages.js';
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

const HOLD_CUTOVER = 'cutover.after-prepare=sleep:60000';

/**
 * Starts a movement on a worker process and kills that worker (SIGKILL) while the movement copies
 * or applies the writers' changes; kills the next one between the PREPAREs of the cutover, where
 * a failpoint holds it; a third worker finishes it. Then stops the writers.
 */
async function throughTwoKills(
  start: (options: ShardcastClientOptions) => Promise<WorkflowHandle>,
  writers: ReturnType<typeof startWriters>,
): Promise<{ result: MoveShardResult; acknowledged: number; errors: unknown[] }> {
  let worker = await startWorker(HOLD_CUTOVER);
  const handle = await start({ client, taskQueue, workflowIdPrefix: `${taskQueue}-` });
  await until('copy or apply', async () => ['copy', 'catch-up'].includes((await handle.query(movementProgressQuery)).phase));
  await kill(worker);
  worker = await startWorker(HOLD_CUTOVER);
  // The cutover prepares the sources (and the catalog), then the failpoint holds it: kill it in the middle.
  await until('the cutover prepared', async () => {
    const prepared = await catalog.pool.query("select 1 from pg_prepared_xacts where gid like 'sc\\_mv\\_%' and database = current_database()");
    return prepared.rowCount === 1;
  });
  await kill(worker);
  // Writers are blocked by the prepared source transaction's lock meanwhile; a new worker retries the
  // cutover once the dead attempt's heartbeat times out, finds it prepared and commits it.
  worker = await startWorker();
  const result = await moveResult(handle);
  const { acknowledged, errors } = await writers.stop();
  await kill(worker);
  return { result, acknowledged, errors };
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

    const { result, acknowledged, errors } = await throughTwoKills((options) => startMove(options, { shardId: shard.id, targetNode: target, graceSeconds: 0, pollSeconds: 0.5 }), writers);

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

    const { result, acknowledged, errors } = await throughTwoKills(
      (options) => startSplit(options, { shardId: shard.id, targetNodes: [others[0]!, others[1]!], graceSeconds: 0, pollSeconds: 0.5 }),
      writers,
    );

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
