import type pg from 'pg';
import { pruneWorkloadProfile } from '../src/profiling/hot.js';
import { pruneRegionAccesses } from '../src/profiling/region-accesses.js';
import type { NodePools } from '../src/catalog/node-pools.js';
import { listNodes } from '../src/catalog/nodes.js';
import { catalogNow } from '../src/catalog/startup.js';
import { collectNode, ensureStatementStats, type CollectResult } from '../src/profiling/collector.js';
import { dropExpiredPartitions, ensurePartitions } from '../src/profiling/partitions.js';
import { run } from './failures.js';

export interface CollectionDeps {
  catalog: pg.Pool;
  nodePools: NodePools;
}

export function createCollectionActivities(deps: CollectionDeps) {
  const statementsReady = new Set<number>();
  return {
    /** One sample of every active node, in parallel; a node that fails is reported, not fatal. */
    async collectSamples(): Promise<CollectResult[]> {
      return run(async () => {
        await ensurePartitions(deps.catalog, await catalogNow(deps.catalog));
        const nodes = (await listNodes(deps.catalog)).filter((n) => n.state === 'active' || n.state === 'draining');
        return Promise.all(
          nodes.map(async (node) => {
            if (!statementsReady.has(node.id) && (await ensureStatementStats(deps.nodePools, node))) statementsReady.add(node.id);
            return collectNode(deps.catalog, deps.nodePools, node);
          }),
        );
      });
    },

    /** Daily partitions ahead, expired ones dropped. */
    async maintainPartitions(retentionDays: number): Promise<{ created: string[]; dropped: string[] }> {
      return run(async () => {
        const now = await catalogNow(deps.catalog);
        const created = await ensurePartitions(deps.catalog, now, 2);
        const dropped = await dropExpiredPartitions(deps.catalog, now, retentionDays);
        // The routers' region counts are kept as long (migration 0014: a worker ahead of its catalog goes without).
        await pruneRegionAccesses(deps.catalog, retentionDays).catch(() => 0);
        // And the routers' workload profile (migration 0019).
        await pruneWorkloadProfile(deps.catalog, retentionDays).catch(() => 0);
        return { created, dropped };
      });
    },
  };
}
