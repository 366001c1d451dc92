import { spawnSync } from 'node:child_process';
import { hostname } from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { ScheduleOverlapPolicy, type Client } from '@temporalio/client';
import { CancelledFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createForecastingActivities } from '../../activities/forecasting.js';
import { collectorWorkflowId, ensureSchedules, replanScheduleId, runForecastingNow, scheduleId } from '../../client/index.js';
import { migrate } from '../../src/catalog/migrate.js';
import { ensureNodes } from '../../src/catalog/nodes.js';
import { parseConfig } from '../../src/config.js';
import { freePort, PostgresServer } from '../../src/fleet/postgres-server.js';
import type { ForecastingSummary } from '../../src/forecasting/runs.js';
import { forecastableSeries, type Calibration, type SeriesListing, type StoredMember } from '../../src/forecasting/store.js';
import { TrainingThreads } from '../../src/forecasting/thread-pool.js';
import { ensurePartitions } from '../../src/profiling/partitions.js';
import { listSeries } from '../../src/profiling/series.js';
import { FORECAST_STEPS } from '../../src/forecasting/training.js';
import { createTestCatalog, fleet, recordHistory, startTestWorker, startWorkerProcess, uniqueName, until, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

let catalog: TestCatalog;
let worker: TestWorker;
/** A second worker on the same queue, in a process of its own (`shardcast worker`): its own identity. */
let second: Awaited<ReturnType<typeof startWorkerProcess>>;
const DAY = 86_400_000;
const STEP = 300_000;
/** Inserts per second of the synthetic `orders` workload: a daily wave. */
const insertRate = (t: number) => 100 + 50 * Math.sin((2 * Math.PI * t) / DAY);
/** Its integral from 0: the cumulative counter. */
const inserted = (t: number) => (100 * t + (50 * DAY) / (2 * Math.PI) * (1 - Math.cos((2 * Math.PI * t) / DAY))) / 1000;

/**
 * Samples as the collector would have stored them, every 5 minutes: `orders` (3 days: trained),
 * `young` (6 hours: fallback) and, unless `dropped` is false, an index sampled once an hour ago,
 * then dropped (no rate at all: the one series whose training fails, for real, in the cleaning of
 * its empty series).
 */
async function seedSamples(db: pg.Pool, node: number, now: number, dropped = true): Promise<void> {
  await ensurePartitions(db, new Date(now - 4 * DAY), 5);
  const epoch = new Date(now - 10 * DAY).toISOString();
  const table = async (schema: string, name: string, from: number) => {
    const ts: string[] = [];
    const ins: number[] = [];
    for (let t = from; t < now; t += STEP) {
      ts.push(new Date(t).toISOString());
      ins.push(Math.round(inserted(t)));
    }
    await db.query(
      `insert into shardcast_stats.table_samples (ts, node_id, schema_name, table_name, n_tup_ins, n_tup_upd, n_tup_del, seq_scan, seq_tup_read, idx_scan, idx_tup_fetch, n_live_tup, stats_epoch)
       select ts, $1, $2, $3, ins, ins / 5, 0, 0, ins * 2, ins * 2, ins, ins, $6 from unnest($4::timestamptz[], $5::bigint[]) as s(ts, ins)`,
      [node, schema, name, ts, ins, epoch],
    );
    await db.query(
      `insert into shardcast_stats.index_samples (ts, node_id, schema_name, table_name, index_name, idx_scan, idx_tup_read, stats_epoch)
       select ts, $1, $2, $3, $3 || '_pkey', ins * 2, ins * 2, $6 from unnest($4::timestamptz[], $5::bigint[]) as s(ts, ins)`,
      [node, schema, name, ts, ins, epoch],
    );
  };
  const start = Math.floor((now - 3 * DAY) / STEP) * STEP + 1000;
  await table('sc_s901', 'orders', start);
  await table('sc_s902', 'young', now - 6 * 3_600_000);
  if (!dropped) return;
  await db.query(
    `insert into shardcast_stats.index_samples (ts, node_id, schema_name, table_name, index_name, idx_scan, idx_tup_read, stats_epoch)
     values ($1, $2, 'sc_s901', 'orders', 'orders_fresh', 0, 0, $3)`,
    [new Date(now - 3_600_000).toISOString(), node, epoch],
  );
}

// One series a batch: thirteen batches, two at a time, to spread over the two workers.
const RETRAIN = { trainingDays: 30, budgetSeconds: 0.4, batchSize: 1, parallelBatches: 2 };

beforeAll(async () => {
  catalog = await createTestCatalog('forecast');
  await seedSamples(catalog.pool, catalog.nodes[0]!.id, Date.now());
  worker = await startTestWorker(catalog.catalogUrl);
  second = await startWorkerProcess(catalog.catalogUrl, worker.taskQueue);
});

afterAll(async () => {
  for (const run of ['retrain', 'forecast'] as const) {
    await worker?.client.schedule.getHandle(scheduleId(run, worker.options.workflowIdPrefix)).delete().catch(() => undefined);
  }
  await second?.stop();
  if (worker) await stopCollectorOf(worker);
  await worker?.close();
  await catalog?.close();
});

/** `shardcast worker` starts the namespace's collector when none runs: on this test's queue, it is this test's to end. */
async function stopCollectorOf(w: TestWorker): Promise<void> {
  const collector = w.client.workflow.getHandle(collectorWorkflowId());
  const running = await collector.describe().catch(() => undefined);
  if (running?.taskQueue === w.taskQueue && running.status.name === 'RUNNING') await collector.terminate('test over');
}

/** Identities of the workers that started the workflow's activities of this type. */
async function activityWorkers(client: Client, workflowId: string, activityType: string): Promise<string[]> {
  const { events } = await client.workflow.getHandle(workflowId).fetchHistory();
  const scheduled = new Set(events!.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === activityType).map((e) => Number(e.eventId)));
  return events!.filter((e) => scheduled.has(Number(e.activityTaskStartedEventAttributes?.scheduledEventId))).map((e) => e.activityTaskStartedEventAttributes!.identity!);
}

describe('daily retraining', () => {
  it('trains every series in batches shared by two workers, off their event loops; a series that fails is counted, not fatal', { timeout: 180_000 }, async () => {
    // This process hosts the first worker: the fits run in its training thread, not on its event loop.
    const delay = monitorEventLoopDelay({ resolution: 10 });
    delay.enable();
    const workflowId = uniqueName('retrain');
    const summary: ForecastingSummary = await worker.client.workflow.execute('retrainModels', { taskQueue: worker.taskQueue, workflowId, args: [RETRAIN] });
    delay.disable();
    const maxDelayMs = delay.max / 1e6;
    expect(maxDelayMs).toBeLessThan(200);

    // Both workers ran batches: the history names the worker that started each attempt.
    await recordHistory(worker.client, workflowId, 'retrain-models');
    const ran = await activityWorkers(worker.client, workflowId, 'trainBatch');
    expect(ran).toHaveLength(13);
    expect(new Set(ran)).toEqual(new Set([`${process.pid}@${hostname()}`, `${second.child.pid}@${hostname()}`]));

    // orders: 4 table series, its index, its shard (6 trained); young: the same (6, fallback); orders_fresh: failed.
    expect(summary).toMatchObject({ kind: 'retrain', series: 13, trained: 6, fallback: 6, failed: 1 });
    expect(summary.failures).toEqual([{ series: 'index:orders.orders_fresh:scans', error: expect.stringMatching(/need at least 2 rows with a finite value, got 0/) }]);

    const { rows } = await catalog.pool.query<{ series: string; status: string; error: string | null; members: StoredMember[]; calibration: Calibration | null; scores: Record<string, unknown> | null }>(
      'select series, status, error, members, calibration, scores from shardcast_forecast.models order by series',
    );
    expect(rows).toHaveLength(13);
    const byName = new Map(rows.map((r) => [r.series, r]));
    expect(byName.get('index:orders.orders_fresh:scans')).toMatchObject({ status: 'failed', members: [], calibration: null });
    expect(byName.get('table:young:inserts')).toMatchObject({ status: 'fallback', members: [{ model: 'seasonal_naive', weight: 1 }] });
    const orders = byName.get('table:orders:inserts')!;
    expect(orders.status).toBe('trained');
    expect(orders.members.reduce((s, m) => s + m.weight, 0)).toBeCloseTo(1, 6);
    for (const m of orders.members) expect(m.json).toMatchObject({ model: m.model, version: 1 });
    // Two hours of intervals (FORECAST_STEPS), each step calibrated on its own residuals; scored on the first hour.
    expect(orders.calibration!.halfWidths['0.8']).toHaveLength(FORECAST_STEPS);
    expect(orders.calibration!.horizon).toBe(FORECAST_STEPS);
    expect(orders.calibration!.halfWidths['0.95']!.every((w, i) => w >= orders.calibration!.halfWidths['0.8']![i]!)).toBe(true);
    expect(Object.keys(orders.scores!.models as object).sort()).toEqual(['arima', 'ets', 'lstm', 'seasonal_naive', 'theta']);
    const perWorker = [...new Set(ran)].map((id) => `${id}: ${ran.filter((r) => r === id).length}`).join(', ');
    console.log(`retrain: event loop delay max ${maxDelayMs.toFixed(0)} ms (p99 ${(delay.percentile(99) / 1e6).toFixed(0)} ms); batches ${perWorker}`);
    console.log(`retrain: ${JSON.stringify(summary)}; table:orders:inserts members ${orders.members.map((m) => `${m.model} ${m.weight.toFixed(2)}`).join(', ')}`);
  });
});

describe('hourly forecasting', () => {
  it('forecasts the next two hours of every series with a model, with nested intervals, once per issue', async () => {
    const workflowId = uniqueName('forecast');
    const summary: ForecastingSummary = await worker.client.workflow.execute('forecastLoad', { taskQueue: worker.taskQueue, workflowId, args: [{ batchSize: 4, parallelBatches: 2 }] });
    await recordHistory(worker.client, workflowId, 'forecast-load');
    expect(summary).toMatchObject({ kind: 'forecast', series: 12, forecast: 12, failed: 0 });
    const { rows } = await catalog.pool.query<{ series: string; step: number; ts: Date; yhat: number; lo80: number; hi80: number; lo95: number; hi95: number; model: string }>(
      'select * from shardcast_forecast.forecasts where issued_at = $1 order by series, step',
      [summary.asOf],
    );
    // Fallback models (seasonal naive on a young series) are stored with two hours of random-walk intervals too.
    expect(rows).toHaveLength(12 * FORECAST_STEPS);
    for (const r of rows) expect(r.lo95 <= r.lo80 && r.lo80 <= r.yhat && r.yhat <= r.hi80 && r.hi80 <= r.hi95).toBe(true);
    const inserts = rows.filter((r) => r.series === 'table:orders:inserts');
    expect(inserts.map((r) => r.step)).toEqual(Array.from({ length: FORECAST_STEPS }, (_, i) => i + 1));
    inserts.forEach((r, i) => i > 0 && expect(r.ts.getTime() - inserts[i - 1]!.ts.getTime()).toBe(STEP));
    // The first step follows the last complete bucket: the bucket in progress when the run was issued
    // (or the one before, when the seeded samples end just before a bucket boundary).
    const current = Math.floor(Date.parse(summary.asOf) / STEP) * STEP;
    expect([current - STEP, current]).toContain(inserts[0]!.ts.getTime());
    for (const r of inserts) {
      const truth = insertRate(r.ts.getTime() + STEP / 2);
      expect(Math.abs(r.yhat - truth) / truth).toBeLessThan(0.25);
    }
    expect(rows.find((r) => r.series === 'table:young:inserts')!.model).toBe('seasonal_naive');
  });
});

describe('schedules', () => {
  it('are created as `up` creates them, updated when the configuration changes (staying paused), and can be triggered', async () => {
    // The janitor's schedule has its own test (doctor.test.ts).
    const config = parseConfig({ forecast: { retrainAt: '04:30', catchupWindowMinutes: 90, batchSize: 4, parallelBatches: 2 }, janitor: { intervalMinutes: 0 }, retention: { enabled: false } });
    expect(await ensureSchedules(worker.options, config)).toEqual([
      { scheduleId: scheduleId('retrain', worker.options.workflowIdPrefix), outcome: 'created' },
      { scheduleId: scheduleId('forecast', worker.options.workflowIdPrefix), outcome: 'created' },
      { scheduleId: replanScheduleId(worker.options.workflowIdPrefix), outcome: 'created' },
    ]);
    const retrain = worker.client.schedule.getHandle(scheduleId('retrain', worker.options.workflowIdPrefix));
    const hourly = worker.client.schedule.getHandle(scheduleId('forecast', worker.options.workflowIdPrefix));
    const described = await retrain.describe();
    expect(described.spec.calendars).toMatchObject([{ hour: [{ start: 4, end: 4 }], minute: [{ start: 30, end: 30 }] }]);
    expect(described.policies).toMatchObject({ overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: 90 * 60_000 });
    expect(described.action).toMatchObject({ type: 'startWorkflow', workflowType: 'retrainModels', taskQueue: worker.taskQueue });
    const hourlySpec = (await hourly.describe()).spec;
    expect(hourlySpec.intervals).toMatchObject([{ every: 3_600_000 }]);
    // The rebalancer's rounds (planning.replanMinutes): every 5 minutes, at most 5 minutes of actions each; the forecast then hands over nothing.
    const replan = await worker.client.schedule.getHandle(replanScheduleId(worker.options.workflowIdPrefix)).describe();
    expect(replan.spec.intervals).toMatchObject([{ every: 5 * 60_000 }]);
    expect(replan.action).toMatchObject({ type: 'startWorkflow', workflowType: 'rebalance', args: [expect.objectContaining({ trigger: 'replan', startWithinSeconds: 300, isolateTenantShare: 0.5 })] });
    expect((await hourly.describe()).action).toMatchObject({ args: [expect.objectContaining({ rebalance: expect.objectContaining({ mode: 'off' }) })] });

    expect((await ensureSchedules(worker.options, config)).map((s) => s.outcome)).toEqual(['unchanged', 'unchanged', 'unchanged']);
    await retrain.pause('test');
    const moved = parseConfig({ forecast: { ...config.forecast, retrainAt: '05:15' }, janitor: config.janitor, retention: config.retention });
    expect((await ensureSchedules(worker.options, moved)).map((s) => s.outcome)).toEqual(['updated', 'unchanged', 'unchanged']);
    const after = await retrain.describe();
    expect(after.spec.calendars).toMatchObject([{ hour: [{ start: 5, end: 5 }], minute: [{ start: 15, end: 15 }] }]);
    expect(after.state.paused).toBe(true);

    // `shardcast forecast run`: through the schedule.
    const { handle, via } = await runForecastingNow(worker.options, moved, 'forecast');
    expect(via).toBe('schedule');
    expect(handle.workflowId).toMatch(new RegExp(`^${worker.options.workflowIdPrefix}shardcast-forecast`));
    expect(await handle.result()).toMatchObject({ kind: 'forecast', forecast: 12, failed: 0 });

    // Without replanning rounds (planning.replanMinutes 0), the hourly forecast hands over with an hour's receding horizon.
    const handingOver = parseConfig({ forecast: moved.forecast, janitor: moved.janitor, retention: moved.retention, planning: { mode: 'on', replanMinutes: 0 } });
    await ensureSchedules(worker.options, handingOver);
    expect((await hourly.describe()).action).toMatchObject({ args: [expect.objectContaining({ rebalance: expect.objectContaining({ mode: 'on', startWithinSeconds: 3600 }) })] });
  });
});

describe('training threads', () => {
  it('a cancelled batch terminates the thread fitting its series, and stores nothing for it', async () => {
    const threads = new TrainingThreads();
    const pool = new pg.Pool({ connectionString: catalog.catalogUrl, max: 1 });
    let reads = 0;
    pool.on('release', () => reads++);
    const activities = createForecastingActivities({ catalog: pool, trainingThreads: threads });
    const env = new MockActivityEnvironment();
    const asOf = new Date().toISOString();
    try {
      const batch = env.run(activities.trainBatch, { series: ['table:orders:inserts', 'table:orders:updates'], asOf, trainingDays: 30, budgetSeconds: 4 });
      // The thread has started and read its series: it is fitting, for four seconds.
      await until('the series read', async () => reads > 0);
      await new Promise((r) => setTimeout(r, 300));
      expect(threads.threadCount).toBe(1);
      env.cancel();
      await expect(batch).rejects.toBeInstanceOf(CancelledFailure);
      expect(threads.threadCount).toBe(0);
      const { rows } = await catalog.pool.query('select 1 from shardcast_forecast.models where trained_at = $1', [asOf]);
      expect(rows).toEqual([]);
    } finally {
      await threads.close();
      await pool.end();
    }
  });
});

describe('a catalog that goes down during a training batch', () => {
  /** The catalog of this test only: a server of its own, so that stopping it disturbs no other test. */
  let server: PostgresServer;
  let pool: pg.Pool;
  let own: TestWorker;

  beforeAll(async () => {
    server = new PostgresServer({ name: 'catalog-down', dataDir: path.join(fleet().baseDir, uniqueName('catalog_down')), port: await freePort(), user: 'postgres', password: fleet().password });
    await server.start();
    await server.ensureDatabase('shardcast');
    pool = new pg.Pool({ connectionString: server.url('shardcast'), max: 2 });
    pool.on('error', () => undefined); // its idle connections die with the server
    const client = await pool.connect();
    try {
      await migrate(client);
    } finally {
      client.release();
    }
    const [node] = await ensureNodes(pool, [{ name: 'node-1', dsn: catalog.nodeUrl('node-1') }]);
    await seedSamples(pool, node!.id, Date.now(), false);
    own = await startTestWorker(server.url('shardcast'));
  });

  afterAll(async () => {
    await own?.close();
    await pool?.end();
    await server?.stop();
  });

  it('fails the attempt, not the series: retried once it is back, every series trains', { timeout: 120_000 }, async () => {
    const workflowId = uniqueName('retrain_down');
    const handle = await own.client.workflow.start('retrainModels', { taskQueue: own.taskQueue, workflowId, args: [{ trainingDays: 30, budgetSeconds: 0.4, batchSize: 4, parallelBatches: 1 }] });
    await until('a first model stored', async () => ((await pool.query('select count(*)::int as n from shardcast_forecast.models')).rows[0] as { n: number }).n > 0);
    await server.stop(); // for real: the postmaster shuts down in the middle of the first batch
    await new Promise((r) => setTimeout(r, 4000));
    await server.start();

    const summary: ForecastingSummary = await handle.result();
    expect(summary).toMatchObject({ kind: 'retrain', series: 12, trained: 6, fallback: 6, failed: 0, failures: [] });
    const { rows } = await pool.query<{ status: string; n: number }>('select status, count(*)::int as n from shardcast_forecast.models group by status order by status');
    expect(rows).toEqual([
      { status: 'fallback', n: 6 },
      { status: 'trained', n: 6 },
    ]);
    // The attempt that met the outage failed with the catalog's error, and the batch was retried.
    const { events } = await handle.fetchHistory();
    const retried = events!.map((e) => e.activityTaskStartedEventAttributes).find((a) => a && (a.attempt ?? 1) > 1);
    expect(retried?.lastFailure).toMatchObject({ message: expect.stringMatching(/^catalog: /), applicationFailureInfo: { type: 'CatalogError', nonRetryable: false } });
    console.log(`catalog down: attempt ${retried!.attempt} after "${retried!.lastFailure!.message}"; ${JSON.stringify(summary)}`);
  });
});

describe('the series there are', () => {
  const cli = (args: string[]) =>
    spawnSync(process.execPath, [path.resolve(import.meta.dirname, '../../bin/shardcast.js'), 'forecast', ...args], {
      encoding: 'utf8',
      env: { ...process.env, SHARDCAST_CATALOG_URL: catalog.catalogUrl, SHARDCAST_TEMPORAL_ADDRESS: fleet().temporalAddress },
      timeout: 60_000,
    });

  it('a split shard is no series any more; `forecast list` names the others with their model and score; `forecast show` of an unknown one is an error', { timeout: 120_000 }, async () => {
    const since = new Date(Date.now() - 30 * DAY);
    expect(await listSeries(catalog.pool, since)).toContain('shard:902:load');
    // Shard 902 was split: its samples stay, but it is neither trained, forecast nor listed.
    await catalog.pool.query(
      `insert into shardcast.movements (id, operation, shard_id, source_node_id, target_node_ids, state, finished_at) values ('split_of_902', 'split', 902, $1, array[$1]::bigint[], 'done', now())`,
      [catalog.nodes[0]!.id],
    );
    try {
      expect(await listSeries(catalog.pool, since)).not.toContain('shard:902:load');
      expect(await listSeries(catalog.pool, since)).toContain('shard:901:load');
      expect(await forecastableSeries(catalog.pool)).not.toContain('shard:902:load');

      const listed = cli(['list', '--json']);
      expect(listed.status, listed.stderr).toBe(0);
      const listing = JSON.parse(listed.stdout) as SeriesListing[];
      expect(listing.map((l) => l.series)).not.toContain('shard:902:load');
      const orders = listing.find((l) => l.series === 'table:orders:inserts')!;
      expect(orders).toMatchObject({ status: 'trained' });
      expect(orders.model).toMatch(/^(ensemble\(.+\)|[a-z_]+)$/);
      expect(typeof orders.mase).toBe('number'); // the seeded wave repeats exactly: scores may be 0
      expect(typeof orders.baselineMase).toBe('number');
      expect(listing.find((l) => l.series === 'table:young:inserts')).toMatchObject({ status: 'fallback', model: 'seasonal_naive' });
      const table = cli(['list']);
      expect(table.stdout).toMatch(/^SERIES\s+STATUS\s+MODEL/);

      const unknown = cli(['show', 'table:nosuch:inserts']);
      expect(unknown.status).toBe(1);
      expect(unknown.stderr).toMatch(/no series "table:nosuch:inserts".*`shardcast forecast list` names the series there are/);
      const retired = cli(['show', 'shard:902:load']);
      expect(retired.status).toBe(1);
      expect(cli(['show', 'table:orders:inserts', '--json']).status).toBe(0);
    } finally {
      await catalog.pool.query("delete from shardcast.movements where id = 'split_of_902'");
    }
  });
});
