/** `shardcast tables …` and `shardcast shards list`: distributed tables and their shards. */
import { registerTableDropCommand } from './tables-drop.js';
import { Option, type Command } from 'commander';
import { MAX_SHARDS_PER_TABLE } from '../src/catalog/limits.js';
import type { TableSpec } from '../src/catalog/tables.js';
import { list, wholeNumber } from './args.js';
import { configOf, withCatalog, withTemporal } from './program-config.js';

export function registerTableCommands(program: Command): void {
  const tables = program.command('tables').description('distributed tables');
  registerTableDropCommand(program, tables);
  tables
    .command('create')
    .description('distribute a table: one schema per shard on its node (runs as a Temporal workflow)')
    .argument('<name>', 'table name: lower-case letters, digits and _')
    .requiredOption('--columns <definitions>', 'column and constraint definitions, as inside create table t (...)')
    .requiredOption('--key <column>', 'shard key column')
    .addOption(new Option('--method <method>', 'hash or range (a new colocation group)').choices(['hash', 'range']))
    .option('--shards <n>', `hash: number of shards, 1 to ${MAX_SHARDS_PER_TABLE} (default 8)`, wholeNumber(1, MAX_SHARDS_PER_TABLE, 'shards'))
    .option('--bounds <b0,b1,...>', 'range: ascending bounds; shards are [b0,b1), [b1,b2), ...', list)
    .option('--colocate-with <table>', 'join the colocation group of this existing table')
    .option('--nodes <n1,n2,...>', 'place the new group on these nodes (default: every active node)', list)
    .option('--json', 'machine-readable output')
    .action(
      async (
        name: string,
        opts: { columns: string; key: string; method?: 'hash' | 'range'; shards?: number; bounds?: string[]; colocateWith?: string; nodes?: string[]; json?: boolean },
      ) => {
        const spec: TableSpec = {
          name,
          columns: opts.columns,
          shardKey: opts.key,
          method: opts.method ?? (opts.bounds ? 'range' : opts.colocateWith ? undefined : 'hash'),
          shardCount: opts.shards,
          rangeBounds: opts.bounds,
          colocateWith: opts.colocateWith,
          nodes: opts.nodes,
        };
        const cfg = await configOf(program);
        const { clientOptionsFromConfig, createDistributedTable } = await import('../client/index.js');
        await withCatalog(cfg, () =>
          withTemporal(cfg, async (client) => {
            const result = await createDistributedTable(clientOptionsFromConfig(client, cfg), spec);
            if (opts.json) console.log(JSON.stringify(result, null, 2));
            else console.log(`created ${result.table}: ${result.shards} shard(s) on ${result.nodes.join(', ')} (group ${result.group}, map version ${result.mapVersion})`);
          }),
        );
      },
    );
  tables
    .command('list')
    .description('list distributed tables')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }) => {
      const [{ listTables }, { printTable }] = await Promise.all([import('../src/catalog/tables.js'), import('./format.js')]);
      await withCatalog(await configOf(program), async (pool) => {
        const rows = await listTables(pool);
        if (opts.json) console.log(JSON.stringify(rows, null, 2));
        else printTable('tables', rows, ['name', 'group', 'method', 'keyColumn', 'keyType', 'shards', 'nodes', 'state']);
      });
    });

  program
    .command('shards')
    .description('shards')
    .command('list')
    .description('list shards with their node and range')
    .option('--table <name>', 'only the shards of this table')
    .option('--node <name>', 'only the shards on this node')
    .option('--json', 'machine-readable output')
    .action(async (opts: { table?: string; node?: string; json?: boolean }) => {
      const [{ listShards }, { printTable }] = await Promise.all([import('../src/catalog/tables.js'), import('./format.js')]);
      await withCatalog(await configOf(program), async (pool) => {
        const rows = (await listShards(pool, opts)).map((s) => ({ ...s, tables: s.tables.join(',') }));
        if (opts.json) console.log(JSON.stringify(rows, null, 2));
        else printTable('shards', rows, ['shardId', 'schema', 'group', 'tables', 'node', 'range']);
      });
    });
}
