import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { createDistributedTable, rebalanceWorkflowId } from '../../client/index.js';
import { setNodeCapacity } from '../../src/catalog/nodes.js';
import { createMetricsRegistry } from '../../src/metrics/metrics.js';
import { rebalancePaused, setRebalancePaused, storedPlans } from '../../src/planning/store.js';
import { approveSignal, pauseSignal, rebalanceProgressQuery, resumeSignal, type ForecastingSummary, type RebalanceInput, type RebalanceResult } from '../../workflows/messages.js';
import { writeShardForecasts } from '../helpers/forecasts.js';
import { adminQuery, createTestCatalog, shardPlacements, fleet, startTestWorker, until, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

/**
 * The rebalancer end to end, against real PostgreSQL and Temporal: forecasts that put one node over
 * its target become a stored plan with reasons (dry run: nothing moves), then movements that bring
 * every node under target (paused first: nothing starts until resumed), a drain that empties a node,
 * and the hourly forecast's hand-over. The forecasts are written into the catalog by the test (the
 * forecasting engine has its own tests): what is tested here is what the rebalancer does with them.
 */

let catalog: TestCatalog;
let worker: TestWorker;
const CLI = path.resolve(import.meta.dirname, '../../bin/shardcast.js');
const ROWS = 2000;

beforeAll(async () => {
  catalog = await createTestCatalog('rebal');
  worker = await startTestWorker(catalog.catalogUrl);
  for (const n of catalog.nodes) await setNodeCapacity(catalog.pool, n.name, 1000);
  await createDistributedTable(worker.options, { name: 'hot', columns: 'id bigint primary key, v text', shardKey: 'id', shardCount: 4, nodes: ['node-1'] });
  await adminQuery(catalog.catalogUrl, 'select 1');
  for (const s of await shards()) {
    await adminQuery(catalog.nodeUrl('node-1'), `insert into ${s.schema}.hot select g, md5(g::text) from generate_series(${s.id * 100_000}, ${s.id * 100_000 + ROWS / 4 - 1}) g`);
  }
  await writeForecasts();
}, 120_000);

afterAll(async () => {
  await worker?.close();
  await catalog?.close();
});

const shards = () => shardPlacements(catalog.pool);

async function rowCount(): Promise<number> {
  let total = 0;
  for (const s of await shards()) {
    const { rows } = await adminQuery(catalog.nodeUrl(s.node), `select count(*)::int as n from ${s.schema}.hot`);
    total += rows[0].n as number;
  }
  return total;
}

/**
 * Three shards at 150 load units now, rising to 300 within the hour, and one at 10 (trained models
 * that beat seasonal naive): node-1 holds all four, 460 now (under its target of 700), 955 at the
 * end at the 95% bound. One move is enough, and its trough is now (the load only rises). (Two moves
 * off one node would start one after the other: the second in the next 5-minute step, once the
 * first has taken its load off the source.)
 */
async function writeForecasts(): Promise<void> {
  await writeShardForecasts(catalog.pool, (await shards()).map((s) => s.id), (k, i) => (k === 3 ? 10 : 150 + (150 * i) / 11));
}

function input(over: Partial<RebalanceInput> = {}): RebalanceInput {
  return { dryRun: false, trigger: 'operator', movement: { graceSeconds: 0, pollSeconds: 0.3, maxMovesPerNode: 4 }, workflowIdPrefix: `${worker.taskQueue}-`, ...over };
}

async function run(over: Partial<RebalanceInput> = {}, id = rebalanceWorkflowId(`${worker.taskQueue}-`)): Promise<RebalanceResult> {
  return (await worker.client.workflow.execute('rebalance', { taskQueue: worker.taskQueue, workflowId: id, args: [input(over)] })) as RebalanceResult;
}

function cli(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const env = { ...process.env, SHARDCAST_CATALOG_URL: catalog.catalogUrl, SHARDCAST_TEMPORAL_ADDRESS: fleet().temporalAddress, SHARDCAST_TEMPORAL_TASK_QUEUE: worker.taskQueue };
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('rebalance workflow', () => {
  it('plans on the forecasts: `plan` prints the actions with reasons; a dry run stores the plan and moves nothing', { timeout: 120_000 }, async () => {
    const before = await shards();
    const printed = cli('plan', '--json');
    expect(printed.stderr).toBe('');
    const plan = JSON.parse(printed.stdout) as { actions: Array<{ kind: string; reason: string; shardIds: number[] }>; nodes: Array<{ name: string; without: number[]; with: number[] }>; feasible: boolean };
    expect(plan.feasible, printed.stdout).toBe(true);
    const moves = plan.actions.filter((a) => a.kind === 'move');
    expect(moves.length).toBeGreaterThanOrEqual(1);
    expect(moves[0]!.reason).toMatch(/^node-1 predicted at \d+% of capacity at \d\d:\d\d, 95% bound; moving shard \d+ to node-[23]/);
    const node1 = plan.nodes.find((n) => n.name === 'node-1')!;
    expect(Math.max(...node1.without)).toBeGreaterThan(0.95);
    expect(Math.max(...node1.with)).toBeLessThanOrEqual(0.7 + 1e-9);

    // `status`: the capacity the planner uses, the observed utilisation (no samples here: 0) and the predicted peak.
    expect(cli('status').stdout).toMatch(/^node-1\s+active\s+\S+\s+\S+\s+1000\s+0%\s+96%\s+4\s/m);

    const result = await run({ dryRun: true }, `${worker.taskQueue}-dry`);
    expect(result.dryRun).toBe(true);
    expect(result.actions.length).toBe(plan.actions.length);
    const [stored] = await storedPlans(catalog.pool);
    expect(stored!.id).toBe(result.planId);
    expect(stored!.dryRun).toBe(true);
    expect(stored!.actions.every((a) => a.state === 'dry-run')).toBe(true);
    expect(await shards()).toEqual(before);
    // The worker's metrics show the latest plan (deploy/prometheus-rules.yml alerts on them).
    const metrics = await createMetricsRegistry(catalog.pool).metrics();
    expect(metrics).toMatch(/^shardcast_node_predicted_utilisation\{node="node-1",plan="without"\} 0\.95\d*$/m);
    expect(metrics).toMatch(/^shardcast_node_predicted_utilisation\{node="node-1",plan="with"\} 0\.[0-6]\d*$/m);
    expect(metrics).toContain('shardcast_node_capacity{node="node-1"} 1000');
    expect(metrics).toContain('shardcast_plan_feasible 1');
    expect(metrics).toContain(`shardcast_plan_actions{state="dry-run"} ${result.actions.length}`);
  });

  it('paused, it starts nothing; resumed, its movements bring every node under target, and every row is still there once', { timeout: 240_000 }, async () => {
    const rows = await rowCount();
    expect(cli('rebalance', 'pause').status).toBe(0);
    expect(await rebalancePaused(catalog.pool)).toBe(true);
    const id = rebalanceWorkflowId(`${worker.taskQueue}-`);
    const handle = await worker.client.workflow.start('rebalance', { taskQueue: worker.taskQueue, workflowId: id, args: [input()] });
    await until('the plan is made', async () => (await handle.query(rebalanceProgressQuery)).planId !== null);
    await new Promise((r) => setTimeout(r, 3000));
    const held = await handle.query(rebalanceProgressQuery);
    expect(held.paused).toBe(true);
    expect(held.actions.every((a) => a.state === 'planned' || a.state === 'waiting')).toBe(true);
    const moving = await catalog.pool.query("select 1 from shardcast.movements where state = 'running'");
    expect(moving.rowCount).toBe(0);
    await handle.signal(pauseSignal); // a second pause changes nothing
    await setRebalancePaused(catalog.pool, false);
    await handle.signal(resumeSignal);

    const result = (await handle.result()) as RebalanceResult;
    expect(result.actions.length).toBeGreaterThan(0);
    for (const a of result.actions) expect(a.state, a.outcome).toBe('done');
    expect((await shards()).filter((s) => s.node === 'node-1')).toHaveLength(3);
    expect(await rowCount()).toBe(rows);
    // Planned again: every node under target at every step, nothing left to do.
    const again = JSON.parse(cli('plan', '--json').stdout) as { actions: unknown[]; feasible: boolean; nodes: Array<{ name: string; without: number[] }> };
    expect(again.feasible).toBe(true);
    expect(again.actions).toEqual([]);
    for (const n of again.nodes) expect(Math.max(...n.without), n.name).toBeLessThanOrEqual(0.7);
    const [stored] = await storedPlans(catalog.pool);
    // A replanning round (the schedule's, every planning.replanMinutes) with nothing to do leaves no plan behind.
    const idle = await run({ trigger: 'replan', startWithinSeconds: 300 }, `${worker.taskQueue}-replan-idle`);
    expect(idle.planId).toBeNull();
    expect(idle.actions).toEqual([]);
    expect((await storedPlans(catalog.pool))[0]!.id).toBe(stored!.id);
    expect(stored!.dryRun).toBe(false);
    expect(stored!.actions.map((a) => a.state)).toEqual(result.actions.map(() => 'done'));
    expect(stored!.actions.every((a) => a.workflowId?.startsWith(`${worker.taskQueue}-move-shard-`))).toBe(true);
    expect(await createMetricsRegistry(catalog.pool).metrics()).toMatch(/^shardcast_movements_last_day\{operation="move",state="done"\} [1-9]/m);
    const status = cli('rebalance', 'status');
    expect(status.stdout).toMatch(new RegExp(`plan ${stored!.id} \\(operator\\)`));
    // … but once the latest plan is an hour old, an idle round stores one (the plan metrics and ShardcastNotPlanning read it).
    await catalog.pool.query("update shardcast.plans set created_at = created_at - interval '2 hours'");
    const hourly = await run({ trigger: 'replan', startWithinSeconds: 300 }, `${worker.taskQueue}-replan-hourly`);
    expect(hourly.planId).not.toBeNull();
    const [latest] = await storedPlans(catalog.pool);
    expect(latest).toMatchObject({ id: hourly.planId, trigger: 'replan', actions: [] });
  });

  it('drains a node: its shards go elsewhere and it is retired; `nodes remove` refuses a node with shards', { timeout: 240_000 }, async () => {
    const target = (await shards()).find((s) => s.node !== 'node-1')!.node;
    const rows = await rowCount();
    const drain = `${worker.taskQueue}-shardcast-drain-${target}`;
    const started = await worker.client.workflow.start('rebalance', { taskQueue: worker.taskQueue, workflowId: drain, args: [input({ trigger: 'drain', drainNode: target })] });
    await until('the drain is planned', async () => (await started.query(rebalanceProgressQuery)).planId !== null);
    const result = (await started.result()) as RebalanceResult;
    for (const a of result.actions) expect(a.state, a.outcome).toBe('done');
    expect(result.notes.join('\n')).toContain(`${target} is drained`);
    expect((await shards()).filter((s) => s.node === target)).toEqual([]);
    // The planner retires a draining node once its movements are done (its last action).
    const [plan] = await storedPlans(catalog.pool);
    expect(plan!.trigger).toBe('drain');
    expect(plan!.plan.actions.at(-1)).toMatchObject({ kind: 'retire' });
    const { rows: state } = await catalog.pool.query<{ state: string }>('select state from shardcast.nodes where name = $1', [target]);
    expect(state[0]!.state).toBe('retired');
    expect(await rowCount()).toBe(rows);

    const refused = cli('nodes', 'remove', 'node-1');
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toMatch(/node "node-1" still holds \d+ shard\(s\): drain it first/);
    const { rows: still } = await catalog.pool.query<{ state: string }>("select state from shardcast.nodes where name = 'node-1'");
    expect(still[0]!.state).toBe('active');
    const removed = cli('nodes', 'remove', target);
    expect(removed.stderr).toBe('');
    expect(removed.stdout).toContain(`node ${target} retired`);
    // The planner no longer counts it, nor lists it.
    const printed = JSON.parse(cli('plan', '--json').stdout) as { nodes: Array<{ name: string }> };
    expect(printed.nodes.map((n) => n.name)).not.toContain(target);
  });

  it('the hourly forecast hands over to the rebalancer (a dry run here: planning.mode dry-run)', { timeout: 120_000 }, async () => {
    const before = (await storedPlans(catalog.pool))[0]!.id;
    const summary = (await worker.client.workflow.execute('forecastLoad', {
      taskQueue: worker.taskQueue,
      workflowId: `${worker.taskQueue}-forecast`,
      args: [{ batchSize: 10, parallelBatches: 1, rebalance: { mode: 'dry-run', movement: {}, workflowIdPrefix: `${worker.taskQueue}-handover-` } }],
    })) as ForecastingSummary;
    expect(summary.rebalance).toBe(`started ${worker.taskQueue}-handover-shardcast-rebalance (dry run)`);
    const child = worker.client.workflow.getHandle(`${worker.taskQueue}-handover-shardcast-rebalance`);
    const r = (await child.result()) as RebalanceResult;
    expect(r.dryRun).toBe(true);
    const [stored] = await storedPlans(catalog.pool);
    expect(stored!.id).toBeGreaterThan(before);
    expect(stored!.trigger).toBe('schedule');
    expect(stored!.dryRun).toBe(true);
  });

  it('a replanning round starts only what is due before the next round: a move planned for the trough later is left to a later round', { timeout: 120_000 }, async () => {
    // node-1's shards: 150 now, 60 from 15 to 35 minutes ahead (the trough), 300 from 45 minutes (over target there).
    const placed = await shards();
    const onNode1 = new Set(placed.filter((s) => s.node === 'node-1').map((s) => s.id));
    expect(onNode1.size).toBeGreaterThanOrEqual(2);
    await writeShardForecasts(catalog.pool, placed.map((s) => s.id), (k, i) => (!onNode1.has(placed[k]!.id) ? 100 : i >= 9 ? 300 : i >= 3 && i <= 6 ? 60 : 150));
    const planned = JSON.parse(cli('plan', '--json').stdout) as { actions: Array<{ kind: string; startAt: string }> };
    const move = planned.actions.find((a) => a.kind === 'move');
    expect(move).toBeDefined();
    // Planned in the trough, not now.
    expect(Date.parse(move!.startAt) - Date.now()).toBeGreaterThan(5 * 60_000);
    const result = await run({ trigger: 'replan', startWithinSeconds: 60 }, `${worker.taskQueue}-replan-later`);
    expect(result.planId).not.toBeNull();
    const later = result.actions.filter((a) => a.state === 'skipped');
    expect(later.length).toBeGreaterThan(0);
    for (const a of later) expect(a.outcome).toMatch(/^starts at \S+, after this round: the next round plans it again$/);
    expect(result.actions.some((a) => a.state === 'done')).toBe(false);
    expect(await shards()).toEqual(placed);
    await writeForecasts();
  });

  it('a replanning round ends while its movement waits for approval: the next rounds plan around the movement, and record its outcome once it is done', { timeout: 240_000 }, async () => {
    const rows = await rowCount();
    const placed = await shards();
    const onNode1 = new Set(placed.filter((s) => s.node === 'node-1').map((s) => s.id));
    expect(onNode1.size).toBeGreaterThanOrEqual(2);
    // node-1's shards rising from 200 to 300 within the hour (node-1 over its target of 700 from the
    // middle of the hour): one move off it, at once (the trough is now).
    await writeShardForecasts(catalog.pool, placed.map((s) => s.id), (k, i) => (onNode1.has(placed[k]!.id) ? 200 + (100 * i) / 11 : 50));
    const started = Date.now();
    const round = await run({ trigger: 'replan', startWithinSeconds: 60, movement: { graceSeconds: 0, pollSeconds: 0.3, maxMovesPerNode: 4, approvalRequired: true } }, `${worker.taskQueue}-replan-approval`);
    // The round ended about when it was due to (60 s), not when the movement will.
    expect(Date.now() - started).toBeLessThan(100_000);
    const waiting = round.actions.filter((a) => a.state === 'started');
    expect(waiting, JSON.stringify(round)).toHaveLength(1);
    expect(waiting[0]!.outcome).toMatch(/still running when this round ended \(workflow \S+\); its outcome is recorded once it finishes$/);
    const { rows: running } = await catalog.pool.query<{ shard_id: number; target: number }>("select shard_id::int, target_node_ids[1]::int as target from shardcast.movements where state = 'running'");
    expect(running).toHaveLength(1);
    const movingShard = running[0]!.shard_id;
    const [stored] = await storedPlans(catalog.pool);
    expect(stored!.actions.find((a) => a.actionId === waiting[0]!.id)).toMatchObject({ state: 'started', workflowId: waiting[0]!.workflowId });

    // The next round plans the moving shard on its target and leaves it alone: nothing more to move.
    const planned = JSON.parse(cli('plan', '--json').stdout) as { actions: Array<{ kind: string; shardIds: number[] }>; notes: string[] };
    expect(planned.notes.join('\n')).toMatch(new RegExp(`shard ${movingShard} is being moved to node-\\d+ \\(movement \\S+\\): planned there, and left alone`));
    expect(planned.actions.filter((a) => a.kind === 'move')).toEqual([]);

    // Approved, the movement finishes; a later round records the action's outcome.
    const move = worker.client.workflow.getHandle(waiting[0]!.workflowId!);
    await move.signal(approveSignal);
    await move.result();
    await writeForecasts();
    const later = await run({ trigger: 'replan', startWithinSeconds: 60 }, `${worker.taskQueue}-replan-settle`);
    expect(later.actions.filter((a) => a.state === 'started')).toEqual([]);
    const settled = (await storedPlans(catalog.pool, { id: stored!.id }))[0]!.actions.find((a) => a.actionId === waiting[0]!.id)!;
    expect(settled.state).toBe('done');
    expect(settled.outcome).toMatch(/still running when this round ended .*; then done at \d{4}-\d\d-\d\dT/);
    expect((await shards()).find((s) => s.id === movingShard)!.node).not.toBe('node-1');
    expect(await rowCount()).toBe(rows);
  });

  it('refuses bad input with a clear message and changes nothing, before any workflow starts', { timeout: 120_000 }, async () => {
    const before = await catalog.pool.query('select name, state, capacity from shardcast.nodes order by name');
    const unknown = cli('nodes', 'drain', 'no-such-node');
    expect(unknown.status).not.toBe(0);
    expect(unknown.stderr).toMatch(/node "no-such-node" does not exist/);
    const bad = cli('nodes', 'set-capacity', 'node-1', '-3');
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/expected a decimal number of load units above 0 up to 1000000000, or "auto"/);
    expect((await catalog.pool.query('select name, state, capacity from shardcast.nodes order by name')).rows).toEqual(before.rows);

    // Movement requests are checked before a workflow starts: one line, exit 1, no run, no lease.
    const movements = (await catalog.pool.query('select count(*)::int as n from shardcast.movements')).rows[0].n as number;
    const [first] = await shards();
    for (const [args, message] of [
      [['move', String(first!.id)], /^shardcast: error: give a shard and --to NODE \(or --reverse MOVEMENT\)$/m],
      [['move', '999999', '--to', 'node-2', '--no-wait'], /^shardcast: error: shard 999999 does not exist$/m],
      [['move', String(first!.id), '--to', 'no-such-node', '--no-wait'], /^shardcast: error: node "no-such-node" does not exist$/m],
      [['move', String(first!.id), '--to', first!.node, '--no-wait'], new RegExp(`^shardcast: error: shard ${first!.id} is already on ${first!.node}$`, 'm')],
    ] as const) {
      const r = cli(...args);
      expect(r.status, args.join(' ')).toBe(1);
      expect(r.stderr).toMatch(message);
      expect(r.stdout).not.toMatch(/started/);
    }
    expect((await catalog.pool.query('select count(*)::int as n from shardcast.movements')).rows[0].n).toBe(movements);
  });
});
