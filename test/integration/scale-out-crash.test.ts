import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getNodeByName, listNodes } from '../../src/catalog/nodes.js';
import { quoteIdent } from '../../src/sql/ident.js';
import type { ScaleOutInput, ScaleOutResult } from '../../workflows/messages.js';
import { adminQuery, createTestCatalog, fleet, startWorkerProcess, uniqueName, until, withDatabase, type TestCatalog } from '../helpers/fleet.js';

/**
 * A scale-out whose worker is killed (SIGKILL, a real `shardcast worker` process) while the
 * provisioner command runs, right after the node was registered, and while the activation runs:
 * a new worker finishes it, the node ends active, exactly one node is made for the request (the
 * provisioner is idempotent by request id), and the dead attempt is retried within the activities'
 * heartbeat timeout, not after their start-to-close timeout.
 */

let catalog: TestCatalog;
let dir: string;
let client: Client;
let connection: Connection;
const workers: ChildProcessWithoutNullStreams[] = [];
const taskQueue = uniqueName('sokill');
const PASSWORD_VAR = 'SHARDCAST_TEST_SCALE_OUT_PASSWORD';
/** The provisioner's time limit: the scale-out's provisionNode may run 60 s longer before Temporal gives up on an attempt. */
const PROVISION_TIMEOUT_SECONDS = 10;
/**
 * From the kill to the scale-out's end: the heartbeat timeout of the scale-out's activities (10 s),
 * the retry's 2 s back-off, and room for a loaded 2-core machine. Without a heartbeat a killed
 * attempt is retried only after its start-to-close timeout: 70 s for provisionNode, 60 s for the activation.
 */
const AFTER_KILL_MS = 40_000;

/**
 * A provisioner idempotent by request id, as src/planning/provisioner.ts asks: the first call of a
 * request makes its node (sleeps, then hands over the database the test prepared in want-ID.json,
 * logging it to made.log); a call that finds the request made or being made hands over the same node,
 * waiting for it if need be. Every call is logged to calls.log.
 */
const SCRIPT = `
import { appendFileSync, closeSync, existsSync, openSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
const [dir] = process.argv.slice(2);
const request = JSON.parse(readFileSync(0, 'utf8'));
const action = process.env.SHARDCAST_PROVISION_ACTION;
appendFileSync(dir + '/calls.log', JSON.stringify({ action, requestId: request.requestId, name: request.name }) + '\\n');
if (action === 'release') process.exit(0);
const made = dir + '/made-' + request.requestId + '.json';
let first = false;
try { closeSync(openSync(dir + '/lock-' + request.requestId, 'wx')); first = true; } catch {}
if (first) {
  const want = JSON.parse(readFileSync(dir + '/want-' + request.requestId + '.json', 'utf8'));
  await new Promise((r) => setTimeout(r, want.sleepMs));
  appendFileSync(dir + '/made.log', JSON.stringify({ requestId: request.requestId, name: want.name }) + '\\n');
  writeFileSync(made + '.tmp', JSON.stringify({ name: want.name, dsn: want.dsn, region: 'eu' }));
  renameSync(made + '.tmp', made);
} else {
  while (!existsSync(made)) await new Promise((r) => setTimeout(r, 100));
}
console.log(readFileSync(made, 'utf8'));
`;

beforeAll(async () => {
  process.env[PASSWORD_VAR] = fleet().password; // the worker processes inherit it
  dir = mkdtempSync(path.join(fleet().baseDir, 'scale-out-crash-'));
  catalog = await createTestCatalog('sokill');
  writeFileSync(path.join(dir, 'provision.mjs'), SCRIPT);
  const command = `${JSON.stringify(process.execPath)} ${path.join(dir, 'provision.mjs')} ${dir}`;
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ planning: { provisioner: { command, timeoutSeconds: PROVISION_TIMEOUT_SECONDS } } }));
  connection = await Connection.connect({ address: fleet().temporalAddress });
  client = new Client({ connection });
});

afterAll(async () => {
  for (const w of workers) if (w.exitCode === null && w.signalCode === null) w.kill('SIGKILL');
  await connection?.close();
  await catalog?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** `shardcast worker` in its own process, with the provisioner configured and the failpoints given. */
async function startWorker(failpoints = ''): Promise<ChildProcessWithoutNullStreams> {
  const { child } = await startWorkerProcess(catalog.catalogUrl, taskQueue, { SHARDCAST_CONFIG: path.join(dir, 'config.json'), SHARDCAST_FAILPOINTS: failpoints });
  workers.push(child);
  return child;
}

function kill(child: ChildProcessWithoutNullStreams): Promise<void> {
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

/** A database of its own on node-2 (the node the provisioner makes), reached without a password in its DSN. */
async function prepareNode(requestId: string, sleepMs: number): Promise<{ name: string; dsn: string }> {
  const node = fleet().nodes[1]!;
  const database = uniqueName('made');
  await adminQuery(node.adminUrl, `create database ${quoteIdent(database)}`);
  const url = new URL(withDatabase(node.adminUrl, database));
  url.password = '';
  url.searchParams.set('passwordenv', PASSWORD_VAR);
  const want = { name: database.replace(/_/g, '-'), dsn: url.toString(), sleepMs };
  writeFileSync(path.join(dir, `want-${requestId}.json`), JSON.stringify(want));
  return want;
}

function logged(file: string, requestId: string): Array<{ action?: string; requestId: string; name?: string }> {
  const log = path.join(dir, file);
  if (!existsSync(log)) return [];
  return readFileSync(log, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { requestId: string }).filter((c) => c.requestId === requestId);
}

async function startScaleOut(requestId: string): Promise<WorkflowHandle> {
  const input: ScaleOutInput = { request: { requestId, reason: 'test: a worker killed in the middle', region: 'eu' }, provisionTimeoutSeconds: PROVISION_TIMEOUT_SECONDS };
  return client.workflow.start('scaleOut', { taskQueue, workflowId: `${taskQueue}-scale-out-${requestId}`, args: [input] });
}

/** Kills the worker, starts a new one (no failpoints) and waits for the scale-out's end; the time from the kill to its end. */
async function killAndFinish(worker: ChildProcessWithoutNullStreams, handle: WorkflowHandle): Promise<{ result: ScaleOutResult; afterKillMs: number }> {
  await kill(worker);
  const killed = Date.now();
  const next = await startWorker();
  const result = (await handle.result()) as ScaleOutResult;
  const afterKillMs = Date.now() - killed;
  await kill(next);
  return { result, afterKillMs };
}

/** The node ends active, registered once, made once by the provisioner; nothing was released. */
async function expectActiveOnce(requestId: string, want: { name: string; dsn: string }, result: ScaleOutResult): Promise<void> {
  expect(result).toEqual({ node: want.name, outcome: `${want.name} provisioned and active` });
  expect(await getNodeByName(catalog.pool, want.name)).toMatchObject({ state: 'active', dsn: want.dsn });
  expect((await listNodes(catalog.pool)).filter((n) => n.dsn === want.dsn || n.name === want.name)).toHaveLength(1);
  expect((await listNodes(catalog.pool)).filter((n) => n.state === 'standby')).toEqual([]);
  expect(logged('made.log', requestId)).toHaveLength(1);
  expect(logged('calls.log', requestId).filter((c) => c.action === 'release')).toEqual([]);
}

describe('a scale-out survives its worker being killed', () => {
  it('SIGKILL while the provisioner command runs: the retry asks again (same request id), gets the same node and activates it', async () => {
    const requestId = 'r-kill-provisioning';
    const want = await prepareNode(requestId, 3000);
    const worker = await startWorker();
    const handle = await startScaleOut(requestId);
    await until('the provisioner asked', async () => logged('calls.log', requestId).length === 1, 30_000);
    const { result, afterKillMs } = await killAndFinish(worker, handle);
    await expectActiveOnce(requestId, want, result);
    // The killed worker's call ran on (the command has a process group of its own) and made the node; the retry was handed it.
    expect(logged('calls.log', requestId).map((c) => c.action)).toEqual(['provision', 'provision']);
    console.log(`scale-out killed while provisioning: done ${afterKillMs} ms after the kill`);
    expect(afterKillMs).toBeLessThan(AFTER_KILL_MS);
  }, 150_000);

  it('SIGKILL right after the node was registered (standby, the reply not sent): the retry finds its node and activates it', async () => {
    const requestId = 'r-kill-registered';
    const want = await prepareNode(requestId, 0);
    const worker = await startWorker('provisionNode.registered=sleep:120000');
    const handle = await startScaleOut(requestId);
    await until('the node registered', async () => (await listNodes(catalog.pool)).some((n) => n.name === want.name && n.state === 'standby'), 30_000);
    const { result, afterKillMs } = await killAndFinish(worker, handle);
    await expectActiveOnce(requestId, want, result);
    expect(logged('calls.log', requestId).map((c) => c.action)).toEqual(['provision', 'provision']);
    console.log(`scale-out killed after the registration: done ${afterKillMs} ms after the kill`);
    expect(afterKillMs).toBeLessThan(AFTER_KILL_MS);
  }, 150_000);

  it('SIGKILL between provisionNode and the activation (the activation held): the node is activated by the next worker, not left standby', async () => {
    const requestId = 'r-kill-activating';
    const want = await prepareNode(requestId, 0);
    const worker = await startWorker('activity.setNodeLifecycle=sleep:120000');
    const handle = await startScaleOut(requestId);
    await until('the activation started', async () => {
      const pending = (await handle.describe()).raw.pendingActivities ?? [];
      return pending.some((a) => a.activityType?.name === 'setNodeLifecycle' && a.state === temporal.api.enums.v1.PendingActivityState.PENDING_ACTIVITY_STATE_STARTED);
    }, 30_000);
    expect(await getNodeByName(catalog.pool, want.name)).toMatchObject({ state: 'standby' });
    const { result, afterKillMs } = await killAndFinish(worker, handle);
    await expectActiveOnce(requestId, want, result);
    // provisionNode had completed: the provisioner was asked once.
    expect(logged('calls.log', requestId).map((c) => c.action)).toEqual(['provision']);
    console.log(`scale-out killed while activating: done ${afterKillMs} ms after the kill`);
    expect(afterKillMs).toBeLessThan(AFTER_KILL_MS);
  }, 150_000);
});
