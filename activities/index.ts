import type pg from 'pg';
import type { NodePools } from '../src/catalog/node-pools.js';
import type { TrainingThreads } from '../src/forecasting/thread-pool.js';
import type { GovernorSettings } from '../src/movement/governor.js';
import type { PlannerWeights } from '../src/planning/types.js';
import type { ProvisionerConfig } from '../src/planning/provisioner.js';
import { getNode } from '../src/catalog/nodes.js';
import { createTableOnNode, dropTableOnNode } from '../src/catalog/shard-ddl.js';
import { checkColumnDefinitions } from '../src/catalog/columns.js';
import { activateTable, describeRegisteredTable, mapVersion, registerTable, tableColumnsDdl, unregisterTable, type RegisteredTable, type TableSpec } from '../src/catalog/tables.js';
import { NotFoundError } from '../src/errors.js';
import { run } from './failures.js';
import { activityInfo } from '@temporalio/activity';
import { createCollectionActivities } from './collection.js';
import { createForecastingActivities } from './forecasting.js';
import { createJanitorActivities } from './janitor.js';
import { createMovementActivities } from './movement.js';
import { createPlanningActivities } from './planning.js';
import { createTableDropActivities } from './drop-table.js';
import { createRestoreActivities } from './restore.js';
import type { SessionLimits } from '../src/catalog/node-pools.js';
import { createRetentionActivities } from './retention.js';
import { createTemperatureActivities } from './temperature.js';

export interface ActivityDeps {
  /** The catalog database. */
  catalog: pg.Pool;
  catalogUrl: string;
  nodePools: NodePools;
  /** Pools of the cutover's connections (source and catalog), with statement_timeout; default nodePools. */
  cutoverPools?: NodePools;
  /** The copy governor's settings (config movement.governor) under each movement's own; default DEFAULT_GOVERNOR. */
  governor?: GovernorSettings;
  /** The threads series are trained in; its owner closes it. Default: the activities start their own (one thread, idle ones exit). */
  trainingThreads?: TrainingThreads;
  /** Where scale-out's new nodes come from (planning.provisioner; default standby: none are created). */
  provisioner?: ProvisionerConfig;
  /** The planner's weights and target utilisation (planning.*) for an isolated key's node; default the planner's defaults. */
  planner?: { weights: PlannerWeights; targetUtilisation: number };
  /** Session limits of the restore's own node connections (idle-in-transaction timeout, keepalives). */
  sessionLimits?: SessionLimits;
}

async function groupSchemasOnNode(deps: ActivityDeps, tableId: number, nodeId: number): Promise<{ table: RegisteredTable; schemas: string[]; columns: string }> {
  const table = await describeRegisteredTable(deps.catalog, tableId);
  const schemas = table.shards.filter((s) => s.nodeId === nodeId).map((s) => s.schema);
  return { table, schemas, columns: await tableColumnsDdl(deps.catalog, tableId) };
}

export function createActivities(deps: ActivityDeps) {
  return {
    ...createMovementActivities(deps),
    ...createCollectionActivities(deps),
    ...createForecastingActivities(deps),
    ...createJanitorActivities(deps),
    ...createPlanningActivities(deps),
    ...createTableDropActivities(deps),
    ...createRestoreActivities(deps),
    ...createRetentionActivities(deps),
    ...createTemperatureActivities(deps),
    async registerTable(spec: TableSpec): Promise<RegisteredTable> {
      // Also here, for a workflow started without the client library: the same parser check before any row is written.
      return run(async () => {
        await checkColumnDefinitions(spec.name, spec.columns);
        return registerTable(deps.catalog, spec, activityInfo().workflowExecution?.runId ?? activityInfo().activityId);
      });
    },

    async createTableOnNode(input: { tableId: number; nodeId: number }): Promise<{ schemas: number }> {
      return run(async () => {
        const node = await getNode(deps.catalog, input.nodeId);
        const { table, schemas, columns } = await groupSchemasOnNode(deps, input.tableId, input.nodeId);
        await createTableOnNode(deps.nodePools, node, { name: table.name, columns }, schemas);
        return { schemas: schemas.length };
      });
    },

    async dropTableOnNode(input: { tableId: number; nodeId: number; dropSchemas: boolean }): Promise<void> {
      return run(async () => {
        const node = await getNode(deps.catalog, input.nodeId);
        let found: { table: RegisteredTable; schemas: string[] };
        try {
          found = await groupSchemasOnNode(deps, input.tableId, input.nodeId);
        } catch (err) {
          if (err instanceof NotFoundError) return; // catalog rows already gone: nothing to find
          throw err;
        }
        await dropTableOnNode(deps.nodePools, node, { name: found.table.name }, found.schemas, input.dropSchemas);
      });
    },

    async activateTable(tableId: number): Promise<{ mapVersion: number }> {
      return run(async () => {
        await activateTable(deps.catalog, tableId);
        return { mapVersion: await mapVersion(deps.catalog) };
      });
    },

    async unregisterTable(tableId: number): Promise<void> {
      return run(() => unregisterTable(deps.catalog, tableId));
    },
  };
}
