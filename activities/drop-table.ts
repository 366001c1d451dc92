import type pg from 'pg';
import type { NodePools } from '../src/catalog/node-pools.js';
import { beginTableDrop, dropTableOnShardNode, tableDropPlan, unregisterDroppedTable, type TableDropPlan } from '../src/catalog/drop-table.js';
import { run } from './failures.js';

/** The steps of `shardcast tables drop` (workflow dropDistributedTable); each safe to repeat (src/catalog/drop-table.ts). */
export function createTableDropActivities(deps: { catalog: pg.Pool; nodePools: NodePools }) {
  return {
    async planTableDrop(table: string): Promise<TableDropPlan> {
      return run(() => tableDropPlan(deps.catalog, deps.nodePools, table));
    },
    async beginTableDrop(tableId: number): Promise<{ mapVersion: number }> {
      return run(() => beginTableDrop(deps.catalog, tableId));
    },
    async dropTableOnShardNode(input: { tableId: number; nodeId: number }): Promise<{ schemasLeft: string[] }> {
      return run(() => dropTableOnShardNode(deps.catalog, deps.nodePools, input.tableId, input.nodeId));
    },
    async unregisterDroppedTable(tableId: number): Promise<{ groupDropped: boolean; mapVersion: number }> {
      return run(() => unregisterDroppedTable(deps.catalog, tableId));
    },
  };
}
