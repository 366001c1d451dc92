import type pg from 'pg';
import { NodePools } from '../catalog/node-pools.js';
import { CapacityUnknownError, gatherPlanInput, type NodeCapacity } from './inputs.js';
import { planRebalance } from './planner.js';
import type { PlanInput } from './types.js';

export interface NodeOutlook {
  capacity: number;
  basis: NodeCapacity['basis'];
  /** Its shards' load over the last 15 minutes ÷ its capacity. */
  observed: number;
  /** The highest predicted utilisation over the horizon, without a plan, at the planning bound. */
  predictedPeak: number;
}

/**
 * Per node name, as `shardcast status` shows it: the capacity the planner uses and where it came from,
 * the observed utilisation and the predicted peak. Empty when no node's capacity is known yet.
 */
export async function nodeOutlook(pool: pg.Pool, settings?: PlanInput['settings']): Promise<Map<string, NodeOutlook>> {
  const pools = new NodePools({ max: 1, applicationName: 'shardcast-cli' });
  try {
    const gathered = await gatherPlanInput(pool, pools, { settings });
    const plan = planRebalance(gathered.input);
    const out = new Map<string, NodeOutlook>();
    for (const n of gathered.input.nodes) {
      const mine = new Set(gathered.input.placements.filter((p) => p.nodeId === n.id).map((p) => p.shardId));
      const observed = gathered.input.shardForecasts.filter((f) => mine.has(f.shardId)).reduce((a, f) => a + f.observedLoad, 0);
      const predicted = plan.nodes.find((x) => x.nodeId === n.id)?.without ?? [];
      out.set(n.name, { capacity: n.capacity, basis: gathered.capacities.find((c) => c.node === n.name)!.basis, observed: observed / n.capacity, predictedPeak: Math.max(0, ...predicted) });
    }
    return out;
  } catch (err) {
    if (err instanceof CapacityUnknownError) return new Map();
    throw err;
  } finally {
    await pools.end();
  }
}
