import { Context } from '@temporalio/activity';
import type pg from 'pg';
import { workflowStateOf } from '../client/doctor.js';
import type { NodePools } from '../src/catalog/node-pools.js';
import { doctor, recordDoctorRun, summarize, type DoctorSummary } from '../src/movement/doctor.js';
import { run } from './failures.js';

export interface JanitorDeps {
  catalog: pg.Pool;
  catalogUrl: string;
  nodePools: NodePools;
}

export function createJanitorActivities(deps: JanitorDeps) {
  return {
    /** `shardcast doctor [--fix]` as an activity: the movement workflows' states come from the worker's own client. */
    async checkLeftovers(input: { fix: boolean }): Promise<DoctorSummary> {
      return run(async () => {
        const context = Context.current();
        const report = await doctor(
          { catalog: deps.catalog, catalogUrl: deps.catalogUrl, pools: deps.nodePools, workflowState: workflowStateOf(context.client) },
          { fix: input.fix, log: (line) => context.log.info(line) },
        );
        const summary = summarize(report);
        await recordDoctorRun(deps.catalog, summary);
        return summary;
      });
    },
  };
}
