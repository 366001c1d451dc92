/**
 * `shardcast plan`, `shardcast rebalance …` and the node life-cycle commands (`nodes drain`,
 * `nodes remove`, `nodes activate`, `nodes set-capacity`): the planner (DESIGN §5) and the workflow
 * that carries its plans out.
 */
import { writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import type { WorkflowHandle } from '@temporalio/client';
import type { ShardcastClientOptions } from '../client/index.js';
import type { Config } from '../src/config.js';
import type { StoredPlan } from '../src/planning/store.js';
import type { Plan } from '../src/planning/types.js';
import type { RebalanceInput, RebalanceResult } from '../workflows/messages.js';
import { assertDirectoryOf } from './forecast.js';
import { configOf, withCatalog, withTemporal } from './program-config.js';
import { wholeNumber } from './args.js';
import { printTable } from './format.js';
import { svgToPng } from './png.js';

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

function printStored(p: StoredPlan): void {
  console.log(`plan ${p.id} (${p.trigger}${p.dryRun ? ', dry run' : ''}) made ${p.createdAt.toISOString()}${p.workflowId ? ` by ${p.workflowId}` : ''}`);
  printTable(
    'actions',
    p.actions.map((a) => ({ action: a.actionId, kind: a.kind, start: a.startAt.toISOString().slice(11, 16), state: a.state, workflow: a.workflowId ?? '', outcome: a.outcome ?? '' })),
    ['action', 'kind', 'start', 'state', 'workflow', 'outcome'],
  );
}

/** Runs `fn` with the client options of the configured Temporal server (see withTemporal). */
async function withClient<T>(cfg: Config, fn: (options: ShardcastClientOptions) => Promise<T>): Promise<T> {
  const { clientOptionsFromConfig } = await import('../client/index.js');
  return withTemporal(cfg, (client) => fn(clientOptionsFromConfig(client, cfg)));
}

/** Starts a rebalance run (the rebalancer's own id, or a drain's) and, with `wait`, prints its outcome. */
export async function startRebalance(cfg: Config, idOf: (prefix: string) => string, input: Omit<RebalanceInput, 'movement' | 'settings' | 'workflowIdPrefix'>, wait: boolean): Promise<void> {
  const [{ WorkflowExecutionAlreadyStartedError }, { toShardcastError }, { movementSettings, plannerSettings }, { AlreadyExistsError }, { CONTROL_TASK_QUEUE }, { assertValidInput, rebalanceInputSchema }] = await Promise.all([
    import('@temporalio/client'),
    import('../client/index.js'),
    import('../src/config.js'),
    import('../src/errors.js'),
    import('../src/task-queues.js'),
    import('../src/inputs.js'),
  ]);
  await withClient(cfg, async (options) => {
    const workflowId = idOf(options.workflowIdPrefix ?? '');
    const isolate = !input.drainNode && cfg.planning.isolateTenantShare > 0 ? { isolateTenantShare: cfg.planning.isolateTenantShare } : {};
    const full: RebalanceInput = { ...input, ...isolate, movement: movementSettings(cfg), settings: plannerSettings(cfg), ...(options.workflowIdPrefix ? { workflowIdPrefix: options.workflowIdPrefix } : {}) };
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
async function signalRebalancer(cfg: Config, which: 'pause' | 'resume'): Promise<boolean> {
  const [{ WorkflowNotFoundError }, { rebalanceWorkflowId }, { pauseSignal, resumeSignal }] = await Promise.all([import('@temporalio/client'), import('../workflows/describe.js'), import('../workflows/messages.js')]);
  const signal = which === 'pause' ? pauseSignal : resumeSignal;
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

export function registerPlanCommands(program: Command): void {
  program
    .command('plan')
    .description('plan now on the latest forecasts (nothing is stored or started): actions with their reasons, per-node outlook')
    .option('--json', 'the plan as JSON')
    .option('--png <file>', 'picture: per-node predicted utilisation over the horizon, with and without the plan')
    .action(async (opts: { json?: boolean; png?: string }) => {
      const cfg = await configOf(program);
      if (opts.png) await assertDirectoryOf(opts.png, '--png');
      const [{ NodePools }, { plannerSettings }, { gatherPlanInput }, { planRebalance }] = await Promise.all([
        import('../src/catalog/node-pools.js'),
        import('../src/config.js'),
        import('../src/planning/inputs.js'),
        import('../src/planning/planner.js'),
      ]);
      await withCatalog(cfg, async (pool) => {
        const pools = new NodePools({ max: 1, applicationName: 'shardcast-cli' });
        try {
          const gathered = await gatherPlanInput(pool, pools, { settings: plannerSettings(cfg), provisioner: cfg.planning.provisioner });
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
      const cfg = await configOf(program);
      const { rebalanceWorkflowId } = await import('../workflows/describe.js');
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
        const cfg = await configOf(program);
        const { setRebalancePaused } = await import('../src/planning/store.js');
        await withCatalog(cfg, (pool) => setRebalancePaused(pool, paused));
        const signalled = await signalRebalancer(cfg, paused ? 'pause' : 'resume');
        console.log(`rebalancing ${paused ? 'paused' : 'resumed'}${signalled ? ` (the running plan ${paused ? 'holds' : 'goes on'})` : ''}`);
      });
  }
  rebalance
    .command('status')
    .description('the latest stored plans and each action\'s outcome')
    .option('--plans <n>', 'how many plans, 1 to 100', wholeNumber(1, 100, 'plans'), 1)
    .option('--json', 'machine-readable output')
    .action(async (opts: { plans: number; json?: boolean }) => {
      const cfg = await configOf(program);
      const [{ storedPlans }, { rebalanceWorkflowId }, { rebalanceProgressQuery }] = await Promise.all([import('../src/planning/store.js'), import('../workflows/describe.js'), import('../workflows/messages.js')]);
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
}
