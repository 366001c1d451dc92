/**
 * `npm run bench -- restore [--rows N] [--parallel N] [--workers N] [--rounds N]`: a backup of N rows
 * (default 5,000,000) restored three ways in one run, on one embedded fleet (a catalog and two nodes)
 * and a Temporal dev server, with `shardcast worker` processes taking the activities:
 *  - parallel: the restore workflow into the proposed shards (the proposal engine's layout for the
 *    bench's workload), `--parallel` import units at once (default 4) over `--workers` worker processes
 *    (default 2);
 *  - single: the same workflow into the same layout with one stream (parallelism 1): one COPY at a
 *    time, shard after shard, and the indexes and the verify one node after the other, as
 *    `pg_restore` without `-j` restores;
 *  - raw: `COPY FROM` of the same rows as CSV into one table on one node, then its primary key.
 * Each restore figure is the whole workflow, start to published: the backup's check (sha256 of
 * every file), shard creation, import, primary keys and ANALYZE, the verify of every row against
 * the manifest's checksum. The raw COPY is the load and the primary key only (no verify). Peak RSS is
 * the largest resident set of a worker process (where a restore's import runs), sampled every 200 ms.
 * The three are measured in `--rounds` rounds (default 3), each in another order; a ratio is taken
 * within a round, and the figures are the medians over the rounds (each round's are printed too).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createReadStream, createWriteStream, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Client, Connection } from '@temporalio/client';
import pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { newRestoreId, restoreResult, startRestore } from '../client/index.js';
import { exportBackup, plainTable } from '../src/backup/export.js';
import { resolveTemporalCli } from '../src/fleet/temporal-cli.js';
import { freePort } from '../src/fleet/postgres-server.js';
import { TemporalDevServer } from '../src/fleet/temporal-server.js';
import { proposeLayout } from '../src/restore/proposal.js';
import { restoreProgressQuery } from '../workflows/messages.js';
import { parseWorkload } from '../src/restore/workload.js';
import { CpuMeter, round, startBenchFleet } from './fleet.js';

function option(args: string[], name: string, fallback: number): number {
  const i = args.indexOf(name);
  if (i < 0) return fallback;
  const v = Number(args[i + 1]);
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name}: expected a positive whole number, got ${args[i + 1]}`);
  return v;
}

/** CPU seconds of a process and of its exited children (Linux /proc: utime, stime, cutime, cstime), 0 when it is gone. */
function cpuSeconds(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return fields.slice(11, 15).reduce((a, f) => a + Number(f), 0) / 100;
  } catch {
    return 0;
  }
}

/** Resident set of a process in bytes (Linux /proc), 0 when it is gone. */
function rss(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** The machine's busy and total CPU time so far (/proc/stat's first line; busy: all but idle and iowait). */
function procStat(): { busy: number; total: number } | undefined {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const total = f.reduce((a, b) => a + b, 0);
    return { busy: total - f[3]! - f[4]!, total };
  } catch {
    return undefined;
  }
}

/**
 * What the nodes' servers did during a measurement besides the restore's own statements:
 * checkpoints, WAL written (and how much of it full-page images), and autovacuum workers seen
 * (sampled every 500 ms). Printed with each measurement, to tell a slow run's cause.
 */
class PgMeter {
  private samples = 0;
  private vacuuming = 0;
  private readonly what = new Set<string>();
  private timer?: NodeJS.Timeout;
  private constructor(
    private readonly clients: pg.Client[],
    private readonly before: Array<{ ckpt: number; wal: number; fpi: number }>,
  ) {}

  static async start(urls: string[]): Promise<PgMeter> {
    const clients = await Promise.all(
      urls.map(async (u) => {
        const c = new pg.Client({ connectionString: u });
        await c.connect();
        return c;
      }),
    );
    const m = new PgMeter(clients, await Promise.all(clients.map((c) => PgMeter.counters(c))));
    m.timer = setInterval(() => {
      void Promise.all(m.clients.map((c) => c.query<{ q: string }>(`select query as q from pg_stat_activity where backend_type = 'autovacuum worker'`))).then(
        (rs) => {
          m.samples++;
          if (rs.some((r) => r.rowCount)) m.vacuuming++;
          for (const r of rs) for (const { q } of r.rows) if (q) m.what.add(q.replace(/^autovacuum: /, ''));
        },
        () => undefined,
      );
    }, 500);
    return m;
  }

  private static async counters(c: pg.Client): Promise<{ ckpt: number; wal: number; fpi: number }> {
    const { rows } = await c.query(
      `select (select num_timed + num_requested from pg_stat_checkpointer)::float8 as ckpt, wal_bytes::float8 as wal, wal_fpi::float8 as fpi from pg_stat_wal`,
    );
    return rows[0];
  }

  async stop(): Promise<string> {
    clearInterval(this.timer);
    const after = await Promise.all(this.clients.map((c) => PgMeter.counters(c)));
    await Promise.all(this.clients.map((c) => c.end()));
    const d = (k: 'ckpt' | 'wal' | 'fpi') => after.reduce((a, x, i) => a + x[k] - this.before[i]![k], 0);
    return `${d('ckpt')} checkpoints, WAL ${(d('wal') / 1e6).toFixed(0)} MB (${d('fpi')} full-page images), autovacuum running in ${this.samples ? Math.round((100 * this.vacuuming) / this.samples) : 0}% of samples${this.what.size ? ` (${[...this.what].join('; ')})` : ''}`;
  }
}

function startWorker(root: string, env: Record<string, string>): Promise<ChildProcess> {
  // BENCH_CPU_PROF=DIR: each worker writes a CPU profile there when it exits.
  const prof = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];
  const child = spawn(process.execPath, [...prof, path.join(root, 'bin/shardcast.js'), 'worker'], { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  return new Promise((resolve, reject) => {
    const onData = (d: Buffer) => {
      out += d.toString();
      if (out.includes('shardcast: ready')) resolve(child);
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`worker exited (${code}): ${out.slice(-2000)}`)));
  });
}

export async function run(args: string[]): Promise<void> {
  const rows = option(args, '--rows', 5_000_000);
  const parallel = option(args, '--parallel', 4);
  const workerCount = option(args, '--workers', 2);
  const rounds = option(args, '--rounds', 3);
  const root = path.resolve(import.meta.dirname, '..');
  const dir = mkdtempSync(path.join(tmpdir(), 'shardcast-bench-restore-'));
  const fleet = await startBenchFleet(2);
  const cli = await resolveTemporalCli();
  const temporal = new TemporalDevServer({ cliPath: cli.path, port: await freePort(), uiPort: 0, namespace: 'default', stateDir: path.join(dir, 'temporal') });
  const workers: ChildProcess[] = [];
  let peak = 0;
  const sampler = setInterval(() => {
    peak = Math.max(peak, ...workers.map((w) => (w.pid ? rss(w.pid) : 0)));
  }, 200);
  try {
    await temporal.start();
    const node1 = fleet.nodes[0]!;
    const source = new pg.Pool({ connectionString: node1.url('shardcast'), max: 2 });
    source.on('error', () => undefined);
    {
      const { rows: st } = await source.query(`select current_setting('data_checksums') as c, current_setting('max_wal_size') as w, current_setting('shared_buffers') as b`);
      console.log(`nodes: data_checksums ${st[0].c}, max_wal_size ${st[0].w}, shared_buffers ${st[0].b}`);
    }
    console.log(`generating ${rows} rows …`);
    await source.query(`create table events (id bigint primary key, tenant_id int not null, created_at timestamptz not null, amount numeric(12,2), kind text not null, note text)`);
    await source.query(
      `insert into events select g, g % 1000, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second', (g % 100000) / 100.0,
              (array['click','view','buy','refund'])[1 + g % 4], case when g % 9 = 0 then null else 'note ' || md5(g::text) end
         from generate_series(1, ${rows}) g`,
    );
    await source.query('vacuum analyze events');

    const backupDir = path.join(dir, 'backup');
    const t = performance.now();
    const manifest = await exportBackup([plainTable(source, 'events')], backupDir);
    const bytes = manifest.tables[0]!.files.reduce((a, f) => a + f.bytes, 0);
    console.log(`backup: ${(bytes / 1e6).toFixed(0)} MB of Arrow in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    const csv = path.join(dir, 'events.csv');
    {
      const c = await source.connect();
      try {
        await pipeline(c.query(copyTo('copy events to stdout (format csv)')), createWriteStream(csv));
      } finally {
        c.release();
      }
    }
    console.log(`csv: ${(statSync(csv).size / 1e6).toFixed(0)} MB`);
    await source.query('drop table events');
    await source.end();

    // The proposal for a workload of 4,000 qps at peak over the two nodes (1,000 qps a shard): 4 hash shards.
    const workload = parseWorkload('predicted_peak_qps: 4000\ngrowth_per_month: 0\n', 'bench-workload.yaml');
    const proposal = proposeLayout(manifest.tables[0]!, { workload, nodes: fleet.nodes.map((n) => ({ name: n.name, capacity: 1 })), bytes });
    console.log(`proposal: ${proposal.method} on ${proposal.keyColumn}, ${proposal.shardCount} shards on ${[...new Set(proposal.shards.map((s) => s.node))].join(', ')}`);

    const taskQueue = 'bench-restore';
    const env = { SHARDCAST_CATALOG_URL: fleet.catalogUrl, SHARDCAST_TEMPORAL_ADDRESS: temporal.address, SHARDCAST_TEMPORAL_TASK_QUEUE: taskQueue, SHARDCAST_METRICS_PORT: '0' };
    for (let i = 0; i < workerCount; i++) workers.push(await startWorker(root, env));
    const connection = await Connection.connect({ address: temporal.address });
    const client = new Client({ connection, namespace: 'default' });

    const importSeconds = new Map<string, number>();
    const restore = async (table: string, parallelism: number): Promise<number> => {
      const input = {
        restoreId: newRestoreId(table),
        backup: backupDir,
        sourceKind: 'shardcast' as const,
        sourceTable: 'events',
        targetTable: table,
        layout: { keyColumn: proposal.keyColumn, method: proposal.method, ...(proposal.method === 'hash' ? { shardCount: proposal.shardCount } : { rangeBounds: proposal.rangeBounds! }), nodes: proposal.shards.map((s) => s.node), reasons: proposal.reasons },
        requireApproval: false,
        parallelism,
        batchesPerUnit: 2,
      };
      const temporalPid = Number(readFileSync(path.join(dir, 'temporal', 'temporal.pid'), 'utf8'));
      const cpu = () => ({
        workers: workers.reduce((a, w) => a + cpuSeconds(w.pid!), 0),
        postgres: fleet.nodes.reduce((a, n) => a + cpuSeconds(n.postmasterPid ?? 0), 0),
        temporal: cpuSeconds(temporalPid),
        bench: (process.cpuUsage().user + process.cpuUsage().system) / 1e6,
      });
      const cpuBefore = cpu();
      const pgMeter = await PgMeter.start(fleet.nodes.map((n) => n.url('shardcast')));
      const meter = new CpuMeter();
      const started = performance.now();
      const handle = await startRestore({ client, taskQueue }, input);
      // The machine's CPU counters every 100 ms (a local file read: nothing asked of Temporal or the
      // nodes, which would burden the run measured), for the busy cores of each phase afterwards.
      const stat: Array<{ at: number; busy: number; total: number }> = [];
      const sampler = setInterval(() => {
        const x = procStat();
        if (x) stat.push({ at: Date.now(), ...x });
      }, 100);
      const result = await restoreResult(handle).finally(() => clearInterval(sampler));
      const end = performance.now();
      const s = (end - started) / 1000;
      const cpuAfter = cpu();
      console.log(
        `  cpu: workers ${(cpuAfter.workers - cpuBefore.workers).toFixed(1)} s, postgres nodes ${(cpuAfter.postgres - cpuBefore.postgres).toFixed(1)} s, Temporal server ${(cpuAfter.temporal - cpuBefore.temporal).toFixed(1)} s, this process ${(cpuAfter.bench - cpuBefore.bench).toFixed(1)} s; machine ${meter.cores().toFixed(2)} busy cores, ${meter.stolen().toFixed(2)} stolen`,
      );
      console.log(`  postgres: ${await pgMeter.stop()}`);
      // Each phase's time (the workflow's own clock, from its result) and the machine's busy cores during it.
      const { phaseStarts = [] } = await handle.query(restoreProgressQuery);
      const busyBetween = (from: number, to: number): number => {
        const a = stat.find((x) => x.at >= from);
        const b = stat.findLast((x) => x.at <= to);
        return a && b && b.total > a.total ? ((b.busy - a.busy) / (b.total - a.total)) * availableParallelism() : Number.NaN;
      };
      const phases = phaseStarts.slice(0, -1).map((p, i) => ({ phase: p.phase, seconds: (phaseStarts[i + 1]!.at - p.at) / 1000, cores: busyBetween(p.at, phaseStarts[i + 1]!.at) }));
      console.log(`  phases: ${phases.map((p) => `${p.phase} ${p.seconds.toFixed(1)} s${Number.isFinite(p.cores) ? ` (${p.cores.toFixed(1)} cores)` : ''}`).join(', ')}`);
      importSeconds.set(table, phases.find((p) => p.phase === 'import')?.seconds ?? Number.NaN);
      if (result.rows !== rows) throw new Error(`${table}: ${result.rows} rows restored, expected ${rows}`);
      console.log(`${table}: ${rows} rows in ${s.toFixed(1)} s ${parallelism === 1 ? 'through one stream' : `with ${parallelism} units at once`} (${result.shards} shards; verified, published)`);
      return rows / s;
    };

    /**
     * Before each measured run, the same quiet start: every node vacuumed (the previous run's rows,
     * which autovacuum would otherwise visit during the next run, on the same two cores) and
     * checkpointed (its WAL written out), and no autovacuum worker left running. Without it the
     * parallel run shared the machine with the vacuum of the one-stream run's 5M rows, and the raw
     * COPY with that of the parallel run's: the raw baseline read anywhere from 10 to 17 s.
     */
    const settle = async (): Promise<void> => {
      const t0 = performance.now();
      for (const n of fleet.nodes) {
        const c = new pg.Client({ connectionString: n.url('shardcast') });
        await c.connect();
        try {
          await c.query('vacuum analyze');
          await c.query('checkpoint');
          for (let i = 0; i < 600; i++) {
            const { rows: busy } = await c.query(`select count(*)::int as n from pg_stat_activity where backend_type = 'autovacuum worker'`);
            if (busy[0].n === 0) break;
            await new Promise((r) => setTimeout(r, 100));
          }
        } finally {
          await c.end();
        }
      }
      console.log(`  (settled: vacuum and checkpoint on every node, ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    };

    // The raw baseline: one COPY FROM of the CSV into one table on one node, then its primary key.
    const rawCopy = async (table: string): Promise<number> => {
      const raw = new pg.Client({ connectionString: fleet.nodes[1]!.url('shardcast') });
      await raw.connect();
      try {
        await raw.query(`create table ${table} (id bigint not null, tenant_id int not null, created_at timestamptz not null, amount numeric(12,2), kind text not null, note text)`);
        const pgMeter = await PgMeter.start([fleet.nodes[1]!.url('shardcast')]);
        const meter = new CpuMeter();
        const t0 = performance.now();
        await pipeline(createReadStream(csv), raw.query(copyFrom(`copy ${table} from stdin (format csv)`)));
        await raw.query(`alter table ${table} add primary key (id)`);
        const s = (performance.now() - t0) / 1000;
        console.log(`  postgres: ${await pgMeter.stop()}`);
        console.log(`${table}: raw COPY FROM csv + primary key: ${s.toFixed(1)} s (machine ${meter.cores().toFixed(2)} busy cores, ${meter.stolen().toFixed(2)} stolen)`);
        return rows / s;
      } finally {
        await raw.end();
      }
    };

    // Rounds of the three, each in another order, every measurement from the same quiet start: the
    // machine's speed drifts (the hypervisor takes up to half the cores for seconds at a time), so a
    // ratio is taken within a round and the figures are the medians over the rounds.
    const perRound: Array<{ single: number; parallel: number; raw: number; importRate: number }> = [];
    const orders: Array<Array<'single' | 'parallel' | 'raw'>> = [['single', 'parallel', 'raw'], ['raw', 'parallel', 'single'], ['parallel', 'single', 'raw']];
    for (let r = 1; r <= rounds; r++) {
      console.log(`round ${r} of ${rounds}`);
      const got: Partial<Record<'single' | 'parallel' | 'raw', number>> = {};
      for (const which of orders[(r - 1) % orders.length]!) {
        await settle();
        if (which === 'raw') got.raw = await rawCopy(`events_raw_${r}`);
        else got[which] = await restore(`events_${which}_${r}`, which === 'single' ? 1 : parallel);
      }
      perRound.push({ single: got.single!, parallel: got.parallel!, raw: got.raw!, importRate: rows / importSeconds.get(`events_parallel_${r}`)! });
      console.log(`  round ${r}: speedup ${round(got.parallel! / got.single!, 2)}, copy_ratio ${round(got.parallel! / got.raw!, 2)}`);
    }
    await connection.close();
    const median = (xs: number[]) => {
      const v = [...xs].sort((a, b) => a - b);
      return v.length % 2 ? v[(v.length - 1) / 2]! : (v[v.length / 2 - 1]! + v[v.length / 2]!) / 2;
    };

    console.log(
      JSON.stringify({
        bench: 'restore',
        rows,
        rounds,
        parallel_rows_s: Math.round(median(perRound.map((x) => x.parallel))),
        single_rows_s: Math.round(median(perRound.map((x) => x.single))),
        raw_copy_rows_s: Math.round(median(perRound.map((x) => x.raw))),
        // Medians of each round's ratio (a round's three measurements are minutes apart at most).
        speedup: round(median(perRound.map((x) => x.parallel / x.single)), 2),
        copy_ratio: round(median(perRound.map((x) => x.parallel / x.raw)), 2),
        peak_rss_mb: Math.round(peak / 1e6),
        // The import phase alone (no check, indexes or verify), for comparison with the raw COPY's load.
        parallel_import_rows_s: Math.round(median(perRound.map((x) => x.importRate))),
        round_speedups: perRound.map((x) => round(x.parallel / x.single, 2)),
        round_copy_ratios: perRound.map((x) => round(x.parallel / x.raw, 2)),
      }),
    );
  } finally {
    clearInterval(sampler);
    await Promise.all(
      workers.map(async (w) => {
        if (w.exitCode !== null) return;
        const exited = new Promise((resolve) => w.once('exit', resolve));
        w.kill('SIGTERM');
        await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 15_000))]);
      }),
    );
    await temporal.stop().catch(() => undefined);
    await fleet.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
