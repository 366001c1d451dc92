import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable, moveResult, startMove, startSplit } from '../../client/index.js';
import { migrate } from '../../src/catalog/migrate.js';
import { NodePools } from '../../src/catalog/node-pools.js';
import { ensureNodes, type NodeRecord } from '../../src/catalog/nodes.js';
import { newPgClient, newPgPool, PgTlsError, setPgTlsDefaults, type PgTlsSettings } from '../../src/catalog/pg-tls.js';
import { freePort, PostgresServer } from '../../src/fleet/postgres-server.js';
import { movementNames, shardTables, startStreaming } from '../../src/movement/replication.js';
import { createRouter, type Router } from '../../src/router/router.js';
import { startTestWorker, waitForIdleTaskQueue, type TestWorker } from '../helpers/fleet.js';

/**
 * PostgreSQL TLS with verify-full: a catalog and two nodes of the test's own, which accept TLS
 * connections only (hostssl), with a server certificate for `localhost` signed by a CA the test
 * makes with openssl. Every connection — worker, router, DDL, the subscription of a move — must use
 * TLS and check the certificate and the host name; a wrong CA fails with a clear error.
 */

const run = promisify(execFile);
let dir: string;
let ca: string;
let wrongCa: string;
const servers: PostgresServer[] = [];
let catalogUrl: string;
let catalog: pg.Pool;
let nodes: NodeRecord[];
let worker: TestWorker;
let router: Router;
const pools = new NodePools({ max: 2 });
const password = randomBytes(12).toString('base64url');

async function openssl(...args: string[]): Promise<void> {
  await run('openssl', args, { cwd: dir });
}

/** A CA (self-signed) and, with `server`, a certificate for localhost that it signs. */
async function makeCa(name: string): Promise<string> {
  await openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', `/CN=${name}`, '-keyout', `${name}.key`, '-out', `${name}.crt`);
  return path.join(dir, `${name}.crt`);
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'shardcast-tls-'));
  chmodSync(dir, 0o755); // the postgres OS user reads the CA file (subscriptions) and its data directories
  ca = await makeCa('test-ca');
  wrongCa = await makeCa('wrong-ca');
  await openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=localhost', '-keyout', 'server.key', '-out', 'server.csr');
  writeFileSync(path.join(dir, 'san.ext'), 'subjectAltName=DNS:localhost\n');
  await openssl('x509', '-req', '-in', 'server.csr', '-CA', 'test-ca.crt', '-CAkey', 'test-ca.key', '-CAcreateserial', '-days', '2', '-extfile', 'san.ext', '-out', 'server.crt');
  const tls = { certFile: path.join(dir, 'server.crt'), keyFile: path.join(dir, 'server.key'), only: true };
  for (const name of ['catalog', 'node-a', 'node-b']) {
    servers.push(new PostgresServer({ name, dataDir: path.join(dir, name), port: await freePort(), user: 'postgres', password, tls }));
  }
  await Promise.all(servers.map(async (s) => {
    await s.start();
    await s.ensureDatabase('shardcast');
  }));
  // Configured once: every DSN below names no sslmode.
  setPgTlsDefaults({ sslmode: 'verify-full', sslrootcert: ca });
  const url = (s: PostgresServer) => `postgres://postgres:${password}@localhost:${s.port}/shardcast`;
  catalogUrl = url(servers[0]!);
  catalog = newPgPool(catalogUrl, { max: 4 });
  const client = await catalog.connect();
  try {
    await migrate(client);
  } finally {
    client.release();
  }
  nodes = await ensureNodes(catalog, [
    { name: 'node-a', dsn: url(servers[1]!), region: 'test', zone: 'a' },
    { name: 'node-b', dsn: url(servers[2]!), region: 'test', zone: 'b' },
  ]);
  worker = await startTestWorker(catalogUrl);
  router = await createRouter({ catalogUrl });
}, 180_000);

afterAll(async () => {
  // The moves' fenced-copy drops run on after each move returns: they finish before the servers stop.
  if (worker) await waitForIdleTaskQueue(worker.client, worker.taskQueue).catch(() => undefined);
  await router?.close();
  await worker?.close();
  await pools.end();
  await catalog?.end();
  await Promise.all(servers.map((s) => s.stop()));
  setPgTlsDefaults({});
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function placements(): Promise<Array<{ id: number; node: string }>> {
  const { rows } = await catalog.query<{ id: number; node: string }>(
    'select s.id::int as id, n.name as node from shardcast.shards s join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id order by s.id',
  );
  return rows;
}

async function connectWith(url: string, tls: PgTlsSettings): Promise<unknown> {
  const client = newPgClient(url, { connectionTimeoutMillis: 5000 }, tls);
  client.on('error', () => undefined);
  try {
    await client.connect();
    return undefined;
  } catch (err) {
    return err;
  } finally {
    await client.end().catch(() => undefined);
  }
}

describe('PostgreSQL TLS, verify-full', () => {
  it('creates a table, serves router traffic, moves and splits a shard, all over verified TLS', async () => {
    await createDistributedTable(worker.options, { name: 'items', columns: 'id bigint primary key, v text', shardKey: 'id', shardCount: 2 });
    for (let id = 1; id <= 100; id++) await router.forKey('items', id).query('insert into items values ($1, $2)', [id, `v${id}`]);
    const [first] = await placements();
    const other = first!.node === 'node-a' ? 'node-b' : 'node-a';
    // The move's copy and stream run over a subscription: the target's libpq checks the source's certificate.
    const moved = await moveResult(await startMove(worker.options, { shardId: first!.id, targetNode: other, graceSeconds: 0, pollSeconds: 0.2 }));
    expect(moved.target).toBe(other);
    const split = await moveResult(await startSplit(worker.options, { shardId: first!.id, targetNodes: ['node-a', 'node-b'], graceSeconds: 0, pollSeconds: 0.2 }));
    expect(split.shards).toHaveLength(2);
    for (let id = 1; id <= 100; id += 3) await router.forKey('items', id).query('update items set v = v || $2 where id = $1', [id, '!']);
    const all = await router.all<{ n: string }>('select count(*) as n from items');
    expect(all.rows.reduce((s, r) => s + Number(r.n), 0)).toBe(100);
    expect(all.shards).toBe(3);
    // Every session on the nodes is a TLS one (pg_hba.conf refuses others anyway).
    for (const node of nodes) {
      const { rows } = await pools.get(node.dsn).query<{ ssl: boolean; n: number }>(
        'select s.ssl, count(*)::int as n from pg_stat_ssl s join pg_stat_activity a using (pid) where a.backend_type = $1 group by s.ssl',
        ['client backend'],
      );
      expect(rows).toEqual([{ ssl: true, n: expect.any(Number) }]);
    }
  }, 240_000);

  it('fails with a clear error naming TLS certificate verification and the host: wrong CA, wrong host name, no TLS', async () => {
    const port = servers[1]!.port;
    const wrong = await connectWith(nodes[0]!.dsn, { sslmode: 'verify-full', sslrootcert: wrongCa });
    expect(wrong).toBeInstanceOf(PgTlsError);
    expect((wrong as Error).message).toMatch(new RegExp(`^TLS certificate verification of the PostgreSQL server at localhost:${port} failed \\(sslmode=verify-full, CA file ${wrongCa.replaceAll('.', '\\.')}\\): `));
    // The certificate is for localhost: 127.0.0.1 is not the name it was issued to.
    const byIp = await connectWith(nodes[0]!.dsn.replace('localhost', '127.0.0.1'), { sslmode: 'verify-full', sslrootcert: ca });
    expect((byIp as Error).message).toMatch(new RegExp(`^TLS certificate verification of the PostgreSQL server at 127\\.0\\.0\\.1:${port} failed .*(altnames|does not match)`));
    // verify-ca checks the chain only, so it connects by IP.
    expect(await connectWith(nodes[0]!.dsn.replace('localhost', '127.0.0.1'), { sslmode: 'verify-ca', sslrootcert: ca })).toBeUndefined();
    // A DSN's own sslmode wins over the defaults: disable is refused by this TLS-only server.
    expect(String(await connectWith(`${nodes[0]!.dsn}?sslmode=disable`, { sslmode: 'verify-full', sslrootcert: ca }))).toMatch(/no encryption/);
    // The router: its first map load fails, saying why.
    await expect(createRouter({ catalogUrl, tls: { sslmode: 'verify-full', sslrootcert: wrongCa }, listen: false })).rejects.toThrow(/TLS certificate verification of the PostgreSQL server at localhost:\d+ failed/);
  });

  it("a subscription checks the source's certificate with the CA the nodes are given", async () => {
    const shards = await placements();
    const shard = shards[0]!;
    const source = nodes.find((n) => n.name === shard.node)!;
    const target = nodes.find((n) => n.name !== shard.node)!;
    setPgTlsDefaults({ sslmode: 'verify-full', sslrootcert: ca, nodeSslrootcert: wrongCa });
    try {
      const tables = await shardTables(catalog, shard.id);
      await expect(startStreaming(pools, { source, target }, tables, movementNames('tls_wrong_ca'))).rejects.toThrow(/certificate verify failed/);
    } finally {
      setPgTlsDefaults({ sslmode: 'verify-full', sslrootcert: ca });
    }
  });
});
