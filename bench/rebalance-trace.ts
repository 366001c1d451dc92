import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { parseConfig } from '../src/config.js';
import { initBackend } from '../src/forecasting/tf-backend.js';
import { EPOCH_MS } from '../src/simulation/forecaster.js';
import { defaultOptions, loadTrace, POLICIES, simulate, type Policy, type Trace } from '../src/simulation/index.js';
import { productionForecaster, TRACES, TUNING_TRACES, withBenchPlanner } from './rebalance.js';

/**
 * `npm run bench -- rebalance-trace`: one simulated fleet under one policy, printed plan by plan
 * (diagnostics for the rebalance bench, not a figure): per round the active and draining nodes, the
 * active nodes' predicted peaks with the plan, the plan's actions and its notes about capacity; every
 * move that starts this round inside a peak with its reason; with `--moves`, every planned move and
 * its start. The last line is the run's metrics as JSON.
 */
export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      traces: { type: 'string', default: TRACES },
      only: { type: 'string', default: TUNING_TRACES.join(',') },
      policy: { type: 'string', default: 'predictive' },
      days: { type: 'string', default: '1' },
      moves: { type: 'boolean', default: false },
    },
  });
  const policy = values.policy as Policy;
  if (!POLICIES.includes(policy) || policy === 'static' || policy === 'reactive') throw new Error(`--policy must be predictive or oracle (the planner's policies), got ${values.policy}`);
  const days = Number(values.days);
  if (!Number.isInteger(days) || days < 1) throw new Error(`--days must be a whole number ≥ 1, got ${values.days}`);
  const config = parseConfig({});
  if (policy === 'predictive') await initBackend(config.forecast.backend);
  const traces: Trace[] = [];
  for (const f of values.only.split(',')) traces.push(await loadTrace(join(values.traces, f)));
  const options = { ...defaultOptions(policy, productionForecaster(config)), days, warmupDays: 4 };
  options.planner = withBenchPlanner(options.planner);
  const r = await simulate(traces, {
    ...options,
    onPlan: (now, plan, fleet) => {
      const secondsOf = (iso: string) => (Date.parse(iso) - EPOCH_MS) / 1000;
      const hhmm = new Date(now * 1000).toISOString().slice(11, 16);
      const active = fleet.nodes.filter((n) => n.state === 'active');
      const draining = fleet.nodes.filter((n) => n.state === 'draining').map((n) => n.name);
      const peaks = plan.nodes.filter((n) => fleet.node(n.nodeId).state === 'active').map((n) => `${Math.round(100 * Math.max(...n.with))}%`);
      const notes = plan.notes.filter((n) => /drain|low|fit|over target/i.test(n));
      console.log(`${hhmm} active ${active.length} [${peaks.join(' ')}]${draining.length ? ` draining ${draining.join(',')}` : ''} ${plan.actions.map((a) => a.kind).join(',')}${notes.length ? ` | ${notes.join(' | ')}` : ''}`);
      for (const a of plan.actions) {
        if (a.kind !== 'move') continue;
        const startsIn = secondsOf(a.startAt) - now;
        if (a.startsInPeak && startsIn < 300) console.log(`    in a peak: ${a.reason}`);
        else if (values.moves) console.log(`    move ${a.shardIds.join(',')} ${a.fromNodeId}→${a.toNodeId} in ${Math.round(startsIn)} s: ${a.reason}`);
      }
    },
  });
  console.log(JSON.stringify({ policy, ...r.metrics, idealNodeHours: r.idealNodeHours, fleetNodes: r.fleetNodes, staticNodes: r.staticNodes, shards: r.shards }));
}
