/**
 * The plumbing every command shares: the configuration as the global options say, and a catalog pool
 * or a Temporal client for the length of a command. Nothing heavy is imported at the top: the
 * configuration's parser, pg and the Temporal client load when a command first needs them, so that
 * `shardcast --help` and the catalog-only commands start at once.
 */
import type { Command } from 'commander';
import type { Client } from '@temporalio/client';
import type pg from 'pg';
import type { Config } from '../src/config.js';
import { parseListenAddress } from '../src/listen-address.js';

/** The configuration as the global options of `program` (and a command's own flags, as key paths) say. */
export async function configOf(program: Command, overrides: Record<string, unknown> = {}): Promise<Config> {
  const [{ loadConfig, pgTlsOf }, { setPgTlsDefaults }] = await Promise.all([import('../src/config.js'), withoutFetchProbe(() => import('../src/catalog/pg-tls.js'))]);
  const opts = program.opts<{ config?: string; catalogUrl?: string; temporalAddress?: string }>();
  const cfg = loadConfig({ file: opts.config, overrides: { 'catalog.url': opts.catalogUrl, 'temporal.address': opts.temporalAddress, ...overrides } });
  // Every PostgreSQL connection the command opens uses the configured TLS.
  setPgTlsDefaults(pgTlsOf(cfg));
  return cfg;
}

/**
 * node-postgres asks, as it loads, whether it runs on Cloudflare Workers: where Node has no
 * `navigator` (Node 20), by making a fetch Response, which loads Node's fetch (undici), some 40 ms
 * of every command that connects. Node ≥ 21 has a navigator, whose user agent answers at once. So on
 * Node 20 pg (loaded by `load`) sees the navigator Node ≥ 21 would have, removed once it has loaded.
 */
export async function withoutFetchProbe<T>(load: () => Promise<T>): Promise<T> {
  if ('navigator' in globalThis) return load();
  Object.defineProperty(globalThis, 'navigator', { value: { userAgent: `Node.js/${process.versions.node.split('.')[0]}` }, configurable: true, writable: true });
  try {
    return await load();
  } finally {
    delete (globalThis as { navigator?: unknown }).navigator;
  }
}

/** `--metrics-listen host:port` as config overrides (metrics.host, metrics.port); none when not given. */
export function metricsListenOverrides(listen: string | undefined): Record<string, unknown> {
  const address = listen === undefined ? undefined : parseListenAddress(listen);
  return address ? { 'metrics.host': address.host, 'metrics.port': address.port } : {};
}

/** The configured Temporal frontend: `temporal.address`, else the embedded dev server's port on loopback. */
export function temporalAddressOf(cfg: Config): string {
  return cfg.temporal.address ?? `127.0.0.1:${cfg.temporal.port}`;
}

/** The catalog's URL: `catalog.url`, else the embedded catalog's. */
export async function catalogUrlOf(cfg: Config): Promise<string> {
  const { localUrl } = await import('../src/config.js');
  return cfg.catalog.url ?? localUrl(cfg, cfg.catalog.port, cfg.catalog.database);
}

/**
 * Runs `fn` with a pool on the catalog, closed afterwards. The catalog must be migrated (with
 * `migrateFirst`, it is migrated first); an unreachable one is a one-line error saying so.
 */
export async function withCatalog<T>(cfg: Config, fn: (pool: pg.Pool) => Promise<T>, options: { migrateFirst?: boolean } = {}): Promise<T> {
  const [{ newPgPool }, { assertMigrated, migrate }, { guardPool }, { redactDsn }, { ShardcastError, errorMessage }] = await Promise.all([
    import('../src/catalog/pg-tls.js'),
    import('../src/catalog/migrate.js'),
    import('../src/catalog/node-pools.js'),
    import('../src/catalog/nodes.js'),
    import('../src/errors.js'),
  ]);
  const url = await catalogUrlOf(cfg);
  const pool = guardPool(newPgPool(url, { max: 2, connectionTimeoutMillis: 5000, application_name: 'shardcast-cli' }));
  try {
    const client = await pool.connect().catch((err: unknown) => {
      throw new ShardcastError('CATALOG_UNAVAILABLE', `cannot connect to the catalog at ${redactDsn(url)}: ${errorMessage(err)} (is \`shardcast up\` running?)`, { cause: err });
    });
    try {
      if (options.migrateFirst) await migrate(client);
      else await assertMigrated(client);
    } finally {
      client.release();
    }
    return await fn(pool);
  } finally {
    await pool.end();
  }
}

/** Runs `fn` with a Temporal client for the configured server (its TLS and encryption options), closed afterwards. */
export async function withTemporal<T>(cfg: Config, fn: (client: Client) => Promise<T>): Promise<T> {
  const { connectTemporalClient } = await import('../client/connection.js');
  const client = await connectTemporalClient(cfg, temporalAddressOf(cfg));
  try {
    return await fn(client);
  } finally {
    await client.connection.close();
  }
}

/** Resolves on the first SIGINT or SIGTERM (the long-running commands stop on it). */
export function waitForSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      resolve(signal);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}
