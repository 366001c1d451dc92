import type { Command } from 'commander';
import { loadConfig, parseListenAddress, type Config } from '../src/config.js';

/** The configuration as the global options of `program` (and a command's own flags, as key paths) say, as cli/main.ts reads it. */
export function configOf(program: Command, overrides: Record<string, unknown> = {}): Config {
  const opts = program.opts<{ config?: string; catalogUrl?: string; temporalAddress?: string }>();
  return loadConfig({ file: opts.config, overrides: { 'catalog.url': opts.catalogUrl, 'temporal.address': opts.temporalAddress, ...overrides } });
}

/** `--metrics-listen host:port` as config overrides (metrics.host, metrics.port); none when not given. */
export function metricsListenOverrides(listen: string | undefined): Record<string, unknown> {
  const address = listen === undefined ? undefined : parseListenAddress(listen);
  return address ? { 'metrics.host': address.host, 'metrics.port': address.port } : {};
}
