import type { Command } from 'commander';
import { InvalidInputError, errorMessage } from '../src/errors.js';
import { POLICIES, type Policy } from '../src/simulation/policies.js';
import { wholeNumber } from './args.js';

interface SimulateOptions {
  trace?: string[];
  policy?: string;
  json?: boolean;
  days: number;
  warmupDays: number;
  seed: number;
  shardsPerTrace: number;
}

/** `shardcast simulate`: one policy over traces, on the simulated fleet (src/simulation). Bad input exits 2. */
export function registerSimulateCommands(program: Command): void {
  const cmd = program
    .command('simulate')
    .description('replay load traces through a rebalancing policy on a simulated fleet; the last line is JSON')
    .option('--trace <file>', 'CSV timestamp,value (step 1 min to 1 h); repeat for more traces, each drives a group of shards', (v: string, acc: string[] = []) => [...acc, v])
    .option('--policy <name>', `one of ${POLICIES.join(', ')}`)
    .option('--json', 'print only the JSON line')
    .option('--days <n>', 'simulated days, 1 to 365', wholeNumber(1, 365, 'days'), 4)
    .option('--warmup-days <n>', 'days of history before them (training data), 2 to 365', wholeNumber(2, 365, 'days'), 4)
    .option('--seed <n>', 'seed of the shards drawn from the traces, 0 to 2147483647', wholeNumber(0, 2 ** 31 - 1), 1)
    .option('--shards-per-trace <n>', 'shards each trace drives, 1 to 1000', wholeNumber(1, 1000, 'shards'), 4)
    .action(async (opts: SimulateOptions) => {
      try {
        if (!opts.trace || opts.trace.length === 0) throw new InvalidInputError('--trace FILE is required (one or more)');
        if (!opts.policy) throw new InvalidInputError(`--policy is required: one of ${POLICIES.join(', ')}`);
        if (!(POLICIES as readonly string[]).includes(opts.policy)) throw new InvalidInputError(`unknown policy ${JSON.stringify(opts.policy)}: expected one of ${POLICIES.join(', ')}`);
        const [{ loadConfig }, { initBackend }, { defaultOptions, describe, loadTrace, resultLine, simulate }] = await Promise.all([
          import('../src/config.js'),
          import('../src/forecasting/tf-backend.js'),
          import('../src/simulation/index.js'),
        ]);
        const cfg = loadConfig({ file: program.opts<{ config?: string }>().config });
        const options = defaultOptions(opts.policy as Policy, { trainingDays: cfg.forecast.trainingDays, budgetSeconds: cfg.forecast.budgetSeconds, searchSeconds: cfg.forecast.searchSeconds });
        options.days = opts.days;
        options.warmupDays = opts.warmupDays;
        options.group.seed = opts.seed;
        options.group.shardsPerTrace = opts.shardsPerTrace;
        const traces = [];
        for (const file of opts.trace) traces.push(await loadTrace(file));
        if (options.policy === 'predictive') await initBackend(cfg.forecast.backend);
        if (!opts.json) options.onProgress = (line) => console.log(line);
        const result = await simulate(traces, options);
        if (!opts.json) {
          console.log(`${result.shards} shards from ${traces.length} trace(s) on ${result.fleetNodes} nodes (static provisions ${result.staticNodes}), ${options.days} days after ${options.warmupDays} days of history`);
          if (result.trainings > 0) console.log(`forecasting: ${result.trainings} trainings in ${result.trainSeconds.toFixed(0)} s, ${result.forecasts} forecasts`);
          if (result.skippedSplits > 0) console.log(`${result.skippedSplits} planned splits not carried out (the simulator keeps shards whole)`);
          console.log(`${result.policy}: ${describe(result.metrics)}`);
        }
        console.log(JSON.stringify(resultLine(result)));
      } catch (err) {
        if (err instanceof InvalidInputError) cmd.error(`shardcast: error: ${errorMessage(err)}`, { exitCode: 2, code: 'shardcast.invalidInput' });
        throw err;
      }
    });
}
