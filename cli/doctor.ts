/** `shardcast doctor`: what movements left behind, and (with --fix) cleaning it. */
import type { Command } from 'commander';
import { ShardcastError } from '../src/errors.js';
import { catalogUrlOf, configOf, withCatalog, withTemporal } from './program-config.js';

export function registerDoctorCommands(program: Command): void {
  program
    .command('doctor')
    .description('find what movements left behind (slots, publications, subscriptions, prepared transactions, leases, schemas); --fix cleans those of closed workflows')
    .option('--json', 'machine-readable output')
    .option('--fix', 'clean leftovers of movements whose workflow is closed; finish or undo their half-done switches')
    .action(async (opts: { json?: boolean; fix?: boolean }) => {
      const cfg = await configOf(program);
      const [{ doctor, recordDoctorRun, summarize }, { NodePools }, { workflowStateOf }, { printDoctorReport }] = await Promise.all([
        import('../src/movement/doctor.js'),
        import('../src/catalog/node-pools.js'),
        import('../client/doctor.js'),
        import('./doctor-report.js'),
      ]);
      const catalogUrl = await catalogUrlOf(cfg);
      await withCatalog(cfg, async (pool) => {
        const pools = new NodePools({ max: 2, applicationName: 'shardcast-doctor' });
        try {
          const report = await withTemporal(cfg, (client) =>
            doctor({ catalog: pool, catalogUrl, pools, workflowState: workflowStateOf(client) }, { fix: opts.fix, log: opts.json ? undefined : (l) => console.error(l) }),
          );
          // The metric shows what the last look found, by the janitor or by hand.
          await recordDoctorRun(pool, summarize(report)).catch(() => undefined);
          if (opts.json) console.log(JSON.stringify(report, null, 2));
          else printDoctorReport(report, opts.fix ?? false);
          const left = report.leftovers.length + report.unreachable.length;
          if (left > 0) throw new ShardcastError('LEFTOVERS', `${left} leftover(s) remain${report.unreachable.length ? ' (or could not be checked)' : ''}`);
        } finally {
          await pools.end();
        }
      });
    });
}
