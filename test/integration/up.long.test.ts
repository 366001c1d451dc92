import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { readEmbeddedPassword } from '../../src/fleet/embedded-password.js';
import { createRouter } from '../../src/router/router.js';
import { assertPortFree, freePort, isAlive as alive } from '../../src/fleet/postgres-server.js';
import { fleet, uniqueName } from '../helpers/fleet.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const CLI = path.join(ROOT, 'bin/shardcast.js');

interface Up {
  child: ChildProcessWithoutNullStreams;
  lines: string[];
  exit: Promise<number | null>;
}

let env: NodeJS.ProcessEnv;
let dataDir: string;
let ports: { catalog: number; node1: number; temporal: number; ui: number; metrics: number };
const running: Up[] = [];

/** Two consecutive free ports, for the embedded nodes' base port. */
async function freePortPair(): Promise<number> {
  for (;;) {
    const port = await freePort();
    if (port >= 65535) continue;
    try {
      await assertPortFree(port + 1, 'probe');
      return port;
    } catch {
      // taken; try another
    }
  }
}

function startUp(): Up {
  const child = spawn(process.execPath, [CLI, 'up'], { cwd: ROOT, env });
  const lines: string[] = [];
  let buffer = '';
  child.stdout.on('data', (d: Buffer) => {
    buffer += d.toString();
    const parts = buffer.split('\n');
    buffer = parts.pop()!;
    lines.push(...parts);
  });
  child.stderr.on('data', (d: Buffer) => lines.push(...d.toString().split('\n').filter(Boolean).map((l) => `stderr: ${l}`)));
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const up = { child, lines, exit };
  running.push(up);
  return up;
}

async function waitForLine(up: Up, text: string, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!up.lines.includes(text)) {
    if (up.child.exitCode !== null) throw new Error(`shardcast up exited ${up.child.exitCode}:\n${up.lines.join('\n')}`);
    if (Date.now() > deadline) throw new Error(`no "${text}" after ${timeoutMs} ms:\n${up.lines.join('\n')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function cli(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [CLI, ...args], { cwd: ROOT, env, encoding: 'utf8', timeout: 120_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** Processes whose command line mentions the data directory: what `up` started. */
function processesUsing(dir: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
      if (cmdline.includes(dir) && Number(pid) !== process.pid) found.push(`${pid}: ${cmdline.slice(0, 120)}`);
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

afterAll(async () => {
  for (const up of running) {
    if (up.child.exitCode === null) {
      up.child.kill('SIGTERM');
      await up.exit;
    }
  }
});

describe('shardcast up (npm start)', () => {
  it('brings up the fleet, Temporal with its UI, the worker and metrics, and prints where they are', async () => {
    await freshUpEnv('up', { SHARDCAST_NODES_COUNT: '2', SHARDCAST_COLLECTION_INTERVAL_SECONDS: '1' });
    const up = startUp();
    await waitForLine(up, 'shardcast: ready');
    const text = up.lines.join('\n');
    expect(text).toMatch(new RegExp(`^catalog\\s+postgres://postgres:\\*\\*\\*@127\\.0\\.0\\.1:${ports.catalog}/shardcast$`, 'm'));
    expect(text).toMatch(new RegExp(`^node-1\\s+postgres://postgres:\\*\\*\\*@127\\.0\\.0\\.1:${ports.node1}/shardcast$`, 'm'));
    expect(text).toMatch(new RegExp(`^node-2\\s+postgres://postgres:\\*\\*\\*@127\\.0\\.0\\.1:${ports.node1 + 1}/shardcast$`, 'm'));
    // The application role routers connect as: its URL (password hidden) and where its password is kept, private.
    const appPasswordFile = path.join(dataDir, 'app-password');
    expect(text).toMatch(new RegExp(`^app\\s+postgres://shardcast_app:\\*\\*\\*@127\\.0\\.0\\.1:${ports.catalog}/shardcast \\(password in ${appPasswordFile.replaceAll('.', '\\.')}\\)$`, 'm'));
    expect(statSync(appPasswordFile).mode & 0o777).toBe(0o600);
    expect(text).not.toContain(readFileSync(appPasswordFile, 'utf8').trim());
    expect(text).toMatch(new RegExp(`^temporal\\s+127\\.0\\.0\\.1:${ports.temporal} \\(namespace default\\)$`, 'm'));
    expect(text).toMatch(new RegExp(`^temporal-ui\\s+http://127\\.0\\.0\\.1:${ports.ui}$`, 'm'));
    expect(text).toMatch(/^worker\s+task queue shardcast-control$/m);
    expect(text).toMatch(/^collector\s+every 1 s, kept 35 days \(workflow shardcast-collect-stats\)$/m);
    expect(text).toMatch(/^schedules\s+retrain daily at 03:00 UTC, forecast hourly, janitor every 10 min, retention daily at 02:30 UTC, replan every 5 min \(shardcast-retrain-daily, shardcast-forecast-hourly, shardcast-janitor, shardcast-retention, shardcast-replan\)$/m);
    expect(text).toMatch(new RegExp(`^metrics\\s+http://127\\.0\\.0\\.1:${ports.metrics}/metrics$`, 'm'));
    expect(up.lines.at(-1)).toBe('shardcast: ready');
    // Nothing but one line per component (and the migrations it applied) before it.
    for (const line of up.lines.slice(0, -1)) {
      expect(line).toMatch(/^(catalog|node-\d+|migrations|app|temporal|temporal-ui|worker|collector|schedules|metrics) +\S/);
    }
    expect(text).not.toContain('shardcast'.concat(':', 'shardcast@')); // the password is never printed
    // The password was generated for this data directory, is private, and is never printed either.
    const passwordFile = path.join(dataDir, 'postgres-password');
    const password = readFileSync(passwordFile, 'utf8').trim();
    expect(password).toMatch(/^[A-Za-z0-9_-]{32}$/);
    expect(statSync(passwordFile).mode & 0o777).toBe(0o600);
    expect(text).not.toContain(password);
    // Logs are the operator's alone.
    for (const log of ['shardcast-up.log', 'catalog.log', 'node-1.log', 'temporal.log']) {
      expect(statSync(path.join(dataDir, log)).mode & 0o077, `${log} is readable by others`).toBe(0);
    }

    const ui = await fetch(`http://127.0.0.1:${ports.ui}/`);
    expect(ui.status).toBe(200);
    expect(await ui.text()).toMatch(/<html/i);
    const metrics = await (await fetch(`http://127.0.0.1:${ports.metrics}/metrics`)).text();
    expect(metrics).toMatch(/^shardcast_catalog_up 1$/m);
    expect(metrics).toMatch(/^shardcast_nodes\{state="active"\} 2$/m);
    expect(metrics).toMatch(/^shardcast_map_version \d+$/m);
  });

  it('answers the CLI: status, tables create (through the worker), shards list, move, split, merge', { timeout: 240_000 }, async () => {
    const status = cli('status', '--json');
    expect(status.status, status.stderr).toBe(0);
    const parsed = JSON.parse(status.stdout);
    expect(parsed.nodes.map((n: { name: string }) => n.name)).toEqual(['node-1', 'node-2']);
    expect(parsed.nodes[0].dsn).toContain(':***@');

    const created = cli('tables', 'create', 'items', '--columns', 'id bigint primary key, name text', '--key', 'id', '--shards', '4');
    expect(created.status, created.stderr).toBe(0);
    expect(created.stdout).toMatch(/^created items: 4 shard\(s\) on node-1, node-2 \(group items, map version \d+\)$/m);

    const shards = cli('shards', 'list', '--table', 'items');
    expect(shards.status, shards.stderr).toBe(0);
    expect(shards.stdout.trim().split('\n')).toHaveLength(5); // header + 4 shards
    expect(shards.stdout).toMatch(/^SHARDID\s+SCHEMA\s+GROUP\s+TABLES\s+NODE\s+RANGE$/m);

    // The README's router: the application role, its password from the data directory; DML, no DDL.
    const appPassword = readFileSync(path.join(dataDir, 'app-password'), 'utf8').trim();
    const router = await createRouter({ catalogUrl: `postgres://shardcast_app:${appPassword}@127.0.0.1:${ports.catalog}/shardcast`, listen: false });
    try {
      await router.forKey('items', 7).query('insert into items values ($1, $2)', [7, 'seven']);
      expect((await router.forKey('items', 7).query('select name from items where id = $1', [7])).rows).toEqual([{ name: 'seven' }]);
      await expect(router.forKey('items', 7).query('alter table items add column x int')).rejects.toThrow(/must be owner/);
      await router.forKey('items', 7).query('delete from items where id = $1', [7]);
    } finally {
      await router.close();
    }

    const unreachable = cli('nodes', 'add', 'node-9', '--dsn', 'postgres://postgres:hunter2@127.0.0.1:1/none');
    expect(unreachable.status).toBe(1);
    expect(unreachable.stderr.trim()).toMatch(/^shardcast: error: node "node-9": cannot connect: .*ECONNREFUSED/);
    expect(unreachable.stderr.trim().split('\n')).toHaveLength(1);
    const badName = cli('nodes', 'add', 'Node 9', '--dsn', 'postgres://postgres:x@127.0.0.1:1/none', '--no-check');
    expect(badName.stderr.trim()).toBe('shardcast: error: node name "Node 9" is not allowed: lower-case letters, digits, "-" or "_", starting with a letter, at most 63');
    const standby = cli('nodes', 'add', 'node-9', '--dsn', 'postgres://postgres:x@127.0.0.1:1/none', '--no-check', '--state', 'standby', '--zone', 'z9');
    expect(standby.status, standby.stderr).toBe(0);
    expect(standby.stdout).toMatch(/^added node node-9 \(#\d+, standby\)$/m);
    const again = cli('nodes', 'add', 'node-9', '--dsn', 'postgres://postgres:x@127.0.0.1:1/none', '--no-check');
    expect(again.stderr.trim()).toBe('shardcast: error: node "node-9" already exists');
    const listed = JSON.parse(cli('nodes', 'list', '--json').stdout) as Array<{ name: string; state: string; dsn: string }>;
    expect(listed.map((n) => `${n.name}:${n.state}`)).toEqual(['node-1:active', 'node-2:active', 'node-9:standby']);
    expect(JSON.stringify(listed)).not.toContain('hunter2');

    // Moving a shard from the CLI: the table stays readable, the placement follows.
    const shardOnNode1 = (JSON.parse(cli('shards', 'list', '--table', 'items', '--json').stdout) as Array<{ shardId: number; node: string }>).find((x) => x.node === 'node-1')!;
    const moved = cli('move', String(shardOnNode1.shardId), '--to', 'node-2', '--grace', '0', '--follow');
    expect(moved.status, moved.stderr).toBe(0);
    const movedRun = await withTemporalClient((client) => client.workflow.getHandle(`move-shard-${shardOnNode1.shardId}`).describe());
    expect(await movedRun.staticSummary()).toBe(`move shard ${shardOnNode1.shardId} of items: node-1 → node-2`);
    expect(moved.stdout).toMatch(
      new RegExp(`^moved shard ${shardOnNode1.shardId}: node-1 → node-2 \\(writes blocked \\d+ ms at cutover\\); done; fenced copy on node-1 dropped at \\d\\d:\\d\\d:\\d\\d UTC$`, 'm'),
    );
    expect(moved.stdout).toMatch(/^(copy|catch-up|verify|cutover|cleanup|done) /m); // --follow printed a phase after prepare (a small shard may pass several between two polls)
    const after = JSON.parse(cli('shards', 'list', '--table', 'items', '--json').stdout) as Array<{ shardId: number; node: string }>;
    expect(after.find((x) => x.shardId === shardOnNode1.shardId)!.node).toBe('node-2');
    const movements = JSON.parse(cli('movements', '--json').stdout) as Array<{ shard: number; state: string; operation: string }>;
    expect(movements).toMatchObject([{ shard: shardOnNode1.shardId, state: 'done', operation: 'move' }]);
    const unknown = cli('approve', '424242');
    expect(unknown.status).toBe(1);
    expect(unknown.stderr.trim().split('\n')).toHaveLength(1);
    expect(unknown.stderr).toMatch(/^shardcast: error: .*move-shard-424242/);
    // Undo is a movement the other way: --reverse moves it back.
    const back = cli('move', '--reverse', String(shardOnNode1.shardId), '--grace', '0');
    expect(back.status, back.stderr).toBe(0);
    expect(back.stdout).toMatch(new RegExp(`^moved shard ${shardOnNode1.shardId}: node-2 → node-1 `, 'm'));

    // Split from the CLI, then reverse the split (a merge of its halves back onto node-1).
    const badSplit = cli('split', String(shardOnNode1.shardId), '--to', 'node-2');
    expect(badSplit.status).not.toBe(0);
    expect(badSplit.stderr).toMatch(/expected two node names/);
    const split = cli('split', String(shardOnNode1.shardId), '--to', 'node-1,node-2', '--grace', '0');
    expect(split.status, split.stderr).toBe(0);
    const halves = split.stdout.match(/^split shard \d+ into (\d+) and (\d+): node-1 → node-1,node-2 /m);
    expect(halves, split.stdout).not.toBeNull();
    const afterSplit = JSON.parse(cli('shards', 'list', '--table', 'items', '--json').stdout) as Array<{ shardId: number; node: string }>;
    expect(afterSplit).toHaveLength(5);
    expect(afterSplit.filter((x) => [Number(halves![1]), Number(halves![2])].includes(x.shardId)).map((x) => x.node)).toEqual(['node-1', 'node-2']);
    const merged = cli('move', '--reverse', String(shardOnNode1.shardId), '--grace', '0');
    expect(merged.status, merged.stderr).toBe(0);
    expect(merged.stdout).toMatch(/^merged into shard \d+: node-1,node-2 → node-1 /m);
    expect(JSON.parse(cli('shards', 'list', '--table', 'items', '--json').stdout)).toHaveLength(4);
    const notAdjacent = cli('merge', String(afterSplit[0]!.shardId), String(afterSplit[0]!.shardId));
    expect(notAdjacent.stderr.trim()).toMatch(/^shardcast: error: cannot merge shard \d+ with itself$/);

    // A move the catalog already rules out is refused in one line before any workflow starts.
    const [someShard] = JSON.parse(cli('shards', 'list', '--table', 'items', '--json').stdout) as Array<{ shardId: number }>;
    const refused = cli('move', String(someShard!.shardId), '--to', 'node-9');
    expect(refused.status).toBe(1);
    expect(refused.stderr.trim().split('\n')).toEqual(['shardcast: error: node node-9 is standby, not active: it cannot take shards']);

    // Forecasting from the CLI. The collector (1 s interval here) has sampled for under a minute: no
    // series has two complete 5-minute buckets yet, so there is nothing to train, and that is no failure.
    const retrain = cli('retrain', '--wait');
    expect(retrain.status, retrain.stderr).toBe(0);
    expect(retrain.stdout).toMatch(/^0 of 0 series done: 0 trained, 0 fell back, 0 failed$/m);
    const forecastRun = cli('forecast', 'run', '--wait');
    expect(forecastRun.status, forecastRun.stderr).toBe(0);
    expect(forecastRun.stdout).toMatch(/^0 of 0 series done: 0 forecast, 0 failed$/m);
    const svg = path.join(fleet().baseDir, `${uniqueName('chart')}.svg`);
    const png = svg.replace(/\.svg$/, '.png');
    const shown = cli('forecast', 'show', 'node:node-1:io', '--svg', svg, '--png', png);
    expect(shown.status, shown.stderr).toBe(0);
    expect(shown.stdout).toMatch(/^node:node-1:io: no forecast yet/m);
    expect(readFileSync(svg, 'utf8')).toMatch(/^<svg/);
    const picture = readFileSync(png); // the PNG signature, then IHDR's width and height
    expect([picture.toString('latin1', 1, 4), picture.readUInt32BE(16), picture.readUInt32BE(20)]).toEqual(['PNG', 800, 360]);

    const human = cli('status');
    expect(human.stdout).toMatch(/^node-1\s+active\s+local\s+z1\s+auto\s+-\s+-\s+2\s+(ok|not checked yet)\s+postgres:\/\//m);
    expect(human.stdout).toMatch(/^items\s+items\s+hash\s+id\s+bigint\s+4\s+2\s+active$/m);
  });

  it('stops everything cleanly on SIGINT and leaves nothing running', async () => {
    const up = running[0]!;
    up.child.kill('SIGINT');
    const code = await up.exit;
    expect(code, up.lines.join('\n')).toBe(0);
    expect(up.lines).toContain('shardcast: stopped');
    expect(processesUsing(dataDir)).toEqual([]);
    for (const port of [ports.catalog, ports.node1, ports.node1 + 1, ports.temporal, ports.ui, ports.metrics]) {
      await expect(assertPortFree(port, 'after stop')).resolves.toBeUndefined();
    }
    for (const node of ['catalog', 'node-1', 'node-2']) expect(existsSync(path.join(dataDir, node, 'postmaster.pid'))).toBe(false);
  });

  it('a second start resumes with the same data and workflow history', async () => {
    const up = startUp();
    await waitForLine(up, 'shardcast: ready');
    const tables = cli('tables', 'list', '--json');
    expect(tables.status, tables.stderr).toBe(0);
    expect(JSON.parse(tables.stdout)).toMatchObject([{ name: 'items', shards: 4, state: 'active' }]);
    const connection = await Connection.connect({ address: `127.0.0.1:${ports.temporal}` });
    try {
      const description = await new Client({ connection }).workflow.getHandle('create-table-items').describe();
      expect(description.status.name).toBe('COMPLETED');
    } finally {
      await connection.close();
    }
    up.child.kill('SIGTERM');
    expect(await up.exit).toBe(0);
    expect(processesUsing(dataDir)).toEqual([]);
  });
});

describe('shardcast up after being killed', () => {
  it('stops what a SIGKILLed run left behind and comes up again on the same ports', async () => {
    const first = startUp();
    await waitForLine(first, 'shardcast: ready');
    first.child.kill('SIGKILL');
    await first.exit;
    // Its PostgreSQL servers and Temporal dev server live on in their own process groups.
    expect(processesUsing(dataDir).length).toBeGreaterThan(0);
    const second = startUp();
    await waitForLine(second, 'shardcast: ready');
    const tables = cli('tables', 'list', '--json');
    expect(JSON.parse(tables.stdout)).toMatchObject([{ name: 'items' }]);
    second.child.kill('SIGTERM');
    expect(await second.exit).toBe(0);
    expect(processesUsing(dataDir)).toEqual([]);
  });
});

describe('shardcast up against servers that already run', () => {
  it('uses --catalog-url and --temporal-address instead of starting its own, and leaves them running', async () => {
    const { createTestCatalog } = await import('../helpers/fleet.js');
    const external = await createTestCatalog('ext');
    try {
      const metricsPort = await freePort();
      env = {
        ...process.env,
        SHARDCAST_DATA_DIR: path.join(fleet().baseDir, uniqueName('ext')),
        SHARDCAST_METRICS_PORT: String(metricsPort),
        SHARDCAST_TEMPORAL_TASK_QUEUE: uniqueName('ext-tq'),
      };
      const child = spawn(process.execPath, [CLI, 'up', '--catalog-url', external.catalogUrl, '--temporal-address', fleet().temporalAddress], { cwd: ROOT, env });
      const up: Up = { child, lines: [], exit: new Promise((resolve) => child.on('exit', (code) => resolve(code))) };
      running.push(up);
      child.stdout.on('data', (d: Buffer) => up.lines.push(...d.toString().split('\n').filter(Boolean)));
      child.stderr.on('data', (d: Buffer) => up.lines.push(...d.toString().split('\n').filter(Boolean).map((l) => `stderr: ${l}`)));
      await waitForLine(up, 'shardcast: ready');
      const text = up.lines.join('\n');
      expect(text).toMatch(new RegExp(`^temporal\\s+${fleet().temporalAddress.replaceAll('.', '\\.')} \\(namespace default, external\\)$`, 'm'));
      expect(text).not.toMatch(/^node-\d/m); // no embedded nodes with an existing catalog
      expect(text).not.toMatch(/^temporal-ui/m);
      // The external catalog's own nodes are what it reports.
      const status = cli('--catalog-url', external.catalogUrl, 'status', '--json');
      expect(JSON.parse(status.stdout).nodes.map((n: { name: string }) => n.name)).toEqual(['node-1', 'node-2', 'node-3']);
      child.kill('SIGINT');
      expect(await up.exit).toBe(0);
      // Still running: it stopped only what it started.
      const connection = await Connection.connect({ address: fleet().temporalAddress });
      await connection.workflowService.getSystemInfo({});
      await connection.close();
      expect((await external.pool.query('select 1 as ok')).rows).toEqual([{ ok: 1 }]);
    } finally {
      await external.close();
    }
  });
});

async function withTemporalClient<T>(fn: (client: Client) => Promise<T>): Promise<T> {
  const connection = await Connection.connect({ address: `127.0.0.1:${ports.temporal}` });
  try {
    return await fn(new Client({ connection }));
  } finally {
    await connection.close();
  }
}

/** An environment for a fresh `up` of its own: new data directory, new ports; one node unless `extra` says otherwise. */
async function freshUpEnv(prefix: string, extra: Record<string, string> = {}): Promise<{ dir: string; catalogPort: number }> {
  dataDir = path.join(fleet().baseDir, uniqueName(prefix));
  ports = { catalog: await freePort(), node1: await freePortPair(), temporal: await freePort(), ui: await freePort(), metrics: await freePort() };
  env = {
    ...process.env,
    SHARDCAST_DATA_DIR: dataDir,
    SHARDCAST_CATALOG_PORT: String(ports.catalog),
    SHARDCAST_NODES_COUNT: '1',
    SHARDCAST_NODES_BASE_PORT: String(ports.node1),
    SHARDCAST_TEMPORAL_PORT: String(ports.temporal),
    SHARDCAST_TEMPORAL_UI_PORT: String(ports.ui),
    SHARDCAST_METRICS_PORT: String(ports.metrics),
    TEMPORAL_CLI_PATH: fleet().temporalCliPath,
    ...extra,
  };
  return { dir: dataDir, catalogPort: ports.catalog };
}

/** The pids of the servers `up` started in `dir`: each PostgreSQL postmaster and the Temporal dev server. */
function serverPids(dir: string): number[] {
  const pids: number[] = [];
  for (const name of ['catalog', 'node-1']) pids.push(Number.parseInt(readFileSync(path.join(dir, name, 'postmaster.pid'), 'utf8').split('\n')[0]!, 10));
  pids.push(Number.parseInt(readFileSync(path.join(dir, 'temporal.pid'), 'utf8'), 10));
  return pids;
}

async function catalogAnswers(catalogPort: number): Promise<boolean> {
  const password = env.SHARDCAST_POSTGRES_PASSWORD ?? readEmbeddedPassword(dataDir) ?? '';
  const client = new pg.Client({ connectionString: `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${catalogPort}/shardcast`, connectionTimeoutMillis: 3000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return (await client.query('select 1 as ok')).rows[0].ok === 1;
  } finally {
    await client.end().catch(() => undefined);
  }
}

describe('shardcast up owns its data directory', () => {
  it('a second up on the same data directory refuses, naming the running one, and the first keeps serving', { timeout: 240_000 }, async () => {
    const { dir, catalogPort } = await freshUpEnv('own');
    const first = startUp();
    await waitForLine(first, 'shardcast: ready');
    const pids = serverPids(dir);
    const second = startUp();
    expect(await second.exit).toBe(1);
    const refusal = second.lines.filter((l) => l.startsWith('stderr: '));
    expect(refusal).toHaveLength(1);
    expect(refusal[0]).toMatch(new RegExp(`^stderr: shardcast: error: data directory ${dir.replaceAll('/', '\\/')} is in use by shardcast up \\(pid ${first.child.pid}, started .*\\): stop it first`));
    expect(pids.every(alive)).toBe(true);
    expect(await catalogAnswers(catalogPort)).toBe(true);
    const metrics = await fetch(`http://127.0.0.1:${ports.metrics}/metrics`);
    expect(metrics.status).toBe(200);
    first.child.kill('SIGINT');
    expect(await first.exit).toBe(0);
    expect(pids.filter(alive)).toEqual([]);
    expect(existsSync(path.join(dir, 'shardcast-up.lock'))).toBe(false);
  });

  it('reaps what a SIGKILLed up left behind, by its dead owner', { timeout: 240_000 }, async () => {
    const { dir } = await freshUpEnv('reap');
    const first = startUp();
    await waitForLine(first, 'shardcast: ready');
    const pids = serverPids(dir);
    first.child.kill('SIGKILL');
    await first.exit;
    expect(pids.every(alive)).toBe(true); // the servers live on in their own process groups
    const second = startUp();
    await waitForLine(second, 'shardcast: ready');
    expect(pids.filter(alive)).toEqual([]); // the leftovers were stopped; new servers run
    const fresh = serverPids(dir);
    expect(fresh.every(alive)).toBe(true);
    second.child.kill('SIGTERM');
    expect(await second.exit).toBe(0);
    expect(fresh.filter(alive)).toEqual([]);
  });

  it('stops everything on SIGINT when its stdout pipe is gone (npm start | tee log, Ctrl-C)', { timeout: 240_000 }, async () => {
    const { dir } = await freshUpEnv('pipe');
    // up | head -n 1000: head reads the start-up lines, then is killed like tee by the Ctrl-C.
    const child = spawn('sh', ['-c', `exec "${process.execPath}" "${CLI}" up | head -n 1000`], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const upPid = (): number | undefined =>
      readdirSync('/proc')
        .filter((p) => /^\d+$/.test(p))
        .map(Number)
        .find((pid) => {
          try {
            return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(`${CLI}\0up`) && readFileSync(`/proc/${pid}/environ`, 'utf8').includes(`SHARDCAST_DATA_DIR=${dir}\0`);
          } catch {
            return false;
          }
        });
    // head holds its output back (a pipe): the log file says when up is ready.
    const logged = (): string => (existsSync(path.join(dir, 'shardcast-up.log')) ? readFileSync(path.join(dir, 'shardcast-up.log'), 'utf8') : '');
    const deadline = Date.now() + 120_000;
    while (!logged().includes('shardcast: ready')) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`up did not come up:\n${out}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const pids = serverPids(dir);
    const up = upPid()!;
    expect(up).toBeGreaterThan(0);
    const head = readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .map(Number)
      .find((pid) => {
        try {
          return readFileSync(`/proc/${pid}/cmdline`, 'utf8') === 'head\0-n\x001000\0' && readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ')[3] === String(child.pid);
        } catch {
          return false;
        }
      });
    // Ctrl-C: the terminal signals the whole pipeline; the reader dies first.
    if (head) process.kill(head, 'SIGINT');
    await new Promise((r) => setTimeout(r, 200));
    process.kill(up, 'SIGINT');
    const stopDeadline = Date.now() + 90_000;
    while (alive(up) || pids.some(alive)) {
      if (Date.now() > stopDeadline) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(alive(up)).toBe(false);
    expect(pids.filter(alive)).toEqual([]);
    expect(processesUsing(dir)).toEqual([]);
    expect(logged()).toMatch(/shardcast: stopping\n.*shardcast: stopped\n$/);
  });
});
