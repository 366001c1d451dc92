/**
 * `shardcast plan`, `shardcast rebalance …` and the node life-cycle commands (`nodes drain`,
 * `nodes remove`, `nodes activate`, `nodes set-capacity`): the planner (DESIGN §5) and the workflow
 * that carries its plans out.
 */
import { writeFile } from 'node:fs/promises';
import { InvalidArgumentError, type Command } from 'commander';
import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, type WorkflowHandle } from '@temporalio/client';
import { clientOptionsFromConfig, rebalanceWorkflowId, toShardcastError } from '../client/index.js';
import { NodePools } from '../src/catalog/node-pools.js';
import { getNodeByName, runningMovementOn, setNodeCapacity, setNodeState, shardsOnNode } from '../src/catalog/nodes.js';
import { movementSettings, plannerSettings, type Config } from '../src/config.js';
import { AlreadyExistsError, InvalidInputError } from '../src/errors.js';
import { CapacityUnknownError, gatherPlanInput, type NodeCapacity } from '../src/planning/inputs.js';
import { planRebalance } from '../src/planning/planner.js';
import { setRebalancePaused, storedPlans, type StoredPlan } from '../src/planning/store.js';
import type { Plan, PlanInput } from '../src/planning/types.js';
import type pg from 'pg';
import { CONTROL_TASK_QUEUE } from '../workers/control.js';
import { pauseSignal, rebalanceProgressQuery, resumeSignal, type RebalanceInput, type RebalanceResult } from '../workflows/messages.js';
import { assertDirectoryOf, withCatalog } from './forecast.js';
import { configOf, withTemporal } from './program-config.js';
import { positiveInt } from './args.js';
import { printTable } from './format.js';
import { svgToPng } from './png.js';
import { assertValidInput, rebalanceInputSchema } from '../src/inputs.js';

const pct = (v: number) => `${Math.round(v * 100)}%`;

/** The plan as text: the outlook per node, the actions with their reasons, and the notes. */
export function printPlan(plan: Plan, names: Map<number, string>): void {
  console.log(`plan as of ${plan.asOf}: ${plan.horizonSteps} steps of ${plan.stepSeconds / 60} min, ${plan.bound} bound, target ${pct(plan.targetUtilisation)}`);
  console.log(`required nodes: ${plan.requiredNodes}; ${plan.feasible ? 'every node under target at every step with the plan' : 'NOT feasible: some node stays over target (see notes)'}`);
  console.log(`move durations: ${plan.moveDuration.basis}\n`);
  printTable(
    'nodes',
    plan.nodes.map((n) => ({ node: n.name, state: n.state, capacity: n.capacity.toPrecision(4), 'peak now': pct(Math.max(0, ...n.without)), 'peak with plan': pct(Math.max(0, ...n.with)) })),
    ['node', 'state', 'capacity', 'peak now', 'peak with plan'],
  );
  console.log();
  if (plan.actions.length === 0) console.log('no action planned');
  for (const a of plan.actions) {
    const what = a.kind === 'move' || a.kind === 'split' || a.kind === 'merge' ? `${a.kind} shard ${a.shardIds.join(', ')}` : `${a.kind} ${names.get(a.nodeId) ?? a.nodeId}`;
    console.log(`${a.id}  ${what}  start ${a.startAt.slice(11, 16)} (by ${a.startBy.slice(11, 16)})${a.after.length ? ` after ${a.after.join(', ')}` : ''}`);
    console.log(`    ${a.reason}`);
    console.log(`    benefit: ${a.benefit.summary}`);
  }
  if (plan.fallbackSeries.length) console.log(`\nplanned on observed load (no trustworthy forecast): ${plan.fallbackSeries.join(', ')}`);
  for (const n of plan.notes) console.log(`note: ${n}`);
}

/** Per-node predicted utilisation over the horizon, without the plan (dashed) and with it (solid), and the target. */
export function planSvg(plan: Plan, width = 800, height = 360): string {
  const pad = { l: 50, r: 130, t: 30, b: 30 };
  const w = width - pad.l - pad.r;
  const h = height - pad.t - pad.b;
  const hi = Math.max(1, plan.targetUtilisation, ...plan.nodes.flatMap((n) => [...n.without, ...n.with])) * 1.05;
  const x = (i: number) => pad.l + (plan.horizonSteps > 1 ? (i / (plan.horizonSteps - 1)) * w : 0);
  const y = (v: number) => pad.t + h - (v / hi) * h;
  const colours = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
  const line = (values: number[]) => values.map((v, i) => `${i ? 'L' : 'M'}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${pad.l}" y="18">predicted utilisation per node, ${plan.bound} bound, from ${plan.asOf.slice(0, 16)} UTC (dashed: without the plan)</text>`,
    `<line x1="${pad.l}" x2="${pad.l + w}" y1="${y(plan.targetUtilisation)}" y2="${y(plan.targetUtilisation)}" stroke="red" stroke-width="1"/>`,
    `<text x="${pad.l + w + 4}" y="${y(plan.targetUtilisation) + 4}" fill="red">target ${pct(plan.targetUtilisation)}</text>`,
    `<line x1="${pad.l}" x2="${pad.l}" y1="${pad.t}" y2="${pad.t + h}" stroke="black"/>`,
    `<line x1="${pad.l}" x2="${pad.l + w}" y1="${pad.t + h}" y2="${pad.t + h}" stroke="black"/>`,
    `<text x="4" y="${y(hi / 1.05) + 4}">${pct(hi / 1.05)}</text><text x="4" y="${pad.t + h}">0%</text>`,
  ];
  plan.nodes.forEach((n, i) => {
    const c = colours[i % colours.length]!;
    parts.push(`<path d="${line(n.without)}" fill="none" stroke="${c}" stroke-width="1.5" stroke-dasharray="5,4"/>`);
    parts.push(`<path d="${line(n.with)}" fill="none" stroke="${c}" stroke-width="2"/>`);
    parts.push(`<text x="${pad.l + w + 4}" y="${pad.t + 16 + 16 * i}" fill="${c}">${n.name}</text>`);
  });
  for (let i = 0; i < plan.horizonSteps; i += Math.max(1, Math.floor(plan.horizonSteps / 6))) {
    const t = new Date(Date.parse(plan.asOf) + i * plan.stepSeconds * 1000).toISOString().slice(11, 16);
    parts.push(`<text x="${x(i) - 15}" y="${pad.t + h + 18}">${t}</text>`);
  }
  parts.push('</svg>');
  return parts.join('\n');
}

/**
 * Per node, as `status` shows it: the capacity the planner uses and where it came from, the observed
 * utilisation (its shards' load over the last 15 minutes) and the predicted peak over the horizon
 * (at the planning bound). Empty when no node's capacity is known yet.
 */
export async function nodeOutlook(pool: pg.Pool, settings?: PlanInput['settings']): Promise<Map<string, { capacity: number; basis: NodeCapacity['basis']; observed: number; predictedPeak: number }>> {
  const pools = new NodePools({ max: 1, applicationName: 'shardcast-cli' });
  try {
    const gathered = await gatherPlanInput(pool, pools, { settings });
    const plan = planRebalance(gathered.input);
    const out = new Map<string, { capacity: number; basis: NodeCapacity['basis']; observed: number; predictedPeak: number }>();
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

function printStored(p: StoredPlan): void {
  console.log(`plan ${p.id} (${p.trigger}${p.dryRun ? ', dry run' : ''}) made ${p.createdAt.toISOString()}${p.workflowId ? ` by ${p.workflowId}` : ''}`);
  printTable(
    'actions',
    p.actions.map((a) => ({ action: a.actionId, kind: a.kind, start: a.startAt.toISOString().slice(11, 16), state: a.state, workflow: a.workflowId ?? '', outcome: a.outcome ?? '' })),
    ['action', 'kind', 'start', 'state', 'workflow', 'outcome'],
  );
}

/** Runs `fn` with the client options of the configured Temporal server (see withTemporal). */
function withClient<T>(cfg: Config, fn: (options: ReturnType<typeof clientOptionsFromConfig>) => Promise<T>): Promise<T> {
  return withTemporal(cfg, (client) => fn(clientOptionsFromConfig(client, cfg)));
}

/** Starts a rebalance run (the rebalancer's own id, or a drain's) and, with `wait`, prints its outcome. */
async function startRebalance(cfg: Config, idOf: (prefix: string) => string, input: Omit<RebalanceInput, 'movement' | 'settings' | 'workflowIdPrefix'>, wait: boolean): Promise<void> {
  await withClient(cfg, async (options) => {
    const workflowId = idOf(options.workflowIdPrefix ?? '');
    const full: RebalanceInput = { ...input, movement: movementSettings(cfg), settings: plannerSettings(cfg), ...(options.workflowIdPrefix ? { workflowIdPrefix: options.workflowIdPrefix } : {}) };
    assertValidInput(rebalanceInputSchema, full);
    let handle: WorkflowHandle;
    try {
      handle = await options.client.workflow.start('rebalance', {
        taskQueue: options.taskQueue ?? CONTROL_TASK_QUEUE,
        workflowId,
        args: [full],
        staticSummary: input.drainNode ? `drain ${input.drainNode}${input.dryRun ? ' (dry run)' : ''}` : `rebalance${input.dryRun ? ' (dry run)' : ''}, started by an operator`,
      });
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) throw new AlreadyExistsError(`${workflowId} is already running: follow it with \`shardcast rebalance status\`, or cancel it`);
      throw err;
    }
    console.log(`started ${workflowId}`);
    if (!wait) return;
    const r = (await handle.result().catch((err: unknown) => Promise.reject(toShardcastError(err)))) as RebalanceResult;
    if (r.skipped) console.log(r.skipped);
    if (r.planId !== null) console.log(`plan ${r.planId}`);
    for (const a of r.actions) console.log(`${a.id}  ${a.state}  ${a.outcome}`);
    for (const n of r.notes) console.log(`note: ${n}`);
  });
}

/** Signals the running rebalancer, if there is one (the catalog's switch holds for runs to come). */
async function signalRebalancer(cfg: Config, signal: typeof pauseSignal | typeof resumeSignal): Promise<boolean> {
  return withClient(cfg, async (options) => {
    try {
      await options.client.workflow.getHandle(rebalanceWorkflowId(options.workflowIdPrefix)).signal(signal);
      return true;
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return false;
      throw err;
    }
  });
}

function capacityArg(value: string): number | null {
  if (value === 'auto') return null;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive number of load units, or "auto"');
  return n;
}

export function registerPlanCommands(program: Command, nodes: Command): void {
  program
    .command('plan')
    .description('plan now on the latest forecasts (nothing is stored or started): actions with their reasons, per-node outlook')
    .option('--json', 'the plan as JSON')
    .option('--png <file>', 'picture: per-node predicted utilisation over the horizon, with and without the plan')
    .action(async (opts: { json?: boolean; png?: string }) => {
      const cfg = configOf(program);
      if (opts.png) await assertDirectoryOf(opts.png, '--png');
      await withCatalog(cfg, async (pool) => {
        const pools = new NodePools({ max: 1, applicationName: 'shardcast-cli' });
        try {
          const gathered = await gatherPlanInput(pool, pools, { settings: plannerSettings(cfg) });
          const plan = planRebalance(gathered.input);
          plan.notes.push(...gathered.notes);
          if (opts.png) await writeFile(opts.png, (await svgToPng(planSvg(plan))).png);
          if (opts.json) console.log(JSON.stringify({ ...plan, capacities: gathered.capacities }, null, 2));
          else {
            printPlan(plan, new Map(gathered.input.nodes.map((n) => [n.id, n.name])));
            for (const c of gathered.capacities) console.log(`capacity ${c.node}: ${c.basis}: ${c.estimate.detail}`);
            if (opts.png) console.log(`wrote ${opts.png}`);
          }
        } finally {
          await pools.end();
        }
      });
    });

  const rebalance = program
    .command('rebalance')
    .description('plan now and carry the plan out (movements start at their planned times; their approval policy applies)')
    .option('--dry-run', 'plan and store the plan, start nothing')
    .option('--no-wait', 'start it and return')
    .action(async (opts: { dryRun?: boolean; wait: boolean }) => {
      const cfg = configOf(program);
      await startRebalance(cfg, rebalanceWorkflowId, { dryRun: opts.dryRun ?? false, trigger: 'operator' }, opts.wait);
    });
  for (const [name, paused, description] of [
    ['pause', true, 'no planned action starts until resume (running movements go on); holds for the runs to come too'],
    ['resume', false, 'planned actions start again'],
  ] as const) {
    rebalance
      .command(name)
      .description(description)
      .action(async () => {
        const cfg = configOf(program);
        await withCatalog(cfg, (pool) => setRebalancePaused(pool, paused));
        const signalled = await signalRebalancer(cfg, paused ? pauseSignal : resumeSignal);
        console.log(`rebalancing ${paused ? 'paused' : 'resumed'}${signalled ? ` (the running plan ${paused ? 'holds' : 'goes on'})` : ''}`);
      });
  }
  rebalance
    .command('status')
    .description('the latest stored plans and each action\'s outcome')
    .option('--plans <n>', 'how many plans', positiveInt, 1)
    .option('--json', 'machine-readable output')
    .action(async (opts: { plans: number; json?: boolean }) => {
      const cfg = configOf(program);
      const plans = await withCatalog(cfg, (pool) => storedPlans(pool, { limit: opts.plans }));
      const running = await withClient(cfg, async (options) => {
        try {
          return await options.client.workflow.getHandle(rebalanceWorkflowId(options.workflowIdPrefix)).query(rebalanceProgressQuery);
        } catch {
          return null; // not running (or finished): the catalog says what came of it
        }
      }).catch(() => null);
      if (opts.json) {
        console.log(JSON.stringify({ running, plans }, null, 2));
        return;
      }
      if (running) console.log(`running: plan ${running.planId}${running.paused ? ', paused' : ''}\n`);
      if (plans.length === 0) console.log('no plan stored yet');
      for (const p of plans) printStored(p);
    });

  nodes
    .command('drain')
    .description('move every shard off a node (the planner places them), then leave it empty and taking none')
    .argument('<name>', 'node name')
    .option('--dry-run', 'plan the drain and store the plan, change nothing')
    .option('--no-wait', 'start it and return')
    .action(async (name: string, opts: { dryRun?: boolean; wait: boolean }) => {
      const cfg = configOf(program);
      await withCatalog(cfg, (pool) => getNodeByName(pool, name)); // an unknown node is refused before anything starts
      await startRebalance(cfg, (prefix) => `${prefix}shardcast-drain-${name}`, { dryRun: opts.dryRun ?? false, trigger: 'drain', drainNode: name }, opts.wait);
    });
  nodes
    .command('remove')
    .description('retire an empty node: it takes no shard and is no longer planned for (kept in the catalog for its movement history)')
    .argument('<name>', 'node name')
    .action(async (name: string) => {
      const cfg = configOf(program);
      await withCatalog(cfg, async (pool) => {
        const node = await getNodeByName(pool, name);
        const held = await shardsOnNode(pool, node.id);
        if (held > 0) throw new InvalidInputError(`node "${name}" still holds ${held} shard(s): drain it first (\`shardcast nodes drain ${name}\`)`);
        const busy = await runningMovementOn(pool, node.id);
        if (busy) throw new InvalidInputError(`node "${name}" takes part in running movement ${busy}: wait for it`);
        await setNodeState(pool, node.id, 'retired', ['active', 'standby', 'draining']);
        console.log(`node ${name} retired`);
      });
    });
  nodes
    .command('activate')
    .description('make a standby or draining node active: the planner may place shards on it')
    .argument('<name>', 'node name')
    .action(async (name: string) => {
      const cfg = configOf(program);
      await withCatalog(cfg, async (pool) => {
        const node = await getNodeByName(pool, name);
        await setNodeState(pool, node.id, 'active', ['standby', 'draining']);
        console.log(`node ${name} active`);
      });
    });
  nodes
    .command('set-capacity')
    .description('set a node\'s capacity in load units, or "auto" to calibrate it from its load and CPU history')
    .argument('<name>', 'node name')
    .argument('<units>', 'a positive number, or auto', capacityArg)
    .action(async (name: string, units: number | null) => {
      const cfg = configOf(program);
      await withCatalog(cfg, async (pool) => {
        await setNodeCapacity(pool, name, units);
        console.log(units === null ? `node ${name}: capacity calibrated from its history` : `node ${name}: capacity ${units}`);
      });
    });
}
