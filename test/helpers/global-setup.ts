import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import type { TestProject } from 'vitest/node';
import { freePort, PostgresServer } from '../../src/fleet/postgres-server.js';
import { resolveTemporalCli } from '../../src/fleet/temporal-cli.js';
import { TemporalDevServer } from '../../src/fleet/temporal-server.js';
import { WORKFLOWS_PATH } from '../../workers/control.js';

export interface TestFleet {
  baseDir: string;
  password: string;
  /** The catalog server's admin URL (database postgres); tests create their own catalog databases. */
  catalogAdminUrl: string;
  nodes: Array<{ name: string; port: number; adminUrl: string }>;
  temporalAddress: string;
  temporalCliPath: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    /** One fleet per test worker (VITEST_POOL_ID 1..maxWorkers): see setup. */
    fleets: TestFleet[];
    workflowBundleCode: string;
  }
}

/**
 * Starts, once per run, a PostgreSQL fleet (a catalog server and three nodes) for each test worker,
 * and one Temporal dev server. Files that run side by side never share a PostgreSQL server: a
 * transaction one file holds open (a prepared transaction left for recovery or `doctor` to find, a
 * cutover killed mid-way) makes the creation of every logical replication slot on that server wait,
 * in any database, so a shared node let one file's deliberate leftovers stall another file's moves.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  // Own directory per run, so that runs side by side never share data directories.
  const TEST_BASE_DIR = mkdtempSync(path.join(tmpdir(), 'shardcast-test-'));
  chmodSync(TEST_BASE_DIR, 0o755); // the postgres OS user must reach its data directories
  const password = 'shardcast-test';
  const workers = Math.max(1, Number(project.config.maxWorkers) || 1);
  const makers: Array<Array<(port: number) => PostgresServer>> = [];
  for (let w = 1; w <= workers; w++) {
    makers.push(
      ['catalog', 'node-1', 'node-2', 'node-3'].map((name) => (port: number) => new PostgresServer({ name, dataDir: path.join(TEST_BASE_DIR, `${name}-w${w}`), port, user: 'postgres', password })),
    );
  }
  const cli = await resolveTemporalCli({ log: (l) => console.log(l) });
  const temporal = new TemporalDevServer({
    cliPath: cli.path,
    port: await freePort(),
    uiPort: 0,
    namespace: 'default',
    stateDir: path.join(TEST_BASE_DIR, 'temporal'),
  });
  const [fleets, , bundle] = await Promise.all([
    Promise.all(makers.map((fleet) => Promise.all(fleet.map(startOnFreePort)))),
    temporal.start(),
    bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH, logger: quietLogger }),
  ]);
  project.provide(
    'fleets',
    fleets.map((f) => ({
      baseDir: TEST_BASE_DIR,
      password,
      catalogAdminUrl: f[0]!.url(),
      nodes: f.slice(1).map((s) => ({ name: s.name, port: s.port, adminUrl: s.url() })),
      temporalAddress: temporal.address,
      temporalCliPath: cli.path,
    })),
  );
  project.provide('workflowBundleCode', bundle.code);
  const servers = fleets.flat();
  return async () => {
    await temporal.stop();
    await Promise.all(servers.map((s) => s.stop()));
    rmSync(TEST_BASE_DIR, { recursive: true, force: true });
  };
}

/**
 * Starts a server on a free port, and on another one when the port was taken between its choice and
 * the start: the Temporal dev server, starting beside the fleet, binds ports of its own, and once took
 * a node's (PORT_IN_USE, the whole run lost before any test).
 */
async function startOnFreePort(make: (port: number) => PostgresServer): Promise<PostgresServer> {
  for (let attempt = 1; ; attempt++) {
    const server = make(await freePort());
    try {
      await server.start();
      return server;
    } catch (err) {
      if ((err as { code?: string }).code !== 'PORT_IN_USE' || attempt >= 5) throw err;
    }
  }
}

const quietLogger = {
  log: () => undefined,
  trace: () => undefined,
  debug: () => undefined,
  info: () => undefined,
  warn: (message: string) => console.warn(message),
  error: (message: string) => console.error(message),
};
