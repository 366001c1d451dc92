import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { NodePools } from '../src/catalog/node-pools.js';
import { getNodeByName } from '../src/catalog/nodes.js';
import { shardTables } from '../src/movement/replication.js';
import { createRouter } from '../src/router/router.js';
import { quoteIdent } from '../src/sql/ident.js';
import { CpuMeter, percentile, round, startBenchFleet } from './fleet.js';
import { ForegroundLoad } from './move.js';

/**
 * What a neighbour costs the move bench's foreground on this machine, whatever the neighbour is: the
 * same writers (four, incrementing random rows of a 2M-row shard through the router) measured idle,
 * beside one and two busy cores (`yes`; also at the lowest priority, `nice 19` and `SCHED_IDLE`), beside a
 * large buffered and a direct disk write (`dd`), and beside a repeatable-read snapshot held open on the
 * shard's node (what a move's copy holds); with the machine's busy cores, and the full-page images and
 * checkpoints on the writers' node, in each phase. It bounds what any copy governor can achieve here: a
 * copy needs CPU and writes to disk.
 */
export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { seconds: { type: 'string', default: '8' }, rows: { type: 'string', default: '2000000' } } });
  const seconds = Number(values.seconds);
  const rows = Number(values.rows);
  const fleet = await startBenchFleet(2);
  const pools = new NodePools();
  const scratch = path.join(tmpdir(), `shardcast-interference-${process.pid}`);
  try {
    await fleet.createTable({ name: 'big', columns: 'id bigint primary key, payload text not null, n bigint not null default 0', shardKey: 'id', shardCount: 1, nodes: ['node-1'] });
    const node = await getNodeByName(fleet.catalog, 'node-1');
    const { rows: shards } = await fleet.catalog.query<{ id: number }>('select id::int as id from shardcast.shards');
    const shard = await shardTables(fleet.catalog, shards[0]!.id);
    const db = pools.get(node.dsn);
    await db.query(`insert into ${quoteIdent(shard.schema)}.big select g, repeat(md5(g::text), 3), 0 from generate_series(1, $1::bigint) g`, [rows]);
    await db.query('vacuum analyze');
    await db.query('checkpoint');
    const router = await createRouter({ catalogUrl: fleet.catalogUrl, poolSize: 6 });
    const load = new ForegroundLoad(router, rows, 4);
    const results: Array<{ phase: string; n: number; p50: number; p99: number; fpi: number; checkpoints: number; cores: number }> = [];
    // Full-page images and checkpoints on the writers' node per phase: the first write to a page after a
    // checkpoint logs the whole page, so the same writers cost more WAL (and latency) right after one.
    const walState = async () => {
      const { rows: w } = await db.query<{ fpi: string; checkpoints: string }>(
        'select (select wal_fpi from pg_stat_wal)::text as fpi, (select num_done from pg_stat_checkpointer)::text as checkpoints',
      );
      return { fpi: Number(w[0]!.fpi), checkpoints: Number(w[0]!.checkpoints) };
    };
    const phase = async (name: string, neighbour?: () => () => Promise<void>): Promise<void> => {
      const stop = neighbour?.();
      const wal0 = await walState();
      load.start(name);
      const cpu = new CpuMeter();
      await sleep(seconds * 1000);
      const cores = cpu.cores();
      await load.stop();
      const wal1 = await walState();
      await stop?.();
      const l = load.latencies(name);
      results.push({ phase: name, n: l.length, p50: round(percentile(l, 50), 2), p99: round(percentile(l, 99), 2), fpi: wal1.fpi - wal0.fpi, checkpoints: wal1.checkpoints - wal0.checkpoints, cores: round(cores, 2) });
      await sleep(2000);
    };
    const processes = (command: string) => () => {
      const child = spawn('bash', ['-c', command], { stdio: 'ignore', detached: true });
      return async () => {
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          // already gone
        }
        rmSync(scratch, { force: true });
      };
    };
    // Right after a checkpoint every page's first write logs the whole page: a phase of its own, not idle.
    await db.query('checkpoint');
    await phase('just after a checkpoint');
    await phase('idle');
    await phase('one busy core', processes('yes > /dev/null'));
    await phase('two busy cores', processes('yes > /dev/null & yes > /dev/null; wait'));
    await phase('two busy cores, nice 19', processes('nice -n 19 yes > /dev/null & nice -n 19 yes > /dev/null; wait'));
    await phase('two busy cores, SCHED_IDLE', processes('chrt -i 0 yes > /dev/null & chrt -i 0 yes > /dev/null; wait'));
    await phase('idle again');
    await phase('disk writes (buffered)', processes(`dd if=/dev/zero of=${scratch} bs=1M count=4000 status=none`));
    await phase('disk writes (direct)', processes(`dd if=/dev/zero of=${scratch} bs=1M count=4000 oflag=direct status=none`));
    await phase('snapshot held', () => {
      const held = db.connect().then(async (c) => {
        await c.query('begin isolation level repeatable read');
        await c.query('select count(*) from pg_class');
        return c;
      });
      return async () => {
        const c = await held;
        await c.query('commit');
        c.release();
      };
    });
    await phase('idle at the end');
    await router.close();
    const idle = results.filter((r) => r.phase.startsWith('idle'));
    const idleP99 = idle.reduce((a, r) => a + r.p99, 0) / idle.length;
    console.log(`foreground: 4 writers, ${seconds} s per phase; idle p99 ${idle.map((r) => r.p99).join(', ')} ms (mean ${round(idleP99, 2)})`);
    console.log('PHASE                          WRITES   P50_MS  P99_MS  P99/IDLE  BUSY_CORES  FULL_PAGES  CHECKPOINTS');
    for (const r of results) {
      console.log(
        `${r.phase.padEnd(30)} ${String(r.n).padStart(6)}  ${String(r.p50).padStart(7)} ${String(r.p99).padStart(7)}  ${String(round(r.p99 / idleP99, 2)).padStart(8)}  ${String(r.cores).padStart(10)}  ${String(r.fpi).padStart(10)}  ${String(r.checkpoints).padStart(11)}`,
      );
    }
    const ratio = (name: string) => round(results.find((r) => r.phase === name)!.p99 / idleP99, 2);
    console.log(
      JSON.stringify({
        bench: 'interference',
        idle_p99_ms: round(idleP99, 2),
        idle_p99_spread: round(Math.max(...idle.map((r) => r.p99)) / Math.min(...idle.map((r) => r.p99)), 2),
        one_core_p99_ratio: ratio('one busy core'),
        two_cores_p99_ratio: ratio('two busy cores'),
        disk_buffered_p99_ratio: ratio('disk writes (buffered)'),
        disk_direct_p99_ratio: ratio('disk writes (direct)'),
        snapshot_p99_ratio: ratio('snapshot held'),
        idle_busy_cores: round(idle.reduce((a, r) => a + r.cores, 0) / idle.length, 2),
      }),
    );
  } finally {
    rmSync(scratch, { force: true });
    await pools.end();
    await fleet.stop();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
