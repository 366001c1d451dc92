import { spawn, type ChildProcess } from 'node:child_process';
import { networkInterfaces } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/fleet/postgres-server.js';
import { createTestCatalog, fleet, uniqueName, type TestCatalog } from '../helpers/fleet.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const CLI = path.join(ROOT, 'bin/shardcast.js');

let catalog: TestCatalog;
const children: ChildProcess[] = [];

beforeAll(async () => {
  catalog = await createTestCatalog('wmetrics');
});

afterAll(async () => {
  await Promise.all(
    children.map((c) => new Promise((resolve) => (c.exitCode !== null ? resolve(undefined) : (c.once('exit', resolve), c.kill('SIGTERM'))))),
  );
  await catalog?.close();
});

/** This machine's first non-loopback IPv4 address: where a listener on 0.0.0.0 answers and one on loopback does not. */
const outside = Object.values(networkInterfaces())
  .flat()
  .find((a) => a && a.family === 'IPv4' && !a.internal)?.address;

/** `shardcast worker` against the test fleet; resolves with its output once it is ready. */
async function startWorker(metricsPort: number, args: string[] = []): Promise<{ child: ChildProcess; lines: string[] }> {
  const env = {
    ...process.env,
    SHARDCAST_CATALOG_URL: catalog.catalogUrl,
    SHARDCAST_TEMPORAL_ADDRESS: fleet().temporalAddress,
    SHARDCAST_TEMPORAL_TASK_QUEUE: uniqueName('wm-tq'),
    SHARDCAST_METRICS_PORT: String(metricsPort),
    SHARDCAST_JANITOR_INTERVAL_MINUTES: '0',
    SHARDCAST_DATA_DIR: path.join(fleet().baseDir, uniqueName('wm')),
  };
  const child = spawn(process.execPath, [CLI, 'worker', ...args], { cwd: ROOT, env });
  children.push(child);
  const lines: string[] = [];
  await new Promise<void>((resolve, reject) => {
    const take = (d: Buffer) => {
      lines.push(...d.toString().split('\n').filter(Boolean));
      if (lines.includes('shardcast: ready')) resolve();
    };
    child.stdout!.on('data', take);
    child.stderr!.on('data', take);
    child.once('exit', (code) => reject(new Error(`worker exited ${code}:\n${lines.join('\n')}`)));
  });
  return { child, lines };
}

async function reachable(url: string): Promise<boolean> {
  return fetch(url, { signal: AbortSignal.timeout(3000) }).then(
    (r) => r.ok,
    () => false,
  );
}

describe('shardcast worker /metrics', () => {
  it('listens on loopback only by default', async () => {
    const port = await freePort();
    const { lines } = await startWorker(port);
    expect(lines).toContain(`metrics      http://127.0.0.1:${port}/metrics`);
    const body = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(body).toMatch(/^shardcast_catalog_up 1$/m);
    // A fresh catalog has no plan and no janitor run: those gauges are absent, not 0 (a timestamp 0 alerts).
    for (const name of ['shardcast_plan_timestamp_seconds', 'shardcast_plan_feasible', 'shardcast_janitor_last_run_timestamp_seconds', 'shardcast_janitor_fix_failures']) {
      expect(body).not.toMatch(new RegExp(`^${name} `, 'm'));
    }
    if (outside) expect(await reachable(`http://${outside}:${port}/metrics`), `reachable at ${outside}`).toBe(false);
  });

  it('opens to the network with --metrics-listen 0.0.0.0:PORT', async () => {
    const port = await freePort();
    const { lines } = await startWorker(await freePort(), ['--metrics-listen', `0.0.0.0:${port}`]);
    expect(lines).toContain(`metrics      http://0.0.0.0:${port}/metrics`);
    expect(await reachable(`http://127.0.0.1:${port}/metrics`)).toBe(true);
    if (outside) expect(await reachable(`http://${outside}:${port}/metrics`), `not reachable at ${outside}`).toBe(true);
  });

  it('refuses a bad address before starting anything', async () => {
    const child = spawn(process.execPath, [CLI, 'worker', '--metrics-listen', '9464'], { cwd: ROOT, env: process.env });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise((resolve) => child.once('exit', resolve));
    expect(code).toBe(1);
    expect(err).toContain("option '--metrics-listen <host:port>' argument '9464' is invalid. expected host:port");
  });
});
