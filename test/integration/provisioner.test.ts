import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import path from 'node:path';
import { WorkflowFailedError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDistributedTable, rebalanceWorkflowId } from '../../client/index.js';
import { getNodeByName, listNodes, setNodeCapacity, setNodeState } from '../../src/catalog/nodes.js';
import { storedPlans } from '../../src/planning/store.js';
import { freePort } from '../../src/fleet/postgres-server.js';
import { quoteIdent } from '../../src/sql/ident.js';
import type { RebalanceInput, RebalanceResult, ScaleOutInput, ScaleOutResult } from '../../workflows/messages.js';
import { writeShardForecasts } from '../helpers/forecasts.js';
import { adminQuery, createTestCatalog, fleet, recordHistory, startTestWorker, uniqueName, withDatabase, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

/**
 * Scale-out through a provisioner (planning.provisioner): a real command (a node script) and a real
 * webhook hand over a node — a fresh database on a fleet node, its password named by `passwordenv`,
 * never written — which the scaleOut workflow registers, checks and activates; a failing provisioner
 * and a node that does not answer leave nothing behind but a release.
 */

let catalog: TestCatalog;
let dir: string;
let commandWorker: TestWorker;
let webhookWorker: TestWorker;
let webhook: Server;
/** What the command provisioner does next: the node it hands over, or the error it fails with. */
let mode: { name?: string; dsn?: string; fail?: string; sleepMs?: number } = {};
const calls: Array<{ via: 'command' | 'webhook'; action: string; requestId: string; name?: string }> = [];
const PASSWORD_VAR = 'SHARDCAST_TEST_PROVISIONED_PASSWORD';

const SCRIPT = `
import { appendFileSync, readFileSync } from 'node:fs';
const [modeFile, logFile] = process.argv.slice(2);
const request = JSON.parse(readFileSync(0, 'utf8'));
appendFileSync(logFile, JSON.stringify({ via: 'command', action: process.env.SHARDCAST_PROVISION_ACTION, requestId: request.requestId, name: request.name }) + '\\n');
if (request.action === 'release') process.exit(0);
const mode = JSON.parse(readFileSync(modeFile, 'utf8'));
if (mode.sleepMs) await new Promise((r) => setTimeout(r, mode.sleepMs));
if (mode.fail) { console.error('creating the machine'); console.error(mode.fail); process.exit(3); }
console.log('creating the machine');
console.log(JSON.stringify({ name: mode.name, dsn: mode.dsn, region: 'eu' }));
`;

/** A database of its own on node-2, reached without a password in its DSN (passwordenv). */
async function freshNodeDsn(): Promise<string> {
  const node = fleet().nodes[1]!;
  const database = uniqueName('prov');
  await adminQuery(node.adminUrl, `create database ${quoteIdent(database)}`);
  const url = new URL(withDatabase(node.adminUrl, database));
  url.password = '';
  url.searchParams.set('passwordenv', PASSWORD_VAR);
  return url.toString();
}

function commandCalls(): typeof calls {
  const log = path.join(dir, 'calls.log');
  return existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as (typeof calls)[number]) : [];
}

beforeAll(async () => {
  process.env[PASSWORD_VAR] = fleet().password;
  dir = mkdtempSync(path.join(fleet().baseDir, 'provisioner-'));
  catalog = await createTestCatalog('prov');
  writeFileSync(path.join(dir, 'provision.mjs'), SCRIPT);
  writeFileSync(path.join(dir, 'mode.json'), '{}');
  const command = `${JSON.stringify(process.execPath)} ${path.join(dir, 'provision.mjs')} ${path.join(dir, 'mode.json')} ${path.join(dir, 'calls.log')}`;
  const webhookPort = await freePort();
  webhook = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      const r = JSON.parse(body) as { action: string; requestId: string; name?: string };
      calls.push({ via: 'webhook', action: r.action, requestId: r.requestId, ...(r.name ? { name: r.name } : {}) });
      if (r.action === 'release') return res.writeHead(204).end();
      if (mode.fail) return res.writeHead(503).end(`${mode.fail}\n`);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ name: mode.name, dsn: mode.dsn }));
    });
  });
  await new Promise<void>((resolve) => webhook.listen(webhookPort, '127.0.0.1', () => resolve()));
  [commandWorker, webhookWorker] = await Promise.all([
    startTestWorker(catalog.catalogUrl, undefined, undefined, undefined, { command, timeoutSeconds: 5 }),
    startTestWorker(catalog.catalogUrl, undefined, undefined, undefined, { webhook: `http://127.0.0.1:${webhookPort}/provision`, timeoutSeconds: 5 }),
  ]);
});

afterAll(async () => {
  await Promise.all([commandWorker?.close(), webhookWorker?.close()]);
  await new Promise((resolve) => webhook?.close(resolve));
  await catalog?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function setMode(m: typeof mode): void {
  mode = m;
  writeFileSync(path.join(dir, 'mode.json'), JSON.stringify(m));
}

async function scaleOut(w: TestWorker, requestId: string, activationAttempts = 5): Promise<{ workflowId: string; result: Promise<ScaleOutResult> }> {
  const workflowId = `${w.taskQueue}-scale-out-${requestId}`;
  const input: ScaleOutInput = { request: { requestId, reason: 'test: fleet predicted over target', region: 'eu' }, provisionTimeoutSeconds: 5, activationAttempts };
  const handle = await w.client.workflow.start('scaleOut', { taskQueue: w.taskQueue, workflowId, args: [input] });
  return { workflowId, result: handle.result() as Promise<ScaleOutResult> };
}

/** The failure's message at the end of the chain (WorkflowFailedError → ApplicationFailure). */
async function failure(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(WorkflowFailedError);
  return (err as WorkflowFailedError).cause?.message ?? '';
}

describe('scale-out through a provisioner', () => {
  it('a command provisioner: its node is registered (no password in the catalog or the history), checked and activated', async () => {
    const name = uniqueName('cmd').replace(/_/g, '-');
    const dsn = await freshNodeDsn();
    setMode({ name, dsn });
    const { workflowId, result } = await scaleOut(commandWorker, 'r-cmd-ok');
    expect(await result).toEqual({ node: name, outcome: `${name} provisioned and active` });
    const node = await getNodeByName(catalog.pool, name);
    expect(node).toMatchObject({ state: 'active', region: 'eu', dsn });
    expect(node.dsn).not.toContain(fleet().password);
    expect(commandCalls().filter((c) => c.requestId === 'r-cmd-ok').map((c) => c.action)).toEqual(['provision']);
    await recordHistory(commandWorker.client, workflowId, 'scale-out-command'); // checks it holds no credential
  });

  it('a lost reply after the registration: the retry is asked again (same request id), finds its node and goes on', async () => {
    const name = uniqueName('lost').replace(/_/g, '-');
    const dsn = await freshNodeDsn();
    setMode({ name, dsn });
    process.env.SHARDCAST_FAILPOINTS = 'provisionNode.registered=throw*1';
    try {
      const { result } = await scaleOut(commandWorker, 'r-cmd-lost');
      expect((await result).node).toBe(name);
    } finally {
      delete process.env.SHARDCAST_FAILPOINTS;
    }
    expect(await getNodeByName(catalog.pool, name)).toMatchObject({ state: 'active', dsn });
    expect((await listNodes(catalog.pool)).filter((n) => n.dsn === dsn)).toHaveLength(1);
    expect(commandCalls().filter((c) => c.requestId === 'r-cmd-lost').map((c) => c.action)).toEqual(['provision', 'provision']);
  });

  it('a webhook provisioner: the same, through an HTTP POST', async () => {
    const name = uniqueName('hook').replace(/_/g, '-');
    const dsn = await freshNodeDsn();
    setMode({ name, dsn });
    const { workflowId, result } = await scaleOut(webhookWorker, 'r-hook-ok');
    expect((await result).node).toBe(name);
    expect(await getNodeByName(catalog.pool, name)).toMatchObject({ state: 'active', dsn });
    expect(calls.filter((c) => c.requestId === 'r-hook-ok')).toEqual([{ via: 'webhook', action: 'provision', requestId: 'r-hook-ok' }]);
    await recordHistory(webhookWorker.client, workflowId, 'scale-out-webhook'); // checks it holds no credential
  });

  it('a failing provisioner: the scale-out fails with its reason, registers nothing, and asks for a release', async () => {
    const before = (await listNodes(catalog.pool)).map((n) => n.name);
    setMode({ fail: 'quota exceeded in eu-west-1' });
    const message = await failure((await scaleOut(commandWorker, 'r-cmd-fail')).result);
    expect(message).toMatch(/^scale-out failed: provisioner: provision: the command failed \(exit status 3\): quota exceeded in eu-west-1; the provisioner was told to release request r-cmd-fail$/);
    expect((await listNodes(catalog.pool)).map((n) => n.name)).toEqual(before);
    // Three attempts (the activity's retries), then the release.
    expect(commandCalls().filter((c) => c.requestId === 'r-cmd-fail').map((c) => c.action)).toEqual(['provision', 'provision', 'provision', 'release']);

    const hookMessage = await failure((await scaleOut(webhookWorker, 'r-hook-fail')).result);
    expect(hookMessage).toContain('provisioner: webhook http://127.0.0.1');
    expect(hookMessage).toContain('HTTP 503: quota exceeded in eu-west-1');
    expect((await listNodes(catalog.pool)).map((n) => n.name)).toEqual(before);
  });

  it('a provisioner that does not answer in time: timed out, nothing registered, released', async () => {
    setMode({ sleepMs: 20_000, name: 'never', dsn: 'postgres://x@127.0.0.1:1/x' });
    const message = await failure((await scaleOut(commandWorker, 'r-cmd-slow')).result);
    expect(message).toContain('provisioner: provision: the command did not finish within 5 s');
    await expect(getNodeByName(catalog.pool, 'never')).rejects.toThrow('node "never" does not exist');
    expect(commandCalls().filter((c) => c.requestId === 'r-cmd-slow').at(-1)?.action).toBe('release');
  }, 120_000);

  it('a node that does not answer: registered, not activated, then removed and released — nothing half active', async () => {
    const name = uniqueName('dead').replace(/_/g, '-');
    const port = await freePort(); // nothing listens there
    setMode({ name, dsn: `postgres://postgres@127.0.0.1:${port}/nothing?passwordenv=${PASSWORD_VAR}` });
    const { result } = await scaleOut(commandWorker, 'r-cmd-dead', 3);
    const message = await failure(result);
    expect(message).toContain(`node "${name}": cannot connect`);
    expect(message).toContain(`${name} removed from the catalog; the provisioner was told to release request r-cmd-dead`);
    await expect(getNodeByName(catalog.pool, name)).rejects.toThrow(`node "${name}" does not exist`);
    expect(commandCalls().filter((c) => c.requestId === 'r-cmd-dead')).toEqual([
      { via: 'command', action: 'provision', requestId: 'r-cmd-dead' },
      { via: 'command', action: 'release', requestId: 'r-cmd-dead', name },
    ]);
  });
});

describe('the rebalancer scales out through the provisioner', () => {
  it('no room and no standby node: the plan activates the node the provisioner would make; it is made, activated, and a shard moves onto it', { timeout: 240_000 }, async () => {
    const fleetCatalog = await createTestCatalog('provreb');
    const name = uniqueName('made').replace(/_/g, '-');
    setMode({ name, dsn: await freshNodeDsn() });
    const command = `${JSON.stringify(process.execPath)} ${path.join(dir, 'provision.mjs')} ${path.join(dir, 'mode.json')} ${path.join(dir, 'calls.log')}`;
    const w = await startTestWorker(fleetCatalog.catalogUrl, undefined, undefined, undefined, { command, timeoutSeconds: 5 });
    try {
      // node-1 alone is active (the others retired, no standby), capacity 1000; its shards rise to 955 at the 95% bound.
      await setNodeCapacity(fleetCatalog.pool, 'node-1', 1000);
      for (const n of fleetCatalog.nodes.filter((x) => x.name !== 'node-1')) await setNodeState(fleetCatalog.pool, n.id, 'retired', ['active']);
      await createDistributedTable(w.options, { name: 'hot', columns: 'id bigint primary key, v text', shardKey: 'id', shardCount: 4, nodes: ['node-1'] });
      const { rows: shards } = await fleetCatalog.pool.query<{ id: number }>('select id::int as id from shardcast.shards order by id');
      await writeShardForecasts(fleetCatalog.pool, shards.map((x) => x.id), (k, i) => (k === 3 ? 10 : 150 + (150 * i) / 11));
      const input: RebalanceInput = { dryRun: false, trigger: 'operator', movement: { graceSeconds: 0, pollSeconds: 0.3, maxMovesPerNode: 4 }, workflowIdPrefix: `${w.taskQueue}-`, settings: { activationSeconds: 0 } };
      const result = (await w.client.workflow.execute('rebalance', { taskQueue: w.taskQueue, workflowId: rebalanceWorkflowId(`${w.taskQueue}-`), args: [input] })) as RebalanceResult;
      const [stored] = await storedPlans(fleetCatalog.pool);
      const activation = stored!.plan.actions.find((a) => a.kind === 'activate');
      expect(activation?.reason, JSON.stringify(stored!.plan.notes)).toMatch(/activating \+new-node/);
      const outcomes = new Map(result.actions.map((a) => [a.id, a]));
      expect(outcomes.get(activation!.id)).toMatchObject({ state: 'done', outcome: `${name} provisioned and active` });
      expect(await getNodeByName(fleetCatalog.pool, name)).toMatchObject({ state: 'active', region: 'eu' });
      const moves = stored!.plan.actions.filter((a) => a.kind === 'move');
      expect(moves.length).toBeGreaterThan(0);
      for (const m of moves) expect(outcomes.get(m.id)?.state, outcomes.get(m.id)?.outcome).toBe('done');
      const { rows: onNew } = await fleetCatalog.pool.query('select 1 from shardcast.placements p join shardcast.nodes n on n.id = p.node_id where n.name = $1', [name]);
      expect(onNew.length).toBeGreaterThan(0);
    } finally {
      await w.close();
      await fleetCatalog.close();
    }
  });
});
