/**
 * `shardcast`: the program, its global options and its error handling. Each command family registers
 * itself from its own module; those modules import only commander and light helpers at the top and load
 * what a command needs (pg, the Temporal client, TensorFlow.js, the worker) inside its action, so that
 * `--help` and the catalog-only commands start at once (see bench/cli.ts).
 */
import { Command, CommanderError } from 'commander';
import { registerDoctorCommands } from './doctor.js';
import { registerForecastCommands } from './forecast.js';
import { registerMovementCommands } from './movements.js';
import { registerNodeCommands } from './nodes.js';
import { registerPlanCommands } from './plan.js';
import { registerSecurityCommands } from './security.js';
import { registerServerCommands } from './server.js';
import { registerSimulateCommands } from './simulate.js';
import { registerStatusCommands } from './status.js';
import { registerTableCommands } from './tables.js';

const program = new Command('shardcast')
  .description('Keeps a sharded PostgreSQL fleet balanced before load arrives.')
  .option('-c, --config <file>', 'configuration file (JSON or YAML); default shardcast.config.{json,yaml} or $SHARDCAST_CONFIG')
  .option('--catalog-url <url>', 'use this catalog database instead of the embedded one')
  .option('--temporal-address <host:port>', 'use this Temporal server instead of the embedded dev server')
  .option('-v, --verbose', 'print stack traces with errors')
  .showHelpAfterError('(add --help for usage)')
  .exitOverride();

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
