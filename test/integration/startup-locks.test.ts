import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createDistributedTable } from '../../client/index.js';
import { createTestCatalog, startTestWorker, startWorkerProcess, type TestCatalog, uniqueName } from '../helpers/fleet.js';

let catalog: TestCatalog;
let prepared: pg.Client | undefined;

beforeAll(async () => {
  catalog = await createTestCatalog('startup');
  const setup = await startTestWorker(catalog.catalogUrl);
  await createDistributedTable(setup.options, { name: 'items', columns: 'id bigint primary key', shardKey: 'id', shardCount: 2 });
  await setup.close();
});

afterAll(async () => {
  await catalog.pool.query("rollback prepared 'sc_mv_startup_left_behind'").catch(() => undefined);
  await prepared?.end().catch(() => undefined);
  await catalog?.close();
});

it('a prepared catalog transaction left holding placements does not block a worker starting', { timeout: 120_000 }, async () => {
  // What a cutover cut short after the catalog's PREPARE leaves: placements and map_version locked.
  prepared = new pg.Client({ connectionString: catalog.catalogUrl });
  await prepared.connect();
  await prepared.query('begin');
  await prepared.query("set local shardcast.in_2pc = 'on'");
  await prepared.query('update shardcast.placements set placed_at = now()');
  await prepared.query("prepare transaction 'sc_mv_startup_left_behind'");

  // The worker registers its configured nodes at start: one already there, one new.
  const dir = mkdtempSync(path.join(tmpdir(), 'shardcast-startup-'));
  const config = path.join(dir, 'shardcast.config.json');
  const node1 = catalog.nodes.find((n) => n.name === 'node-1')!;
  writeFileSync(config, JSON.stringify({ nodes: { register: [{ name: 'node-1', dsn: node1.dsn }, { name: 'node-9', dsn: node1.dsn.replace(/\/[^/]*$/, '/other') }] } }));
  const started = Date.now();
  const worker = await startWorkerProcess(catalog.catalogUrl, uniqueName('startup'), { SHARDCAST_CONFIG: config });
  try {
    const ms = Date.now() - started;
    expect(worker.output()).toMatch(/prepared transaction\(s\) sc_mv_startup_left_behind .*shardcast doctor --fix/);
    expect(worker.output()).toMatch(/node-9: not registered now/);
    console.log(`worker ready in ${ms} ms with a prepared catalog transaction holding the map`);
  } finally {
    await worker.stop();
  }
});
