import type { Command } from 'commander';
import type { Client } from '@temporalio/client';
import { connectTemporal } from '../client/index.js';
import { setPgTlsDefaults } from '../src/catalog/pg-tls.js';
import { loadConfig, parseListenAddress, pgTlsOf, type Config } from '../src/config.js';

/** The configuration as the global options of `program` (and a command's own flags, as key paths) say, as cli/main.ts reads it. */
export function configOf(program: Command, overrides: Record<string, unknown> = {}): Config {
  const opts = program.opts<{ config?: string; catalogUrl?: string; temporalAddress?: string }>();
  const cfg = loadConfig({ file: opts.config, overrides: { 'catalog.url': opts.catalogUrl, 'temporal.address': opts.temporalAddress, ...overrides } });
  // Every PostgreSQL connection the command opens uses the configured TLS.
  setPgTlsDefaults(pgTlsOf(cfg));
  return cfg;
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

/** Runs `fn` with a Temporal client for the configured server (its TLS and encryption options), closed afterwards. */
export async function withTemporal<T>(cfg: Config, fn: (client: Client) => Promise<T>): Promise<T> {
  const client = await connectTemporal(temporalAddressOf(cfg), cfg.temporal.namespace, cfg);
  try {
    return await fn(client);
  } finally {
    await client.connection.close();
  }
}
