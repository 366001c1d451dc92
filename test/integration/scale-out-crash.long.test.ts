import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Client, Connection, WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getNodeByName, listNodes } from '../../src/catalog/nodes.js';
import { freePort } from '../../src/fleet/postgres-server.js';
import { quoteIdent } from '../../src/sql/ident.js';
import type { ScaleOutInput, ScaleOutResult } from '../../workflows/messages.js';
import { adminQuery, createTestCatalog, fleet, startWorkerProcess, uniqueName, until, withDatabase, type TestCatalog } from '../helpers/fleet.js';

/**
 * A scale-out whose worker is killed (SIGKILL, a real `shardcast worker` process) while the
 * provisioner command runs, right after the node was registered, while the activation runs, and in
 * the middle of the compensation: a new worker finishes it — the node ends active (or removed and
 * released), exactly one node is made for the request (the provisioner is idempotent by request
 * id) — and the dead attempt is retried within the activities' heartbeat timeout, not after their
 * start-to-close timeout.
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
 * From the kill to the scale-out's end: the heartbeat timeout of the scale-out's activities (10 s;
 * the next worker starts meanwhile), the retry's back-off (1–2 s), and room for a loaded 2-core
 * machine. Without a heartbeat a killed attempt is retried only after its start-to-close timeout:
 * 70 s for provisionNode, 60 s for the activation, 11 minutes for the compensation.
 */
const AFTER_KILL_MS = 30_000;
/**
 * From a worker's stall to the scale-out's end: the stalled worker's attempt and the two retries its
 * open polls take are each lost after the heartbeat timeout (3 × 10 s, with 2 s and 4 s back-offs);
 * the workflow tasks its open polls take next are lost after Temporal's workflow task timeout (10 s
 * each; 3 seen); then the live worker runs a new round of attempts. Seen: 67–68 s.
 */
const STALLED_MS = 90_000;

/**
 * A provisioner idempotent by request id, as src/planning/provisioner.ts asks: the first call of a
 * request makes its node (hands over the database the test prepared in want-ID.json, logging it to
 * made.log; with `hold`, only once the test writes go-ID); a call that finds the request made or
 * being made hands over the same node, waiting for it if need be. Every call is logged to calls.log.
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
  while (want.hold && !existsSync(dir + '/go-' + request.requestId)) await new Promise((r) => setTimeout(r, 100));
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
  for (const w of workers) {
    if (w.exitCode !== null || w.signalCode !== null) continue;
    w.kill('SIGKILL');
    w.kill('SIGCONT'); // a stopped process takes its SIGKILL once resumed
  }
  await connection?.close();
  await catalog?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** `shardcast worker` in its own process, with the provisioner configured and the failpoints given. */
async function startWorker(failpoints = ''): Promise<ChildProcessWithoutNullStreams> {
  return (await startWorkerWithOutput(failpoints)).child;
}

async function startWorkerWithOutput(failpoints = ''): Promise<{ child: ChildProcessWithoutNullStreams; output(): string }> {
  const started = await startWorkerProcess(catalog.catalogUrl, taskQueue, { SHARDCAST_CONFIG: path.join(dir, 'config.json'), SHARDCAST_FAILPOINTS: failpoints });
  workers.push(started.child);
  return started;
}

function kill(child: ChildProcessWithoutNullStreams): Promise<void> {
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

/** A database of its own on node-2 (the node the provisioner makes), reached without a password in its DSN. */
async function prepareNode(requestId: string, hold = false): Promise<{ name: string; dsn: string }> {
  const node = fleet().nodes[1]!;
  const database = uniqueName('made');
  await adminQuery(node.adminUrl, `create database ${quoteIdent(database)}`);
  const url = new URL(withDatabase(node.adminUrl, database));
  url.password = '';
  url.searchParams.set('passwordenv', PASSWORD_VAR);
  const want = { name: database.replace(/_/g, '-'), dsn: url.toString(), hold };
  writeFileSync(path.join(dir, `want-${requestId}.json`), JSON.stringify(want));
  return want;
}

function logged(file: string, requestId: string): Array<{ action?: string; requestId: string; name?: string }> {
  const log = path.join(dir, file);
  if (!existsSync(log)) return [];
  return readFileSync(log, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { requestId: string }).filter((c) => c.requestId === requestId);
}

async function startScaleOut(requestId: string, activationAttempts?: number): Promise<WorkflowHandle> {
  const input: ScaleOutInput = {
    request: { requestId, reason: 'test: a worker killed in the middle', region: 'eu' },
    provisionTimeoutSeconds: PROVISION_TIMEOUT_SECONDS,
    ...(activationAttempts ? { activationAttempts } : {}),
  };
  return client.workflow.start('scaleOut', { taskQueue, workflowId: `${taskQueue}-scale-out-${requestId}`, args: [input] });
}

/**
 * Kills the worker holding the attempt, starts the next one (no failpoints) while `afterKill` runs,
 * and waits for the scale-out's end. Returns the workflow's result and the time from the kill to its end.
 */
async function killAndFinish(worker: ChildProcessWithoutNullStreams, handle: WorkflowHandle, afterKill?: () => Promise<void>): Promise<{ result: ScaleOutResult; afterKillMs: number }> {
  const { outcome, afterKillMs } = await killAndWait(worker, handle, afterKill);
  if (outcome instanceof Error) throw outcome;
  return { result: outcome as ScaleOutResult, afterKillMs };
}

async function killAndWait(worker: ChildProcessWithoutNullStreams, handle: WorkflowHandle, afterKill?: () => Promise<void>): Promise<{ outcome: unknown; afterKillMs: number }> {
  await kill(worker);
  const killed = Date.now();
  const [next] = await Promise.all([startWorker(), afterKill?.()]);
  const outcome = await handle.result().catch((err: unknown) => err);
  const afterKillMs = Date.now() - killed;
  await kill(next);
  return { outcome, afterKillMs };
}

/** Waits until the workflow's activity of this type runs (a failpoint holds it). */
async function untilRunning(handle: WorkflowHandle, activityType: string): Promise<void> {
  await until(`${activityType} running`, async () => {
    const pending = (await handle.describe()).raw.pendingActivities ?? [];
    return pending.some((a) => a.activityType?.name === activityType && a.state === temporal.api.enums.v1.PendingActivityState.PENDING_ACTIVITY_STATE_STARTED);
  }, 30_000);
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
    const want = await prepareNode(requestId, true);
    const worker = await startWorker();
    const handle = await startScaleOut(requestId);
    await until('the provisioner asked', async () => logged('calls.log', requestId).length === 1, 30_000);
    const { result, afterKillMs } = await killAndFinish(worker, handle, async () => {
      // The killed worker's call runs on (the command has a process group of its own): it makes the
      // node only once the retry has asked too, so that the retry meets the request still being made.
      await until('the retry asked', async () => logged('calls.log', requestId).length === 2, AFTER_KILL_MS);
      expect(logged('made.log', requestId)).toEqual([]);
      writeFileSync(path.join(dir, `go-${requestId}`), '');
    });
    await expectActiveOnce(requestId, want, result);
    expect(logged('calls.log', requestId).map((c) => c.action)).toEqual(['provision', 'provision']);
    console.log(`scale-out killed while provisioning: done ${afterKillMs} ms after the kill`);
    expect(afterKillMs).toBeLessThan(AFTER_KILL_MS);
  }, 150_000);

  it('SIGKILL right after the node was registered (standby, the reply not sent): the retry finds its node and activates it', async () => {
    const requestId = 'r-kill-registered';
    const want = await prepareNode(requestId);
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
    const want = await prepareNode(requestId);
    const worker = await startWorker('activity.setNodeLifecycle=sleep:120000');
    const handle = await startScaleOut(requestId);
    await untilRunning(handle, 'setNodeLifecycle');
    expect(await getNodeByName(catalog.pool, want.name)).toMatchObject({ state: 'standby' });
    const { result, afterKillMs } = await killAndFinish(worker, handle);
    await expectActiveOnce(requestId, want, result);
    // provisionNode had completed: the provisioner was asked once.
    expect(logged('calls.log', requestId).map((c) => c.action)).toEqual(['provision']);
    console.log(`scale-out killed while activating: done ${afterKillMs} ms after the kill`);
    expect(afterKillMs).toBeLessThan(AFTER_KILL_MS);
  }, 150_000);

  it('SIGKILL in the middle of the compensation (a node that does not answer): the next worker removes it and releases the request', async () => {
    const requestId = 'r-kill-compensating';
    const name = uniqueName('dead').replace(/_/g, '-');
    const port = await freePort(); // nothing listens there
    writeFileSync(path.join(dir, `want-${requestId}.json`), JSON.stringify({ name, dsn: `postgres://postgres@127.0.0.1:${port}/nothing?passwordenv=${PASSWORD_VAR}` }));
    const worker = await startWorker('activity.releaseProvisionedNode=sleep:120000');
    const handle = await startScaleOut(requestId, 1);
    await untilRunning(handle, 'releaseProvisionedNode');
    expect(await getNodeByName(catalog.pool, name)).toMatchObject({ state: 'standby' });
    const { outcome, afterKillMs } = await killAndWait(worker, handle);
    expect(outcome).toBeInstanceOf(WorkflowFailedError);
    const message = (outcome as WorkflowFailedError).cause?.message ?? '';
    expect(message).toContain(`node "${name}": cannot connect`);
    expect(message).toContain(`${name} removed from the catalog; the provisioner was told to release request ${requestId}`);
    await expect(getNodeByName(catalog.pool, name)).rejects.toThrow(`node "${name}" does not exist`);
    expect(logged('made.log', requestId)).toHaveLength(1);
    expect(logged('calls.log', requestId).map((c) => c.action)).toEqual(['provision', 'release']);
    console.log(`scale-out killed while compensating: done ${afterKillMs} ms after the kill`);
    expect(afterKillMs).toBeLessThan(AFTER_KILL_MS);
  }, 150_000);

  it('a stalled worker (SIGSTOP while the provisioner runs; its open polls take two retries too): the scale-out goes on elsewhere, and the stale attempts, resumed, change nothing', async () => {
    const requestId = 'r-stalled-provisioning';
    const want = await prepareNode(requestId, true);
    const stale = await startWorkerWithOutput();
    const handle = await startScaleOut(requestId);
    await until('the provisioner asked', async () => logged('calls.log', requestId).length === 1, 30_000);
    stale.child.kill('SIGSTOP');
    const stopped = Date.now();
    const next = await startWorker();
    await until('the retry asked', async () => logged('calls.log', requestId).length === 2, STALLED_MS);
    writeFileSync(path.join(dir, `go-${requestId}`), ''); // the stale attempt's call and the retry's get the same node
    const result = (await handle.result()) as ScaleOutResult;
    const afterStopMs = Date.now() - stopped;
    await expectActiveOnce(requestId, want, result);
    // Resumed, the stale attempts get the node too, find it active (not the standby node of their request) and register nothing.
    stale.child.kill('SIGCONT');
    // Its log says so (the SDK logs a failed activity). On a slow machine the resumed worker first works through what
    // piled up while it was stopped: up to a minute; the failure shows what it printed instead.
    await until('a stale attempt refused', async () => stale.output().includes(`node "${want.name}", which is already registered (active)`), 60_000).catch((err: Error) => {
      throw new Error(`${err.message}; the stale worker printed, last: ${stale.output().slice(-4000)}`);
    });
    await expectActiveOnce(requestId, want, result);
    expect(new Set(logged('calls.log', requestId).map((c) => c.action))).toEqual(new Set(['provision']));
    await Promise.all([kill(stale.child), kill(next)]);
    console.log(`scale-out beside a stalled worker: done ${afterStopMs} ms after the stop`);
    expect(afterStopMs).toBeLessThan(STALLED_MS);
  }, 200_000);
});
