import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { setClockCompression } from '../../src/clock.js';
import { readEmbeddedPassword } from '../../src/fleet/embedded-password.js';
import { assertPortFree, freePort } from '../../src/fleet/postgres-server.js';
import { hashSafeIntegerAsInt8 } from '../../src/hashing.js';
import { listSeriesWithModels } from '../../src/forecasting/store.js';
import { storedPlans } from '../../src/planning/store.js';
import type { MoveAction } from '../../src/planning/types.js';
import { ensurePartitions } from '../../src/profiling/partitions.js';
import { loadSeries } from '../../src/profiling/series.js';
import { createRouter, type Router } from '../../src/router/router.js';
import { scheduleId } from '../../client/schedules.js';
import { fleet, uniqueName } from '../helpers/fleet.js';

/**
 * The predictive loop end to end, on the real fleet `shardcast up` starts, on a compressed load clock
 * (clock.compression 30: 10-second steps, a 2-minute hour, a 48-minute day). The schedules fire on it:
 * the forecast every 120 s (two clock hours ahead), and the rebalancer's replanning every 10 s (five
 * clock minutes, planning.mode on), each round on the latest forecast over the next clock hour.
 *
 * Workload: table `events`, 4 hash shards on 2 nodes. One shard on node-1 (the hot one) has a daily
 * peak of 54 inserts/s (a Gaussian bump 300 s = 2.5 clock hours wide); the others a gentle daily wave
 * around 4/s. node-1's capacity is 50 load units (target 70%: 35), node-2's 200: at its peak the hot
 * shard alone would overload node-1. History: seven clock days of samples as the collector stores them
 * (the same cycle, each day's level ±10% and each step ±25% noisy), written before the table's first real sample; the live day is driven
 * through the router, the application's role, write by write.
 *
 * The test shows: the daily retraining (triggered once, at the production budgets) trains the hot
 * shard's series; the hourly forecast sees the peak coming; a replanning round of the rebalance
 * workflow plans a move of the hot shard on that forecast and starts it; the move finishes before node-1 would
 * have crossed its target; no node goes over capacity at the peak (the collector's own node series);
 * and every acknowledged write is present exactly once.
 */

const ROOT = path.resolve(import.meta.dirname, '../..');
const CLI = path.join(ROOT, 'bin/shardcast.js');
const N = 30;
const STEP = 300_000 / N;
const DAY = 86_400_000 / N;
const WIDTH = 300_000;
const BASE = 4;
const HOT = 50;
const CAPACITY = { 'node-1': 50, 'node-2': 200 } as const;
const TARGET = 0.7;
/** From the seeding to the peak: up to ~4 minutes of retraining, then the forecasts that see it coming. */
const PEAK_AFTER_MS = 9 * 60_000;
/** Clock days of collected history before the live day. */
const HISTORY_DAYS = 7;

let up: { child: ChildProcessWithoutNullStreams; lines: string[] } | undefined;
let env: NodeJS.ProcessEnv;
let catalog: pg.Pool | undefined;
let router: Router | undefined;
let connection: Connection | undefined;

afterAll(async () => {
  await router?.close().catch(() => undefined);
  await catalog?.end().catch(() => undefined);
  await connection?.close().catch(() => undefined);
  if (up && up.child.exitCode === null) {
    up.child.kill('SIGTERM');
    await new Promise((r) => up!.child.once('exit', r));
  }
  setClockCompression(1);
});

function cli(...args: string[]): string {
  const result = spawnSync(process.execPath, [CLI, ...args], { cwd: ROOT, env, encoding: 'utf8', timeout: 120_000 });
  if (result.status !== 0) throw new Error(`shardcast ${args.join(' ')}: exit ${result.status}: ${result.stderr}`);
  return result.stdout;
}

async function until<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${up ? `; shardcast up printed, last:\n${up.lines.slice(-30).join('\n')}` : ''}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** Two consecutive free ports, for the embedded nodes' base port. */
async function freePortPair(): Promise<number> {
  for (;;) {
    const port = await freePort();
    if (port >= 65535) continue;
    if (await assertPortFree(port + 1, 'probe').then(() => true, () => false)) return port;
  }
}

/** Distance in ms from t to the nearest daily peak. */
const fromPeak = (t: number, peakAt: number): number => {
  const phase = (((t - peakAt) % DAY) + DAY) % DAY;
  return Math.min(phase, DAY - phase);
};
const hotRate = (t: number, peakAt: number): number => BASE + HOT * Math.exp(-((fromPeak(t, peakAt) / WIDTH) ** 2));
const coldRate = (t: number, peakAt: number): number => BASE * (1 + 0.25 * Math.cos((2 * Math.PI * (t - peakAt)) / DAY));

/** A seeded normal variate (Box–Muller on a small LCG): the history is the same on every run. */
function noise(seed: number): () => number {
  let s = seed;
  const uniform = () => ((s = (s * 1103515245 + 12345) % 2147483648) + 1) / 2147483649;
  return () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
}

describe('the predictive loop on a compressed day (shardcast up, clock ×30)', () => {
  it('a movement the rebalance workflow starts on the forecast finishes before the peak; no node over capacity; every acknowledged write once', { timeout: 20 * 60_000 }, async () => {
    const dataDir = path.join(fleet().baseDir, uniqueName('predictive'));
    const ports = { catalog: await freePort(), node1: await freePortPair(), temporal: await freePort(), ui: await freePort(), metrics: await freePort() };
    env = {
      ...process.env,
      SHARDCAST_DATA_DIR: dataDir,
      SHARDCAST_CATALOG_PORT: String(ports.catalog),
      SHARDCAST_NODES_COUNT: '2',
      SHARDCAST_NODES_BASE_PORT: String(ports.node1),
      SHARDCAST_TEMPORAL_PORT: String(ports.temporal),
      SHARDCAST_TEMPORAL_UI_PORT: String(ports.ui),
      SHARDCAST_METRICS_PORT: String(ports.metrics),
      TEMPORAL_CLI_PATH: fleet().temporalCliPath,
      SHARDCAST_CLOCK_COMPRESSION: String(N),
      SHARDCAST_COLLECTION_INTERVAL_SECONDS: '1',
      SHARDCAST_PLANNING_MODE: 'on',
      SHARDCAST_PLANNING_REPLAN_MINUTES: '5',
      SHARDCAST_PLANNING_HORIZON_STEPS: '12',
      SHARDCAST_MOVEMENT_GRACE_SECONDS: '0',
    };
    const child = spawn(process.execPath, [CLI, 'up'], { cwd: ROOT, env });
    const lines: string[] = [];
    up = { child, lines };
    child.stdout.on('data', (d: Buffer) => lines.push(...d.toString().split('\n').filter(Boolean)));
    child.stderr.on('data', (d: Buffer) => lines.push(...d.toString().split('\n').filter(Boolean).map((l) => `stderr: ${l}`)));
    await until('shardcast: ready', async () => {
      if (child.exitCode !== null) throw new Error(`shardcast up exited ${child.exitCode}:\n${lines.join('\n')}`);
      return lines.includes('shardcast: ready');
    }, 180_000);
    expect(lines.join('\n')).toMatch(/^schedules\s+retrain every 2880 s, forecast every 120 s \(load clock ×30\).*, replan every 10 s/m);

    setClockCompression(N); // this process reads the series on the same clock
    const password = readEmbeddedPassword(dataDir)!;
    catalog = new pg.Pool({ connectionString: `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${ports.catalog}/shardcast`, max: 4 });
    connection = await Connection.connect({ address: `127.0.0.1:${ports.temporal}` });
    const temporal = new Client({ connection });

    cli('tables', 'create', 'events', '--columns', 'id bigint primary key, payload text', '--key', 'id', '--shards', '4');
    cli('nodes', 'set-capacity', 'node-1', String(CAPACITY['node-1']));
    cli('nodes', 'set-capacity', 'node-2', String(CAPACITY['node-2']));
    const { rows: shards } = await catalog.query<{ id: number; schema_name: string; hash_min: string; hash_max: string; node: string; node_id: number; created_at: Date }>(
      `select s.id::int, s.schema_name, s.hash_min::text, s.hash_max::text, n.name as node, n.id::int as node_id, s.created_at
         from shardcast.shards s join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id order by s.id`,
    );
    const hot = shards.find((s) => s.node === 'node-1')!;
    const other1 = shards.find((s) => s.node === 'node-1' && s.id !== hot.id)!;
    expect(other1).toBeDefined();

    // Seven clock days of history, as the collector would have stored it, ending before the table's first real sample.
    const seededAt = Date.now();
    const peakAt = seededAt + PEAK_AFTER_MS;
    const historyEnd = Math.min(...shards.map((s) => s.created_at.getTime())) - 1000;
    const historyStart = historyEnd - HISTORY_DAYS * DAY;
    await ensurePartitions(catalog, new Date(historyStart - 86_400_000), 2);
    const epoch = new Date(historyStart - DAY).toISOString();
    for (const s of shards) {
      const gauss = noise(s.id);
      const rate = s.id === hot.id ? hotRate : coldRate;
      // Each day's level differs a little from the day before's (±10%), and each step is noisy (25%): as real traffic.
      const levels = Array.from({ length: HISTORY_DAYS + 1 }, () => 1 + 0.1 * gauss());
      const ts: string[] = [];
      const ins: number[] = [];
      let total = 0;
      for (let t = historyStart; t <= historyEnd; t += STEP) {
        const level = levels[Math.floor((t - historyStart) / DAY)]!;
        total += Math.max(0, level * rate(t, peakAt) * (STEP / 1000) * (1 + 0.25 * gauss()));
        ts.push(new Date(t).toISOString());
        ins.push(Math.round(total));
      }
      await catalog.query(
        `insert into shardcast_stats.table_samples (ts, node_id, schema_name, table_name, n_tup_ins, n_tup_upd, n_tup_del, seq_scan, seq_tup_read, idx_scan, idx_tup_fetch, n_live_tup, stats_epoch)
         select ts, $1, $2, 'events', ins, 0, 0, 0, 0, 0, 0, ins, $5 from unnest($3::timestamptz[], $4::bigint[]) as s(ts, ins)`,
        [s.node_id, s.schema_name, ts, ins, epoch],
      );
    }

    // The live day, through the router as the application: each shard's rate, write by write.
    const appPassword = readFileSync(path.join(dataDir, 'app-password'), 'utf8').trim();
    router = await createRouter({ catalogUrl: `postgres://shardcast_app:${encodeURIComponent(appPassword)}@127.0.0.1:${ports.catalog}/shardcast`, listen: false });
    const keysOf = new Map(shards.map((s) => [s.id, [] as number[]]));
    const shardOfHash = (h: bigint) => shards.find((s) => BigInt(s.hash_min) <= h && h <= BigInt(s.hash_max))!.id;
    let nextKey = 1;
    const takeKey = (shardId: number): number => {
      const pool = keysOf.get(shardId)!;
      while (pool.length === 0) {
        const k = nextKey++;
        keysOf.get(shardOfHash(hashSafeIntegerAsInt8(k)))!.push(k);
      }
      return pool.shift()!;
    };
    const acked: number[] = [];
    const failed: string[] = [];
    let inFlight = 0;
    const start = Date.now();
    const due = new Map(shards.map((s) => [s.id, 0]));
    let driving = true;
    const driver = (async () => {
      let last = start;
      while (driving) {
        const now = Date.now();
        for (const s of shards) {
          const rate = s.id === hot.id ? hotRate(now, peakAt) : coldRate(now, peakAt);
          due.set(s.id, due.get(s.id)! + (rate * (now - last)) / 1000);
          while (due.get(s.id)! >= 1 && inFlight < 200) {
            due.set(s.id, due.get(s.id)! - 1);
            const k = takeKey(s.id);
            inFlight++;
            router!
              .forKey('events', k)
              .query('insert into events values ($1, $2)', [k, `w${k}`])
              .then(
                () => acked.push(k),
                (err: Error) => failed.push(`${k}: ${err.message}`),
              )
              .finally(() => inFlight--);
          }
        }
        last = now;
        await new Promise((r) => setTimeout(r, 100));
      }
    })();

    // The daily retraining, once now (its schedule runs every 2880 s), at the production budgets.
    await temporal.schedule.getHandle(scheduleId('retrain')).trigger();
    const hotSeries = `shard:${hot.id}:load`;
    await until(`a trained model of ${hotSeries}`, async () => {
      const { rows } = await catalog!.query<{ status: string }>(`select status from shardcast_forecast.models where series = $1 order by trained_at desc limit 1`, [hotSeries]).catch(() => ({ rows: [] as Array<{ status: string }> }));
      return rows[0]?.status === 'trained' ? rows[0].status : undefined;
    }, PEAK_AFTER_MS - 4 * 60_000);
    const trainedAfterMs = Date.now() - seededAt;
    const hotModel = (await listSeriesWithModels(catalog, [])).find((l) => l.series === hotSeries)!;
    const trust = `${hotSeries}: ${hotModel.model}, back-test MASE ${hotModel.mase?.toFixed(3)} against seasonal naive ${hotModel.baselineMase?.toFixed(3)}`;
    console.log(trust);
    await temporal.schedule.getHandle(scheduleId('forecast')).trigger();

    // node-1's load without the move crosses its target here: the move must be done before.
    let overloadAt = peakAt;
    for (let t = peakAt - 10 * 60_000; t <= peakAt; t += 1000) {
      if (hotRate(t, peakAt) + coldRate(t, peakAt) > TARGET * CAPACITY['node-1']) {
        overloadAt = t;
        break;
      }
    }
    const moved = await until(`the hot shard ${hot.id} moved by the rebalancer`, async () => {
      const { rows } = await catalog!.query<{ state: string; workflow_id: string; started_at: Date; finished_at: Date | null }>(
        `select state, workflow_id, started_at, finished_at from shardcast.movements where shard_id = $1 and operation = 'move' order by started_at desc limit 1`,
        [hot.id],
      );
      return rows[0]?.state === 'done' ? rows[0] : undefined;
    }, peakAt + 60_000 - Date.now()).catch((err: Error) => {
      throw new Error(`${err.message}\n${trust}`);
    });

    // Drive on through the peak, then check.
    await new Promise((r) => setTimeout(r, Math.max(0, peakAt + 30_000 - Date.now())));
    driving = false;
    await driver;
    await until('the writes in flight', async () => inFlight === 0, 60_000);

    const plans = (await storedPlans(catalog, { limit: 500 })).sort((a, b) => a.id - b.id);
    // The plan whose action started the move, and what every plan said (for a failure's diagnosis).
    const starter = plans
      .flatMap((p) => p.actions.filter((a) => a.workflowId === moved.workflow_id).map((progress) => ({ plan: p, progress, action: p.plan.actions.find((x) => x.id === progress.actionId) as MoveAction })))
      .at(0);
    const story = plans
      .filter((p) => p.plan.actions.length > 0 || p.plan.notes.some((n) => n.startsWith(`${hotSeries}:`)))
      .map((p) => `  plan ${p.id} ${p.createdAt.toISOString().slice(11, 19)} ${p.trigger}: ${p.plan.actions.map((a) => `${a.kind} (${a.reason.slice(0, 140)})`).join('; ') || 'no action'}${p.plan.notes.filter((n) => n.startsWith(`${hotSeries}:`)).map((n) => ` [${n}]`).join('')}`);
    console.log(
      [
        `retraining done ${Math.round(trainedAfterMs / 1000)} s after the seeding; peak ${new Date(peakAt).toISOString()}, node-1 over its target from ${new Date(overloadAt).toISOString()} without the move`,
        `move of shard ${hot.id}: started ${moved.started_at.toISOString()}, done ${moved.finished_at!.toISOString()} (${Math.round((overloadAt - moved.finished_at!.getTime()) / 1000)} s before the overload), workflow ${moved.workflow_id}`,
        `planned: ${starter ? `${starter.action.reason} (plan ${starter.plan.id}, ${starter.plan.trigger})` : 'by no stored plan'}`,
        `writes: ${acked.length} acknowledged, ${failed.length} failed${failed.length ? ` (first: ${failed[0]})` : ''}`,
        'plans with actions or notes on the hot shard:',
        ...story,
      ].join('\n'),
    );

    // Planned on the forecast by a round of the rebalance workflow, and started by it.
    expect(starter).toBeDefined();
    expect(starter!.action).toMatchObject({ kind: 'move', startsInPeak: false, late: false });
    expect(starter!.action.shardIds).toContain(hot.id);
    expect(starter!.plan.plan.notes.join('\n')).not.toContain(`${hotSeries}: no trustworthy model`);
    // Finished before node-1 would have crossed its target.
    expect(moved.finished_at!.getTime()).toBeLessThan(overloadAt);

    // No node over capacity at the peak (nor before it), by the collector's own series.
    for (const name of ['node-1', 'node-2'] as const) {
      const series = await loadSeries(catalog, `node:${name}:load`, new Date(start), new Date(peakAt + 30_000));
      const values = series.map((p) => p.value).filter((v): v is number => v !== null);
      // node-2 sampled throughout; node-1 until it is retired, when the planner drains it (scale-in).
      expect(values.length).toBeGreaterThan(name === 'node-2' ? 30 : 5);
      console.log(`${name}: max load ${Math.max(...values).toFixed(1)} of capacity ${CAPACITY[name]} (${values.length} steps sampled)`);
      expect(Math.max(...values)).toBeLessThanOrEqual(CAPACITY[name]);
    }

    // Every acknowledged write is there exactly once, as the application reads it.
    const { rows: read } = await router.all<{ id: string }>('select id::text from events');
    const seen = new Map<number, number>();
    for (const r of read) seen.set(Number(r.id), (seen.get(Number(r.id)) ?? 0) + 1);
    expect([...seen.values()].filter((n) => n > 1)).toEqual([]);
    expect(acked.filter((k) => !seen.has(k))).toEqual([]);
    expect(acked.length).toBeGreaterThan(5_000);
  });
});
