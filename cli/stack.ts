import { appendFileSync, chmodSync, existsSync, mkdirSync } from 'node:fs';
import type { Server } from 'node:http';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { connectTemporalClient, dataConverterOf, temporalSecurityOptions, type TemporalSecurityOptions } from '../client/connection.js';
import { collectorWorkflowId, ensureCollector, ensureSchedules } from '../client/index.js';
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import pg from 'pg';
import { migrate } from '../src/catalog/migrate.js';
import { appCatalogUrl, appLogin, provisionAppRoleOnce } from '../src/catalog/app-role.js';
import { guardPool } from '../src/catalog/node-pools.js';
import { listNodes, type NewNode } from '../src/catalog/nodes.js';
import { registerNodesUnlessLocked } from '../src/catalog/startup.js';
import { localUrl, pgTlsOf, plannerSettings, type Config } from '../src/config.js';
import { newPgPool, setPgTlsDefaults } from '../src/catalog/pg-tls.js';
import { InvalidInputError, ShardcastError, errorMessage } from '../src/errors.js';
import { lockDataDir } from '../src/fleet/data-dir-lock.js';
import { embeddedPasswordFile, ensureEmbeddedPassword } from '../src/fleet/embedded-password.js';
import { PostgresServer } from '../src/fleet/postgres-server.js';
import { resolveTemporalCli } from '../src/fleet/temporal-cli.js';
import { TemporalDevServer } from '../src/fleet/temporal-server.js';
import { createMetricsRegistry, startMetricsServer } from '../src/metrics/metrics.js';
import { SEARCH_ATTRIBUTE_TYPES } from '../src/search-attributes.js';
import { startControlWorker, workerLogLine, type RunningWorker } from '../workers/control.js';

export interface Stack {
  catalogUrl: string;
  temporalAddress: string;
  stop(): Promise<void>;
}

export interface StackOptions {
  /** Start PostgreSQL and Temporal (the embedded default); false for `shardcast worker`. */
  embedded: boolean;
  log: (line: string) => void;
}

/**
 * Brings the system up: catalog, nodes, Temporal, the worker of every task queue, metrics. Each part
 * already running elsewhere (catalog.url, temporal.address) is used instead of started.
 */
export async function startStack(config: Config, options: StackOptions): Promise<Stack> {
  const { log } = options;
  const stops: Array<() => Promise<void>> = [];
  const stop = async (): Promise<void> => {
    for (const step of stops.reverse()) await step().catch((err: unknown) => log(`shardcast: while stopping: ${errorMessage(err)}`));
    stops.length = 0;
  };
  const dataDir = path.resolve(config.dataDir);
  // Every PostgreSQL connection of the stack (and the subscriptions its worker creates) uses the configured TLS.
  setPgTlsDefaults(pgTlsOf(config));
  // Keys (and, below, certificates) are read before anything starts: a bad one changes nothing.
  const dataConverter = dataConverterOf(config);
  const security = temporalSecurityOptions(config);
  try {
    if (options.embedded) {
      // Before anything is started or reaped: a live `up` on this directory makes this one refuse.
      const lock = lockDataDir(dataDir);
      stops.push(async () => lock.release());
    }
    // PostgreSQL: catalog and nodes, started in parallel.
    const servers: PostgresServer[] = [];
    const embeddedServers = options.embedded && (!config.catalog.url || config.nodes.count > 0);
    const credentials = { user: config.postgres.user, password: config.postgres.password ?? '' };
    if (embeddedServers && config.postgres.password === undefined) {
      const initialised = ['catalog', 'node-1'].some((name) => existsSync(path.join(dataDir, name, 'PG_VERSION')));
      const kept = ensureEmbeddedPassword(dataDir, initialised);
      credentials.password = kept.password;
      if (kept.legacy) {
        log(
          `shardcast: warning: the embedded PostgreSQLs of ${dataDir} use the old default password; change it (ALTER ROLE ${config.postgres.user} PASSWORD …) on each of them and write it to ${embeddedPasswordFile(dataDir)}`,
        );
      }
    }
    if (options.embedded && !config.catalog.url) {
      servers.push(new PostgresServer({ name: 'catalog', dataDir: path.join(dataDir, 'catalog'), port: config.catalog.port, ...credentials }));
    }
    const embeddedNodes: NewNode[] = [];
    if (options.embedded) {
      for (let i = 1; i <= config.nodes.count; i++) {
        const port = config.nodes.basePort + i - 1;
        const settings = { max_slot_wal_keep_size: config.nodes.maxSlotWalKeepSize };
        servers.push(new PostgresServer({ name: `node-${i}`, dataDir: path.join(dataDir, `node-${i}`), port, settings, ...credentials }));
        embeddedNodes.push({ name: `node-${i}`, dsn: localUrl(config, port, config.nodes.database), region: 'local', zone: `z${i}` });
      }
    }
    stops.push(async () => {
      await Promise.all(servers.map((s) => s.stop()));
    });
    await Promise.all(
      servers.map(async (server) => {
        await server.start();
        await server.ensureDatabase(server.name === 'catalog' ? config.catalog.database : config.nodes.database);
      }),
    );
    const catalogUrl = config.catalog.url ?? localUrl(config, config.catalog.port, config.catalog.database);
    log(line('catalog', redact(catalogUrl)));
    for (const node of embeddedNodes) log(line(node.name, redact(node.dsn)));

    const catalog = guardPool(newPgPool(catalogUrl, { max: 4, application_name: 'shardcast-up' }));
    stops.push(() => catalog.end());
    const client = await catalog.connect().catch((err: unknown) => {
      throw new ShardcastError('CATALOG_UNAVAILABLE', `cannot connect to the catalog at ${redact(catalogUrl)}: ${errorMessage(err)}`, { cause: err });
    });
    try {
      const { applied } = await migrate(client);
      if (applied.length > 0) log(line('migrations', `applied ${applied.join(', ')}`));
    } finally {
      client.release();
    }
    await registerNodes(catalog, [...embeddedNodes, ...config.nodes.register], log);
    if (config.app.provision) await provisionApp(catalog, config, catalogUrl, log);

    // Temporal.
    let temporalAddress = config.temporal.address;
    if (!temporalAddress) {
      if (!options.embedded) throw new ShardcastError('CONFIG', 'temporal.address is required when not running the embedded stack');
      const cli = await resolveTemporalCli({ log });
      const server = new TemporalDevServer({
        cliPath: cli.path,
        port: config.temporal.port,
        uiPort: config.temporal.uiPort,
        namespace: config.temporal.namespace,
        dbFile: path.join(dataDir, 'temporal.db'),
        stateDir: dataDir,
      });
      await server.start();
      stops.push(() => server.stop());
      temporalAddress = server.address;
      log(line('temporal', `${temporalAddress} (namespace ${config.temporal.namespace})`));
      log(line('temporal-ui', server.uiUrl ?? '(headless)'));
    } else {
      await ensureSearchAttributes(temporalAddress, config.temporal.namespace, security);
      log(line('temporal', `${temporalAddress} (namespace ${config.temporal.namespace}, external)`));
    }

    // Workers: one per task queue. The SDK's own log says only what needs attention.
    installQuietRuntime();
    const connection = await NativeConnection.connect({ address: temporalAddress, ...security });
    stops.push(() => connection.close());
    const worker: RunningWorker = await startControlWorker({
      connection,
      namespace: config.temporal.namespace,
      taskQueue: config.temporal.taskQueue,
      catalogUrl,
      dataConverter,
      provisioner: config.planning.provisioner,
      planner: plannerSettings(config),
      training: { threads: config.forecast.threads, backend: config.forecast.backend },
      governor: config.movement.governor,
      sessionLimits: {
        statementTimeoutMs: config.movement.statementTimeoutSeconds * 1000,
        idleInTransactionTimeoutMs: config.movement.idleInTransactionTimeoutSeconds * 1000,
        keepAliveMs: config.movement.keepAliveSeconds * 1000,
      },
    });
    stops.push(() => worker.shutdown());
    log(line('worker', `task queue ${config.temporal.taskQueue}`));
    const temporalClient = await connectTemporalClient(config, temporalAddress);
    stops.push(() => temporalClient.connection.close());
    await ensureCollector(
      { client: temporalClient, taskQueue: config.temporal.taskQueue },
      { intervalSeconds: config.collection.intervalSeconds, retentionDays: config.collection.retentionDays },
    );
    log(line('collector', `every ${config.collection.intervalSeconds} s, kept ${config.collection.retentionDays} days (workflow ${collectorWorkflowId()})`));
    const schedules = await ensureSchedules({ client: temporalClient, taskQueue: config.temporal.taskQueue }, config);
    const janitor = config.janitor.intervalMinutes > 0 ? `, janitor every ${config.janitor.intervalMinutes} min${config.janitor.fix ? '' : ' (count only)'}` : '';
    const retention = !config.retention.enabled
      ? ''
      : config.retention.intervalHours > 0
        ? `, retention every ${config.retention.intervalHours} h`
        : `, retention daily at ${config.retention.at} UTC`;
    const n = config.clock.compression;
    const replan =
      config.planning.mode === 'on' && config.planning.replanMinutes > 0
        ? `, replan every ${n === 1 ? `${config.planning.replanMinutes} min` : `${Math.max(1, Math.round((config.planning.replanMinutes * 60) / n))} s`}`
        : '';
    const forecasting = n === 1 ? `retrain daily at ${config.forecast.retrainAt} UTC, forecast hourly` : `retrain every ${86_400 / n} s, forecast every ${3600 / n} s (load clock ×${n})`;
    log(line('schedules', `${forecasting}${janitor}${retention}${replan} (${schedules.map((s) => s.scheduleId).join(', ')})`));

    if (config.metrics.port > 0) {
      const server: Server = await startMetricsServer(createMetricsRegistry(catalog), config.metrics.port, config.metrics.host);
      stops.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
      const host = config.metrics.host.includes(':') && !config.metrics.host.startsWith('[') ? `[${config.metrics.host}]` : config.metrics.host;
      log(line('metrics', `http://${host}:${config.metrics.port}/metrics`));
    }
    return { catalogUrl, temporalAddress, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * Registers the configured nodes without ever waiting on the shard map: a prepared catalog
 * transaction left by a cut-short cutover holds it until `shardcast doctor --fix` (or the janitor)
 * resolves it. Start-up then warns and goes on; missing nodes are registered at the next start.
 */
async function registerNodes(catalog: pg.Pool, nodes: NewNode[], log: (line: string) => void): Promise<void> {
  const client = await catalog.connect();
  try {
    const { preparedTransactions, notRegistered } = await registerNodesUnlessLocked(client, nodes, MAP_LOCK_TIMEOUT_MS);
    if (preparedTransactions.length > 0) {
      log(
        `shardcast: warning: the catalog holds prepared transaction(s) ${preparedTransactions.join(', ')} (a cutover cut short); ` +
          'map changes wait until they are resolved: run `shardcast doctor --fix` (the janitor schedule does it for closed movements)',
      );
    }
    for (const name of notRegistered) log(`shardcast: warning: node ${name}: not registered now: the shard map is locked (see above); it is registered at the next start`);
  } finally {
    client.release();
  }
}

/**
 * The application role (src/catalog/app-role.ts) on the catalog and every node that is not retired.
 * A node that does not answer is warned about and provisioned at the next start; a role of that
 * name with administrative rights stops the start (bad configuration).
 */
async function provisionApp(catalog: pg.Pool, config: Config, catalogUrl: string, log: (line: string) => void): Promise<void> {
  const login = appLogin(config);
  const client = await catalog.connect();
  try {
    // Like registerNodes: never wait long on the catalog's locks (a cut-short cutover's prepared transaction).
    await client.query(`set lock_timeout = ${MAP_LOCK_TIMEOUT_MS}`);
    const nodes = (await listNodes(client)).filter((n) => n.state !== 'retired');
    const { failed } = await provisionAppRoleOnce(client, login, nodes, { applicationName: 'shardcast-up', limits: { statementTimeoutMs: MAP_LOCK_TIMEOUT_MS * 2 } });
    for (const f of failed) log(`shardcast: warning: node ${f.node}: application role ${login.user} not provisioned now (${f.error}); tried again at the next start`);
    log(line('app', `${redact(appCatalogUrl(catalogUrl, login))}${login.passwordFile ? ` (password in ${login.passwordFile})` : ''}`));
  } catch (err) {
    if (err instanceof InvalidInputError) throw err;
    log(`shardcast: warning: application role ${login.user} not provisioned on the catalog now (${errorMessage(err)}); tried again at the next start`);
  } finally {
    await client.query('reset lock_timeout').catch(() => undefined);
    client.release();
  }
}

const MAP_LOCK_TIMEOUT_MS = 3000;

export const UP_LOG_FILE = 'shardcast-up.log';

/**
 * The lines `up` prints, also appended to the data directory's log file. The terminal's copy is
 * best effort: when stdout's reader is gone (`npm start | tee log` after Ctrl-C) writes fail with
 * EPIPE, and that must not end the process before it has stopped its servers.
 */
export function createUpLog(dataDir: string): (line: string) => void {
  mkdirSync(dataDir, { recursive: true });
  const file = path.join(path.resolve(dataDir), UP_LOG_FILE);
  // Private, like the servers' logs: what it says is for the operator.
  appendFileSync(file, '', { mode: 0o600 });
  chmodSync(file, 0o600);
  for (const stream of [process.stdout, process.stderr]) stream.on('error', () => undefined);
  return (text) => {
    try {
      appendFileSync(file, `${new Date().toISOString()} ${text}\n`);
    } catch {
      // the terminal still has it
    }
    if (!process.stdout.destroyed) process.stdout.write(`${text}\n`);
  };
}

/** Registers Shardcast's search attributes on an existing Temporal server where they are missing. */
async function ensureSearchAttributes(address: string, namespace: string, security: TemporalSecurityOptions): Promise<void> {
  const connection = await Connection.connect({ address, connectTimeout: 5000, ...security }).catch((err: unknown) => {
    throw new ShardcastError('TEMPORAL_UNAVAILABLE', `cannot reach Temporal at ${address}: ${errorMessage(err)}`, { cause: err });
  });
  try {
    const existing = await connection.operatorService.listSearchAttributes({ namespace });
    const missing = Object.entries(SEARCH_ATTRIBUTE_TYPES).filter(([name]) => !(name in (existing.customAttributes ?? {})));
    if (missing.length === 0) return;
    await connection.operatorService.addSearchAttributes({
      namespace,
      searchAttributes: Object.fromEntries(
        missing.map(([name, type]) => [name, type === 'Int' ? INDEXED_VALUE_TYPE_INT : INDEXED_VALUE_TYPE_KEYWORD]),
      ),
    });
  } finally {
    await connection.close();
  }
}

let runtimeInstalled = false;

function installQuietRuntime(): void {
  if (runtimeInstalled) return;
  Runtime.install({ logger: new DefaultLogger('WARN', (entry) => process.stderr.write(`${workerLogLine(entry)}\n`)) });
  runtimeInstalled = true;
}

// temporal.api.enums.v1.IndexedValueType
const INDEXED_VALUE_TYPE_KEYWORD = 2;
const INDEXED_VALUE_TYPE_INT = 3;

function line(component: string, address: string): string {
  return `${component.padEnd(12)} ${address}`;
}

function redact(url: string): string {
  return url.replace(/:\/\/([^:@/]+):[^@/]*@/, '://$1:***@');
}
