/** `shardcast up`, `worker`, `migrate` and `provision-temporal`: running Shardcast itself. */
import type { Command } from 'commander';
import { ShardcastError } from '../src/errors.js';
import { listenAddress } from './args.js';
import { configOf, metricsListenOverrides, waitForSignal, withCatalog } from './program-config.js';

export function registerServerCommands(program: Command): void {
  program
    .command('up')
    .description('start the catalog, nodes, Temporal dev server (with UI), the workers and metrics; Ctrl-C stops everything')
    .action(async () => {
      const cfg = await configOf(program);
      const { createUpLog, startStack } = await import('./stack.js');
      const log = createUpLog(cfg.dataDir);
      const stack = await startStack(cfg, { embedded: true, log });
      log('shardcast: ready');
      await waitForSignal();
      // A second Ctrl-C (or npm forwarding the terminal's) must not cut the shutdown short.
      const again = (): void => log('shardcast: already stopping');
      process.on('SIGINT', again);
      process.on('SIGTERM', again);
      log('shardcast: stopping');
      await stack.stop();
      log('shardcast: stopped');
    });

  program
    .command('worker')
    .description('run the workers and metrics against an existing catalog and Temporal server (a real deployment)')
    .option('--metrics-listen <host:port>', 'serve /metrics here (default 127.0.0.1:9464, metrics.host and metrics.port); 0.0.0.0:9464 opens it to the network', listenAddress)
    .action(async (opts: { metricsListen?: string }) => {
      const cfg = await configOf(program, metricsListenOverrides(opts.metricsListen));
      if (!cfg.catalog.url) throw new ShardcastError('CONFIG', 'config: catalog.url: required for `shardcast worker` (or SHARDCAST_CATALOG_URL)');
      if (!cfg.temporal.address) throw new ShardcastError('CONFIG', 'config: temporal.address: required for `shardcast worker` (or SHARDCAST_TEMPORAL_ADDRESS)');
      const { startStack } = await import('./stack.js');
      const stack = await startStack(cfg, { embedded: false, log: (l) => console.log(l) });
      console.log('shardcast: ready');
      await waitForSignal();
      await stack.stop();
    });

  program
    .command('provision-temporal')
    .description('find or build the Temporal CLI (cached) and print its path')
    .action(async () => {
      const { resolveTemporalCli } = await import('../src/fleet/temporal-cli.js');
      const cli = await resolveTemporalCli({ log: (l) => console.error(l) });
      console.log(cli.path);
    });

  program
    .command('migrate')
    .description('apply pending catalog migrations')
    .action(async () => {
      await withCatalog(await configOf(program), async () => console.log('catalog is up to date'), { migrateFirst: true });
    });
}
