/**
 * `shardcast`: the program, its global options and its error handling. Each command family registers
 * itself from its own module; those modules import only commander and light helpers at the top and load
 * what a command needs (pg, the Temporal client, TensorFlow.js, the worker) inside its action, so that
 * `--help` and the catalog-only commands start at once (see bench/cli.ts).
 */
import { Command, CommanderError } from 'commander';
import { registerAdviseCommands } from './advise.js';
import { registerBackupCommands } from './backup.js';
import { registerDoctorCommands } from './doctor.js';
import { registerForecastCommands } from './forecast.js';
import { registerHotCommands } from './hot.js';
import { registerMovementCommands } from './movements.js';
import { registerNodeCommands } from './nodes.js';
import { registerPlanCommands } from './plan.js';
import { registerRetentionCommands } from './retention.js';
import { registerSecurityCommands } from './security.js';
import { registerServerCommands } from './server.js';
import { registerSimulateCommands } from './simulate.js';
import { registerStatusCommands } from './status.js';
import { registerTableCommands } from './tables.js';
import { registerTemperatureCommands } from './temperature.js';

const program = new Command('shardcast')
  .description('Keeps a sharded PostgreSQL fleet balanced before load arrives.')
  .option('-c, --config <file>', 'configuration file (JSON or YAML); default shardcast.config.{json,yaml} or $SHARDCAST_CONFIG')
  .option('--catalog-url <url>', 'use this catalog database (default: catalog.url or $SHARDCAST_CATALOG_URL, else the embedded catalog)')
  .option('--temporal-address <host:port>', 'use this Temporal server (default: temporal.address or $SHARDCAST_TEMPORAL_ADDRESS, else the embedded dev server)')
  .option('-v, --verbose', 'print stack traces with errors')
  // Every command's help shows these too; a usage error is one line, as every other error.
  .configureHelp({ showGlobalOptions: true })
  .configureOutput({ outputError: (message, write) => write(oneLineError(message)) })
  .exitOverride();

/** Commander's usage errors as the CLI's others: `shardcast: error: …`, on one line, with the hint to --help. */
function oneLineError(message: string): string {
  const text = message.trim().replace(/\s*\n\s*/g, ' ');
  return text.startsWith('shardcast:') ? `${text}\n` : `shardcast: ${text} (see --help)\n`;
}

registerServerCommands(program);
registerStatusCommands(program);
registerNodeCommands(program);
registerTableCommands(program);
registerMovementCommands(program);
registerDoctorCommands(program);
registerForecastCommands(program);
registerPlanCommands(program);
registerSecurityCommands(program);
registerSimulateCommands(program);
registerBackupCommands(program);
registerAdviseCommands(program);
registerHotCommands(program);
registerTemperatureCommands(program);
registerRetentionCommands(program);

async function main(argv: string[]): Promise<number> {
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version exit 0; commander has already printed its own message.
      return err.exitCode;
    }
    const verbose = argv.includes('--verbose') || argv.includes('-v');
    const { errorMessage } = await import('../src/errors.js');
    console.error(`shardcast: error: ${errorMessage(err)}`);
    if (verbose && err instanceof Error && err.stack) console.error(err.stack);
    return 1;
  }
}

// Pools and gRPC channels can keep the event loop alive once a command has finished.
process.exit(await main(process.argv));
