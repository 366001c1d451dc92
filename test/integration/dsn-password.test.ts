import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable, moveResult, startMove } from '../../client/index.js';
import { listShards } from '../../src/catalog/tables.js';
import { adminQuery, createTestCatalog, fleet, startTestWorker, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

let catalog: TestCatalog;
let worker: TestWorker;
const dir = mkdtempSync(path.join(tmpdir(), 'shardcast-dsnpw-'));
const VARIABLE = `SHARDCAST_TEST_NODE3_PASSWORD_${process.pid}`;

/** The node's DSN without its password, pointing at a password file (node-2) or an environment variable (node-3). */
function withoutPassword(dsn: string, source: Record<string, string>): string {
  const url = new URL(dsn);
  url.password = '';
  for (const [k, v] of Object.entries(source)) url.searchParams.set(k, v);
  return url.toString();
}

beforeAll(async () => {
  catalog = await createTestCatalog('dsnpw');
  const node2 = new URL(catalog.nodeUrl('node-2'));
  const file = path.join(dir, 'pgpass');
  writeFileSync(file, `${node2.hostname}:${node2.port}:${catalog.database}:${node2.username}:${decodeURIComponent(node2.password)}\n`, { mode: 0o600 });
  process.env[VARIABLE] = fleet().password;
  await catalog.pool.query('update shardcast.nodes set dsn = $1 where name = $2', [withoutPassword(catalog.nodeUrl('node-2'), { passfile: file }), 'node-2']);
  await catalog.pool.query('update shardcast.nodes set dsn = $1 where name = $2', [withoutPassword(catalog.nodeUrl('node-3'), { passwordenv: VARIABLE }), 'node-3']);
  worker = await startTestWorker(catalog.catalogUrl);
});

afterAll(async () => {
  await worker?.close();
  await catalog?.close();
  delete process.env[VARIABLE];
  rmSync(dir, { recursive: true, force: true });
});

describe('node DSNs that name their password file or variable', () => {
  it('keep the password out of the catalog, and tables are created and shards moved through them', async () => {
    const { rows } = await catalog.pool.query<{ name: string; dsn: string }>("select name, dsn from shardcast.nodes where name in ('node-2', 'node-3') order by name");
    for (const r of rows) expect(r.dsn, r.name).not.toContain(fleet().password);

    await createDistributedTable(worker.options, { name: 'items', columns: 'id bigint primary key, n int not null default 0', shardKey: 'id', shardCount: 3, nodes: ['node-2', 'node-3'] });
    const shards = await listShards(catalog.pool, { table: 'items' });
    const onNode2 = shards.find((s) => s.node === 'node-2')!;
    await adminQuery(catalog.nodeUrl('node-2'), `insert into ${onNode2.schema}.items (id) select g from generate_series(1, 500) g`);

    // node-2 (password file) is the source: node-3's subscription connects with the resolved DSN; node-3 (variable) is the target.
    const result = await moveResult(await startMove(worker.options, { shardId: onNode2.shardId, targetNode: 'node-3', graceSeconds: 0, pollSeconds: 0.2 }));
    expect(result).toMatchObject({ shardId: onNode2.shardId, source: 'node-2', target: 'node-3' });
    const moved = await adminQuery(catalog.nodeUrl('node-3'), `select count(*)::int as n from ${onNode2.schema}.items`);
    expect(moved.rows[0].n).toBe(500);
  });
});
