import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/catalog/migrate.js';
import { NodePools } from '../../src/catalog/node-pools.js';
import { ensureNodes, getNode } from '../../src/catalog/nodes.js';
import { createTableOnNode } from '../../src/catalog/shard-ddl.js';
import { activateTable, registerTable } from '../../src/catalog/tables.js';
import { freePort, PostgresServer } from '../../src/fleet/postgres-server.js';
import { createRouter, MapTooStaleError, type Router } from '../../src/router/router.js';
import { quoteIdent } from '../../src/sql/ident.js';
import { adminQuery, fleet, uniqueName, withDatabase } from '../helpers/fleet.js';

/**
 * The catalog goes away under router traffic. This file's catalog is a PostgreSQL server of its own,
 * so stopping it disturbs no other test; the nodes are the shared fleet's, in a database of its own.
 */
const MAX_STALENESS_MS = 3000;
const KEYS = 200;

let catalogServer: PostgresServer;
let catalog: pg.Pool;
let router: Router | undefined;
const nodePools = new NodePools();

beforeAll(async () => {
  const database = uniqueName('outage');
  catalogServer = new PostgresServer({
    name: 'catalog-outage',
    dataDir: path.join(fleet().baseDir, uniqueName('catalog_outage')),
    port: await freePort(),
    user: 'postgres',
    password: fleet().password,
  });
  await catalogServer.start();
  await catalogServer.ensureDatabase(database);
  catalog = new pg.Pool({ connectionString: catalogServer.url(database), max: 2 });
  catalog.on('error', () => undefined);
  const client = await catalog.connect();
  try {
    await migrate(client);
  } finally {
    client.release();
  }
  await Promise.all(fleet().nodes.map((n) => adminQuery(n.adminUrl, `create database ${quoteIdent(database)}`)));
  await ensureNodes(catalog, fleet().nodes.map((n, i) => ({ name: n.name, dsn: withDatabase(n.adminUrl, database), region: 'test', zone: `z${i + 1}` })));
  // The table is created as the workflow's activities would, without Temporal.
  const columns = 'id bigint primary key, balance bigint not null default 0';
  const table = await registerTable(catalog, { name: 'wallets', columns, shardKey: 'id', shardCount: 4 }, 'outage-test');
  for (const nodeId of table.nodeIds) {
    const schemas = table.shards.filter((s) => s.nodeId === nodeId).map((s) => s.schema);
    await createTableOnNode(nodePools, await getNode(catalog, nodeId), { name: 'wallets', columns }, schemas);
  }
  await activateTable(catalog, table.tableId);
});

afterAll(async () => {
  await router?.close();
  await nodePools.end();
  await catalog?.end();
  await catalogServer?.stop();
});

interface Outcome {
  at: number;
  kind: 'read' | 'write';
  error?: unknown;
}

describe('router with the catalog down', () => {
  it('serves from its map, refuses writes past the maximum staleness with a clear error, never crashes, and catches up when the catalog is back', { timeout: 120_000 }, async () => {
    let uncaught = 0;
    let unhandled = 0;
    const onUncaught = (): void => void uncaught++;
    const onUnhandled = (): void => void unhandled++;
    process.on('uncaughtException', onUncaught);
    process.on('unhandledRejection', onUnhandled);
    try {
      router = await createRouter({
        catalogUrl: catalogServer.url(new URL(catalog.options.connectionString!).pathname.slice(1)),
        versionCheckIntervalMs: 200,
        maxStalenessMs: MAX_STALENESS_MS,
        connectTimeoutMs: 1000,
        catalogTimeoutMs: 1000,
        statementTimeoutMs: 5000,
      });
      const r = router;
      const catalogErrors: unknown[] = [];
      r.on('catalogError', (err) => catalogErrors.push(err));
      for (let id = 1; id <= KEYS; id++) await r.forKey('wallets', id).query('insert into wallets (id) values ($1)', [id]);

      const outcomes: Outcome[] = [];
      let stop = false;
      const traffic = Array.from({ length: 4 }, async (_, w) => {
        for (let i = w; !stop; i += 4) {
          const id = 1 + (i % KEYS);
          const kind = i % 2 === 0 ? 'write' : 'read';
          const at = Date.now();
          try {
            if (kind === 'write') await r.forKey('wallets', id).query('update wallets set balance = balance + 1 where id = $1', [id]);
            else await r.forKey('wallets', id).query('select balance from wallets where id = $1', [id]);
            outcomes.push({ at, kind });
          } catch (error) {
            outcomes.push({ at, kind, error });
          }
          await sleep(5);
        }
      });
      const between = (from: number, to: number, kind?: Outcome['kind']): Outcome[] =>
        outcomes.filter((o) => o.at >= from && o.at < to && (kind === undefined || o.kind === kind));

      await sleep(500);
      const stoppedAt = Date.now();
      await catalogServer.stop();
      // Within the maximum staleness: reads and writes go on from the map.
      await sleep(MAX_STALENESS_MS - 1200);
      const early = between(stoppedAt, Date.now());
      expect(early.length).toBeGreaterThan(20);
      expect(early.filter((o) => o.error)).toEqual([]);

      // Past it: writes are refused, naming the staleness; reads still served.
      await sleep(2500);
      const lateFrom = stoppedAt + MAX_STALENESS_MS + 500;
      await sleep(1500);
      const lateWrites = between(lateFrom, Date.now(), 'write');
      const lateReads = between(lateFrom, Date.now(), 'read');
      expect(lateWrites.length).toBeGreaterThan(5);
      for (const o of lateWrites) {
        expect(o.error).toBeInstanceOf(MapTooStaleError);
        expect((o.error as Error).message).toMatch(
          new RegExp(`write refused: the shard map was last confirmed by the catalog \\d+ ms ago, over the maximum staleness of ${MAX_STALENESS_MS} ms, and the catalog cannot be reached`),
        );
      }
      expect(lateReads.length).toBeGreaterThan(5);
      expect(lateReads.filter((o) => o.error)).toEqual([]);
      expect(r.mapStalenessMs).toBeGreaterThan(MAX_STALENESS_MS);
      expect(catalogErrors.length).toBeGreaterThan(0);

      // The catalog back: the map is confirmed again and writes go through.
      await catalogServer.start();
      const backAt = Date.now();
      for (;;) {
        if (r.mapStalenessMs < MAX_STALENESS_MS) break;
        if (Date.now() - backAt > 15_000) throw new Error(`map not confirmed 15 s after the catalog came back (staleness ${r.mapStalenessMs} ms)`);
        await sleep(100);
      }
      await sleep(500);
      const settled = Date.now();
      await sleep(1000);
      expect(between(settled, Date.now()).filter((o) => o.error)).toEqual([]);
      expect(between(settled, Date.now(), 'write').length).toBeGreaterThan(5);

      // And a change of the map made now reaches it (LISTEN again, or the version check).
      const before = r.mapVersion;
      await catalog.query("update shardcast.nodes set capacity = capacity + 1 where name = 'node-1'");
      await r.waitForVersion(before + 1, 10_000);

      stop = true;
      await Promise.all(traffic);
      expect(uncaught).toBe(0);
      expect(unhandled).toBe(0);
    } finally {
      process.off('uncaughtException', onUncaught);
      process.off('unhandledRejection', onUnhandled);
    }
  });
});

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
