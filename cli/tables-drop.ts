import { createInterface } from 'node:readline/promises';
import type { Command } from 'commander';
import type { TableDropPlan } from '../src/catalog/drop-table.js';
import { InvalidInputError } from '../src/errors.js';
import { configOf, withCatalog, withTemporal } from './program-config.js';

/** What the drop removes, in one line, for the confirmation. */
function describeDrop(plan: TableDropPlan): string {
  const where = `${plan.shards} shard(s) on ${plan.nodes.map((n) => n.name).join(', ')}`;
  return plan.otherTables.length
    ? `table ${plan.table} in ${where}; its group ${plan.group} keeps ${plan.otherTables.join(', ')}`
    : `table ${plan.table}, the last of group ${plan.group}: its ${where} go with it`;
}

/** Asks on the terminal for the table's name; anything else cancels. */
async function confirmed(plan: TableDropPlan): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stdout });
  try {
    const answer = await rl.question(`This drops ${describeDrop(plan)}, with every row. Type the table name to confirm: `);
    return answer.trim() === plan.table;
  } finally {
    rl.close();
  }
}

/** `shardcast tables drop <name>`: a workflow, with the movements' approval policy; confirmation or --yes. */
export function registerTableDropCommand(program: Command, tables: Command): void {
  tables
    .command('drop')
    .description("drop a distributed table on every node and from the catalog (a Temporal workflow, with the movements' approval policy)")
    .argument('<name>', 'the table')
    .option('--yes', 'do not ask for confirmation (required when not on a terminal)')
    .option('--no-wait', 'start the workflow and return')
    .option('--json', 'machine-readable output')
    .action(async (name: string, opts: { yes?: boolean; wait: boolean; json?: boolean }) => {
      const [{ clientOptionsFromConfig, dropTableResult, startDropTable }, { tableDropPlan }, { movementSettings }] = await Promise.all([
        import('../client/index.js'),
        import('../src/catalog/drop-table.js'),
        import('../src/config.js'),
      ]);
      const cfg = await configOf(program);
      // Checked first, so that an unknown table or a running movement is one line and no workflow.
      const plan = await withCatalog(cfg, (pool) => tableDropPlan(pool, undefined, name));
      if (!opts.yes) {
        if (!process.stdin.isTTY) throw new InvalidInputError(`refusing to drop table ${name} without --yes (no terminal to ask on)`);
        if (!(await confirmed(plan))) throw new InvalidInputError(`not confirmed: table ${name} was not dropped`);
      }
      const m = movementSettings(cfg);
      const policy = {
        approvalRequired: m.approvalRequired,
        ...(m.approvalOverBytes !== undefined ? { approvalOverBytes: m.approvalOverBytes } : {}),
        ...(m.approvalHoursUtc ? { approvalHoursUtc: m.approvalHoursUtc } : {}),
      };
      await withTemporal(cfg, async (client) => {
        const handle = await startDropTable(clientOptionsFromConfig(client, cfg), name, policy);
        if (!opts.json) console.log(`started ${handle.workflowId}: drop ${describeDrop(plan)}`);
        if (m.approvalRequired && !opts.json) console.log(`it waits for approval: shardcast approve ${handle.workflowId} (or reject)`);
        if (!opts.wait) return;
        const r = await dropTableResult(handle);
        if (opts.json) console.log(JSON.stringify(r, null, 2));
        else console.log(`dropped ${r.table}${r.groupDropped ? ` and its group ${r.group}` : ''}: ${r.shards} shard(s) on ${r.nodes.join(', ')} (map version ${r.mapVersion})${r.schemasLeft.length ? `; schemas left (they hold other objects): ${r.schemasLeft.join(', ')}` : ''}`);
      });
    });
}
