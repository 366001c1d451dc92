/** `shardcast status`: the fleet at a glance, from the catalog only (no Temporal). */
import type { Command } from 'commander';
import { configOf, withCatalog } from './program-config.js';

export function registerStatusCommands(program: Command): void {
  program
    .command('status')
    .description('nodes (capacity, observed and predicted utilisation, health), tables, shards per node and the map version')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }) => {
      const cfg = await configOf(program);
      const [{ listNodes, redactDsn }, { listShards, listTables, mapVersion }, { describeHealth, nodeHealth }, { nodeOutlook }, { plannerSettings }, { printTable }] = await Promise.all([
        import('../src/catalog/nodes.js'),
        import('../src/catalog/tables.js'),
        import('../src/profiling/collector.js'),
        import('../src/planning/outlook.js'),
        import('../src/config.js'),
        import('./format.js'),
      ]);
      await withCatalog(cfg, async (pool) => {
        const [nodes, tables, shards, version, health] = await Promise.all([listNodes(pool), listTables(pool), listShards(pool), mapVersion(pool), nodeHealth(pool)]);
        const perNode = new Map<string, number>();
        for (const s of shards) perNode.set(s.node, (perNode.get(s.node) ?? 0) + 1);
        const healthOf = new Map(health.map((h) => [h.node, h]));
        const outlook = await nodeOutlook(pool, plannerSettings(cfg));
        const nodeRows = nodes.map((n) => {
          const o = outlook.get(n.name);
          return {
            ...n,
            capacity: o?.capacity ?? n.capacity,
            capacityBasis: o?.basis ?? (n.capacity === null ? 'unknown' : 'override'),
            // as the table shows them: a calibrated capacity says so; '-' where none is known yet
            shown: o?.capacity !== undefined ? `${o.capacity.toPrecision(4)}${o.basis === 'override' ? '' : ` (${o.basis})`}` : n.capacity === null ? 'auto' : String(n.capacity),
            observedUtilisation: o?.observed ?? null,
            predictedPeakUtilisation: o?.predictedPeak ?? null,
            dsn: redactDsn(n.dsn),
            shards: perNode.get(n.name) ?? 0,
            reachable: healthOf.get(n.name)?.reachable ?? null,
            health: describeHealth(healthOf.get(n.name)),
          };
        });
        if (opts.json) {
          console.log(JSON.stringify({ mapVersion: version, nodes: nodeRows.map(({ shown: _, ...n }) => n), tables, shards: shards.length }, null, 2));
          return;
        }
        console.log(`map version ${version}\n`);
        const pctOf = (v: number | null) => (v === null ? '-' : `${Math.round(v * 100)}%`);
        printTable(
          'nodes',
          nodeRows.map((n) => ({ ...n, capacity: n.shown, util: pctOf(n.observedUtilisation), 'predicted peak': pctOf(n.predictedPeakUtilisation) })),
          ['name', 'state', 'region', 'zone', 'capacity', 'util', 'predicted peak', 'shards', 'health', 'dsn'],
        );
        console.log();
        printTable('tables', tables, ['name', 'group', 'method', 'keyColumn', 'keyType', 'shards', 'nodes', 'state']);
      });
    });
}
