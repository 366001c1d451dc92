import { ScheduleOverlapPolicy } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureSchedules, runForecastingNow, scheduleId } from '../../client/index.js';
import { parseConfig } from '../../src/config.js';
import type { ForecastingSummary } from '../../src/forecasting/runs.js';
import type { Calibration, StoredMember } from '../../src/forecasting/store.js';
import { ensurePartitions } from '../../src/profiling/partitions.js';
import { createTestCatalog, startTestWorker, uniqueName, type TestCatalog, type TestWorker } from '../helpers/fleet.js';

let catalog: TestCatalog;
let worker: TestWorker;
let second: TestWorker;
const DAY = 86_400_000;
const STEP = 300_000;
/** Inserts per second of the synthetic `orders` workload: a daily wave. */
const insertRate = (t: number) => 100 + 50 * Math.sin((2 * Math.PI * t) / DAY);
/** Its integral from 0: the cumulative counter. */
const inserted = (t: number) => (100 * t + (50 * DAY) / (2 * Math.PI) * (1 - Math.cos((2 * Math.PI * t) / DAY))) / 1000;

/**
 * Samples as the collector would have stored them, every 5 minutes: `orders` (3 days: trained),
 * `young` (6 hours: fallback) and an index sampled once an hour ago, then dropped (no rate at all:
 * the one series whose training fails, for real, in the cleaning of its empty series).
 */
async function seedSamples(now: number): Promise<void> {
  await ensurePartitions(catalog.pool, new Date(now - 4 * DAY), 5);
  const node = catalog.nodes[0]!.id;
  const epoch = new Date(now - 10 * DAY).toISOString();
  const table = async (schema: string, name: string, from: number) => {
    const ts: string[] = [];
    const ins: number[] = [];
    for (let t = from; t < now; t += STEP) {
      ts.push(new Date(t).toISOString());
      ins.push(Math.round(inserted(t)));
    }
    await catalog.pool.query(
      `insert into shardcast_stats.table_samples (ts, node_id, schema_name, table_name, n_tup_ins, n_tup_upd, n_tup_del, seq_scan, seq_tup_read, idx_scan, idx_tup_fetch, n_live_tup, stats_epoch)
       select ts, $1, $2, $3, ins, ins / 5, 0, 0, ins * 2, ins * 2, ins, ins, $6 from unnest($4::timestamptz[], $5::bigint[]) as s(ts, ins)`,
      [node, schema, name, ts, ins, epoch],
    );
    await catalog.pool.query(
      `insert into shardcast_stats.index_samples (ts, node_id, schema_name, table_name, index_name, idx_scan, idx_tup_read, stats_epoch)
       select ts, $1, $2, $3, $3 || '_pkey', ins * 2, ins * 2, $6 from unnest($4::timestamptz[], $5::bigint[]) as s(ts, ins)`,
      [node, schema, name, ts, ins, epoch],
    );
  };
  const start = Math.floor((now - 3 * DAY) / STEP) * STEP + 1000;
  await table('sc_s901', 'orders', start);
  await table('sc_s902', 'young', now - 6 * 3_600_000);
  await catalog.pool.query(
    `insert into shardcast_stats.index_samples (ts, node_id, schema_name, table_name, index_name, idx_scan, idx_tup_read, stats_epoch)
     values ($1, $2, 'sc_s901', 'orders', 'orders_fresh', 0, 0, $3)`,
    [new Date(now - 3_600_000).toISOString(), node, epoch],
  );
}

const RETRAIN = { trainingDays: 30, budgetSeconds: 0.4, batchSize: 3, parallelBatches: 2 };

beforeAll(async () => {
  catalog = await createTestCatalog('forecast');
  worker = await startTestWorker(catalog.catalogUrl);
  // A second worker on the same queue: the batches are shared between them.
  second = await startTestWorker(catalog.catalogUrl, undefined, worker.taskQueue);
  await seedSamples(Date.now());
});

afterAll(async () => {
  for (const run of ['retrain', 'forecast'] as const) {
    await worker?.client.schedule.getHandle(scheduleId(run, worker.options.workflowIdPrefix)).delete().catch(() => undefined);
  }
  await second?.close();
  await worker?.close();
  await catalog?.close();
});

describe('daily retraining', () => {
  it('trains every series in batches over two workers; a series that fails is counted, not fatal', { timeout: 180_000 }, async () => {
    const summary: ForecastingSummary = await worker.client.workflow.execute('retrainModels', { taskQueue: worker.taskQueue, workflowId: uniqueName('retrain'), args: [RETRAIN] });
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
    expect(orders.calibration!.halfWidths['0.8']).toHaveLength(12);
    expect(orders.calibration!.halfWidths['0.95']!.every((w, i) => w >= orders.calibration!.halfWidths['0.8']![i]!)).toBe(true);
    expect(Object.keys(orders.scores!.models as object).sort()).toEqual(['arima', 'ets', 'lstm', 'seasonal_naive']);
    console.log(`retrain: ${JSON.stringify(summary)}; table:orders:inserts members ${orders.members.map((m) => `${m.model} ${m.weight.toFixed(2)}`).join(', ')}`);
  });
});

describe('hourly forecasting', () => {
  it('forecasts the next hour of every series with a model, with nested intervals, once per issue', async () => {
    const summary: ForecastingSummary = await worker.client.workflow.execute('forecastLoad', { taskQueue: worker.taskQueue, workflowId: uniqueName('forecast'), args: [{ batchSize: 4, parallelBatches: 2 }] });
    expect(summary).toMatchObject({ kind: 'forecast', series: 12, forecast: 12, failed: 0 });
    const { rows } = await catalog.pool.query<{ series: string; step: number; ts: Date; yhat: number; lo80: number; hi80: number; lo95: number; hi95: number; model: string }>(
      'select * from shardcast_forecast.forecasts where issued_at = $1 order by series, step',
      [summary.asOf],
    );
    expect(rows).toHaveLength(12 * 12);
    for (const r of rows) expect(r.lo95 <= r.lo80 && r.lo80 <= r.yhat && r.yhat <= r.hi80 && r.hi80 <= r.hi95).toBe(true);
    const inserts = rows.filter((r) => r.series === 'table:orders:inserts');
    expect(inserts.map((r) => r.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
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
    const config = parseConfig({ forecast: { retrainAt: '04:30', catchupWindowMinutes: 90, batchSize: 4, parallelBatches: 2 } });
    expect(await ensureSchedules(worker.options, config)).toEqual([
      { scheduleId: scheduleId('retrain', worker.options.workflowIdPrefix), outcome: 'created' },
      { scheduleId: scheduleId('forecast', worker.options.workflowIdPrefix), outcome: 'created' },
    ]);
    const retrain = worker.client.schedule.getHandle(scheduleId('retrain', worker.options.workflowIdPrefix));
    const hourly = worker.client.schedule.getHandle(scheduleId('forecast', worker.options.workflowIdPrefix));
    const described = await retrain.describe();
    expect(described.spec.calendars).toMatchObject([{ hour: [{ start: 4, end: 4 }], minute: [{ start: 30, end: 30 }] }]);
    expect(described.policies).toMatchObject({ overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: 90 * 60_000 });
    expect(described.action).toMatchObject({ type: 'startWorkflow', workflowType: 'retrainModels', taskQueue: worker.taskQueue });
    const hourlySpec = (await hourly.describe()).spec;
    expect(hourlySpec.intervals).toMatchObject([{ every: 3_600_000 }]);

    expect((await ensureSchedules(worker.options, config)).map((s) => s.outcome)).toEqual(['unchanged', 'unchanged']);
    await retrain.pause('test');
    const moved = parseConfig({ forecast: { ...config.forecast, retrainAt: '05:15' } });
    expect((await ensureSchedules(worker.options, moved)).map((s) => s.outcome)).toEqual(['updated', 'unchanged']);
    const after = await retrain.describe();
    expect(after.spec.calendars).toMatchObject([{ hour: [{ start: 5, end: 5 }], minute: [{ start: 15, end: 15 }] }]);
    expect(after.state.paused).toBe(true);

    // `shardcast forecast run`: through the schedule.
    const { handle, via } = await runForecastingNow(worker.options, moved, 'forecast');
    expect(via).toBe('schedule');
    expect(handle.workflowId).toMatch(new RegExp(`^${worker.options.workflowIdPrefix}shardcast-forecast`));
    expect(await handle.result()).toMatchObject({ kind: 'forecast', forecast: 12, failed: 0 });
  });
});
