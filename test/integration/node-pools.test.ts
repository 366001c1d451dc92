import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NodePools } from '../../src/catalog/node-pools.js';
import { adminQuery, createTestCatalog, until, type TestCatalog } from '../helpers/fleet.js';

/**
 * A connection held between statements (a cutover's, a reverse applier's reading a slot that
 * `stopReverseCapture` ends with pg_terminate_backend) loses its server. Without a listener on the
 * checked-out client, pg raises the loss as an uncaught exception and the worker process dies.
 */

let catalog: TestCatalog;
const pools = new NodePools();

beforeAll(async () => {
  catalog = await createTestCatalog('pools');
});

afterAll(async () => {
  await pools.end();
  await catalog?.close();
});

describe('node pools', () => {
  it('a checked-out connection whose backend is terminated fails its next statement and does not crash the process', async () => {
    const uncaught: unknown[] = [];
    const onUncaught = (err: unknown) => uncaught.push(err);
    process.prependListener('uncaughtException', onUncaught);
    try {
      const url = catalog.nodeUrl('node-1');
      const client = await pools.get(url).connect();
      const { rows } = await client.query<{ pid: number }>('select pg_backend_pid() as pid');
      await adminQuery(url, 'select pg_terminate_backend($1)', [rows[0]!.pid]);
      // The client learns of it from its socket, between statements.
      await until('the client to see its connection end', async () => (client as unknown as { _ending?: boolean; _queryable?: boolean })._queryable === false, 10_000, 20);
      await expect(client.query('select 1')).rejects.toThrow();
      client.release(true);
      expect(uncaught).toEqual([]);
      // The pool serves a fresh connection afterwards.
      expect((await pools.get(url).query<{ one: number }>('select 1 as one')).rows[0]!.one).toBe(1);
    } finally {
      process.removeListener('uncaughtException', onUncaught);
    }
  });
});
