import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workflowStateOf } from '../../client/doctor.js';
import { createDistributedTable, ensureSchedules, janitorScheduleId, moveResult, startMove, startSplit, type MoveRequest } from '../../client/index.js';
import { parseConfig } from '../../src/config.js';
import { createMetricsRegistry } from '../../src/metrics/metrics.js';
import { DEFAULT_SESSION_LIMITS } from '../../workers/control.js';
import { NodePools } from '../../src/catalog/node-pools.js';
import { failpointHits } from '../../src/failpoints.js';
import { commitCatalogSwitch, prepareCutover, type CutoverTarget } from '../../src/movement/cutover.js';
import { doctor, type DoctorReport, type DoctorSummary, type LeftoverKind } from '../../src/movement/doctor.js';
import { movementNames, shardTables } from '../../src/movement/replication.js';
import { createRouter, type Router } from '../../src/router/router.js';
import { movementProgressQuery, type MovementPhase } from '../../workflows/messages.js';
import { adminQuery, createTestCatalog, expectNoMovementLeftovers, fleet, recordHistory, startTestWorker, type TestCatalog, type TestWorker, uniqueName, until } from '../helpers/fleet.js';

let catalog: TestCatalog;
let worker: TestWorker;
let router: Router;
const pools = new NodePools();
let shardId: number;
let keys: number[];

const FAST: Partial<MoveRequest> = { pollSeconds: 0.2, graceSeconds: 0, retry: { maximumAttempts: 2, initialIntervalMs: 200, maximumIntervalMs: 500 } };

beforeAll(async () => {
  catalog = await createTestCatalog('doctor');
  worker = await startTestWorker(catalog.catalogUrl);
  await createDistributedTable(worker.options, { name: 'counters', columns: 'id bigint primary key, n bigint not null default 0', shardKey: 'id', shardCount: 3 });
  router = await createRouter({ catalogUrl: catalog.catalogUrl });
  for (let id = 1; id <= 90; id++) await router.forKey('counters', id).query('insert into counters values ($1, 0)', [id]);
  const shard = await placement();
  shardId = shard.id;
  const { rows } = await adminQuery(catalog.nodeUrl(shard.node), `select id::int from ${shard.schema}.counters order by id`);
  keys = rows.map((r: { id: number }) => r.id);
});

afterAll(async () => {
  delete process.env.SHARDCAST_FAILPOINTS;
  await router?.close();
  await pools.end();
  await worker?.close();
  await catalog?.close();
});

async function placement(id?: number): Promise<{ id: number; node: string; schema: string; other: string }> {
  const { rows } = await catalog.pool.query<{ id: number; node: string; schema: string }>(
    `select s.id::int as id, n.name as node, s.schema_name as schema from shardcast.shards s
       join shardcast.placements p on p.shard_id = s.id join shardcast.nodes n on n.id = p.node_id
      where $1::bigint is null or s.id = $1 order by s.id limit 1`,
    [id ?? null],
  );
  const row = rows[0]!;
  return { ...row, other: ['node-1', 'node-2', 'node-3'].find((n) => n !== row.node)! };
}

function runDoctor(fix: boolean): Promise<DoctorReport> {
  return doctor({ catalog: catalog.pool, catalogUrl: catalog.catalogUrl, pools, workflowState: workflowStateOf(worker.client) }, { fix });
}

/** One writer incrementing the shard's counters through the router; it counts what was acknowledged. */
function startWriter(): { stop(): Promise<{ acknowledged: Map<number, number>; failed: number }> } {
  const acknowledged = new Map<number, number>();
  let failed = 0;
  let stop = false;
  const loop = (async () => {
    for (let i = 0; !stop; i++) {
      const key = keys[i % keys.length]!;
      try {
        await router.forKey('counters', key).query('update counters set n = n + 1 where id = $1', [key]);
        acknowledged.set(key, (acknowledged.get(key) ?? 0) + 1);
      } catch {
        failed++;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  return {
    async stop() {
      stop = true;
      await loop;
      return { acknowledged, failed };
    },
  };
}

type Stop =
  | { failpoint: string }
  | { phase: MovementPhase; options: Partial<MoveRequest> }
  /** Held before the cutover activity; then the switch is cut short by hand, as a crash would leave it. */
  | { switch: 'between-prepares' | 'both-prepared' | 'catalog-committed' };

const PHASES: Array<{ name: string; stop: Stop; expect: LeftoverKind[] }> = [
  { name: 'lease', stop: { failpoint: 'activity.prepareTarget' }, expect: ['lease'] },
  { name: 'prepare', stop: { failpoint: 'activity.startStreaming' }, expect: ['lease', 'target-schema'] },
  // Held before its own copy starts (the copy creates the slot, then the subscription).
  { name: 'copy', stop: { failpoint: 'activity.copyRows' }, expect: ['lease', 'target-schema', 'publication', 'watermark'] },
  { name: 'catch-up', stop: { phase: 'catch-up', options: { catchUpLagBytes: -1 } }, expect: ['lease', 'target-schema', 'slot', 'publication', 'subscription'] },
  { name: 'verify', stop: { failpoint: 'activity.verify' }, expect: ['lease', 'target-schema', 'slot', 'subscription'] },
  { name: 'approval', stop: { phase: 'approval', options: { approvalRequired: true } }, expect: ['lease', 'target-schema', 'slot', 'subscription'] },
  { name: 'between the PREPAREs', stop: { switch: 'between-prepares' }, expect: ['lease', 'prepared-transaction', 'target-schema', 'slot'] },
  { name: 'both prepared', stop: { switch: 'both-prepared' }, expect: ['lease', 'prepared-transaction', 'target-schema', 'slot'] },
  { name: 'catalog committed, source prepared', stop: { switch: 'catalog-committed' }, expect: ['lease', 'prepared-transaction', 'slot'] },
  { name: 'cleanup', stop: { failpoint: 'activity.stopStreaming' }, expect: ['lease', 'fenced-schema', 'slot', 'subscription'] },
];

describe('doctor: a movement terminated at every phase', () => {
  const writer = { current: undefined as ReturnType<typeof startWriter> | undefined };
  beforeAll(() => {
    writer.current = startWriter();
  });

  it.each(PHASES)('$name: reported, fixed to zero leftovers, and the shard moves again', async ({ stop, expect: kinds }) => {
    const before = await placement(shardId);
    const hold = 'failpoint' in stop ? stop.failpoint : 'switch' in stop ? 'activity.cutover' : undefined;
    const hits = hold ? (failpointHits.get(hold) ?? 0) : 0;
    if (hold) process.env.SHARDCAST_FAILPOINTS = `${hold}=sleep:600000`;
    const handle = await startMove(worker.options, { ...FAST, ...('phase' in stop ? stop.options : {}), shardId, targetNode: before.other });
    try {
      if (hold) await until(`the movement held at ${hold}`, async () => (failpointHits.get(hold) ?? 0) > hits, 60_000);
      else if ('phase' in stop) await until(`phase ${stop.phase}`, async () => (await handle.query(movementProgressQuery)).phase === stop.phase, 60_000);
    } finally {
      delete process.env.SHARDCAST_FAILPOINTS;
    }
    const { rows: lease } = await catalog.pool.query<{ id: string }>("select id from shardcast.movements where shard_id = $1 and state = 'running'", [shardId]);
    const movementId = lease[0]!.id;
    await handle.terminate('doctor test');
    if ('switch' in stop) await cutShort(stop.switch, movementId, before);

    const found = await runDoctor(false);
    const mine = found.leftovers.filter((l) => l.movementId === movementId);
    expect(mine.every((l) => l.workflow === 'closed' && l.workflowId === handle.workflowId)).toBe(true);
    for (const kind of kinds) expect(mine.map((l) => l.kind), kind).toContain(kind);
    expect(found.leftovers.filter((l) => l.movementId !== movementId)).toEqual([]);
    expect(found.inUse).toEqual([]);

    const fixed = await runDoctor(true);
    expect(fixed.actions.filter((a) => !a.ok)).toEqual([]);
    expect(fixed.leftovers).toEqual([]);
    expect((await runDoctor(false)).leftovers).toEqual([]);
    await expectNoMovementLeftovers(pools, catalog.nodes);
    await expectOnlyPlacedSchemas();
    const after = await placement(shardId);
    if (stop && 'switch' in stop && stop.switch !== 'between-prepares') expect(after.node).toBe(before.other);
    else if ('failpoint' in stop && stop.failpoint === 'activity.stopStreaming') expect(after.node).toBe(before.other);
    else expect(after.node).toBe(before.node);

    // The same shard moves again.
    const again = await startMove(worker.options, { ...FAST, shardId, targetNode: after.other });
    expect((await moveResult(again)).target).toBe(after.other);
    await expectNoMovementLeftovers(pools, catalog.nodes);
  });

  it('lost no acknowledged write', { timeout: 60_000 }, async () => {
    const { acknowledged, failed } = await writer.current!.stop();
    const { rows } = await router.forKey('counters', keys[0]!).query<{ id: number; n: number }>(`select id::int, n::int from counters where id = any($1::bigint[])`, [keys]);
    let total = 0;
    for (const row of rows) {
      expect(row.n, `key ${row.id}`).toBeGreaterThanOrEqual(acknowledged.get(row.id) ?? 0);
      total += row.n;
    }
    const acked = [...acknowledged.values()].reduce((a, b) => a + b, 0);
    expect(acked).toBeGreaterThan(0);
    // A write that failed may still have committed (its reply lost); none beyond those.
    expect(total).toBeLessThanOrEqual(acked + failed);
  });
});

/** The cutover's own steps, stopped where a crash would stop them. */
async function cutShort(state: 'between-prepares' | 'both-prepared' | 'catalog-committed', movementId: string, before: { node: string; other: string }): Promise<void> {
  const move: CutoverTarget = {
    shard: await shardTables(catalog.pool, shardId),
    source: catalog.nodes.find((n) => n.name === before.node)!,
    target: catalog.nodes.find((n) => n.name === before.other)!,
    names: movementNames(movementId),
  };
  const deps = { catalogUrl: catalog.catalogUrl, pools };
  await prepareCutover(deps, move, { verify: 'counts' });
  if (state === 'between-prepares') await adminQuery(catalog.catalogUrl, `rollback prepared '${move.names.gid}'`);
  if (state === 'catalog-committed') await commitCatalogSwitch(deps, move.names.gid);
}

/** Every shard schema on a node is one the catalog places there. */
async function expectOnlyPlacedSchemas(): Promise<void> {
  for (const node of catalog.nodes) {
    const { rows } = await adminQuery(node.dsn, `select nspname::text as name from pg_namespace where nspname ~ '^sc_s[0-9]+' order by 1`);
    const placed = await catalog.pool.query<{ name: string }>(
      'select s.schema_name as name from shardcast.shards s join shardcast.placements p on p.shard_id = s.id where p.node_id = $1 order by 1',
      [node.id],
    );
    expect(rows.map((r: { name: string }) => r.name), node.name).toEqual(placed.rows.map((r) => r.name));
  }
  const { rows } = await catalog.pool.query("select id from shardcast.movements where state = 'running'");
  expect(rows).toEqual([]);
}

describe('the janitor schedule, its metric, and the connection limits', () => {
  it('is created by ensureSchedules every 10 minutes; a run counts leftovers (metric), and with fix cleans them', { timeout: 120_000 }, async () => {
    const config = parseConfig({ forecast: { retrainAt: '04:30' } });
    const ensured = await ensureSchedules(worker.options, config);
    expect(ensured.map((s) => s.scheduleId)).toContain(janitorScheduleId(worker.options.workflowIdPrefix));
    const schedule = await worker.client.schedule.getHandle(janitorScheduleId(worker.options.workflowIdPrefix)).describe();
    expect(schedule.spec.intervals).toMatchObject([{ every: 10 * 60_000 }]);
    expect(schedule.action).toMatchObject({ type: 'startWorkflow', workflowType: 'janitor', taskQueue: worker.taskQueue, args: [{ fix: true }] });

    // A movement terminated at its approval gate: its slot and the verify phase's copy of it (`_v`) are left.
    const before = await placement(shardId);
    const handle = await startMove(worker.options, { ...FAST, approvalRequired: true, shardId, targetNode: before.other });
    await until('the approval gate', async () => (await handle.query(movementProgressQuery)).phase === 'approval', 60_000);
    await handle.terminate('janitor test');

    const janitorIds: string[] = [];
    const janitorRun = (fix: boolean) => {
      const workflowId = uniqueName('janitor');
      janitorIds.push(workflowId);
      return worker.client.workflow.execute('janitor', { taskQueue: worker.taskQueue, workflowId, args: [{ fix }] }) as Promise<DoctorSummary>;
    };
    const counted = await janitorRun(false);
    expect(counted).toMatchObject({ fixed: 0, failed: 0, unreachable: 0, leftovers: { lease: 1, 'target-schema': 1, slot: 2, subscription: 1 } });
    const metrics = await createMetricsRegistry(catalog.pool).metrics();
    expect(metrics).toContain('shardcast_leftovers{kind="slot"} 2');
    expect(metrics).toContain('shardcast_leftovers{kind="lease"} 1');
    expect(metrics).toMatch(/shardcast_janitor_last_run_timestamp_seconds \d+/);

    const cleaned = await janitorRun(true);
    await recordHistory(worker.client, janitorIds[1]!, 'janitor');
    expect(cleaned.fixed).toBeGreaterThan(0);
    expect(cleaned.failed).toBe(0);
    expect(Object.values(cleaned.leftovers).every((n) => n === 0)).toBe(true);
    expect(await createMetricsRegistry(catalog.pool).metrics()).toContain('shardcast_leftovers{kind="slot"} 0');
    await expectNoMovementLeftovers(pools, catalog.nodes);
    await expectOnlyPlacedSchemas();
  });

  it('node connections carry the limits; nodes keep slot WAL bounded', async () => {
    const limited = new NodePools({ limits: DEFAULT_SESSION_LIMITS });
    try {
      const { rows } = await limited.get(catalog.nodeUrl('node-1')).query<Record<string, string>>(
        `select current_setting('statement_timeout') as st, current_setting('idle_in_transaction_session_timeout') as idle,
                current_setting('tcp_keepalives_idle') as ka, current_setting('tcp_keepalives_count') as kc, current_setting('max_slot_wal_keep_size') as keep`,
      );
      expect(rows[0]).toEqual({ st: '1min', idle: '30s', ka: '10', kc: '3', keep: '10GB' });
    } finally {
      await limited.end();
    }
  });
});

describe('shardcast doctor (the command)', () => {
  const cli = (args: string[]) =>
    spawnSync(process.execPath, [path.resolve(import.meta.dirname, '../../bin/shardcast.js'), 'doctor', ...args], {
      encoding: 'utf8',
      env: { ...process.env, SHARDCAST_CATALOG_URL: catalog.catalogUrl, SHARDCAST_TEMPORAL_ADDRESS: fleet().temporalAddress },
      timeout: 60_000,
    });

  it('exits 0 with nothing left; an object of no known movement is reported, left alone by --fix, and exits 1', { timeout: 120_000 }, async () => {
    const clean = cli(['--json']);
    expect(clean.status, clean.stderr).toBe(0);
    expect(JSON.parse(clean.stdout)).toMatchObject({ actions: [], leftovers: [], inUse: [], unreachable: [] });

    await adminQuery(catalog.nodeUrl('node-2'), 'create publication sc_mv_nobody_knows');
    try {
      const fixed = cli(['--fix', '--json']);
      expect(fixed.status).toBe(1);
      expect(fixed.stderr).toMatch(/shardcast: error: 1 leftover\(s\) remain/);
      expect(JSON.parse(fixed.stdout)).toMatchObject({
        actions: [],
        leftovers: [{ kind: 'publication', node: 'node-2', name: 'sc_mv_nobody_knows', movementId: null, workflowId: null, workflow: 'unknown' }],
      });
      const human = cli([]);
      expect(human.stdout).toMatch(/^PUBLICATION\s+node-2\s+sc_mv_nobody_knows\s+\(unknown\)/im);
    } finally {
      await adminQuery(catalog.nodeUrl('node-2'), 'drop publication sc_mv_nobody_knows');
    }
  });
});

describe('doctor: a split terminated at its approval gate', () => {
  it('finds its source slot and publication and the new shards\' schemas, cleans them, and the split then runs', { timeout: 180_000 }, async () => {
    await createDistributedTable(worker.options, { name: 'pairs', columns: 'id bigint primary key, v int not null default 0', shardKey: 'id', shardCount: 1, nodes: ['node-3'] });
    for (let id = 1; id <= 40; id++) await router.forKey('pairs', id).query('insert into pairs values ($1, 0)', [id]);
    const { rows } = await catalog.pool.query<{ id: number }>(
      `select s.id::int as id from shardcast.shards s join shardcast.distributed_tables t on t.group_id = s.group_id where t.name = 'pairs'`,
    );
    const shard = rows[0]!.id;
    const split = () => startSplit(worker.options, { ...FAST, shardId: shard, targetNodes: ['node-1', 'node-2'] });
    const handle = await startSplit(worker.options, { ...FAST, approvalRequired: true, shardId: shard, targetNodes: ['node-1', 'node-2'] });
    await until('the approval gate', async () => (await handle.query(movementProgressQuery)).phase === 'approval', 60_000);
    await handle.terminate('doctor test');

    const found = await runDoctor(false);
    const kinds = found.leftovers.map((l) => `${l.kind} ${l.node}`).sort();
    // The source's slot and the verify phase's copy of it (`_0_v`).
    expect(kinds).toEqual(['lease catalog', 'publication node-3', 'slot node-3', 'slot node-3', 'target-schema node-1', 'target-schema node-2']);
    expect(found.leftovers.filter((l) => l.kind === 'slot').map((l) => l.name.replace(/^.*(_0(_v)?)$/, '$1')).sort()).toEqual(['_0', '_0_v']);
    expect(new Set(found.leftovers.map((l) => l.movementId)).size).toBe(1);

    const fixed = await runDoctor(true);
    expect(fixed.actions.filter((a) => !a.ok)).toEqual([]);
    expect(fixed.leftovers).toEqual([]);
    await expectNoMovementLeftovers(pools, catalog.nodes);
    await expectOnlyPlacedSchemas();

    const result = await moveResult(await split());
    expect(result.shards).toHaveLength(2);
    const { rows: counts } = await router.all<{ n: string }>('select count(*)::text as n from pairs');
    expect(counts.reduce((a, r) => a + Number(r.n), 0)).toBe(40);
    await expectNoMovementLeftovers(pools, catalog.nodes);
  });
});
